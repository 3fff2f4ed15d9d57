"""`meltrca report`: one self-contained report.html for a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meltrca.errors import InputError
from meltrca.report import ReportParams, build_report, local_results_dir
from meltrca.stages.common import require_tables

if TYPE_CHECKING:
    from meltrca.jobrunner import JobContext

DESCRIPTION = "Write a self-contained HTML report (incidents, timelines, dependency graph, evaluation)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR", help="results folder of `meltrca run`")
    p.add_argument(
        "--max-incidents", type=int, default=ReportParams.max_incidents, metavar="N",
        help=f"incidents shown in full, most severe first (default {ReportParams.max_incidents})",
    )
    p.add_argument(
        "--context-minutes", type=float, default=ReportParams.context_minutes, metavar="M",
        help=f"minutes plotted before and after each incident (default {ReportParams.context_minutes:g})",
    )


def lake_root(args: argparse.Namespace) -> str:
    return args.results


def process(
    ctx: JobContext,
    *,
    max_incidents: int = ReportParams.max_incidents,
    context_minutes: float = ReportParams.context_minutes,
) -> Path:
    """report.html in the results folder for ctx.systems (all when empty) and ctx.window."""
    if max_incidents < 1:
        raise InputError(f"--max-incidents must be at least 1 (got {max_incidents})")
    if context_minutes < 0:
        raise InputError(f"--context-minutes must not be negative (got {context_minutes:g})")
    results = local_results_dir(ctx.lake_root or "")
    if not results.is_dir():
        raise InputError(f"results folder not found: {results}")
    params = ReportParams(
        max_incidents=max_incidents,
        context_minutes=context_minutes,
        change_lookback_minutes=float(ctx.settings.rca.change_lookback_minutes),
    )
    with ctx.stage("report") as info:
        path, data = build_report(ctx.lake, systems=ctx.systems or None, window=ctx.window, params=params)
        info["rows"] = len(data.incidents)
        info["extra"] = str(path)
        ctx.count("report_incidents", len(data.incidents))
    print(f"report: {path.resolve()}")
    return path


def preflight(args: argparse.Namespace, settings: Any) -> None:
    require_tables(args.results, "incidents")


def execute(ctx: JobContext) -> None:
    process(ctx, max_incidents=ctx.args.max_incidents, context_minutes=ctx.args.context_minutes)
