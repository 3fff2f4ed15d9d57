"""`meltrca run`: the whole pipeline on the embedded lake under --output.

ingest -> features -> detect -> rca -> explain (metadata, incidents, alerts, JSON export) ->
report, all in one Spark session, each stage printing its progress line and recorded in `runs`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from meltrca import incremental as inc
from meltrca.stages import detect, explain, features, ingest, rca, report
from meltrca.stages.common import add_detection_arguments, detection_overrides, require_folder

if TYPE_CHECKING:
    from meltrca.jobrunner import JobContext

DESCRIPTION = "Run ingest -> features -> detect -> rca -> explain -> export -> report into --output."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="DIR", help="bronze folder (from generate) or files for --source")
    p.add_argument("--source", metavar="YAML", help="source mapping for --input (default: bronze tables)")
    p.add_argument("--output", required=True, metavar="DIR", help="results folder (lake + JSON + report)")
    p.add_argument("--system", help="monitored system name for a --source mapping (overrides the mapping's)")
    add_detection_arguments(p)
    p.add_argument(
        "--incremental", action="store_true",
        help="only input after the last succeeded run (watermark in `runs`) up to --end or the newest data",
    )
    rca.add_alert_arguments(p, system=False)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return detection_overrides(args)


def lake_root(args: argparse.Namespace) -> str:
    return args.output


def process(
    ctx: JobContext, *, input: str, source: str | None = None, system: str | None = None, incremental: bool = False
) -> dict[str, Any] | None:
    """Every stage in order on ctx.lake; returns the summary that is also printed.

    incremental: only input after the watermark (see meltrca.incremental); None when nothing is new.
    """
    if incremental and not inc.begin(ctx):
        inc.nothing_new(ctx)
        return None
    ingest.process(ctx, source=source or "bronze", path=input, system=system)
    if incremental and not inc.close(ctx, inc.BRONZE_TABLES):
        inc.nothing_new(ctx)
        return None
    features.process(ctx)
    if incremental:
        with inc.stage_window(ctx, inc.detect_start(ctx)):
            detect.process(ctx, mode=inc.detect_mode(ctx))
        rca_from = inc.rca_start(ctx)
        with inc.stage_window(ctx, rca_from):
            rca.process(ctx)
        with inc.stage_window(ctx, inc.explain_start(ctx, rca_from)):
            explain.process(ctx, output=ctx.lake_root)
        with inc.stage_window(ctx, datetime(1970, 1, 1)):  # the report shows the whole lake
            report.process(ctx)
    else:
        detect.process(ctx, mode="fit_score")
        rca.process(ctx)
        explain.process(ctx, output=ctx.lake_root)
        report.process(ctx)
    summary = summarize(ctx)
    print_summary(summary)
    if getattr(ctx.args, "at", None):  # and an alert to explain: triggered RCA on the finished lake
        rca.process_alert(ctx, rca.alert_of(ctx.args.at, ctx.args.window, ctx.settings))
    return summary


def summarize(ctx: JobContext) -> dict[str, Any]:
    """Incidents found and their top root causes, most severe first."""
    incidents = ctx.lake.read("incidents", systems=ctx.systems or None, window=ctx.window)
    order = F.when(F.col("severity") == "critical", 0).when(F.col("severity") == "high", 1).when(
        F.col("severity") == "medium", 2
    ).otherwise(3)
    rows = incidents.orderBy(order, "start").select("system", "incident_id", "start", "severity", "root_causes").collect()
    return {
        "output": ctx.lake_root,
        "anomalies": ctx.counts.get("anomalies"),
        "incidents": len(rows),
        "top": [
            {
                "system": r["system"],
                "incident_id": r["incident_id"],
                "start": r["start"],
                "severity": r["severity"],
                "root_cause": r["root_causes"][0]["service"] if r["root_causes"] else None,
                "indicator": r["root_causes"][0]["indicator"] if r["root_causes"] else None,
            }
            for r in rows
        ],
    }


def print_summary(summary: dict[str, Any], limit: int = 10) -> None:
    out = sys.stdout
    print(f"\nmeltrca run: {summary['incidents']} incident(s) in {summary['output']}", file=out)
    for t in summary["top"][:limit]:
        print(
            f"  {t['severity']:<8} {t['start']:%Y-%m-%d %H:%M}  {t['system']:<12} root cause: {t['root_cause']}"
            f" ({t['indicator']})",
            file=out,
        )
    if len(summary["top"]) > limit:
        print(f"  ... and {len(summary['top']) - limit} more (see incidents.jsonl / report.html)", file=out)


def preflight(args: argparse.Namespace, settings: Any) -> None:
    if args.source:
        from meltrca.ingest import load_mapping

        load_mapping(args.source)
    if args.at:
        rca.alert_of(args.at, args.window, settings)  # a bad --at or --window stops before the pipeline runs
    require_folder(args.input, "input folder")


def execute(ctx: JobContext) -> None:
    process(ctx, input=ctx.args.input, source=ctx.args.source, system=ctx.args.system, incremental=ctx.args.incremental)
