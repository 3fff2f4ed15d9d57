"""The `runs` table: one row per job run (parameters, window, row counts, status, timings)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from meltrca.io import Lake
from meltrca.schemas import RUNS
from meltrca.timewindow import utcnow

if TYPE_CHECKING:
    from datetime import datetime

    from meltrca.jobrunner import JobContext


def write_run(ctx: JobContext, status: str, error: str | None = None) -> None:
    """Upsert the run's row; called at start (running) and at the end (succeeded/failed)."""
    params = {k: v for k, v in vars(ctx.args).items() if k not in ("config_text",)}
    row = (
        ctx.run_id,
        ctx.job,
        sorted(ctx.systems),
        json.dumps(params, default=str, sort_keys=True),
        ctx.window.start,
        ctx.window.end,
        {k: int(v) for k, v in ctx.counts.items()},
        status,
        ctx.started_at,
        None if status == "running" else utcnow(),
        {k: float(v) for k, v in ctx.timings.items()},
        error,
        list(ctx.notes),
    )
    df = ctx.spark.createDataFrame([row], RUNS)
    Lake(ctx.spark, ctx.lake_root).merge("runs", df, keys=["run_id"])


def last_successful_window_end(lake: Lake, job: str) -> datetime | None:
    """The incremental watermark: end of the newest succeeded run of `job`, if any."""
    if not lake.exists("runs"):
        return None
    from pyspark.sql import functions as F

    row = (
        lake.read("runs")
        .where((F.col("job") == job) & (F.col("status") == "succeeded"))
        .agg(F.max("input_end").alias("end"))
        .first()
    )
    return row["end"] if row else None

