"""`meltrca rca`: service graph, cross-signal incidents and ranked root causes."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from meltrca.graph import choose_engine
from meltrca.rca.incidents import group_incidents, rank_incidents, system_reachability
from meltrca.rca.ranking import RankingParams
from meltrca.rca.service_graph import build_service_graph, graph_from_edge_features
from meltrca.stages.common import INCREMENTAL_HELP, add_lake_argument, require_tables, widest_window_seconds

if TYPE_CHECKING:
    from meltrca.jobrunner import JobContext

DESCRIPTION = "Group anomalies into incidents and rank their root-cause services along the dependency graph."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)
    p.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)


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
    require_tables(args.lake, "anomalies")


def execute(ctx: JobContext) -> None:
    if ctx.args.incremental:
        from meltrca import incremental as inc

        if inc.start_or_fail(ctx, ["features"]):
            with inc.stage_window(ctx, inc.rca_start(ctx)):
                process(ctx)
        return
    process(ctx)
