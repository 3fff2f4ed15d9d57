"""Throughput of `meltrca generate`: rows/s for a large generation (prints figures, writes JSON).

    python jobs/benchmark_generate.py --services 20 --duration 48 --systems 2 \
        --requests-per-minute 600 --output /tmp/bench-gen --json bench/generate.json

The row count is set by the volume knobs (traces per minute at the front door, services,
hours, systems). The load average before and after is recorded because the machine may be
shared: the figure is only meaningful next to what else was running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from meltrca.config import load_settings
from meltrca.jobrunner import JobContext
from meltrca.logs import setup_logging
from meltrca.spark import build_session
from meltrca.stages.generate import TABLES_WRITTEN, process
from meltrca.timewindow import TimeWindow, utcnow


def tree_cpu_seconds(root: int) -> float | None:
    """User+system CPU seconds of a process and all its descendants (Linux /proc; None elsewhere).

    On a shared machine this says how much work the job really got, whatever the wall clock."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(fields[1])
        ticks[int(d.name)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    tree, todo = {root}, [root]
    while todo:
        p = todo.pop()
        for child, par in parent.items():
            if par == p and child not in tree:
                tree.add(child)
                todo.append(child)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=20)
    p.add_argument("--duration", type=float, default=48.0, help="hours")
    p.add_argument("--systems", type=int, default=2)
    p.add_argument("--faults", type=int, default=10)
    p.add_argument("--requests-per-minute", type=int, default=600, help="sampled traces per minute at peak")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--format", choices=["delta", "parquet"], default="delta")
    p.add_argument("--master", default="local[*]")
    p.add_argument("--output", default="/tmp/meltrca-bench-generate")
    p.add_argument("--json", default="bench/generate.json", help="where to write the figures")
    p.add_argument("--keep", action="store_true", help="keep the generated data")
    args = p.parse_args(argv)

    overrides = {
        "generate.services": args.services, "generate.duration": args.duration, "generate.systems": args.systems,
        "generate.faults": args.faults, "generate.requests_per_minute": args.requests_per_minute,
        "generate.seed": args.seed, "generate.format": args.format,
    }
    settings = load_settings(overrides=overrides)
    setup_logging(settings.logging.level)
    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)
    load_before = os.getloadavg()
    spark = build_session(settings, master=args.master, app_name="meltrca-benchmark-generate")
    ctx = JobContext(job="generate", args=argparse.Namespace(output=str(out), end=None), settings=settings,
                     run_id=f"bench-{utcnow():%Y%m%dT%H%M%S}", window=TimeWindow(), _spark=spark)
    t0 = time.perf_counter()
    process(ctx, output=str(out))
    seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    cpu = tree_cpu_seconds(os.getpid())  # before stop(): the JVM and its Python workers are alive
    rows = sum(ctx.counts[t] for t in TABLES_WRITTEN)
    bytes_written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    result = {
        "command": "python jobs/benchmark_generate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "parameters": {k.split(".", 1)[1]: v for k, v in overrides.items()},
        "master": spark.sparkContext.master,
        "cores": os.cpu_count(),
        "rows": rows,
        "rows_per_table": {t: ctx.counts[t] for t in TABLES_WRITTEN},
        "seconds": round(seconds, 1),
        "seconds_per_table": {t: ctx.timings[t] for t in TABLES_WRITTEN},
        "rows_per_second": round(rows / seconds),
        "cpu_seconds": cpu,
        "rows_per_cpu_second": round(rows / cpu) if cpu else None,
        "bytes_written": bytes_written,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "measured_at": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    spark.stop()
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"generated {rows:,} rows in {seconds:,.1f} s = {rows / seconds:,.0f} rows/s "
          f"({args.format}, {result['master']}, load average {load_before[0]:.1f} -> {load_after[0]:.1f})")
    if cpu:
        print(f"  the job used {cpu:,.0f} CPU seconds: {rows / cpu:,.0f} rows per CPU second")
    for t in TABLES_WRITTEN:
        print(f"  {t:<8} {ctx.counts[t]:>14,} rows {ctx.timings[t]:>8.1f} s")
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
