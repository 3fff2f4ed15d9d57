"""Scheduled incremental runs: two `run --incremental` steps equal one run over the union.

A generated system (4 services, 6 h, one fault at 01:56-02:10) is processed in two increments split
*inside* the fault (02:04), so detection's look-back/look-ahead and the rebuilding of an incident
that straddles the watermark are exercised. The reference is the same stages over the whole 6 h in
one go, with detectors fitted on the same baseline period (an incremental pipeline fits once, on
its first run's baseline, and scores later windows with the saved models: see meltrca.incremental).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from meltrca.io import Lake
from meltrca.jobrunner import run_stage
from meltrca.stages import detect, explain, features, generate, ingest, rca, run
from meltrca.timewindow import to_iso

pytestmark = pytest.mark.slow

T0 = datetime(2024, 9, 26)
SPLIT = datetime(2024, 9, 26, 2, 4)
END = datetime(2024, 9, 26, 6, 0)
MODELS = ["--models", "zscore,isolation"]
BRONZE = {"metrics": "ts", "logs": "ts", "spans": "start_ts", "events": "ts"}


def _ok(job, module, *argv):
    assert run_stage(job, module, [str(a) for a in argv]) == 0, f"meltrca {job} {argv} failed"


@pytest.fixture(scope="module")
def lakes(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("incremental")
    gen, inc, full = tmp / "gen", tmp / "inc", tmp / "full"
    _ok("generate", generate, "--services", 4, "--duration", 6, "--faults", 1, "--seed", 7, "--output", gen)
    # increments: [start of data, 02:04) then [02:04, newest data)
    _ok("run", run, "--input", gen, "--output", inc, *MODELS, "--incremental", "--end", to_iso(SPLIT))
    _ok("run", run, "--input", gen, "--output", inc, *MODELS, "--incremental")
    # reference: every stage once over the union, detectors fitted on the first increment's baseline
    models = Lake(spark, inc).read("models").agg(F.min("baseline_start").alias("lo"), F.max("baseline_end").alias("hi")).first()
    _ok("ingest", ingest, "--source", "bronze", "--path", gen, "--lake", full)
    _ok("features", features, "--lake", full)
    _ok("detect", detect, "--lake", full, *MODELS, "--fit", "--start", to_iso(models["lo"]),
        "--end", to_iso(models["hi"] + timedelta(minutes=1)))
    _ok("detect", detect, "--lake", full, *MODELS, "--score-only")
    _ok("rca", rca, "--lake", full)
    _ok("explain", explain, "--lake", full, "--output", full)
    return {"gen": gen, "inc": Lake(spark, inc), "full": Lake(spark, full)}


def _runs(lake):
    return lake.read("runs").where("job = 'run'").orderBy("started_at").collect()


def test_second_run_processes_only_new_windows(lakes, spark):
    first, second = _runs(lakes["inc"])
    assert [first["status"], second["status"]] == ["succeeded", "succeeded"]
    assert first["input_start"] is None and first["input_end"] == SPLIT
    assert second["input_start"] == SPLIT and second["input_end"] == END  # watermark -> newest data's window end
    for table, col in BRONZE.items():
        total = lakes["full"].read(table).count()
        before = lakes["full"].read(table).where(F.col(col) < SPLIT).count()
        # each increment ingested exactly its own rows (the rest counted as outside its window)
        assert first["row_counts"][f"{table}.accepted"] == before, table
        assert second["row_counts"][f"{table}.accepted"] == total - before, table
        assert second["row_counts"].get(f"{table}.outside_window", 0) == before, table
    new_features = lakes["inc"].read("features").where(F.col("window_start") >= SPLIT).count()
    assert second["row_counts"]["features"] == new_features > 0
    assert first["row_counts"]["features"] == lakes["inc"].read("features").count() - new_features
    # detect fitted once (first run) and only scored afterwards
    assert "fit" in first["row_counts"] and "fit" not in second["row_counts"]
    assert lakes["inc"].read("models").select("version").distinct().count() == 1


def _same(lakes, table, drop=("run_id",)):
    inc = lakes["inc"].read(table).drop(*drop)
    full = lakes["full"].read(table).drop(*drop)
    assert inc.count() == inc.dropDuplicates().count()  # no duplicates
    assertDataFrameEqual(inc, full, checkRowOrder=False)
    return full.count()


def test_features_equal_a_full_run(lakes):
    assert _same(lakes, "features") > 0
    assert _same(lakes, "log_template_counts") > 0


def test_anomalies_equal_a_full_run(lakes):
    n = _same(lakes, "anomalies")
    assert n > 0
    near = lakes["full"].read("anomalies").where(
        (F.col("window_start") >= SPLIT - timedelta(minutes=20)) & (F.col("window_start") < SPLIT + timedelta(minutes=20))
    )
    assert near.count() > 0  # the split cut through anomalous windows


def test_incidents_and_metadata_equal_a_full_run(lakes):
    assert _same(lakes, "incidents") >= 1
    inc = lakes["inc"].read("incidents").collect()
    assert any(r["start"] < SPLIT < r["end"] for r in inc)  # one incident straddles the watermark, unsplit
    assert _same(lakes, "metadata") > 0


def test_nothing_new_exits_zero(lakes, capsys):
    before = lakes["inc"].read("anomalies").count()
    code = run_stage("run", run, ["--input", str(lakes["gen"]), "--output", str(lakes["inc"].root), *MODELS, "--incremental"])
    assert code == 0
    assert "nothing new after the watermark 2024-09-26T06:00:00Z" in capsys.readouterr().out
    last = _runs(lakes["inc"])[-1]
    assert last["status"] == "succeeded" and last["input_start"] == END and last["input_end"] is None
    assert lakes["inc"].read("anomalies").count() == before
