"""`meltrca explain`: anomaly metadata documents and incident explanations, the alert outbox, JSON export.

Reads gold anomalies/incidents, silver features/log_templates and bronze events/logs for the
window; writes incidents' explanation + writer (merge), gold `metadata` (window replace), new
`alerts` outbox rows (insert-only), and metadata.jsonl / incidents.jsonl in --output (or the lake).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from meltrca.alerts import data_horizons, outbox_rows
from meltrca.errors import ConfigError
from meltrca.explain.context import (
    anomaly_context,
    baseline_ranges,
    finish_incident_facts,
    incident_facts,
    incident_members,
    service_onsets,
)
from meltrca.explain.correlation import correlated_anomalies, pearson, peer_pairs
from meltrca.explain.documents import incident_document, metadata_rows, schema_validator
from meltrca.explain.knowledge_base import KnowledgeBase
from meltrca.explain.llm import LLMWriter
from meltrca.explain.writers import explain_incidents, llm_config, with_signature
from meltrca.io import iter_column, write_jsonl
from meltrca.logs import get_logger
from meltrca.stages.common import INCREMENTAL_HELP, add_lake_argument, require_tables
from meltrca.timewindow import TimeWindow, utcnow

if TYPE_CHECKING:
    from meltrca.jobrunner import JobContext

log = get_logger("explain")

DESCRIPTION = "Write anomaly metadata (SPEC §5) and incident explanations (template or LLM), plus alerts."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)
    p.add_argument("--writer", choices=["template", "llm"], help="explanation writer (default explain.writer)")
    p.add_argument("--output", metavar="DIR", help="folder for metadata.jsonl / incidents.jsonl (default: the lake)")
    p.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"explain.writer": args.writer}


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


def preflight(args: argparse.Namespace, settings: Any) -> None:
    require_tables(args.lake, "anomalies")


def execute(ctx: JobContext) -> None:
    if ctx.args.incremental:
        from meltrca import incremental as inc

        if inc.start_or_fail(ctx, ["features"]):
            with inc.stage_window(ctx, inc.explain_start(ctx, inc.rca_start(ctx))):
                process(ctx, output=ctx.args.output)
        return
    process(ctx, output=ctx.args.output)


def widen(window: TimeWindow, before: timedelta, after: timedelta) -> TimeWindow:
    return TimeWindow(window.start - before if window.start else None, window.end + after if window.end else None)


def export_dir(lake_root: str, output: str | None) -> Path:
    """Where the JSON files go: --output, else the lake folder (which must then be local)."""
    target = output or lake_root
    if "://" in target and not target.startswith("file://"):
        raise ConfigError(f"the lake {target} is not a local folder: give --output DIR for metadata.jsonl")
    return Path(target.removeprefix("file://"))


def process(ctx: JobContext, *, output: str | None = None) -> None:
    """The whole explain stage (callable in-process by `meltrca run`)."""
    lake, s = ctx.lake, ctx.settings
    e = s.explain
    kb_plain = KnowledgeBase.plain_from_settings(s)
    KnowledgeBase.from_plain(kb_plain)  # a broken knowledge base fails before any Spark work
    llm = llm_config(s) if e.writer == "llm" else None
    if llm is not None:
        LLMWriter(llm)  # fails fast with a one-line error when base URL or model are missing
    out_dir = export_dir(lake.root, output)
    context = timedelta(minutes=e.correlation_context_minutes)
    lookback = timedelta(minutes=s.rca.change_lookback_minutes)
    history = timedelta(minutes=max(e.correlation_context_minutes, e.baseline_minutes))

    only = ctx.systems or None
    anomalies = lake.read("anomalies", systems=only, window=ctx.window, required=True)
    incidents = lake.read("incidents", systems=only, window=ctx.window)
    if not ctx.systems:
        found = anomalies.select("system").union(incidents.select("system")).distinct().collect()
        ctx.systems = sorted(r[0] for r in found)
    systems = ctx.systems
    # Incidents may list anomalies just past the window's end; correlations look around it.
    around = lake.read("anomalies", systems=systems, window=widen(ctx.window, context, context))
    features = lake.read("features", systems=systems, window=widen(ctx.window, history, context))
    events = lake.read("events", systems=systems, window=widen(ctx.window, lookback, context))
    templates = lake.read("log_templates", systems=systems)

    with ctx.stage("facts") as info:
        members = incident_members(incidents, around).localCheckpoint()
        onsets = service_onsets(members).localCheckpoint()
        logs = _incident_logs(ctx, incidents, systems)
        params = {
            "lookback_minutes": s.rca.change_lookback_minutes, "max_log_lines": e.max_log_lines,
            "max_log_chars": e.max_log_chars, "max_signals": e.max_signals, "max_events": e.max_events,
            "max_onsets": e.max_onsets,
        }
        raw = incident_facts(incidents, members, onsets, events, logs, templates, params=params)
        facts = finish_incident_facts(
            raw, kb_plain=kb_plain, max_causes=e.max_suggested_causes, max_chars=e.max_log_chars
        ).transform(lambda df: with_signature(df, model=e.llm.model if llm else None, kb_version=kb_plain["version"]))
        facts = facts.localCheckpoint()
        info["rows"] = facts.count()

    with ctx.stage("explain") as info:
        cache = lake.read("explain_cache", systems=systems) if llm is not None and e.llm.cache else None
        explained = explain_incidents(facts, llm=llm, concurrency=e.llm.concurrency, cache=cache).localCheckpoint()
        if llm is not None:
            _remember_llm_texts(ctx, explained, model=e.llm.model)
        updated = (
            incidents.drop("explanation", "explanation_writer")
            .join(explained.select("system", "incident_id", "explanation", "explanation_writer"),
                  ["system", "incident_id"], "left")
            .localCheckpoint()
        )
        lake.merge("incidents", updated, keys=["incident_id"])
        writers = {r[0]: r[1] for r in explained.groupBy("explanation_writer").count().collect()}
        info["rows"] = sum(writers.values())
        info["extra"] = ", ".join(f"{k}: {v}" for k, v in sorted(writers.items()))

    with ctx.stage("metadata") as info:
        membership = members.select("system", "anomaly_id", "incident_id")
        pairs = peer_pairs(around, membership, incidents, context_minutes=e.correlation_context_minutes,
                           tolerance_minutes=s.rca.time_tolerance_minutes, max_peers=e.max_peer_series)
        scores = pearson(pairs, features)
        correlated = correlated_anomalies(anomalies, membership, scores, limit=e.max_correlated)
        baselines = baseline_ranges(anomalies, features, minutes=e.baseline_minutes)
        rows = anomaly_context(anomalies, members, onsets, explained, facts, events, templates, baselines, correlated,
                               lookback_minutes=s.rca.change_lookback_minutes)
        docs = metadata_rows(rows, kb_plain=kb_plain, max_causes=e.max_suggested_causes,
                             max_chars=e.max_explanation_chars).withColumn("run_id", F.lit(ctx.run_id))
        lake.replace_window("metadata", docs, systems=systems, window=ctx.window)
        info["rows"] = lake.read("metadata", systems=systems, window=ctx.window).count()

    with ctx.stage("alerts") as info:
        horizons = data_horizons((features, "window_end"), (around, "window_end"))
        fresh = outbox_rows(updated, lake.read("alerts", systems=systems), horizons,
                            resolve_after_minutes=s.alerts.resolve_after_minutes, created_at=utcnow()).localCheckpoint()
        lake.insert_new("alerts", fresh, keys=["alert_id"])
        info["rows"] = fresh.count()

    with ctx.stage("export") as info:
        n_meta, bad_meta = export_metadata(lake.read("metadata", systems=systems), out_dir / "metadata.jsonl")
        n_inc, bad_inc = export_incidents(lake.read("incidents", systems=systems), out_dir / "incidents.jsonl")
        ctx.count("metadata_jsonl", n_meta)
        ctx.count("incidents_jsonl", n_inc)
        ctx.count("documents_invalid", bad_meta + bad_inc)
        if bad_meta or bad_inc:
            log.warning("%d metadata and %d incident documents do not match their JSON Schema", bad_meta, bad_inc)
        info["rows"] = n_meta + n_inc
        info["extra"] = f"{out_dir}"


def _incident_logs(ctx: JobContext, incidents: DataFrame, systems: list[str]) -> DataFrame:
    """ERROR/WARN-capable log rows over the incidents' span only (never the whole logs table)."""
    span = incidents.agg(F.min("start").alias("lo"), F.max(F.coalesce("end", "start")).alias("hi")).first()
    if span is None or span["lo"] is None:
        return ctx.lake.empty("logs")
    window = TimeWindow(span["lo"], span["hi"] + timedelta(seconds=1))
    return ctx.lake.read("logs", systems=systems, window=window)


def _remember_llm_texts(ctx: JobContext, explained: DataFrame, *, model: str | None) -> None:
    """Cache fresh LLM answers by signature (fallbacks are not cached: they are retried next run)."""
    fresh = explained.where(F.col("explanation_writer") == "llm").select(
        "system", "signature", F.lit(model).alias("model"), "explanation",
        F.lit(utcnow()).cast("timestamp").alias("created_at"), F.lit(ctx.run_id).alias("run_id"),
    )
    ctx.lake.insert_new("explain_cache", fresh, keys=["signature"])


def _validated_lines(docs: Iterator[str | dict[str, Any]], schema: str, bad: list[int]) -> Iterator[str]:
    validator = schema_validator(schema)
    for doc in docs:
        obj = json.loads(doc) if isinstance(doc, str) else doc
        if not validator.is_valid(obj):
            bad[0] += 1
        yield doc if isinstance(doc, str) else json.dumps(obj, ensure_ascii=False, allow_nan=False)


def export_metadata(metadata: DataFrame, path: Path) -> tuple[int, int]:
    """metadata.jsonl, ordered by time; returns (documents written, documents failing the schema)."""
    bad = [0]
    ordered = metadata.orderBy("system", "timestamp", "service", "component", "feature", "anomaly_id")
    n = write_jsonl(_validated_lines(iter_column(ordered, "document"), "metadata", bad), path)
    return n, bad[0]


def export_incidents(incidents: DataFrame, path: Path) -> tuple[int, int]:
    """incidents.jsonl, ordered by start; returns (documents written, documents failing the schema)."""
    bad = [0]
    ordered = incidents.orderBy("system", "start", "incident_id")
    docs = (incident_document(r.asDict(recursive=True)) for r in ordered.toLocalIterator())
    n = write_jsonl(_validated_lines(docs, "incident", bad), path)
    return n, bad[0]
