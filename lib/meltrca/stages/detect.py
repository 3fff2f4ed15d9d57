"""`meltrca detect`: per-service detectors and their ensemble -> gold `anomalies` (+ saved models).

Modes (the input window is --start/--end; unbounded = everything in the lake):
- default: fit each service on the first detection.baseline_fraction of its history in the window,
  save the models (version = run id), then score every window of the input with them;
- --fit: the whole input window is the baseline; fit and save, write no anomalies (pick a known
  good period with --start/--end);
- --score-only: load the newest saved model of each detector per service and score the window,
  never refitting (the LSTM reads sequence_length-1 windows before --start as context). A
  service with no saved model is scored cold-start (z-score on its own first windows).
Reruns over the same window replace that window's anomalies.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from pyspark.sql import DataFrame

from meltrca.detection import (
    anomaly_rows,
    change_events,
    detection_plan,
    fit_models,
    fit_notes,
    model_index,
    pattern_anomalies,
    score_features,
    sparse_peer_anomalies,
    store_root_of,
    with_severity,
)
from meltrca.errors import InputError
from meltrca.features.patterns import is_pattern
from meltrca.incremental import context_windows
from meltrca.jobrunner import JobContext
from meltrca.logs import get_logger
from meltrca.reference import ALL, format_range, in_reference, system_references
from meltrca.schemas import MODELS
from meltrca.stages.common import (
    INCREMENTAL_HELP,
    add_detection_arguments,
    add_lake_argument,
    detection_overrides,
    require_tables,
    widest_window_seconds,
)
from meltrca.timewindow import TimeWindow, utcnow

DESCRIPTION = "Fit and score anomaly detectors (z-score, Isolation Forest, LSTM autoencoder) per service."
MODES = ("fit_score", "fit", "score")

log = get_logger("detect")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)
    add_detection_arguments(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--fit", action="store_true",
        help="fit on the whole input window (--start/--end = the baseline) and save the models; no scoring",
    )
    mode.add_argument("--score-only", action="store_true", help="score with the newest saved models, never refit")
    p.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return detection_overrides(args)


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


def _window_seconds(features: DataFrame) -> int:
    width = widest_window_seconds(features)
    if width is None:
        raise InputError("the features table has no rows in the input window (run `meltrca features` first)")
    return width


def _systems(ctx: JobContext, features: DataFrame) -> list[str]:
    if ctx.systems:
        return list(ctx.systems)
    return sorted(r[0] for r in features.select("system").distinct().collect())


def process(ctx: JobContext, *, mode: str = "fit_score") -> None:
    """Fit and/or score the features of ctx.window for ctx.systems; write models and anomalies."""
    if mode not in MODES:
        raise ValueError(f"detect mode must be one of {MODES}, got {mode!r}")
    lake = ctx.lake
    settings = ctx.settings
    systems_filter = ctx.systems or None
    features = lake.read("features", systems=systems_filter, window=ctx.window, required=True)
    window_seconds = _window_seconds(features)
    systems = _systems(ctx, features)
    ctx.systems = systems
    plan = detection_plan(settings, window_seconds=window_seconds)
    store_root = store_root_of(lake.root)
    references = system_references(lake, systems, settings)
    reference = in_reference(references)
    log.info("detect %s over %s for %s with %s", mode, ctx.window, ", ".join(systems), ", ".join(plan["enabled"]))
    for system in sorted(references):
        ctx.note(f"reference baseline{'' if system == ALL else ' of ' + system}: "
                 + ", ".join(format_range(r) for r in references[system]))

    if mode in ("fit_score", "fit"):
        with ctx.stage("fit") as info:
            fraction = plan["baseline_fraction"] if mode == "fit_score" else None
            fitted = fit_models(
                features, plan=plan, store_root=store_root, version=ctx.run_id, fitted_at=utcnow(), fraction=fraction,
                references=references,
            ).collect()  # one small row per (service, detector); fitting runs exactly once
            models = ctx.spark.createDataFrame(fitted, MODELS)
            lake.merge("models", models)
            info["rows"] = len(fitted)
            info["extra"] = f"{len({(r['system'], r['service']) for r in fitted})} services"
        ctx.count("models", len(fitted))
        for line in fit_notes(fitted, plan["min_history"]):
            ctx.note(line)
        if mode == "fit":
            return
        index = model_index(models, plan["enabled"])
        score_input, emit_from = features, None
    else:
        index = model_index(lake.read("models", systems=systems, required=True), plan["enabled"])
        lookback = timedelta(seconds=window_seconds * context_windows(plan))
        score_input = lake.read("features", systems=systems, window=ctx.window.widened(lookback))
        emit_from = ctx.window.start
        missing = sorted(set(plan["enabled"]) - {d for e in index.values() for d in e["paths"]})
        if missing:
            log.warning("no saved %s model: scoring without it (run detect --fit first)", ", ".join(missing))

    with ctx.stage("score") as info:
        candidates = score_features(score_input, plan=plan, index=index, emit_from=emit_from, emit_to=ctx.window.end)
        scored = with_severity(
            candidates, threshold=plan["threshold"], blast_steps=list(settings.detection.severity_blast_radius)
        ).persist()
        try:
            n_signals = scored.count()
            peers = sparse_peer_anomalies(score_input, scored, min_z=plan["zscore"]["threshold"], reference=reference,
                                          emit_from=emit_from, emit_to=ctx.window.end).localCheckpoint()
            n_peers = peers.count()
            # request patterns are judged against every earlier window of their series, not only the
            # scoring context: a later increment sees the peers one run over the union sees
            pattern_input = score_input if mode == "fit_score" else lake.read(
                "features", systems=systems, window=TimeWindow(None, ctx.window.end)).where(is_pattern())
            patterns = pattern_anomalies(pattern_input, **plan["patterns"], reference=reference, emit_from=emit_from,
                                         emit_to=ctx.window.end).localCheckpoint()
            n_patterns = patterns.count()
            rows = anomaly_rows(scored, change_events(features).unionByName(peers).unionByName(patterns),
                                window_seconds=window_seconds, run_id=ctx.run_id)
            lake.replace_window("anomalies", rows, systems=systems, window=ctx.window)
        finally:
            scored.unpersist()
        n_events = lake.read("anomalies", systems=systems, window=ctx.window).where("component = 'event'").count()
        info["rows"] = n_signals + n_peers + n_patterns + n_events
        info["extra"] = (f"{n_signals} signal + {n_peers} sparse-series (peer windows) + {n_patterns} request-pattern "
                         f"+ {n_events} change-event anomalies")
    ctx.count("anomalies", n_signals + n_peers + n_patterns + n_events)
    ctx.count("anomalies_signal", n_signals + n_peers + n_patterns)


def preflight(args: argparse.Namespace, settings: Any) -> None:
    require_tables(args.lake, "features", *(["models"] if args.score_only else []))


def execute(ctx: JobContext) -> None:
    mode = "fit" if ctx.args.fit else "score" if ctx.args.score_only else "fit_score"
    if ctx.args.incremental:
        from meltrca import incremental as inc

        inc.check_flags(ctx.args)
        if inc.start_or_fail(ctx, ["features"]):
            with inc.stage_window(ctx, inc.detect_start(ctx)):
                process(ctx, mode=inc.detect_mode(ctx, mode))
        return
    process(ctx, mode=mode)
