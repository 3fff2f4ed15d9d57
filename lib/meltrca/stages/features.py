"""`meltrca features`: bronze -> silver windowed features (and log templates)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from meltrca.errors import InputError
from meltrca.features import (
    FeatureParams,
    align_window,
    count_series,
    event_features,
    log_features,
    metric_features,
    template_summary,
    template_window_counts,
    trace_features,
    window_start_of,
)
from meltrca.features.patterns import known_patterns, pattern_features
from meltrca.schemas import BRONZE
from meltrca.stages.common import INCREMENTAL_HELP, add_lake_argument
from meltrca.templates import assign_templates, mask_messages, mine_templates
from meltrca.timewindow import TimeWindow

if TYPE_CHECKING:
    from meltrca.io import Lake
    from meltrca.jobrunner import JobContext

DESCRIPTION = "Build windowed features (metric, log, trace, event) from the bronze tables."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)
    p.add_argument("--window", help="tumbling window, e.g. '1 minute' (default features.window)")
    p.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"features.window": args.window}


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


def refresh_log_templates(
    lake: Lake, logs: DataFrame, *, systems: list[str], window: TimeWindow | None, params: FeatureParams, similarity: float,
    per_request: bool = False,
) -> tuple[int, DataFrame | None]:
    """Mine templates of the window's logs, write log_template_counts and log_templates.

    Returns the lines tagged and, with per_request, the (system, trace_id, service, template_id,
    window_start) of the lines that carry a trace id (checkpointed: the request patterns read it once more)."""
    masked = logs.select("system", "service", "ts", "level", "message", "trace_id").transform(mask_messages)
    masked = masked.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        distinct = masked.groupBy("system", "masked").agg(
            F.count(F.lit(1)).alias("count"), F.min("message").alias("example")
        )
        existing = lake.read("log_templates", systems=systems).select("system", "template_id", "template", "example")
        matches = mine_templates(distinct, existing, similarity=similarity).persist(StorageLevel.MEMORY_AND_DISK)
        tagged = assign_templates(masked, matches)
        obs = Observation("log_template_counts")
        counts = template_window_counts(tagged, params=params).observe(obs, F.sum("count").alias("lines"))
        lake.replace_window("log_template_counts", counts, systems=systems, window=window)
        new_texts = (
            matches.join(distinct, on=["system", "masked"])
            .groupBy("system", "template_id")
            .agg(F.first("template").alias("template"), F.min("example").alias("example"))
        )
        texts = existing.unionByName(new_texts.join(existing, on=["system", "template_id"], how="left_anti"))
        summary = template_summary(lake.read("log_template_counts", systems=systems))
        table = texts.join(summary, on=["system", "template_id"], how="left").withColumn(
            "count", F.coalesce(F.col("count"), F.lit(0))
        )
        lake.overwrite("log_templates", table, systems=systems)
        request_templates = None
        if per_request:
            request_templates = (
                tagged.where(F.col("trace_id").isNotNull() & F.col("template_id").isNotNull())
                .select("system", "trace_id", "service", "template_id",
                        window_start_of(F.col("ts"), params.seconds).alias("window_start"))
                .distinct().localCheckpoint()
            )
        matches.unpersist()
        return int(obs.get.get("lines") or 0), request_templates
    finally:
        masked.unpersist()


def process(ctx: JobContext) -> None:
    """Features of every bronze signal in the run window, for the given (or all found) systems."""
    lake, settings = ctx.lake, ctx.settings
    params = FeatureParams.from_settings(settings.features)
    run_window = align_window(ctx.window, params.seconds)
    only = ctx.systems or None
    bronze = {t: lake.read(t, systems=only, window=run_window) for t in BRONZE}
    systems = ctx.systems or sorted(
        {r[0] for t in BRONZE if lake.exists(t) for r in bronze[t].select("system").distinct().collect()}
    )
    if not systems:
        raise InputError(f"no bronze rows in {lake.root} for window {run_window} (run `meltrca ingest` first)")
    ctx.systems = systems
    replace = run_window if (run_window.start or run_window.end) else None
    per_request = bool(settings.features.request_patterns)
    request_templates = None
    if lake.exists("logs"):
        with ctx.stage("templates") as info:
            info["rows"], request_templates = refresh_log_templates(
                lake,
                bronze["logs"],
                systems=systems,
                window=replace,
                params=params,
                similarity=float(settings.features.templates.similarity),
                per_request=per_request,
            )
            info["extra"] = f"{lake.read('log_templates', systems=systems).count():,} templates"
    with ctx.stage("features") as info:
        known = seen_patterns = None
        if run_window.start is not None:
            before = TimeWindow(run_window.start - timedelta(minutes=params.fill_lookback_minutes), run_window.start)
            earlier = lake.read("features", systems=systems, window=before)
            known = count_series(earlier) if params.fill_zero_counts else None
            seen_patterns = known_patterns(earlier) if per_request else None
        parts = [
            metric_features(bronze["metrics"], params=params),
            trace_features(bronze["spans"], params=params, known=known),
            event_features(bronze["events"], params=params),
        ]
        if per_request:
            parts.append(pattern_features(bronze["spans"], request_templates, params=params, known=seen_patterns))
        if lake.exists("log_template_counts"):
            counts = lake.read("log_template_counts", systems=systems, window=run_window)
            summary = lake.read("log_templates", systems=systems)
            history = lake.read("log_template_counts", systems=systems, window=TimeWindow(None, run_window.end))
            parts.append(log_features(counts, summary, params=params, known=known, history=history))
        features = parts[0]
        for part in parts[1:]:
            features = features.unionByName(part)
        obs = Observation("features")
        features = features.observe(obs, F.count(F.lit(1)).alias("rows"))
        lake.replace_window("features", features, systems=systems, window=replace)
        got = obs.get
        info["rows"] = int(got.get("rows") or 0)
        info["extra"] = f"{len(systems)} system(s), window {settings.features.window}"


def execute(ctx: JobContext) -> None:
    if ctx.args.incremental:
        from meltrca import incremental as inc

        if inc.start_or_fail(ctx, inc.BRONZE_TABLES):
            process(ctx)
        return
    process(ctx)
