"""`meltrca rca`: service graph, cross-signal incidents and ranked root causes."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from meltrca.explain.documents import incident_document
from meltrca.graph import choose_engine
from meltrca.io import write_jsonl
from meltrca.rca.incidents import group_incidents, rank_incidents, system_reachability
from meltrca.rca.ranking import RankingParams
from meltrca.rca.service_graph import build_service_graph, graph_from_edge_features
from meltrca.rca.triggered import Alert, alert_incidents
from meltrca.reference import system_references
from meltrca.stages.common import INCREMENTAL_HELP, add_lake_argument, require_tables, widest_window_seconds
from meltrca.timewindow import parse_duration, parse_utc, to_iso

if TYPE_CHECKING:
    from meltrca.jobrunner import JobContext

DESCRIPTION = "Group anomalies into incidents and rank their root-cause services along the dependency graph."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)
    p.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)
    add_alert_arguments(p)


def add_alert_arguments(p: argparse.ArgumentParser, *, system: bool = True) -> None:
    """--at/--window/--alert-output (and --system, which `run` already has for its mapping)."""
    g = p.add_argument_group("triggered RCA (an alert fired: rank the causes of the trouble around it)")
    g.add_argument("--at", metavar="TIME", help="when the alert fired (ISO-8601 UTC): rank the root causes of the "
                   "trouble around it (rca: instead of grouping incidents; run: after the pipeline); prints the "
                   "top rca.top_k (5) with evidence")
    if system:
        g.add_argument("--system", metavar="S", help="with --at: only this system")
    g.add_argument("--window", metavar="DURATION", default="5m",
                   help="with --at: how long after TIME to look (default 5m; rca.time_tolerance_minutes before it)")
    g.add_argument("--alert-output", metavar="FILE", help="with --at: also write the incident document(s) here (JSON lines)")


def alert_of(at: str | datetime, window: str, settings: Any) -> Alert:
    """The alert at `at` (ISO text or a datetime) looking `window` ahead and the rca tolerance back."""
    when = parse_utc(at, flag="--at") if isinstance(at, str) else at
    return Alert(when, parse_duration(window, flag="--window"), timedelta(minutes=float(settings.rca.time_tolerance_minutes)))


def process_alert(ctx: JobContext, alert: Alert) -> list[dict[str, Any]]:
    """Triggered RCA: the incident document(s) of the trouble around the alert, printed (top 5)."""
    lake, s = ctx.lake, ctx.settings
    engine = choose_engine(ctx.spark, s.spark.graph_engine)
    systems = [ctx.args.system] if getattr(ctx.args, "system", None) else None
    with ctx.stage("rca --at") as info:
        docs = alert_incidents(lake, RankingParams.from_settings(s.rca.to_dict()), ctx.run_id, alert=alert,
                               systems=systems, engine=engine, min_z=float(s.detection.models.zscore.threshold),
                               scratch_dir=lake.path("_scratch"), references=system_references(lake, systems, s))
        info["rows"] = len(docs)
        info["extra"] = f"{len(docs)} system(s) with trouble in {alert.span}, graph engine {engine}"
    if not docs:
        ctx.note(f"no anomaly in {alert.span}{' for ' + systems[0] if systems else ''}: nothing to rank")
    for doc in docs:
        print(f"{doc['system']}: root causes of the trouble around {to_iso(alert.at)} "
              f"({to_iso(doc['start'])} to {to_iso(doc['end'])}, {len(doc['services'])} services)")
        for c in doc["root_causes"]:
            print(f"  {c['rank']}. {c['service']:<32} score {c['score']:.3f}  {c['evidence']}")
    out = getattr(ctx.args, "alert_output", None)
    if out:
        write_jsonl([json.dumps(incident_document(d), sort_keys=True) for d in docs], out)
    return docs


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


def process(ctx: JobContext) -> None:
    """service_graph from the window's spans, then incidents from the window's anomalies."""
    lake, s = ctx.lake, ctx.settings
    only = ctx.systems or None
    anomalies = lake.read("anomalies", systems=only, window=ctx.window, required=True)
    spans = lake.read("spans", systems=only, window=ctx.window)
    features = lake.read("features", systems=only, window=ctx.window)
    systems = ctx.systems or sorted(
        {r[0] for r in anomalies.select("system").union(spans.select("system")).distinct().collect()}
    )
    ctx.systems = systems
    engine = choose_engine(ctx.spark, s.spark.graph_engine)
    with ctx.stage("graph") as info:
        graph = build_service_graph(spans, run_id=ctx.run_id)
        lake.overwrite("service_graph", graph, systems=systems)
        edges = (
            lake.read("service_graph", systems=systems)
            .select("system", "src", "dst")
            .union(graph_from_edge_features(features))
            .distinct()
            .localCheckpoint()
        )
        info["rows"] = edges.count()
    with ctx.stage("rca") as info:
        # consecutive windows of a service always link, whatever the sampling step (hourly series)
        tolerance_s = max(int(s.rca.time_tolerance_minutes * 60), widest_window_seconds(anomalies) or 0)
        scratch = lake.path("_scratch")  # the lake is storage the driver and every executor share
        keyed = group_incidents(anomalies, edges, tolerance_s=tolerance_s, engine=engine, scratch_dir=scratch)
        reach = system_reachability(edges, engine=engine, scratch_dir=scratch)
        # change events up to change_lookback before the window still explain incidents inside it
        before = timedelta(minutes=float(s.rca.change_lookback_minutes))
        changes = lake.read("anomalies", systems=systems, window=ctx.window.widened(before)).where(
            F.col("component") == "event"
        )
        params = RankingParams.from_settings(s.rca.to_dict())
        incidents = rank_incidents(keyed, changes, reach, params, ctx.run_id)
        lake.replace_window("incidents", incidents, systems=systems, window=ctx.window)
        info["rows"] = lake.read("incidents", systems=systems, window=ctx.window).count()
        info["extra"] = f"{len(systems)} system(s), graph engine {engine}"


def preflight(args: argparse.Namespace, settings: Any) -> None:
    if getattr(args, "at", None):
        alert_of(args.at, args.window, settings)  # a bad --at or --window stops before Spark starts
    require_tables(args.lake, "anomalies")


def execute(ctx: JobContext) -> None:
    if getattr(ctx.args, "at", None):
        process_alert(ctx, alert_of(ctx.args.at, ctx.args.window, ctx.settings))
        return
    if ctx.args.incremental:
        from meltrca import incremental as inc

        if inc.start_or_fail(ctx, ["features"]):
            with inc.stage_window(ctx, inc.rca_start(ctx)):
                process(ctx)
        return
    process(ctx)
