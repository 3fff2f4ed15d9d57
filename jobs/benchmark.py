"""Scale benchmark of the pipeline: generated MELT at several sizes, each stage timed and measured.

    .venv/bin/python jobs/benchmark.py --output bench [--sizes 1M,10M,40M] [--masters local[1],local[2]]
        [--compare-at 10M] [--stages ingest,features,detect,rca] [--compare-stages detect,rca]
        [--workdir /tmp/bench] [--generate-only]

For each size (total bronze rows over metrics, logs, spans and events) a bronze folder is made
once with `meltrca generate` (reused from --workdir when its parameters match). The size is set
by system-hours at a fixed shape (20 services per system, 200 sampled traces per minute), so every
stage grows with it: metric and feature rows (what detect fits) as much as spans and logs.

Each stage of each configuration (size x master) runs in its own Python process with its own
Spark session (JVM), on a lake of its own, so the figures do not leak into each other. Measured:
- seconds of the stage alone (session start excluded) and rows in / seconds;
- CPU seconds of the whole process tree (driver, JVM, Python workers): on a shared machine this
  says how much work was done whatever the wall clock;
- peak memory sampled every 0.2 s from /proc: the Python driver's RSS, the driver JVM's RSS (in
  local mode the executors run inside it), the Python workers'; and the JVM's own heap peaks;
- the load average before and after every run (other people's Spark jobs change everything).

The last master of --masters (the main one) runs at every size, first; the others only at the
--compare-at sizes (local[1] vs local[2] speed-up per stage). With --compare-stages they run only
those stages, on a copy of the main master's lake with the earlier stages done (a quicker
comparison of, say, detect alone). Prints a table and writes <output>/benchmark.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

STAGES = ("ingest", "features", "detect", "rca", "explain", "report")
# What each stage writes into the lake: a compared master that starts at a later stage gets a copy
# of the main master's lake without these (see --compare-stages).
STAGE_OUTPUTS = {
    "ingest": ("metrics", "logs", "spans", "events", "quarantine"),
    "features": ("features", "log_templates", "log_template_counts"),
    "detect": ("models", "model_store", "anomalies"),
    "rca": ("service_graph", "incidents"),
    "explain": ("metadata", "incidents", "alerts", "metadata.jsonl", "incidents.jsonl"),
    "report": ("report.html",),
}
DEFAULT_STAGES = "ingest,features,detect,rca"
SERVICES = 20  # per system
REQUESTS_PER_MINUTE = 200  # sampled traces per minute at the front door (daily peak)
METRIC_ROWS_PER_HOUR = SERVICES * 60 * 19  # one sample per metric (about 19 per service) per minute
ROWS_PER_TRACE = 22.0  # spans + log lines per sampled trace at 20 services (measured: 21.2 at 2 systems x 19.7 h,
# 25.5 at 1 system x 6.6 h; varies by topology and time of day)
MAX_HOURS = 40.0  # a system's timeline; bigger sizes add systems
ACCEPT_GROWTH = 4.5  # time at 40M over time at 10M (4x rows)
ACCEPT_SPEEDUP = 1.6  # detect, local[2] over local[1]
ACCEPT_MEMORY_FLAT = 1.25  # peak driver memory, largest size over smallest
MB = 1024 * 1024


# ----------------------------------------------------------------------------------------- sizes
def parse_size(text: str) -> int:
    """'1M' -> 1_000_000, '0.2M' -> 200_000, '500k' -> 500_000, '40000000' -> 40_000_000."""
    t = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if scale != 1 else t) * scale)


def mean_traffic(hours: float) -> float:
    """Mean relative front-door traffic over the first `hours` from midnight (the generator's
    daily curve, meltrca.generate.model, without surges or weekends): night 0.35, peak 1.0."""
    n = max(int(hours * 60), 1)
    total = 0.0
    for m in range(n):
        h = (m / 60.0) % 24
        total += 0.35 + 0.65 * ((1 - math.cos(2 * math.pi * (h - 3) / 24)) / 2) ** 1.6
    return total / n


def expected_rows(systems: int, hours: float) -> float:
    per_hour = METRIC_ROWS_PER_HOUR + 60 * REQUESTS_PER_MINUTE * mean_traffic(hours) * ROWS_PER_TRACE
    return systems * hours * per_hour


def generate_params(rows: int) -> dict[str, Any]:
    """Generator knobs for about `rows` bronze rows: up to MAX_HOURS per system, then more systems."""
    systems = max(1, math.ceil(rows / expected_rows(1, MAX_HOURS)))
    lo, hi = 0.25, MAX_HOURS
    for _ in range(40):  # bisection on the timeline length (rows grow with hours)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_rows(systems, mid) < rows else (lo, mid)
    hours = round(hi, 2)
    faults = 0 if hours < 2 else min(1 + int(hours // 8), 6)  # faults start after the first 25%
    return {"services": SERVICES, "duration": hours, "systems": systems, "faults": faults,
            "requests_per_minute": REQUESTS_PER_MINUTE, "seed": 11, "format": "parquet"}


# ------------------------------------------------------------------------------ child processes
def child_main(spec: dict[str, Any]) -> int:
    """One stage (or the generation) in this process; prints RESULT <json> on stdout."""
    from meltrca.config import load_settings
    from meltrca.logs import setup_logging
    from meltrca.spark import build_session
    from meltrca_jobs.benchmark_ingest import _ctx, generate

    stage = spec["stage"]
    overrides = {f"generate.{k}": v for k, v in spec.get("generate", {}).items()}
    settings = load_settings(overrides=overrides)
    setup_logging("WARNING")
    spark = build_session(settings, master=spec["master"], app_name=f"meltrca-bench-{stage}",
                          extra={"spark.ui.enabled": "false"})
    spark.range(1).count()  # session and JVM warm: not part of the stage's time
    print("BEGIN", flush=True)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    if stage == "generate":
        _, rows = generate(settings, spark, Path(spec["input"]))
        out["rows_per_table"] = rows
        out["rows"] = sum(rows.values())
    else:
        from meltrca.stages import detect, explain, features, ingest, rca, report

        ctx = _ctx(stage, settings, spark, spec["lake"])
        if stage == "ingest":
            rep = ingest.process(ctx, source="bronze", path=spec["input"])
            out["rows_in"] = sum(c.rows_in for c in rep.signals.values())
            out["accepted"] = {s: c.accepted for s, c in rep.signals.items()}
        elif stage == "features":
            features.process(ctx)
        elif stage == "detect":
            detect.process(ctx, mode="fit_score")
        elif stage == "rca":
            rca.process(ctx)
        elif stage == "explain":
            explain.process(ctx, output=spec["lake"])
        elif stage == "report":
            report.process(ctx)
        out["counts"] = dict(ctx.counts)
        out["timings"] = dict(ctx.timings)
    out["seconds"] = time.perf_counter() - t0
    out["python_driver_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["jvm_heap_peak_mb"] = jvm_heap_peaks(spark)
    out["spark_stages"] = spark_stages(spark)
    if "lake" in spec:  # beside the stage's log: how many tasks each Spark stage had
        (Path(spec["lake"]).parent / f"{stage}-{master_tag(spec['master'])}.stages.json").write_text(
            json.dumps(out["spark_stages"], indent=1))
    print("RESULT " + json.dumps(out, default=str), flush=True)
    spark.stop()
    return 0


def master_tag(master: str) -> str:
    return master.replace("[", "").replace("]", "").replace("*", "all")


def spark_stages(spark) -> list[dict[str, Any]]:
    """Every Spark stage the job ran (call site and task count): one task on local[2] = one core idle."""
    tracker = spark.sparkContext.statusTracker()
    out: list[dict[str, Any]] = []
    try:
        for job in sorted(tracker.getJobIdsForGroup(None)):
            info = tracker.getJobInfo(job)
            for sid in sorted(info.stageIds) if info else []:
                st = tracker.getStageInfo(sid)
                if st is not None and st.numCompletedTasks:
                    out.append({"job": job, "stage": sid, "name": st.name, "tasks": st.numTasks,
                                "completed": st.numCompletedTasks})
    except Exception as exc:  # diagnostics only: never fail the measurement for them
        out.append({"error": str(exc)[:200]})
    return out


def jvm_heap_peaks(spark) -> dict[str, float]:
    """Peak used bytes (MB) of each JVM heap pool since the JVM started, and their sum."""
    mf = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    peaks = {}
    for pool in mf.getMemoryPoolMXBeans():
        if str(pool.getType().toString()) == "Heap memory":
            peaks[str(pool.getName())] = round(pool.getPeakUsage().getUsed() / MB, 1)
    peaks["sum"] = round(sum(peaks.values()), 1)
    return peaks


class TreeSampler(threading.Thread):
    """Peak RSS of a process tree from /proc every `every` seconds: the root (Python driver),
    java processes (driver JVM) and everything else (Python workers)."""

    def __init__(self, root: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak = {"python_driver": 0, "jvm": 0, "python_workers": 0, "total": 0}
        self.cpu_ticks: dict[int, int] = {}  # own user+system ticks of each process seen, last sample
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        return {k: round(v / MB, 1) for k, v in self.peak.items()}

    def cpu_seconds(self) -> float:
        """CPU seconds of the tree (sampled, so up to `every` s short per process)."""
        return sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        procs: dict[int, tuple[int, str]] = {}
        ticks: dict[int, int] = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                head, rest = (d / "stat").read_text().rsplit(")", 1)
                fields = rest.split()
                procs[int(d.name)] = (int(fields[1]), head.split("(", 1)[1])
                ticks[int(d.name)] = int(fields[11]) + int(fields[12])  # utime stime
            except (OSError, ValueError, IndexError):
                continue
        tree, todo = {self.root}, [self.root]
        while todo:
            p = todo.pop()
            for child, (par, _) in procs.items():
                if par == p and child not in tree:
                    tree.add(child)
                    todo.append(child)
        now = {"python_driver": 0, "jvm": 0, "python_workers": 0}
        for pid in tree:
            self.cpu_ticks[pid] = max(self.cpu_ticks.get(pid, 0), ticks.get(pid, 0))
            rss = rss_bytes(pid)
            kind = "python_driver" if pid == self.root else "jvm" if procs.get(pid, (0, ""))[1] == "java" else "python_workers"
            now[kind] += rss
        now["total"] = sum(now.values())
        for k, v in now.items():
            self.peak[k] = max(self.peak[k], v)


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(spec: dict[str, Any], log_path: Path) -> dict[str, Any]:
    """Run child_main(spec) in a fresh process; add wall time, CPU seconds, peak RSS, load average."""
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with open(log_path, "w") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                                stderr=err, text=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        stdout, _ = proc.communicate()
    peak = sampler.stop()
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    result = None
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if proc.returncode != 0 or result is None:
        tail = log_path.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"benchmark child {spec['stage']} ({spec['master']}) failed, exit {proc.returncode}: "
                           + " | ".join(tail) + f" (log: {log_path})")
    result.update({
        "process_wall_seconds": round(wall, 1),
        "cpu_seconds": round(sampler.cpu_seconds(), 1),
        "peak_rss_mb": peak,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    })
    return result


# ----------------------------------------------------------------------------------- the driver
def ensure_input(size_dir: Path, params: dict[str, Any], master: str) -> dict[str, Any]:
    """The generated bronze folder for these parameters (reused when already there)."""
    meta_path, inp = size_dir / "generated.json", size_dir / "input"
    if meta_path.is_file() and (inp / "labels.json").exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("parameters") == params:
            print(f"  reusing {inp} ({meta['rows']:,} rows)", flush=True)
            return meta | {"reused": True}
    shutil.rmtree(size_dir, ignore_errors=True)
    size_dir.mkdir(parents=True)
    r = run_child({"stage": "generate", "master": master, "input": str(inp), "generate": params},
                  size_dir / "generate.log")
    meta = {"parameters": params, "rows": r["rows"], "rows_per_table": r["rows_per_table"],
            "seconds": round(r["seconds"], 1), "cpu_seconds": r["cpu_seconds"],
            "bytes": sum(f.stat().st_size for f in inp.rglob("*") if f.is_file()),
            "load_average_before": r["load_average_before"], "load_average_after": r["load_average_after"]}
    meta_path.write_text(json.dumps(meta, indent=2))
    print(f"  generated {meta['rows']:,} rows in {meta['seconds']:.0f} s "
          f"(load {r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f})", flush=True)
    return meta | {"reused": False}


def stage_rows_in(stage: str, done: dict[str, dict[str, Any]], generated: dict[str, Any]) -> int | None:
    """What a stage reads: bronze rows (ingest), accepted bronze rows (features), feature rows
    (detect), spans + feature rows + anomalies (rca), anomalies (explain), incidents (report)."""
    accepted = done.get("ingest", {}).get("accepted", {})
    counts = {s: r.get("counts", {}) for s, r in done.items()}
    if stage == "ingest":
        return generated["rows"]
    if stage == "features":
        return sum(accepted.values()) if accepted else None
    if stage == "detect":
        return counts.get("features", {}).get("features")
    if stage == "rca":
        parts = [accepted.get("spans"), counts.get("features", {}).get("features"), counts.get("detect", {}).get("anomalies")]
        return sum(parts) if all(p is not None for p in parts) else None
    if stage == "explain":
        return counts.get("detect", {}).get("anomalies")
    if stage == "report":
        return counts.get("rca", {}).get("rca")
    return None


def seed_lake(source: Path, lake: Path, stages: list[str]) -> None:
    """A copy of `source` (a finished lake) without what `stages` and every later stage write."""
    first = min(STAGES.index(st) for st in stages)
    drop = {t for st in STAGES[first:] for t in STAGE_OUTPUTS[st]}
    shutil.copytree(source, lake, ignore=lambda d, names: [n for n in names if Path(d) == source and n in drop])


def run_configuration(size_dir: Path, inp: Path, master: str, stages: list[str], generated: dict[str, Any],
                      *, seed_from: Path | None = None, keep: bool = False,
                      prior: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run `stages` on `master` in a fresh lake (or a copy of `seed_from` with the earlier stages done);
    `prior` gives the earlier stages' counts (for rows in)."""
    tag = master_tag(master)
    lake = size_dir / f"lake-{tag}"
    shutil.rmtree(lake, ignore_errors=True)
    if seed_from is not None:
        seed_lake(seed_from, lake, stages)
    done: dict[str, dict[str, Any]] = dict(prior or {})
    out: dict[str, Any] = {"master": master, "stages": {}}
    for stage in stages:
        r = run_child({"stage": stage, "master": master, "input": str(inp), "lake": str(lake)},
                      size_dir / f"{stage}-{tag}.log")
        done[stage] = r
        rows_in = stage_rows_in(stage, done, generated)
        secs = r["seconds"]
        entry = {
            "rows_in": rows_in, "seconds": round(secs, 2),
            "rows_per_second": round(rows_in / secs) if rows_in and secs > 0 else None,
            **{k: r[k] for k in ("process_wall_seconds", "cpu_seconds", "peak_rss_mb", "python_driver_maxrss_mb",
                                 "jvm_heap_peak_mb", "load_average_before", "load_average_after")},
            "counts": r.get("counts", {}), "timings": r.get("timings", {}), "spark_stages": r.get("spark_stages", []),
        }
        out["stages"][stage] = entry
        print_stage_line(stage, entry)
    st = out["stages"].values()
    out["total_seconds"] = round(sum(e["seconds"] for e in st), 1)
    out["total_cpu_seconds"] = round(sum(e["cpu_seconds"] for e in st), 1)
    out["peak_driver_mb"] = max(e["peak_rss_mb"]["python_driver"] + e["peak_rss_mb"]["jvm"] for e in st)
    out["peak_python_driver_mb"] = max(e["peak_rss_mb"]["python_driver"] for e in st)
    out["peak_jvm_mb"] = max(e["peak_rss_mb"]["jvm"] for e in st)
    out["peak_jvm_heap_mb"] = max(e["jvm_heap_peak_mb"]["sum"] for e in st)
    out["lake"] = str(lake)
    out["_done"] = done
    if not keep:
        shutil.rmtree(lake, ignore_errors=True)
    return out


HEADER = (f"  {'stage':<9}{'rows in':>13}{'s':>8}{'rows/s':>10}{'cpu s':>8}{'py MB':>7}{'jvm MB':>8}"
          f"{'heap MB':>8}{'wrk MB':>8}  load before/after")


def print_stage_line(stage: str, e: dict[str, Any]) -> None:
    rows = f"{e['rows_in']:,}" if e["rows_in"] is not None else "-"
    rate = f"{e['rows_per_second']:,}" if e["rows_per_second"] else "-"
    m = e["peak_rss_mb"]
    print(f"  {stage:<9}{rows:>13}{e['seconds']:>8.1f}{rate:>10}{e['cpu_seconds']:>8.0f}{m['python_driver']:>7.0f}"
          f"{m['jvm']:>8.0f}{e['jvm_heap_peak_mb']['sum']:>8.0f}{m['python_workers']:>8.0f}"
          f"  {e['load_average_before'][0]:.1f}/{e['load_average_after'][0]:.1f}", flush=True)


def machine_info() -> dict[str, Any]:
    import pyspark

    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), None) if Path("/proc/meminfo").exists() else None
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()
    return {"cpus": os.cpu_count(), "memory_mb": mem, "platform": platform.platform(),
            "python": platform.python_version(), "pyspark": pyspark.__version__, "java": java[0] if java else None,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def summarize(result: dict[str, Any], main_master: str, compare_at: list[str]) -> dict[str, Any]:
    """Growth with size, local[1] vs local[2] speed-ups, memory across sizes, acceptance checks."""
    sizes = sorted((s for s in result["sizes"] if main_master in result["sizes"][s]["runs"]),  # failed runs left out
                   key=lambda s: result["sizes"][s]["rows"])  # smallest first, whatever order they ran in
    runs = {s: result["sizes"][s]["runs"][main_master] for s in sizes}
    growth = []
    for a, b in itertools.pairwise(sizes):
        ra, rb = runs[a], runs[b]
        rows_ratio = result["sizes"][b]["rows"] / result["sizes"][a]["rows"]
        growth.append({
            "from": a, "to": b, "rows_ratio": round(rows_ratio, 2),
            "time_ratio": round(rb["total_seconds"] / ra["total_seconds"], 2),
            "cpu_ratio": round(rb["total_cpu_seconds"] / ra["total_cpu_seconds"], 2),
            "per_stage_time_ratio": {st: round(rb["stages"][st]["seconds"] / ra["stages"][st]["seconds"], 2)
                                     for st in rb["stages"] if st in ra["stages"]},
        })
    speedups = {}
    for s in compare_at:
        rs = result["sizes"].get(s, {}).get("runs", {})
        others = [m for m in rs if m != main_master] if main_master in rs else []
        for m in others:
            base, fast = rs[m], rs[main_master]
            common = [st for st in fast["stages"] if st in base["stages"]]
            secs = {r: sum(x["stages"][st]["seconds"] for st in common) for r, x in (("base", base), ("fast", fast))}
            speedups[f"{s} {main_master} vs {m}"] = {
                "total": round(secs["base"] / secs["fast"], 2),
                **{st: round(base["stages"][st]["seconds"] / fast["stages"][st]["seconds"], 2)
                   for st in fast["stages"] if st in base["stages"]},
            }
    memory = {s: {"peak_driver_mb": runs[s]["peak_driver_mb"], "python_driver_mb": runs[s]["peak_python_driver_mb"],
                  "jvm_rss_mb": runs[s]["peak_jvm_mb"], "jvm_heap_mb": runs[s]["peak_jvm_heap_mb"]} for s in sizes}
    acceptance: dict[str, Any] = {}
    if growth:
        g = growth[-1]
        limit = ACCEPT_GROWTH * g["rows_ratio"] / 4
        acceptance["time_growth"] = {"pair": f"{g['to']} vs {g['from']}", "ratio": g["time_ratio"],
                                     "rows_ratio": g["rows_ratio"], "limit": round(limit, 2),
                                     "met": g["time_ratio"] <= limit}
    det = [v.get("detect") for v in speedups.values() if v.get("detect")]
    if det:
        acceptance["detect_speedup"] = {"speedup": det[0], "limit": ACCEPT_SPEEDUP, "met": det[0] >= ACCEPT_SPEEDUP}
    if len(sizes) > 1:
        lo, hi = memory[sizes[0]]["peak_driver_mb"], memory[sizes[-1]]["peak_driver_mb"]
        py_lo, py_hi = memory[sizes[0]]["python_driver_mb"], memory[sizes[-1]]["python_driver_mb"]
        acceptance["driver_memory_flat"] = {
            "smallest_mb": lo, "largest_mb": hi, "ratio": round(hi / lo, 2),
            "python_driver_ratio": round(py_hi / py_lo, 2), "limit": ACCEPT_MEMORY_FLAT,
            "met": hi / lo <= ACCEPT_MEMORY_FLAT,
        }
    return {"growth": growth, "speedups": speedups, "memory": memory, "acceptance": acceptance}


def print_summary(summary: dict[str, Any]) -> None:
    print("\ngrowth with size (main master):")
    for g in summary["growth"]:
        stages = ", ".join(f"{k} {v:.2f}x" for k, v in g["per_stage_time_ratio"].items())
        print(f"  {g['to']} / {g['from']}: rows {g['rows_ratio']:.2f}x, time {g['time_ratio']:.2f}x, "
              f"cpu {g['cpu_ratio']:.2f}x  ({stages})")
    for name, sp in summary["speedups"].items():
        print(f"speed-up {name}: " + ", ".join(f"{k} {v:.2f}x" for k, v in sp.items()))
    print("peak driver memory (python driver + JVM RSS; JVM heap peak):")
    for s, m in summary["memory"].items():
        print(f"  {s:<6} {m['peak_driver_mb']:>7.0f} MB  (python {m['python_driver_mb']:.0f}, JVM RSS {m['jvm_rss_mb']:.0f}, "
              f"heap {m['jvm_heap_mb']:.0f})")
    for name, a in summary["acceptance"].items():
        print(f"acceptance {name}: {'met' if a['met'] else 'NOT met'}  {json.dumps({k: v for k, v in a.items() if k != 'met'})}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(json.loads(argv[1]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1M,10M,40M", help="total bronze rows per size, e.g. 0.2M,1M")
    p.add_argument("--masters", default="local[1],local[2]",
                   help="the last runs at every size, the others only at --compare-at sizes")
    p.add_argument("--compare-at", default="10M", help="sizes where every master runs ('all' = every size)")
    p.add_argument("--stages", default=DEFAULT_STAGES, help=f"comma list of {','.join(STAGES)}")
    p.add_argument("--compare-stages", default=None,
                   help="stages the other masters run (default: all of --stages); they start from a copy of the "
                        "main master's lake with the earlier stages done, e.g. detect,rca")
    p.add_argument("--workdir", default="/tmp/bench", help="generated data (reused) and lakes")
    p.add_argument("--output", default="bench", help="folder for benchmark.json")
    p.add_argument("--generate-only", action="store_true", help="make (or reuse) the input of every size and stop")
    args = p.parse_args(argv)

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    masters = [m.strip() for m in args.masters.split(",") if m.strip()]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    compare_stages = stages if not args.compare_stages else [s.strip() for s in args.compare_stages.split(",") if s.strip()]
    bad = [s for s in stages + compare_stages if s not in STAGES or s not in stages]
    if bad:
        p.error(f"unknown stage(s) {bad}; choose from {STAGES} (--compare-stages from --stages)")
    compare_at = sizes if args.compare_at == "all" else [s.strip() for s in args.compare_at.split(",") if s.strip()]
    main_master = masters[-1]
    work = Path(args.workdir)
    result: dict[str, Any] = {
        "command": "python jobs/benchmark.py " + " ".join(argv),
        "machine": machine_info(), "stages": stages, "masters": masters, "main_master": main_master,
        "shape": {"services_per_system": SERVICES, "requests_per_minute": REQUESTS_PER_MINUTE},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sizes": {},
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, {result['machine']['memory_mb']} MB, load {os.getloadavg()[0]:.1f}")
    for size in sizes:
        params = generate_params(parse_size(size))
        size_dir = work / size
        print(f"\n== {size}: {params['systems']} system(s) x {params['services']} services x {params['duration']} h, "
              f"{params['requests_per_minute']} traces/min", flush=True)
        gen = ensure_input(size_dir, params, main_master)
        entry = {"target_rows": parse_size(size), "rows": gen["rows"], "rows_per_table": gen["rows_per_table"],
                 "generated": gen, "runs": {}}
        result["sizes"][size] = entry
        if args.generate_only:
            continue
        others = [m for m in masters if m != main_master and size in compare_at]
        main_run: dict[str, Any] | None = None
        for master in [main_master, *others]:  # the main master first: the others may start from its lake
            partial = master != main_master and compare_stages != stages
            if partial and main_run is None:
                continue
            run_stages = compare_stages if partial else stages
            print(f" {size} on {master} ({gen['rows']:,} rows; {', '.join(run_stages)})\n{HEADER}", flush=True)
            try:
                run = run_configuration(
                    size_dir, size_dir / "input", master, run_stages, gen,
                    seed_from=Path(main_run["lake"]) if partial else None,
                    keep=master == main_master and bool(others) and compare_stages != stages,
                    prior={k: v for k, v in main_run["_done"].items() if k not in run_stages} if partial else None,
                )
            except RuntimeError as exc:  # e.g. a JVM killed by the kernel's OOM killer on a shared box
                print(f"  FAILED: {exc}", flush=True)
                entry["failed"] = {**entry.get("failed", {}), master: str(exc)}
                continue
            if master == main_master:
                main_run = run
            entry["runs"][master] = {k: v for k, v in run.items() if k != "_done"}
            print(f"  {'total':<9}{'':>13}{run['total_seconds']:>8.1f}{'':>10}{run['total_cpu_seconds']:>8.0f}"
                  f"   peak driver {run['peak_driver_mb']:.0f} MB", flush=True)
            (out / "benchmark.json").write_text(json.dumps(result, indent=2, default=str) + "\n")  # partial
    for size in sizes:  # lakes kept for the compared masters
        shutil.rmtree(work / size / f"lake-{master_tag(main_master)}", ignore_errors=True)
    result["summary"] = summarize(result, main_master, compare_at)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print_summary(result["summary"])
    (out / "benchmark.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwritten: {out / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
