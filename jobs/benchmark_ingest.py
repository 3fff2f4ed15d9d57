"""Throughput of `meltrca ingest` (bronze) and `meltrca features`: rows/s and the split of time.

    python jobs/benchmark_ingest.py --services 20 --duration 24 --systems 2 \
        --requests-per-minute 300 --json bench/ingest.json

Generates a bronze folder with `meltrca generate` (or reads one given with --input), ingests it
into a fresh lake (validation, quarantine, dedup, Delta writes), then builds the features
(templates, metric/log/trace/event features). Rows/s = bronze rows in / seconds of the stage.
The load average before and after is recorded: on a shared machine the figure only means
something next to what else was running.
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
from meltrca.ingest import ingest_bronze_dir
from meltrca.jobrunner import JobContext
from meltrca.logs import setup_logging
from meltrca.spark import build_session
from meltrca.stages import features as features_stage
from meltrca.timewindow import TimeWindow, utcnow


def _ctx(job: str, settings, spark, lake_root: str, **args) -> JobContext:
    return JobContext(
        job=job, args=argparse.Namespace(master=None, verbose=False, debug=False, **args), settings=settings,
        run_id=f"bench-{job}-{utcnow():%Y%m%dT%H%M%S}", window=TimeWindow(), lake_root=lake_root, _spark=spark,
    )


def generate(settings, spark, out: Path) -> tuple[float, dict[str, int]]:
    from meltrca.stages.generate import TABLES_WRITTEN, process

    ctx = JobContext(job="generate", args=argparse.Namespace(output=str(out), end=None), settings=settings,
                     run_id=f"bench-generate-{utcnow():%Y%m%dT%H%M%S}", window=TimeWindow(), _spark=spark)
    t0 = time.perf_counter()
    process(ctx, output=str(out))
    return time.perf_counter() - t0, {t: ctx.counts[t] for t in TABLES_WRITTEN}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", help="an existing generated bronze folder (skips generation)")
    p.add_argument("--services", type=int, default=20)
    p.add_argument("--duration", type=float, default=24.0, help="hours")
    p.add_argument("--systems", type=int, default=2)
    p.add_argument("--faults", type=int, default=10)
    p.add_argument("--requests-per-minute", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--master", default="local[*]")
    p.add_argument("--work", default="/tmp/meltrca-bench-ingest", help="folder for the generated data and the lake")
    p.add_argument("--json", default="bench/ingest.json", help="where to write the figures")
    p.add_argument("--keep", action="store_true", help="keep the generated data and the lake")
    args = p.parse_args(argv)

    overrides = {
        "generate.services": args.services, "generate.duration": args.duration, "generate.systems": args.systems,
        "generate.faults": args.faults, "generate.requests_per_minute": args.requests_per_minute,
        "generate.seed": args.seed, "generate.format": "parquet",
    }
    settings = load_settings(overrides=overrides)
    setup_logging(settings.logging.level)
    work = Path(args.work)
    lake = work / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    spark = build_session(settings, master=args.master, app_name="meltrca-benchmark-ingest")
    generated = None
    if args.input:
        source = Path(args.input)
    else:
        source = work / "input"
        shutil.rmtree(source, ignore_errors=True)
        gen_seconds, gen_rows = generate(settings, spark, source)
        generated = {"seconds": round(gen_seconds, 1), "rows_per_table": gen_rows}

    load_before = os.getloadavg()
    ingest_ctx = _ctx("ingest", settings, spark, str(lake), source="bronze", path=str(source))
    t0 = time.perf_counter()
    report = ingest_bronze_dir(ingest_ctx, str(source))
    ingest_s = time.perf_counter() - t0
    load_mid = os.getloadavg()
    features_ctx = _ctx("features", settings, spark, str(lake), lake=str(lake), window=None)
    t0 = time.perf_counter()
    features_stage.process(features_ctx)
    features_s = time.perf_counter() - t0
    load_after = os.getloadavg()

    rows_in = sum(c.rows_in for c in report.signals.values())
    accepted = sum(c.accepted for c in report.signals.values())
    total = ingest_s + features_s
    result = {
        "command": "python jobs/benchmark_ingest.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "master": spark.sparkContext.master,
        "cores": os.cpu_count(),
        "generated": generated,
        "ingest": {
            "rows_in": rows_in,
            "rows_accepted": accepted,
            "per_signal": {s: vars(c) for s, c in report.signals.items()},
            "seconds": round(ingest_s, 1),
            "rows_per_second": round(rows_in / ingest_s),
            "timings": ingest_ctx.timings,
        },
        "features": {
            "bronze_rows_in": accepted,
            "feature_rows": features_ctx.counts.get("features"),
            "log_lines_templated": features_ctx.counts.get("templates"),
            "seconds": round(features_s, 1),
            "rows_per_second": round(accepted / features_s),
            "timings": features_ctx.timings,
        },
        "time_split": {"ingest": round(ingest_s / total, 3), "features": round(features_s / total, 3)},
        "load_average": {"before": [round(x, 2) for x in load_before], "between": [round(x, 2) for x in load_mid],
                         "after": [round(x, 2) for x in load_after]},
        "measured_at": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    spark.stop()
    if not args.keep:
        shutil.rmtree(lake, ignore_errors=True)
        if not args.input:
            shutil.rmtree(work / "input", ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"ingest   {rows_in:>12,} rows in {ingest_s:8.1f} s = {rows_in / ingest_s:>10,.0f} rows/s  ({100 * ingest_s / total:.0f}% of the time)")
    print(f"features {accepted:>12,} rows in {features_s:8.1f} s = {accepted / features_s:>10,.0f} rows/s  "
          f"({100 * features_s / total:.0f}%), {result['features']['feature_rows']:,} feature rows")
    print(f"load average {load_before[0]:.1f} -> {load_mid[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores; "
          f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
