"""Crash safety: SIGKILL `meltrca detect` while it writes anomalies, rerun, and get a clean run's tables.

Delta commits are atomic: files a killed write left behind are not in the table (no commit names
them), and the rerun's window-scoped replaces put every table back to what a clean run writes.
The killed run's `runs` row stays `running` (nothing was left to record it); the incremental
watermark only ever reads `succeeded` runs. A stage that fails exits non-zero and records `failed`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from conftest import set_comparable
from meltrca.io import Lake
from meltrca.jobrunner import run_stage
from meltrca.runs import last_successful_window_end
from meltrca.stages import detect, explain, generate, rca, run

pytestmark = pytest.mark.slow



ARGS = ["--models", "zscore,isolation"]
TABLES = ["metrics", "logs", "spans", "events", "features", "log_template_counts", "anomalies", "service_graph",
          "incidents", "metadata"]


def _data_files(table: Path) -> set[Path]:
    return set(table.rglob("part-*.parquet")) if table.is_dir() else set()


def _kill_during_write(cmd: list[str], table: Path, timeout: float = 900) -> float:
    """Start cmd in its own process group; SIGKILL the group as soon as `table` gets a new data file
    (task output lands in the table folder before the Delta commit that would name it)."""
    old = _data_files(table)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.monotonic()
    try:
        while not (_data_files(table) - old):
            if proc.poll() is not None:
                raise AssertionError(f"the job ended before writing {table.name}: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError("timed out waiting for the write")
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return time.monotonic() - t0


def _versions(table: Path) -> int:
    return len(list((table / "_delta_log").glob("*.json")))


@pytest.fixture(scope="module")
def lakes(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    gen, clean, crashed = tmp / "gen", tmp / "clean", tmp / "crashed"
    assert run_stage("generate", generate, ["--services", "3", "--duration", "2", "--faults", "1", "--seed", "5",
                                            "--output", str(gen)]) == 0
    assert run_stage("run", run, ["--input", str(gen), "--output", str(clean), *ARGS]) == 0
    shutil.copytree(clean, crashed)
    lake = Lake(spark, crashed)
    # the driver of a detect rerun dies while its anomalies replace is half-written
    before = _versions(crashed / "anomalies")
    exe = str(Path(sys.executable).with_name("meltrca"))
    secs = _kill_during_write([exe, "detect", "--lake", str(crashed), *ARGS, "--master", "local[2]"], crashed / "anomalies")
    killed = {
        "secs": secs,
        "runs": [r.asDict() for r in lake.read("runs").where("job = 'detect'").collect()],
        "committed": _versions(crashed / "anomalies") - before,
        "watermark": last_successful_window_end(lake, "detect"),
    }
    # the same commands again, to the end
    assert run_stage("detect", detect, ["--lake", str(crashed), *ARGS]) == 0
    assert run_stage("rca", rca, ["--lake", str(crashed)]) == 0
    assert run_stage("explain", explain, ["--lake", str(crashed)]) == 0
    return {"clean": Lake(spark, clean), "crashed": lake, "killed": killed}


def test_killed_run_is_left_running_and_ignored_by_the_watermark(lakes):
    k = lakes["killed"]
    print(f"detect killed {k['secs']:.1f}s after start; anomalies commits by it: {k['committed']}")
    assert k["committed"] == 0  # killed mid-write: task files written, no commit names them
    assert [r["status"] for r in k["runs"]] == ["running"] and k["runs"][0]["ended_at"] is None
    assert k["watermark"] is None  # a running (dead) run never moves the incremental watermark
    statuses = sorted(r["status"] for r in lakes["crashed"].read("runs").where("job = 'detect'").collect())
    assert statuses == ["running", "succeeded"]


@pytest.mark.parametrize("table", TABLES)
def test_rerun_after_kill_equals_a_clean_run(lakes, table):
    got = lakes["crashed"].read(table).drop("run_id", "ingested_at")
    want = lakes["clean"].read(table).drop("run_id", "ingested_at")
    assert got.count() == set_comparable(got).dropDuplicates().count()  # nothing duplicated
    assert want.count() > 0
    assertDataFrameEqual(set_comparable(got), set_comparable(want), checkRowOrder=False)


def test_failed_stage_exits_non_zero_and_is_recorded(lakes, capsys):
    lake = lakes["clean"]
    code = run_stage("detect", detect, ["--lake", lake.root, *ARGS, "--start", "2030-01-01", "--end", "2030-01-02"])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("meltrca detect: error:") and "no rows" in err[-1]
    rows = lake.read("runs").where("job = 'detect'").collect()
    assert [r["status"] for r in rows] == ["failed"]
    assert "no rows" in rows[0]["error"] and rows[0]["ended_at"] is not None
    assert last_successful_window_end(lake, "detect") is None
