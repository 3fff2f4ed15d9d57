"""Metrics-only root-cause benchmark (issue 19): meltrca beside a BARO-style ranker on the same data.

    .venv/bin/python scripts/benchmark_metrics_only.py [--seeds 611,612] [--services 12] [--hours 48]
        [--faults 10] [--fault-types cpu_hog,memory_leak,network_delay] [--reference-minutes 30]
        [--fit-systems 0] [--fit-services 13] [--fit-hours 6]
        [--workdir /tmp/meltrca-bench-mo] [--output bench/metrics_only.json]

For each seed, `meltrca generate --signals metrics` writes a metrics-only system (no traces, no
logs, so no call graph) with labelled faults; `meltrca run` and `meltrca evaluate` score meltrca
at case level (per fault, every service named by any incident overlapping it, by its best score).

The reference ranker follows BARO's RobustScorer (Pham et al., FSE 2024; RCAEval's ``baro``): it is
*handed* each fault's start and end (meltrca is not), takes the `--reference-minutes` before the
start as every series' normal, scores each (service, metric) series by its largest robust z-score
inside the fault, |x - median| / IQR of the reference (IQR 0 counts as 1, as sklearn's
RobustScaler does), and ranks services by their largest series score. Instances of a service are
averaged per timestamp first (one series per service and metric, as in RCAEval's cases).

With --fit-systems N, one more metrics-only lake of N systems x --fit-services services runs
through `meltrca run`, and the printed fit stage (seconds, service models) is recorded: what
fitting hundreds of (system, service) models costs on this machine.

Prints a table and writes the figures (AC@1..5, Avg@5 per seed and overall, fit seconds) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BIN = Path(sys.executable).parent
STAGE_LINE = re.compile(r"^\[meltrca\] (\w+(?: \w+)?)\s+([\d,]+) rows\s+([\d.]+)s\s*(.*)$")  # "fit", "ingest metrics"


# ------------------------------------------------------------------------------ reference ranker
def robust_deviation(reference: np.ndarray, window: np.ndarray) -> float:
    """Largest |x - median| / IQR of `window` against `reference` (NaNs ignored; IQR 0 -> 1)."""
    ref = reference[np.isfinite(reference)]
    win = window[np.isfinite(window)]
    if ref.size == 0 or win.size == 0:
        return 0.0
    q1, med, q3 = np.percentile(ref, [25, 50, 75])
    iqr = q3 - q1
    return float(np.max(np.abs(win - med)) / (iqr if iqr > 0 else 1.0))


def baro_ranking(metrics: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp,
                 reference: pd.Timedelta) -> pd.DataFrame:
    """Services of one system ranked by their largest robust deviation inside [start, end].

    `metrics`: columns service, metric, ts, value (one system's samples). Returns service, score,
    metric (the series that gave the score), best first; ties by service name."""
    m = metrics[(metrics["ts"] >= start - reference) & (metrics["ts"] <= end)]
    series = m.groupby(["service", "metric", "ts"], sort=True)["value"].mean().reset_index()
    rows = []
    for (service, metric), s in series.groupby(["service", "metric"], sort=True):
        before = s["ts"] < start
        rows.append((service, robust_deviation(s.loc[before, "value"].to_numpy(float),
                                               s.loc[~before, "value"].to_numpy(float)), metric))
    scored = pd.DataFrame(rows, columns=["service", "score", "metric"])
    if scored.empty:
        return scored
    best = scored.sort_values(["service", "score", "metric"], ascending=[True, False, True]).groupby("service").head(1)
    return best.sort_values(["score", "service"], ascending=[False, True], ignore_index=True)


def rank_faults(metrics: pd.DataFrame, labels: Sequence[dict[str, Any]], reference: pd.Timedelta) -> list[int | None]:
    """1-based rank of each label's root-cause service in the reference ranking (None: absent)."""
    from meltrca.evaluation import parse_faults, rank_in

    ranks: list[int | None] = []
    for f in parse_faults(labels):
        one = metrics[metrics["system"] == f.system]
        ranking = baro_ranking(one, pd.Timestamp(f.start), pd.Timestamp(f.end), reference)
        ranks.append(rank_in(list(ranking["service"]), f.root_cause_service))
    return ranks


# ------------------------------------------------------------------------------------ running
def meltrca(args: Sequence[str], log: Path) -> list[str]:
    """Run the meltrca CLI; its output goes to `log`; returns the printed lines (non-zero exit raises)."""
    proc = subprocess.run([str(BIN / "meltrca"), *args], capture_output=True, text=True, check=False)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"meltrca {args[0]} failed (exit {proc.returncode}), see {log}")
    return proc.stdout.splitlines() + proc.stderr.splitlines()


def stage_lines(lines: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        m = STAGE_LINE.match(line.strip())
        if m:
            out[m.group(1)] = {"rows": int(m.group(2).replace(",", "")), "seconds": float(m.group(3)),
                               "note": m.group(4)}
    return out


def generate(out: Path, *, services: int, hours: float, faults: int, seed: int, systems: int,
             fault_types: Sequence[str], workdir: Path) -> None:
    config = workdir / "fault_types.yaml"
    config.write_text("generate:\n  fault_types: [" + ", ".join(fault_types) + "]\n")
    meltrca(["generate", "--services", str(services), "--duration", str(hours), "--faults", str(faults),
             "--seed", str(seed), "--systems", str(systems), "--signals", "metrics", "--config", str(config),
             "--output", str(out)], workdir / f"{out.name}.generate.log")


def read_metrics(table: Path) -> pd.DataFrame:
    """system, service, metric, ts, value of a Delta metrics table (a local Spark session)."""
    from meltrca.config import load_settings
    from meltrca.spark import build_session

    spark = build_session(load_settings(), master="local[2]", app_name="meltrca-benchmark-baro")
    try:
        df = spark.read.format("delta").load(str(table)).select("system", "service", "metric", "ts", "value")
        return df.toPandas()
    finally:
        spark.stop()


def accuracy(seed: int, a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from meltrca.evaluation import root_cause_accuracy

    data, lake = workdir / f"seed{seed}", workdir / f"seed{seed}-lake"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(lake, ignore_errors=True)
    generate(data, services=a.services, hours=a.hours, faults=a.faults, seed=seed, systems=1,
             fault_types=a.fault_types, workdir=workdir)
    t0 = time.perf_counter()
    stages = stage_lines(meltrca(["run", "--input", str(data), "--output", str(lake)], workdir / f"seed{seed}.run.log"))
    run_s = time.perf_counter() - t0
    meltrca(["evaluate", "--results", str(lake), "--labels", str(data / "labels.json")], workdir / f"seed{seed}.evaluate.log")
    ev = json.loads((lake / "evaluation.json").read_text())
    labels = json.loads((data / "labels.json").read_text())
    ranks = rank_faults(read_metrics(data / "metrics"), labels, pd.Timedelta(minutes=a.reference_minutes))
    return {
        "seed": seed,
        "faults": len(labels),
        "run_seconds": round(run_s, 1),
        "stages": stages,
        "meltrca": {k: ev["root_cause"]["case_level"][k] for k in ("ac@1", "ac@3", "ac@5", "avg@5")},
        "meltrca_ranks": [f.get("case_rank") for f in ev["faults"]],
        "baro": {k: v for k, v in root_cause_accuracy(ranks).items() if k in ("ac@1", "ac@3", "ac@5", "avg@5")},
        "baro_ranks": ranks,
        "fault_types": [lab.get("fault_type") for lab in labels],
    }


def fit_cost(a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    data, lake = workdir / "fit", workdir / "fit-lake"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(lake, ignore_errors=True)
    generate(data, services=a.fit_services, hours=a.fit_hours, faults=1, seed=7, systems=a.fit_systems,
             fault_types=a.fault_types, workdir=workdir)
    stages = stage_lines(meltrca(["run", "--input", str(data), "--output", str(lake)], workdir / "fit.run.log"))
    fit = stages.get("fit", {})
    models = int(m.group(1)) if (m := re.search(r"(\d+) services", fit.get("note", ""))) else None
    return {"systems": a.fit_systems, "services_per_system": a.fit_services, "hours": a.fit_hours,
            "service_models": models, "fit_seconds": fit.get("seconds"),
            "seconds_per_model": round(fit["seconds"] / models, 3) if models and fit.get("seconds") else None,
            "stages": stages}


def mean_of(results: Sequence[dict[str, Any]], who: str) -> dict[str, float]:
    """Fault-weighted means over the seeds."""
    n = sum(r["faults"] for r in results) or 1
    return {k: round(sum(r[who][k] * r["faults"] for r in results) / n, 4) for k in ("ac@1", "ac@3", "ac@5", "avg@5")}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",") if x.strip()], default=[611, 612])
    p.add_argument("--services", type=int, default=12)
    p.add_argument("--hours", type=float, default=48.0)
    p.add_argument("--faults", type=int, default=10)
    p.add_argument("--fault-types", type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
                   default=["cpu_hog", "memory_leak", "network_delay"])
    p.add_argument("--reference-minutes", type=float, default=30.0, help="the reference ranker's normal period")
    p.add_argument("--fit-systems", type=int, default=0, help="also time fitting this many systems (0: skip)")
    p.add_argument("--fit-services", type=int, default=13)
    p.add_argument("--fit-hours", type=float, default=6.0)
    p.add_argument("--workdir", default="/tmp/meltrca-bench-mo")
    p.add_argument("--output", default="bench/metrics_only.json")
    a = p.parse_args(argv)
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    results = [accuracy(seed, a, workdir) for seed in a.seeds]
    fit = fit_cost(a, workdir) if a.fit_systems > 0 else None
    doc = {
        "command": "python scripts/benchmark_metrics_only.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "shape": {"services": a.services, "hours": a.hours, "faults": a.faults, "fault_types": a.fault_types},
        "reference_minutes": a.reference_minutes,
        "seeds": results,
        "overall": {"meltrca": mean_of(results, "meltrca"), "baro": mean_of(results, "baro")} if results else {},
        "fit": fit,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"{'seed':<8}{'ranker':<10}{'AC@1':>7}{'AC@3':>7}{'AC@5':>7}{'Avg@5':>7}   ranks per fault")
    for r in results:
        for who in ("meltrca", "baro"):
            s = r[who]
            print(f"{r['seed']:<8}{who:<10}{s['ac@1']:>7.2f}{s['ac@3']:>7.2f}{s['ac@5']:>7.2f}{s['avg@5']:>7.2f}   "
                  + " ".join("-" if x is None else str(x) for x in r[f"{who}_ranks"]))
    for who, s in doc["overall"].items():
        print(f"{'all':<8}{who:<10}{s['ac@1']:>7.2f}{s['ac@3']:>7.2f}{s['ac@5']:>7.2f}{s['avg@5']:>7.2f}")
    if fit:
        print(f"fit: {fit['service_models']} service models ({fit['systems']} systems x {fit['services_per_system']}, "
              f"{fit['hours']} h) in {fit['fit_seconds']} s = {fit['seconds_per_model']} s per model")
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
