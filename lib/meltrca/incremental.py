"""Scheduled incremental runs (``--incremental``): watermark, window end, per-stage look-back.

Semantics (README "Scheduled, incremental runs"):

- **Watermark** = ``input_end`` of the newest *succeeded* run of the same job in ``runs``
  (failed runs, and runs killed before they could record anything — left ``running`` — never
  move it). The run's input window is ``[watermark, end)``; without a watermark (first run) it
  is ``[--start, end)``.
- **End** = ``--end``, else the boundary of the feature window holding the newest row (the
  newest window is included). A scheduler that lets data trickle in should pass ``--end`` (e.g.
  Airflow's ``data_interval_end``) so only closed windows are processed.
- Nothing newer than the watermark: the job prints one "nothing new" line and exits 0.
- **Look-back**: detect scores windows with ``context_windows`` windows of history before them
  and, because a window's verdict also depends on a few *later* windows (persistence filter,
  level-shift run length), re-scores the last ``context_windows`` windows before the watermark
  (``detect_start``); rca rebuilds every incident that reaches into that range (``rca_start``,
  a fixed point over incident spans); explain redoes metadata whose correlation context reaches
  it (``explain_start``). All writes are window-scoped replaces, so this overlap is idempotent.
- **Models**: an incremental detect fits only when the lake holds no models yet (the first run:
  baseline = the first detection.baseline_fraction of its window); later runs score with the
  saved models (``--score-only``), so a window's anomalies do not depend on where runs split.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from meltrca.errors import ConfigError
from meltrca.runs import last_successful_window_end
from meltrca.timewindow import TimeWindow, to_iso

if TYPE_CHECKING:
    from meltrca.config import Settings
    from meltrca.io import Lake
    from meltrca.jobrunner import JobContext

BRONZE_TABLES = ("metrics", "logs", "spans", "events")


def window_seconds(settings: Settings) -> int:
    from meltrca.features import window_seconds as parse

    return int(parse(settings.features.window))


def context_windows(plan: dict[str, Any]) -> int:
    """Windows of history a scored window needs (and later windows that can change its verdict):
    LSTM sequence context + level-shift run length + persistence span."""
    return (
        max(int(plan["lstm"]["sequence_length"]) - 1, 0)
        + max(int(plan["level_shift_windows"]) - 1, 0)
        + max(int(plan["min_duration_windows"]) - 1, 0)
    )


def _context(settings: Settings) -> timedelta:
    d = settings.detection
    plan = {
        "lstm": {"sequence_length": d.models.lstm["sequence_length"]},
        "level_shift_windows": d.level_shift_windows,
        "min_duration_windows": d.min_duration_windows,
    }
    return timedelta(seconds=window_seconds(settings) * context_windows(plan))


def ceil_window(t: datetime, seconds: int) -> datetime:
    """The end of the feature window holding `t`."""
    epoch = datetime(1970, 1, 1)
    return epoch + timedelta(seconds=(int((t - epoch).total_seconds() // seconds) + 1) * seconds)


def newest(lake: Lake, tables: Sequence[str], *, systems: Sequence[str] | None, after: datetime | None) -> datetime | None:
    """Newest time (time column) at or after `after` over some lake tables."""
    from pyspark.sql import functions as F

    best: datetime | None = None
    for table in tables:
        if not lake.exists(table):
            continue
        col = lake.spec(table).time_column
        row = lake.read(table, systems=systems, window=TimeWindow(after, None)).agg(F.max(col).alias("t")).first()
        if row and row["t"] is not None and (best is None or row["t"] > best):
            best = row["t"]
    return best


def begin(ctx: JobContext) -> bool:
    """Set ctx.window to [watermark (or --start), --end); False when --end is not after the watermark."""
    mark = last_successful_window_end(ctx.lake, ctx.job)
    ctx.watermark = mark
    start = mark if mark is not None else ctx.window.start
    end = ctx.window.end
    if start is not None and end is not None and end <= start:
        return False
    ctx.window = TimeWindow(start, end)
    return True


def close(ctx: JobContext, tables: Sequence[str]) -> bool:
    """Fix an open window end at the newest data in `tables`; False when nothing is newer than the start."""
    found = newest(ctx.lake, tables, systems=ctx.systems or None, after=ctx.window.start)
    if found is None:
        return False
    if ctx.window.end is None:
        ctx.window = TimeWindow(ctx.window.start, ceil_window(found, window_seconds(ctx.settings)))
    return True


def nothing_new(ctx: JobContext) -> None:
    """The one line a scheduler log shows for an idle run (exit code stays 0)."""
    mark = getattr(ctx, "watermark", None)
    print(
        f"meltrca {ctx.job}: nothing new after the watermark {to_iso(mark) or '-'}"
        f"{' (up to --end ' + to_iso(ctx.window.end) + ')' if ctx.window.end else ''}; up to date",
        file=sys.stdout,
        flush=True,
    )
    ctx.count("new_windows", 0)


def start_or_fail(ctx: JobContext, tables: Sequence[str]) -> bool:
    """begin + close for a stage reading lake tables; False (after printing) when nothing is new."""
    if not begin(ctx) or not close(ctx, tables):
        nothing_new(ctx)
        return False
    return True


def detect_start(ctx: JobContext) -> datetime | None:
    """First window an incremental detect re-emits: context_windows before the watermark."""
    mark = getattr(ctx, "watermark", None)
    return None if mark is None else mark - _context(ctx.settings)


def _cover_incidents(ctx: JobContext, start: datetime, slack: timedelta) -> datetime:
    """Move `start` back to the start of every incident that reaches it (within `slack`), to a fixed point."""
    if not ctx.lake.exists("incidents"):
        return start
    spans = [
        (r["start"], r["end"] or r["start"])
        for r in ctx.lake.read("incidents", systems=ctx.systems or None).select("start", "end").collect()
    ]
    changed = True
    while changed:
        changed = False
        for lo, hi in spans:
            if lo < start <= hi + slack:
                start, changed = lo, True
    return start


def rca_start(ctx: JobContext) -> datetime | None:
    """Start of the earliest incident the re-scored windows can join (anomalies within gap + tolerance)."""
    first = detect_start(ctx)
    if first is None:
        return None
    s = ctx.settings.rca
    gap = timedelta(minutes=float(s.incident_gap_minutes) + float(s.time_tolerance_minutes))
    return _cover_incidents(ctx, first - gap, gap)


def explain_start(ctx: JobContext, rca_from: datetime | None) -> datetime | None:
    """Metadata whose correlation context (± correlation_context) reaches the changed range, and the
    whole of every incident those anomalies belong to."""
    first = detect_start(ctx)
    if first is None:
        return None
    tolerance = timedelta(minutes=float(ctx.settings.rca.time_tolerance_minutes))
    start = first - timedelta(minutes=float(ctx.settings.explain.correlation_context_minutes)) - tolerance
    if rca_from is not None:
        start = min(start, rca_from)
    return _cover_incidents(ctx, start, tolerance)


@contextmanager
def stage_window(ctx: JobContext, start: datetime | None) -> Iterator[None]:
    """Run a stage over [start, ctx.window.end) and put the run's window back afterwards."""
    saved = ctx.window
    if start is not None and saved.start is not None and start < saved.start:
        ctx.window = TimeWindow(start, saved.end)
    try:
        yield
    finally:
        ctx.window = saved


def detect_mode(ctx: JobContext, requested: str = "fit_score") -> str:
    """Score with the saved models once there are any (never refit per increment)."""
    if requested != "fit_score":
        return requested
    if ctx.lake.exists("models") and ctx.lake.read("models", systems=ctx.systems or None).limit(1).count():
        return "score"
    return "fit_score"


def check_flags(args: Any) -> None:
    if getattr(args, "incremental", False) and getattr(args, "fit", False):
        raise ConfigError("--incremental scores new windows; fit a baseline with --fit --start/--end instead")
