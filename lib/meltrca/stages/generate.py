"""`meltrca generate`: synthetic MELT telemetry with injected faults and labels.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from meltrca.errors import ConfigError
from meltrca.jobrunner import JobContext

DESCRIPTION = "Generate synthetic MELT telemetry (metrics, logs, spans, events) with labelled faults."
TABLES_WRITTEN = ("metrics", "spans", "logs", "events")
SIGNAL_OF_TABLE = {"metrics": "metrics", "spans": "traces", "logs": "logs", "events": "events"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--services", type=int, help="number of services per system (default 3)")
    p.add_argument("--duration", type=float, help="hours of telemetry (default 12)")
    p.add_argument("--interval", type=int, help="minutes between metric samples (default 1)")
    p.add_argument("--faults", type=int, help="faults to inject per system (default 3; after a fault-free first 25%%, "
                                             "10-40 min each, 30 min apart: more than fit is an error)")
    p.add_argument("--seed", type=int, help="random seed (same seed, same output)")
    p.add_argument("--systems", type=int, help="number of monitored systems to generate (named shop-1, shop-2, ...)")
    p.add_argument("--format", choices=["parquet", "delta"], help="table format (default delta)")
    p.add_argument("--signals", type=lambda v: [x.strip() for x in v.split(",") if x.strip()], metavar="LIST",
                   help="signals to write, comma-separated from metrics,logs,traces,events (default all; the others "
                        "are written empty: --signals metrics makes a metrics-only system)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="output folder: metrics/ spans/ logs/ events/ tables, labels.json, topology.json "
                        "(--start sets the first timestamp, default generate.start)")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {f"generate.{k}": getattr(args, k, None)
           for k in ("services", "duration", "interval", "faults", "seed", "systems", "format", "signals")}
    if args.start:
        out["generate.start"] = args.start  # --start sets the first timestamp of the timeline
    return out


def process(ctx: JobContext, *, output: str) -> None:
    """Plan (driver), then generate the bronze tables on Spark, then write the ground truth.

    Every impossible request (no room for the faults, bad window) fails while planning, before
    Spark starts and before anything is written."""
    from meltrca.generate.distributed import events_frame, table_frame
    from meltrca.generate.labels import labels, topology_doc
    from meltrca.generate.plan import build_plan
    from meltrca.io import read_table_dir, write_jsonl, write_table_dir

    if ctx.args is not None and getattr(ctx.args, "end", None):
        raise ConfigError("generate takes --start and --duration; --end is not used")
    gen = ctx.settings.generate
    with ctx.stage("plan") as info:
        plan = build_plan(gen)
        truth = labels(plan)
        faults = sum(len(s.faults) for s in plan.systems)
        info["extra"] = (f"{len(plan.systems)} system(s) x {gen.services} services, {plan.minutes / 60:g} h from "
                         f"{plan.start}, {faults} fault(s)")
    out = Path(output)
    plan_json = plan.to_json()
    fmt = gen.format
    for table in TABLES_WRITTEN:
        with ctx.stage(table) as info:
            df = events_frame(ctx.spark, plan) if table == "events" else table_frame(ctx.spark, plan, plan_json, table)
            if SIGNAL_OF_TABLE[table] not in gen.signals:
                df = df.limit(0)  # not a signal this system exports: the table exists, empty
            write_table_dir(df, out / table, fmt, partition_by=("date",))
            if fmt == "parquet" and not any((out / table).glob("date=*/*.parquet")):
                # no rows, so no partition folder: leave one schema-only file so readers see the columns
                write_table_dir(df.limit(0).coalesce(1), out / table, fmt)
            info["rows"] = read_table_dir(ctx.spark, out / table, fmt).count()
    write_jsonl([json.dumps(topology_doc(plan), indent=2)], out / "topology.json")
    write_jsonl([json.dumps(truth, indent=2)], out / "labels.json")
    ctx.count("labels", len(truth))
    ctx.count("rows", sum(ctx.counts.get(t, 0) for t in TABLES_WRITTEN))


def execute(ctx: JobContext) -> None:
    process(ctx, output=ctx.args.output)
