"""A real distributed run: a Spark standalone master and two workers on 127.0.0.1.

The test owns the cluster: it starts the master and two one-core workers from the venv's PySpark,
submits `meltrca run` through ./spark-submit.sh (code zip, packed Python environment, jars), runs
the same pipeline in local[2], then checks that

- the executors were separate processes on both workers: the event log's ExecutorAdded events,
  each worker's work dir (app-*/<executor id>/stderr, with the unpacked environment), the
  executors' pids (from their stderr and from /proc samples: children of the worker JVMs, never
  the driver), and tasks ran on both executors;
- the results equal local mode: anomalies, incidents (root causes and ranks), features,
  service graph and metadata, run_id aside.

Slow (the first packing of the Python environment takes ~95 s, then it is cached in build/):
`make test-slow` runs it; nothing else starts the cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO

# ~5 min on an idle 2-core machine (plus ~95 s once for packing); far more when it is shared.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

VENV_BIN = REPO / ".venv" / "bin"
HOST = "127.0.0.1"
N_WORKERS = 2
RUN_TIMEOUT = 1800  # seconds per pipeline run (generous: CI machines are shared)
# Small on purpose (the test proves where the work runs, not scale): 3 services, 2 hours, one
# injected fault, the crash test's system. Every stage and all three detectors still run.
GENERATE = ["--services", "3", "--duration", "2", "--faults", "1", "--seed", "5"]
DRIVER_MEMORY = "2g"  # both drivers (the data is small; the default 4g each crowds a shared machine)
# Columns that legitimately differ between two runs of the same input.
VOLATILE = {"run_id", "created_at", "fitted_at", "ingested_at", "last_attempt_at", "delivered_at"}


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<{path}: {exc}>"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus anything a Spark session in the test process may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    env.update({"TZ": "UTC", "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": HOST, **extra})
    return env


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    log: Path
    webui: int
    port: int

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    root: Path
    master: Daemon
    workers: list[Daemon]
    work_dirs: list[Path]
    event_dir: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://{HOST}:{self.master.port}"

    def master_json(self) -> dict:
        return get_json(f"http://{HOST}:{self.master.webui}/json/")

    def worker_json(self, i: int) -> dict:
        return get_json(f"http://{HOST}:{self.workers[i].webui}/json/")

    def logs_hint(self) -> str:
        """Where to look, plus the end of each daemon's log."""
        parts = [f"cluster files under {self.root}"]
        for d in self.daemons:
            state = "running" if d.alive() else f"exited {d.proc.returncode}"
            parts.append(f"--- {d.name} ({state}) log {d.log}:\n{tail(d.log, 20)}")
        for wd in self.work_dirs:
            for err in sorted(wd.glob("app-*/*/stderr")):
                parts.append(f"--- executor log {err}:\n{tail(err, 20)}")
        return "\n".join(parts)


def _start(name: str, cls: str, args: list[str], root: Path, webui: int, port: int) -> Daemon:
    log = root / f"{name}.log"
    fh = open(log, "wb")  # noqa: SIM115 - handed to the child, closed with the process
    proc = subprocess.Popen(
        [str(spark_home() / "bin" / "spark-class"), cls, *args],
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=clean_env(SPARK_DAEMON_MEMORY="512m", SPARK_LOG_DIR=str(root)),
        cwd=root,
        start_new_session=True,  # own process group: the finalizer kills it and its executors
    )
    fh.close()
    return Daemon(name, proc, log, webui, port)


def _stop(daemons: list[Daemon]) -> None:
    for d in reversed(daemons):  # workers (and their executors) first, then the master
        if d.alive():
            try:
                os.killpg(d.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 30
    for d in daemons:
        try:
            d.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # anything left in the group (executors, python workers)
            os.killpg(d.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            d.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _wait_for(what: str, check, cluster: Cluster, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        dead = [d.name for d in cluster.daemons if not d.alive()]
        if dead:
            pytest.fail(f"spark {', '.join(dead)} exited while waiting for {what}\n{cluster.logs_hint()}")
        try:
            if check():
                return
        except OSError as exc:  # UI not up yet
            last = exc
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} ({last})\n{cluster.logs_hint()}")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """Master + two 1-core/2g workers on 127.0.0.1; always stopped (process groups killed)."""
    root = tmp_path_factory.mktemp("standalone")
    event_dir = root / "events"
    event_dir.mkdir()
    mport, mweb = free_port(), free_port()
    master = _start(
        "master",
        "org.apache.spark.deploy.master.Master",
        ["--host", HOST, "--port", str(mport), "--webui-port", str(mweb)],
        root,
        mweb,
        mport,
    )
    cluster = Cluster(root, master, [], [], event_dir, daemons=[master])
    try:
        _wait_for("the master's web UI", lambda: cluster.master_json().get("status") == "ALIVE", cluster)
        for i in range(N_WORKERS):
            wport, wweb = free_port(), free_port()
            work = root / f"work-{i}"
            work.mkdir()
            worker = _start(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                [cluster.url, "--host", HOST, "--port", str(wport), "--webui-port", str(wweb),
                 "--cores", "1", "--memory", "2g", "--work-dir", str(work)],
                root,
                wweb,
                wport,
            )
            cluster.workers.append(worker)
            cluster.work_dirs.append(work)
            cluster.daemons.append(worker)
        _wait_for(
            f"{N_WORKERS} alive workers at the master",
            lambda: cluster.master_json().get("aliveworkers", 0) >= N_WORKERS,
            cluster,
        )
        yield cluster
    finally:
        _stop(cluster.daemons)
        # The unpacked Python environment is ~1.8 GB per executor: keep the logs, drop the rest.
        for wd in cluster.work_dirs:
            for app_file in wd.glob("app-*/*/*"):
                if app_file.name not in ("stdout", "stderr"):
                    if app_file.is_dir() and not app_file.is_symlink():
                        shutil.rmtree(app_file, ignore_errors=True)
                    else:
                        app_file.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def generated_system(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cluster-input") / "input"
    res = subprocess.run(
        [str(VENV_BIN / "meltrca"), "generate", *GENERATE, "--output", str(out)],
        capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=RUN_TIMEOUT,
    )
    assert res.returncode == 0, f"generate failed:\n{res.stderr[-3000:]}"
    return out


class ProcSampler(threading.Thread):
    """Samples /proc every second: the roots and their descendants, with ppid, command lines and cwd.

    A pid's ``cmds`` lists every command line seen (exec keeps the pid: spark-submit.sh -> java).
    """

    def __init__(self, roots: dict[int, str]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.seen: dict[int, dict] = {}
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.sample()
            self._stop_evt.wait(1.0)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=10)

    def sample(self) -> None:
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
        for pid, ppid in parents.items():
            root, p = None, pid
            for _ in range(30):
                if p in self.roots:
                    root = p
                    break
                p = parents.get(p, 0)
                if p <= 1:
                    break
            if root is None:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            info = self.seen.setdefault(pid, {"pid": pid, "ppid": ppid, "root": self.roots[root], "cmds": []})
            info.update(cmd=cmd, cwd=cwd)
            if cmd not in info["cmds"]:
                info["cmds"].append(cmd)


def submit_on_cluster(cluster: Cluster, input_dir: Path, output: Path, overlay: Path) -> tuple[subprocess.CompletedProcess, int, ProcSampler]:
    """./spark-submit.sh run on the standalone master; returns the result, driver pid, /proc samples."""
    cmd = [
        str(REPO / "spark-submit.sh"),
        "--master", cluster.url,
        "--conf", "spark.executor.cores=1",
        "--conf", "spark.executor.memory=1g",
        "--conf", f"spark.driver.memory={DRIVER_MEMORY}",
        "--conf", f"spark.cores.max={N_WORKERS}",
        "--conf", "spark.eventLog.enabled=true",
        "--conf", f"spark.eventLog.dir=file://{cluster.event_dir}",
        "--conf", "spark.eventLog.compress=false",
        "--conf", f"spark.driver.host={HOST}",
        "--conf", "spark.ui.enabled=false",
        "run", "--config", str(overlay), "--input", str(input_dir), "--output", str(output),
    ]
    log = cluster.root / "driver.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=clean_env(), cwd=REPO)
        roots = {d.proc.pid: d.name for d in cluster.workers}
        roots[proc.pid] = "driver"
        sampler = ProcSampler(roots)
        sampler.start()
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -9
        finally:
            sampler.stop()
    res = subprocess.CompletedProcess(cmd, rc, log.read_text(errors="replace"), "")
    return res, proc.pid, sampler


def run_local(input_dir: Path, output: Path, overlay: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "meltrca"), "run", "--master", "local[2]", "--config", str(overlay),
         "--input", str(input_dir), "--output", str(output)],
        capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=RUN_TIMEOUT,
    )


def event_log(event_dir: Path, app_id: str) -> list[dict]:
    """The app's events: Spark 4 writes a rolling eventlog_v2_<app>/events_<n>_<app> folder, 3.x one file."""
    found = [p for p in event_dir.iterdir() if app_id in p.name]
    assert found, f"no event log for {app_id} in {event_dir}: {sorted(p.name for p in event_dir.iterdir())}"
    files = [found[0]]
    if found[0].is_dir():
        files = sorted(found[0].glob("events_*"), key=lambda p: int(p.name.split("_")[1]))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def comparable(df, order: list[str]):
    """A table minus the per-run columns, in a fixed order."""
    return df.drop(*[c for c in df.columns if c in VOLATILE]).orderBy(*order)


def test_pipeline_on_standalone_cluster_equals_local(standalone_cluster, generated_system, tmp_path, request):
    cluster = standalone_cluster
    t_start = time.monotonic()
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(f"spark:\n  checkpoint_dir: {tmp_path / 'checkpoints'}\n  driver_memory: {DRIVER_MEMORY}\n")

    # Build the code zip and the packed environment first (cached in build/ by setup.py's hash),
    # so that a clean clone's ~95 s packing is not counted against the job.
    t0 = time.monotonic()
    built = subprocess.run(
        [str(REPO / "spark-submit.sh"), "--build-only"], capture_output=True, text=True, env=clean_env(), cwd=REPO,
        timeout=RUN_TIMEOUT,
    )
    assert built.returncode == 0, f"spark-submit.sh --build-only failed:\n{built.stderr[-3000:]}"
    t_build = time.monotonic() - t0

    # 1. The whole pipeline through spark-submit.sh on the standalone cluster.
    out_cluster = tmp_path / "cluster-out"
    t0 = time.monotonic()
    res, driver_pid, sampler = submit_on_cluster(cluster, generated_system, out_cluster, overlay)
    t_cluster = time.monotonic() - t0
    assert res.returncode == 0, (
        f"spark-submit.sh run on {cluster.url} exited {res.returncode}; driver log {cluster.root / 'driver.log'}:\n"
        f"{res.stdout[-4000:]}\n{cluster.logs_hint()}"
    )

    # 2. The same locally.
    out_local = tmp_path / "local-out"
    t0 = time.monotonic()
    loc = run_local(generated_system, out_local, overlay)
    t_local = time.monotonic() - t0
    assert loc.returncode == 0, f"meltrca run --master local[2] failed:\n{loc.stdout[-2000:]}\n{loc.stderr[-4000:]}"

    # 3. Executors were separate processes on both workers.
    apps = cluster.master_json().get("completedapps", [])
    ours = [a for a in apps if a.get("name") == "meltrca-run"]
    assert len(ours) == 1, f"expected one completed meltrca-run app at the master, got {apps}\n{cluster.logs_hint()}"
    app_id = ours[0]["id"]
    assert ours[0]["state"] == "FINISHED", ours[0]

    events = event_log(cluster.event_dir, app_id)
    added = {e["Executor ID"]: e["Executor Info"] for e in events if e["Event"] == "SparkListenerExecutorAdded"}
    assert len(added) >= N_WORKERS, f"executors added: {added}"
    worker_ui_ports = {d.webui for d in cluster.workers}
    stderr_urls = {eid: info["Log Urls"]["stderr"] for eid, info in added.items()}
    ui_ports_used = {int(re.search(r":(\d+)/", url).group(1)) for url in stderr_urls.values()}
    assert ui_ports_used == worker_ui_ports, f"executors' log URLs {stderr_urls} vs workers' UI ports {worker_ui_ports}"
    tasks_per_executor = Counter(e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd")
    task_executors = set(tasks_per_executor)
    assert set(added) <= task_executors, f"tasks ran on {task_executors}, executors {sorted(added)}"
    assert "driver" not in task_executors
    # GraphFrames grouped the incidents: stages of its JVM code (org.graphframes in the call site) ran
    # their tasks on the workers' executors
    assert "graph engine graphframes" in res.stdout, res.stdout[-2000:]
    gf_stages = {e["Stage Info"]["Stage ID"] for e in events
                 if e["Event"] == "SparkListenerStageCompleted" and "org.graphframes" in e["Stage Info"].get("Details", "")}
    gf_executors = {e["Task Info"]["Executor ID"] for e in events
                    if e["Event"] == "SparkListenerTaskEnd" and e["Stage ID"] in gf_stages}
    assert gf_stages and gf_executors and gf_executors <= set(added), (sorted(gf_stages), gf_executors, sorted(added))

    # The driver: spark-submit.sh exec'ed into the SparkSubmit JVM (same pid), which started the
    # Python driver running jobs/anomaly_detection.py.
    driver_cmds = sampler.seen.get(driver_pid, {}).get("cmds", [])
    assert any("org.apache.spark.deploy.SparkSubmit" in c for c in driver_cmds), driver_cmds
    driver_python = {
        p["pid"]
        for p in sampler.seen.values()
        if p["ppid"] == driver_pid and "python" in Path(p["cmd"].split()[0]).name and "anomaly_detection.py" in p["cmd"]
    }
    assert len(driver_python) == 1, [p for p in sampler.seen.values() if p["root"] == "driver"]
    driver_pids = {driver_pid} | driver_python
    worker_pids = {d.proc.pid: d.name for d in cluster.workers}
    executor_pids: dict[str, int] = {}
    for i, wd in enumerate(cluster.work_dirs):
        dirs = [p for p in (wd / app_id).iterdir() if p.is_dir()] if (wd / app_id).is_dir() else []
        assert len(dirs) == 1, f"worker-{i} work dir {wd / app_id}: {dirs}\n{cluster.logs_hint()}"
        stderr = (dirs[0] / "stderr").read_text(errors="replace")
        m = re.search(r"Started daemon with process name: (\d+)@", stderr)
        assert m, f"no executor pid in {dirs[0] / 'stderr'}:\n{stderr[:2000]}"
        assert (dirs[0] / "environment" / "bin" / "python").exists(), f"packed environment not unpacked in {dirs[0]}"
        executor_pids[dirs[0].name] = int(m.group(1))
    assert set(executor_pids) == set(added), f"executor dirs {executor_pids} vs event log {sorted(added)}"
    assert len(set(executor_pids.values())) == N_WORKERS
    assert not set(executor_pids.values()) & (driver_pids | set(worker_pids)), (executor_pids, driver_pids)
    # /proc samples: each executor JVM is a child of its worker's JVM, its Python workers run the
    # packed environment's interpreter inside the executor's own work dir.
    sampled = {p["pid"]: p for p in sampler.seen.values() if "CoarseGrainedExecutorBackend" in p["cmd"]}
    for eid, pid in executor_pids.items():
        assert pid in sampled, f"executor {eid} (pid {pid}) never seen under a worker: {sorted(sampled)}"
        assert sampled[pid]["ppid"] in worker_pids, sampled[pid]
        assert f"--executor-id {eid} " in sampled[pid]["cmd"]
    assert {sampled[p]["ppid"] for p in executor_pids.values()} == set(worker_pids)
    py_workers = [p for p in sampler.seen.values() if p["root"] != "driver" and "pyspark.daemon" in p["cmd"]]
    assert py_workers, "no Python worker seen on the executors"
    assert all(p["cmd"].startswith("./environment/bin/python") for p in py_workers), py_workers
    assert {p["cwd"] for p in py_workers} <= {str(wd / app_id / eid) for wd in cluster.work_dirs for eid in executor_pids}

    # 4. Same results as local mode.
    from pyspark.testing import assertDataFrameEqual

    spark = request.getfixturevalue("spark")

    def both(table: str, order: list[str]):
        read = lambda root: comparable(spark.read.format("delta").load(str(root / table)), order)  # noqa: E731
        return read(out_cluster), read(out_local)

    keys = {
        "features": ["system", "service", "component", "feature", "window_start"],
        "anomalies": ["anomaly_id"],
        "incidents": ["incident_id"],
        "service_graph": ["system", "src", "dst"],
        "metadata": ["anomaly_id"],
    }
    counts = {}
    for table, order in keys.items():
        got, want = both(table, order)
        counts[table] = want.count()
        assert got.count() == counts[table], f"{table}: {got.count()} rows on the cluster, {counts[table]} locally"
        # Floats: sums and percentiles may add up in another order across executors; 1e-6 relative
        # is far below any threshold the detectors or the ranking use.
        assertDataFrameEqual(got, want, checkRowOrder=False, rtol=1e-6)
    assert counts["anomalies"] > 0 and counts["incidents"] > 0, counts

    # Root causes: services and ranks exactly.
    def causes(root: Path):
        rows = spark.read.format("delta").load(str(root / "incidents")).select("incident_id", "root_causes").collect()
        return {r["incident_id"]: [(c["rank"], c["service"]) for c in r["root_causes"]] for r in rows}

    assert causes(out_cluster) == causes(out_local)

    print(
        f"\ncluster test: build {t_build:.0f}s, cluster run {t_cluster:.0f}s, local run {t_local:.0f}s, "
        f"total {time.monotonic() - t_start:.0f}s; app {app_id}, executors {executor_pids} "
        f"(workers {worker_pids}), tasks {dict(tasks_per_executor)}, driver JVM {driver_pid} + Python "
        f"{sorted(driver_python)}, rows {counts}"
    )
