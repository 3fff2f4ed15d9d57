"""`meltrca queue`: deliver pending alerts from the `alerts` outbox to a sink."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from meltrca.alerts import deliver_pending, parse_sink
from meltrca.errors import MeltrcaError
from meltrca.explain.http import RetryPolicy
from meltrca.stages.common import require_tables

if TYPE_CHECKING:
    from meltrca.jobrunner import JobContext

DESCRIPTION = "Deliver pending incident alerts to a JSON-lines file or an HTTP webhook (at-least-once, deduplicated)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR", help="results folder / lake root holding `alerts`")
    p.add_argument("--sink", required=True, metavar="SINK", help="jsonl:PATH or webhook:URL")


def lake_root(args: argparse.Namespace) -> str:
    return args.results


def retry_policy(settings: Any) -> RetryPolicy:
    a = settings.alerts
    return RetryPolicy(attempts=a.max_attempts, backoff_seconds=a.backoff_seconds, timeout_seconds=a.timeout_seconds)


def preflight(args: argparse.Namespace, settings: Any) -> None:
    parse_sink(args.sink, policy=retry_policy(settings))
    require_tables(args.results, "alerts")


def execute(ctx: JobContext) -> None:
    process(ctx, sink=ctx.args.sink)


def process(ctx: JobContext, *, sink: str) -> None:
    """Deliver every pending alert; exit non-zero (after saving progress) when some stay pending."""
    a = ctx.settings.alerts
    target = parse_sink(sink, policy=retry_policy(ctx.settings))
    with ctx.stage("queue") as info:
        report = deliver_pending(ctx.lake, target, systems=ctx.systems or None, commit_every=a.commit_every)
        info["rows"] = report.delivered
        info["extra"] = f"{report.pending} pending -> {target.description}"
    ctx.count("alerts_delivered", report.delivered)
    ctx.count("alerts_pending", report.pending)
    if report.pending:
        raise MeltrcaError(
            f"{report.delivered} alert(s) delivered, {report.pending} still pending "
            f"(last error: {report.last_error}); they are retried on the next run"
        )
