"""Shape sweep: `meltrca generate` + `meltrca run` over a grid of generated shapes (issue 25).

Every run must exit 0, a fault-free run must write no critical incident, and every table must
reconcile (ingest: in = accepted + quarantined + deduplicated per signal and accepted = bronze
rows; every incident's anomalies exist; one metadata document per anomaly). Each shape runs in a
child process with its own Spark session (driver JVM), so the printed heap figures are that shape's:
"live MB" is the most heap still in use right after a garbage collection (what the run needs; the
headroom is "of MB" minus it), "used MB" the most heap in use at any sample (garbage included, so
it runs up towards the maximum by design of the collector), sampled every 0.25 s.
Shapes with ``llm`` point the explain stage at a real HTTP server on 127.0.0.1 that answers 500.

    .venv/bin/python scripts/sweep.py                      # the full grid (hours on 2 cores)
    .venv/bin/python scripts/sweep.py --grid ci            # the small grid the slow tests run
    .venv/bin/python scripts/sweep.py --only 3,7 --output sweep.json --workdir /tmp/sweep
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# services, hours, faults, seed, systems, llm (a failing endpoint): 20 seeds over the grid.
# One hour holds at most one fault (the generator keeps a fault-free first quarter and spaces faults
# 30 min apart; it refuses more), six hours at most seven.
FULL = [
    (2, 1, 0, 101, 1, False), (2, 6, 1, 102, 1, True), (2, 24, 5, 103, 2, False), (2, 72, 12, 104, 1, False),
    (5, 1, 1, 105, 1, False), (5, 6, 0, 106, 2, False), (5, 24, 12, 107, 1, True), (5, 72, 5, 108, 1, False),
    (10, 1, 1, 109, 1, True), (10, 6, 5, 110, 1, False), (10, 24, 0, 111, 1, False), (10, 72, 1, 112, 2, False),
    (20, 1, 0, 113, 1, False), (20, 6, 5, 114, 1, False), (20, 24, 1, 115, 1, True), (20, 72, 0, 116, 1, False),
    (30, 1, 0, 117, 2, False), (30, 6, 1, 118, 1, False), (30, 24, 12, 119, 1, False), (30, 72, 5, 120, 1, True),
]
# What CI can afford (slow target): the smallest shapes, one fault-free, several systems, a failing LLM.
CI = [(2, 1, 0, 101, 1, False), (5, 6, 1, 121, 2, True), (10, 2, 1, 122, 1, False)]
FIELDS = ("services", "hours", "faults", "seed", "systems", "llm")


def shapes(grid: str) -> list[dict[str, Any]]:
    return [dict(zip(FIELDS, s, strict=True)) for s in (FULL if grid == "full" else CI)]


def label(shape: dict[str, Any]) -> str:
    return (f"{shape['services']}svc-{shape['hours']}h-{shape['faults']}f-seed{shape['seed']}"
            f"-{shape['systems']}sys{'-llm500' if shape['llm'] else ''}")


class FailingLLM:
    """A real OpenAI-compatible endpoint on 127.0.0.1 that answers every request with HTTP 500."""

    def __enter__(self) -> FailingLLM:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b'{"error": {"message": "internal error"}}'
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_shape(shape: dict[str, Any], workdir: Path, llm_url: str | None) -> dict[str, Any]:
    """One shape in a child process; returns its result (the child's RESULT line, or the failure)."""
    folder = workdir / label(shape)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    if shape["llm"]:
        env.update(LLM_BASE_URL=llm_url or "", LLM_API_KEY="sweep-secret-key", LLM_MODEL="sweep-model")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({**shape, "folder": str(folder)})],
                          env=env, capture_output=True, text=True)
    (workdir / f"{label(shape)}.log").write_text(proc.stdout + proc.stderr)
    result = next((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    if result is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        result = {"ok": False, "problems": [f"child exited {proc.returncode}: {tail[:300]}"]}
    if "sweep-secret-key" in proc.stdout + proc.stderr:
        result["ok"] = False
        result["problems"] = [*result.get("problems", []), "LLM_API_KEY appeared in the output"]
    return {**shape, "label": label(shape), "wall_seconds": round(time.perf_counter() - t0, 1), **result}


def child(spec: dict[str, Any]) -> int:
    """generate + run in one session; check the outputs; print RESULT <json>."""
    from meltrca.config import load_settings
    from meltrca.io import Lake
    from meltrca.jobrunner import run_stage
    from meltrca.spark import build_session
    from meltrca.stages import generate, run

    folder = Path(spec["folder"])
    settings = load_settings()
    spark = build_session(settings, master="local[2]", app_name="meltrca-sweep", extra={"spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    out: dict[str, Any] = {"problems": []}
    heap = HeapSampler(spark)
    heap.start()
    t0 = time.perf_counter()
    code = run_stage("generate", generate, [
        "--services", str(spec["services"]), "--duration", str(spec["hours"]), "--interval", "1",
        "--faults", str(spec["faults"]), "--seed", str(spec["seed"]), "--systems", str(spec["systems"]),
        "--output", str(folder / "input")])
    out["generate_seconds"] = round(time.perf_counter() - t0, 1)
    if code != 0:
        out["problems"].append(f"generate exited {code}")
    else:
        argv = ["--input", str(folder / "input"), "--output", str(folder / "results")]
        if spec["llm"]:
            conf = folder / "llm.yaml"
            conf.write_text("explain:\n  writer: llm\n")
            argv += ["--config", str(conf)]
        t1 = time.perf_counter()
        code = run_stage("run", run, argv)
        out["run_seconds"] = round(time.perf_counter() - t1, 1)
        if code != 0:
            out["problems"].append(f"run exited {code}")
        else:
            out.update(check(Lake(spark, folder / "results"), fault_free=spec["faults"] == 0, problems=out["problems"]))
    heap.stop()
    out["peak_heap_mb"], out["peak_used_mb"] = round(heap.live / 2**20, 1), round(heap.used / 2**20, 1)
    out["max_heap_mb"] = round(spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20, 1)
    out["driver_memory"] = spark.conf.get("spark.driver.memory", "1g")
    out["ok"] = not out["problems"]
    print("RESULT " + json.dumps(out), flush=True)
    spark.stop()
    return 0


class HeapSampler(threading.Thread):
    """Peak driver JVM heap in use at any sample and right after a collection (summed over the heap
    pools' usage after their last GC). Summing each pool's own all-time peak instead overstates it:
    the pools peak at different times (that sum exceeded -Xmx on a 24-h shape)."""

    def __init__(self, spark: Any, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        jvm = spark.sparkContext._jvm
        self.memory = jvm.java.lang.management.ManagementFactory.getMemoryMXBean()
        self.pools = [p for p in jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
                      if str(p.getType().toString()) == "Heap memory"]
        self.every, self.used, self.live = every, 0, 0
        self._halt = threading.Event()

    def sample(self) -> None:
        self.used = max(self.used, int(self.memory.getHeapMemoryUsage().getUsed()))
        after_gc = [p.getCollectionUsage() for p in self.pools]
        self.live = max(self.live, sum(int(u.getUsed()) for u in after_gc if u is not None))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def check(lake: Any, *, fault_free: bool, problems: list[str]) -> dict[str, Any]:
    """The reconciliations of one finished run (appends to problems); returns counts."""
    from pyspark.sql import functions as F

    (runs,) = lake.read("runs").where("job = 'run' AND status = 'succeeded'").collect()
    counts = runs["row_counts"]
    for signal in ("metrics", "logs", "spans", "events"):
        n_in = counts.get(f"{signal}.in", 0)
        parts = sum(counts.get(f"{signal}.{k}", 0) for k in ("accepted", "quarantined", "deduplicated", "outside_window"))
        if n_in != parts:
            problems.append(f"{signal}: in {n_in} != accepted + quarantined + deduplicated + outside {parts}")
        bronze = lake.read(signal).count()
        if bronze != counts.get(f"{signal}.accepted", 0):
            problems.append(f"{signal}: {bronze} bronze rows, {counts.get(f'{signal}.accepted', 0)} accepted")
    anomalies = lake.read("anomalies")
    incidents = lake.read("incidents")
    n_anomalies, n_metadata = anomalies.count(), lake.read("metadata").count()
    if n_metadata != n_anomalies:
        problems.append(f"{n_metadata} metadata documents for {n_anomalies} anomalies")
    dangling = incidents.select(F.explode("anomaly_ids").alias("anomaly_id")).join(anomalies, "anomaly_id", "left_anti").count()
    if dangling:
        problems.append(f"{dangling} incident anomaly ids not in anomalies")
    by_severity = {r["severity"]: r["count"] for r in incidents.groupBy("severity").count().collect()}
    if fault_free and by_severity.get("critical"):
        problems.append(f"fault-free run wrote {by_severity['critical']} critical incident(s)")
    writers = sorted({r[0] or "" for r in incidents.select("explanation_writer").distinct().collect()})
    return {"anomalies": n_anomalies, "incidents": by_severity, "writers": writers, "runs_notes": list(runs["notes"] or [])}


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'shape':<34}{'ok':>4}{'gen s':>8}{'run s':>8}{'live MB':>9}{'used MB':>9}{'of MB':>8}"
             "  incidents / problems"]
    for r in results:
        detail = "; ".join(r.get("problems", [])) or json.dumps(r.get("incidents", {}), sort_keys=True)
        lines.append(f"{r['label']:<34}{'yes' if r['ok'] else 'NO':>4}{r.get('generate_seconds', 0):>8.1f}"
                     f"{r.get('run_seconds', 0):>8.1f}{r.get('peak_heap_mb', 0):>9.0f}{r.get('peak_used_mb', 0):>9.0f}"
                     f"{r.get('max_heap_mb', 0):>8.0f}  {detail}")
    return "\n".join(lines)


def sweep(grid: str, workdir: Path, only: list[int] | None = None) -> list[dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    todo = [s for i, s in enumerate(shapes(grid)) if only is None or i in only]
    results = []
    with FailingLLM() as llm:
        for shape in todo:
            results.append(run_shape(shape, workdir, llm.url))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", choices=["full", "ci"], default="full")
    p.add_argument("--only", help="comma list of shape indexes (0-based) of the grid")
    p.add_argument("--workdir", default="/tmp/meltrca-sweep")
    p.add_argument("--output", help="write the results as JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    only = [int(x) for x in args.only.split(",")] if args.only else None
    results = sweep(args.grid, Path(args.workdir), only)
    print(table(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
