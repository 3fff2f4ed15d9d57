"""Detector throughput: Spark local[1] vs local[2] on the same data, and a plain single-process loop.

    .venv/bin/python jobs/benchmark_detect.py [--services 24] [--hours 48] [--features 40]
        [--detectors zscore,isolation_forest,lstm] [--output bench/detect_benchmark.json]

A synthetic silver `features` table (services x one-minute windows x features, daily seasonality,
a few injected faults) is written once to a temporary Delta lake. For each detector, each Spark
master runs `meltrca detect` (fit on the first half, score everything, write anomalies and models)
in its own process; the loop runs the very same per-service code (meltrca.detectors.service)
over pandas groups in one Python process, without Spark, Delta or model files. Printed and
written as JSON: seconds, series/s (service groups and feature series) and rows/s per setup, and
the overhead of Spark local[1] over the loop. Numbers depend on what else runs on the machine
(the load average is recorded). Each setup also reports a digest of the anomalies it found: the
loop, local[1] and local[2] must find the same rows with bit-identical scores (partitioning and
the executor that fits a service must not matter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

MASTERS = ("local[1]", "local[2]")


def synthetic_features(services: int, hours: float, features: int, seed: int = 5) -> pd.DataFrame:
    """Long feature rows shaped like the silver table (metric/log/trace families, a few faults)."""
    rng = np.random.default_rng(seed)
    n = int(hours * 60)
    t0 = datetime(2024, 9, 26)
    starts = pd.date_range(t0, periods=n, freq="1min")
    day = np.sin(2 * np.pi * np.arange(n) / 1440)
    names = [
        ("metric", "request_rate_mean"), ("metric", "cpu_usage_mean"), ("metric", "memory_usage_mean"),
        ("trace", "latency_p95_ms"), ("trace", "error_ratio"), ("log", "ERROR_count"), ("log", "INFO_count"),
    ]
    names += [("metric", f"gauge_{i}_mean") for i in range(max(0, features - len(names)))]
    frames = []
    for s in range(services):
        rate = 100 * (1 + 0.5 * day) + rng.normal(0, 3, n)
        for j, (comp, feat) in enumerate(names[:features]):
            if feat == "request_rate_mean":
                v = rate
            elif feat == "cpu_usage_mean":
                v = 5 + 0.3 * rate + rng.normal(0, 1, n)
            elif feat in ("ERROR_count", "INFO_count"):
                v = rng.poisson(np.full(n, 0.3) if feat == "ERROR_count" else rate / 4).astype(float)
            elif feat == "error_ratio":
                v = np.abs(rng.normal(0.01, 0.004, n))
            else:
                v = 50 + 10 * j + rng.normal(0, 2, n)
            v = v.copy()
            if s % 4 == 0 and j in (1, 3):  # a fault on every fourth service, late in the window
                v[int(n * 0.75) : int(n * 0.75) + 20] *= 3
            frames.append(pd.DataFrame({
                "system": "bench", "service": f"svc-{s:03d}", "window_start": starts,
                "window_end": starts + timedelta(minutes=1), "component": comp, "feature": feat, "value": v,
            }))
    df = pd.concat(frames, ignore_index=True)
    df["date"] = df["window_start"].dt.date
    return df


def anomaly_digest(records: list[list[object]]) -> str:
    """sha1 over sorted [service, window ISO, component, feature, ensemble score repr] of the signal
    anomalies: equal digests = the same anomalies with bit-identical scores."""
    lines = sorted("|".join(map(str, r[:4])) + "|" + repr(float(r[4])) for r in records)
    return hashlib.sha1("\n".join(lines).encode("utf-8")).hexdigest()


def run_loop(features: pd.DataFrame, detector: str) -> dict[str, object]:
    """Seconds to fit and score every service with the detector code alone (no Spark), and the
    digest of what it found."""
    from meltrca.config import load_settings
    from meltrca.detection import detection_plan
    from meltrca.detectors.service import baseline_mask, fit_baseline_series, score_service, series_seed, to_matrix

    settings = load_settings(environ={}, overrides={"detection.enabled": [detector]})
    plan = detection_plan(settings, window_seconds=60)
    found: list[list[object]] = []
    t0 = time.perf_counter()
    for (system, service), group in features.groupby(["system", "service"], sort=True):
        X = to_matrix(group, 60)
        fitted = fit_baseline_series(group, X, plan, series_seed(system, service),
                                     baseline_mask(X.index, plan["baseline_fraction"]))
        rows = score_service(X, fitted.detectors, plan, cold_start=fitted.cold_start)
        found += [[service, f"{r.window_start:%Y-%m-%dT%H:%M:%S}", r.component, r.feature, r.ensemble_score]
                  for r in rows.itertuples()]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "anomalies": len(found), "digest": anomaly_digest(found)}


def run_spark_child(lake: str, master: str, detector: str) -> dict[str, float]:
    """One `detect` run in a fresh process (its own session), timed around the stage."""
    code = (
        "import json, sys, time, argparse\n"
        "from meltrca.config import load_settings\n"
        "from meltrca.logs import setup_logging\n"
        "from meltrca.spark import build_session\n"
        "from meltrca.jobrunner import JobContext\n"
        "from meltrca.timewindow import TimeWindow\n"
        "from meltrca.stages import detect\n"
        "lake, master, det = sys.argv[1:4]\n"
        "setup_logging('WARNING')\n"
        "s = load_settings(environ={}, overrides={'detection.enabled': [det]})\n"
        "spark = build_session(s, master=master, app_name='bench-detect',"
        " extra={'spark.ui.enabled': 'false', 'spark.sql.shuffle.partitions': '4'})\n"
        "args = argparse.Namespace(master=master, verbose=False, fit=False, score_only=False)\n"
        "ctx = JobContext(job='detect', args=args, settings=s, run_id='bench-' + det, window=TimeWindow(), lake_root=lake)\n"
        "ctx._spark = spark\n"
        "spark.range(1).count()\n"
        "t0 = time.perf_counter()\n"
        "detect.process(ctx, mode='fit_score')\n"
        "total = time.perf_counter() - t0\n"
        "from meltrca.io import Lake\n"
        "found = [[r.service, r.window_start.strftime('%Y-%m-%dT%H:%M:%S'), r.component, r.feature, r.ensemble_score]\n"
        "         for r in Lake(spark, lake).read('anomalies').where(\"component != 'event'\").collect()]\n"
        "print('RESULT ' + json.dumps({'seconds': total, 'found': found, **{k: v for k, v in ctx.timings.items()}}))\n"
        "spark.stop()\n"
    )
    env = {**os.environ, "TZ": "UTC"}  # collected window starts are local datetimes: keep them UTC
    res = subprocess.run([sys.executable, "-c", code, lake, master, detector], capture_output=True, text=True,
                         check=False, env=env)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[len("RESULT "):])
            found = out.pop("found")
            return {**out, "anomalies": len(found), "digest": anomaly_digest(found)}
    raise RuntimeError(f"benchmark child failed ({master}, {detector}): {res.stderr.strip().splitlines()[-1:]}")


def write_lake(features: pd.DataFrame, lake: str) -> None:
    from meltrca.config import load_settings
    from meltrca.io import Lake
    from meltrca.logs import setup_logging
    from meltrca.schemas import FEATURES
    from meltrca.spark import build_session

    setup_logging("WARNING")
    spark = build_session(load_settings(environ={}), master="local[2]", app_name="bench-detect-data",
                          extra={"spark.ui.enabled": "false"})
    Lake(spark, lake).overwrite("features", spark.createDataFrame(features[FEATURES.fieldNames()], FEATURES))
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=24)
    p.add_argument("--hours", type=float, default=48.0)
    p.add_argument("--features", type=int, default=40)
    p.add_argument("--detectors", default="zscore,isolation_forest,lstm")
    p.add_argument("--output", default="bench/detect_benchmark.json")
    args = p.parse_args(argv)

    features = synthetic_features(args.services, args.hours, args.features)
    rows = len(features)
    series = args.services * args.features
    result: dict[str, object] = {
        "data": {"services": args.services, "hours": args.hours, "features_per_service": args.features,
                 "feature_series": series, "rows": rows},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": list(os.getloadavg())},
        "detectors": {},
    }
    print(f"data: {args.services} services x {args.features} features x {int(args.hours * 60)} windows = {rows:,} rows")
    with tempfile.TemporaryDirectory(prefix="meltrca-bench-") as tmp:
        lake = str(Path(tmp) / "lake")
        write_lake(features, lake)
        header = f"{'detector':<18}{'setup':<10}{'seconds':>9}{'services/s':>12}{'series/s':>10}{'rows/s':>12}"
        print(header)
        for det in [d.strip() for d in args.detectors.split(",") if d.strip()]:
            entry: dict[str, object] = {}
            setups = [("loop", lambda d=det: run_loop(features, d))]
            setups += [(m, lambda m=m, d=det: run_spark_child(lake, m, d)) for m in MASTERS]
            for name, run in setups:
                r = run()
                secs = float(r["seconds"])
                entry[name] = {**r, "services_per_s": args.services / secs, "series_per_s": series / secs,
                               "rows_per_s": rows / secs}
                print(f"{det:<18}{name:<10}{secs:>9.1f}{args.services / secs:>12.2f}{series / secs:>10.1f}{rows / secs:>12,.0f}")
            loop_s = entry["loop"]["seconds"]
            entry["spark_overhead_vs_loop"] = {m: entry[m]["seconds"] / loop_s - 1.0 for m in MASTERS}
            entry["speedup_local2_vs_local1"] = entry["local[1]"]["seconds"] / entry["local[2]"]["seconds"]
            entry["identical_anomalies"] = len({entry[name]["digest"] for name, _ in setups}) == 1
            result["detectors"][det] = entry
            print(f"{'':<18}overhead of local[1] over the loop: {entry['spark_overhead_vs_loop']['local[1]']:+.0%}, "
                  f"local[2] speed-up over local[1]: {entry['speedup_local2_vs_local1']:.2f}x, "
                  f"same anomalies in loop/local[1]/local[2]: {entry['identical_anomalies']} "
                  f"({', '.join(str(entry[name]['anomalies']) for name, _ in setups)} rows)")
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
