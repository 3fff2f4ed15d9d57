"""Scheduled incremental runs: two `run --incremental` steps equal one run over the union.

A generated system (4 services, 6 h, one fault at 01:56-02:10) is processed in two increments split
*inside* the fault (02:04), so detection's look-back/look-ahead and the rebuilding of an incident
that straddles the watermark are exercised. The reference is the same stages over the whole 6 h in
one go, with detectors fitted on the same baseline period (an incremental pipeline fits once, on
its first run's baseline, and scores later windows with the saved models: see meltrca.incremental).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from conftest import set_comparable
from meltrca import incremental as inc
from meltrca.io import Lake
from meltrca.jobrunner import JobContext, run_stage
from meltrca.runs import last_successful_window_end
from meltrca.schemas import INCIDENTS, RUNS
from meltrca.stages import detect, explain, features, generate, ingest, rca, run
from meltrca.timewindow import TimeWindow, to_iso

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
    # reference: every stage once over the union, detectors fitted on the first increment's baseline:
    # its first detection.baseline_fraction (0.5) of windows 00:00 .. 02:03, i.e. 00:00 .. 01:01
    last = SPLIT - timedelta(minutes=1)
    cut = T0 + (last - T0) * 0.5
    baseline_end = T0 + timedelta(minutes=int((cut - T0).total_seconds() // 60) + 1)
    _ok("ingest", ingest, "--source", "bronze", "--path", gen, "--lake", full)
    _ok("features", features, "--lake", full)
    _ok("detect", detect, "--lake", full, *MODELS, "--fit", "--start", to_iso(T0), "--end", to_iso(baseline_end))
    _ok("detect", detect, "--lake", full, *MODELS, "--score-only")
    _ok("rca", rca, "--lake", full)
    _ok("explain", explain, "--lake", full, "--output", full)
    return {"gen": gen, "inc": Lake(spark, inc), "full": Lake(spark, full)}


def _runs(lake):
    return lake.read("runs").where("job = 'run'").orderBy("started_at").collect()


@pytest.mark.slow
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
    assert inc.count() == set_comparable(inc).dropDuplicates().count()  # nothing duplicated
    # Sums of the same floats in another order (other partitions) differ in the last bits: rtol 1e-9.
    assertDataFrameEqual(set_comparable(inc), set_comparable(full), checkRowOrder=False, rtol=1e-9, atol=1e-12)
    return full.count()




@pytest.mark.slow
def test_features_equal_a_full_run(lakes):
    assert _same(lakes, "features") > 0
    assert _same(lakes, "log_template_counts") > 0


@pytest.mark.slow
def test_anomalies_equal_a_full_run(lakes):
    n = _same(lakes, "anomalies")
    assert n > 0
    near = lakes["full"].read("anomalies").where(
        (F.col("window_start") >= SPLIT - timedelta(minutes=20)) & (F.col("window_start") < SPLIT + timedelta(minutes=20))
    )
    assert near.count() > 0  # the split cut through anomalous windows


@pytest.mark.slow
def test_incidents_and_metadata_equal_a_full_run(lakes):
    assert _same(lakes, "incidents") >= 1
    inc = lakes["inc"].read("incidents").collect()
    assert any(r["start"] < SPLIT < r["end"] for r in inc)  # one incident straddles the watermark, unsplit
    assert _same(lakes, "metadata", drop=("run_id", "document")) > 0
    docs = {side: {r["anomaly_id"]: _rounded(json.loads(r["document"]))
                   for r in lakes[side].read("metadata").select("anomaly_id", "document").collect()}
            for side in ("inc", "full")}
    assert docs["inc"] == docs["full"]


def _rounded(doc):
    """A metadata document with its floats at 9 significant digits: a feature mean summed in another
    partition order differs in the 16th digit, and the document carries it as text."""
    if isinstance(doc, float):
        return float(f"{doc:.9g}")
    if isinstance(doc, dict):
        return {k: _rounded(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_rounded(v) for v in doc]
    return doc


@pytest.mark.slow
def test_nothing_new_exits_zero(lakes, capsys):
    before = lakes["inc"].read("anomalies").count()
    code = run_stage("run", run, ["--input", str(lakes["gen"]), "--output", str(lakes["inc"].root), *MODELS, "--incremental"])
    assert code == 0
    assert "nothing new after the watermark 2024-09-26T06:00:00Z" in capsys.readouterr().out
    last = _runs(lakes["inc"])[-1]
    assert last["status"] == "succeeded" and last["input_start"] == END and last["input_end"] is None
    assert lakes["inc"].read("anomalies").count() == before


# ---- fast: watermark and stage windows on a hand-made lake ---------------------------------------


def _run_row(run_id, job, status, start, end):
    return (run_id, job, ["shop"], "{}", start, end, {}, status, T0, None, {}, None, [])


def _incident(iid, start, end):
    return ("shop", iid, start, end, ["a"], [], [], [], "high", None, None, "r", start.date())


def _ctx(settings, lake, *argv):
    parser = run.add_arguments
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--start")
    p.add_argument("--end")
    parser(p)
    args = p.parse_args(["--input", "x", "--output", lake.root, "--incremental", *argv])
    ctx = JobContext(job="run", args=args, settings=settings, run_id="r-test",
                     window=TimeWindow.from_flags(args.start, args.end), lake_root=lake.root)
    ctx._spark, ctx._lake = lake.spark, lake
    return ctx


def test_watermark_reads_succeeded_runs_only(spark, lake, settings):
    at = [T0 + timedelta(hours=h) for h in range(5)]
    lake.append("runs", spark.createDataFrame([
        _run_row("a", "run", "succeeded", None, at[1]),
        _run_row("b", "run", "succeeded", at[1], at[2]),
        _run_row("c", "run", "failed", at[2], at[3]),   # failed: never moves the watermark
        _run_row("d", "run", "running", at[2], at[4]),  # killed (SIGKILL) runs stay 'running'
        _run_row("e", "detect", "succeeded", at[2], at[4]),  # another job's watermark
        _run_row("f", "run", "succeeded", at[4], None),  # a 'nothing new' run has no end
    ], RUNS))
    assert last_successful_window_end(lake, "run") == at[2]
    assert last_successful_window_end(lake, "detect") == at[4]
    assert last_successful_window_end(lake, "rca") is None

    ctx = _ctx(settings, lake, "--start", "2024-09-25")  # --start only seeds a first run
    assert inc.begin(ctx) and ctx.window == TimeWindow(at[2], None) and ctx.watermark == at[2]
    ctx = _ctx(settings, lake, "--end", to_iso(at[2]))
    assert not inc.begin(ctx)  # --end not after the watermark: nothing new

    ctx = _ctx(settings, lake)
    inc.begin(ctx)
    lake.append("metrics", spark.createDataFrame(
        [("shop", at[2] + timedelta(minutes=90, seconds=7), "a", "i", "cpu", 1.0, {})],
        "system string, ts timestamp, service string, instance string, metric string, value double, "
        "labels map<string,string>"))
    assert inc.close(ctx, inc.BRONZE_TABLES)
    assert ctx.window == TimeWindow(at[2], at[2] + timedelta(minutes=91))  # the newest row's window included
    ctx = _ctx(settings, lake)
    ctx.lake.append("runs", spark.createDataFrame([_run_row("g", "run", "succeeded", at[2], at[4])], RUNS))
    inc.begin(ctx)
    assert not inc.close(ctx, inc.BRONZE_TABLES)


def test_stage_windows_cover_detector_context_and_straddling_incidents(spark, lake, settings):
    mark = T0 + timedelta(hours=3)
    m = lambda n: mark + timedelta(minutes=n)  # noqa: E731
    lake.append("incidents", spark.createDataFrame([
        _incident("old", m(-120), m(-100)),   # long before: kept as it is
        _incident("chain", m(-60), m(-30)),   # touches 'open' (within the incident gap): rebuilt too
        _incident("open", m(-34), m(-10)),    # reaches into the re-scored windows
    ], INCIDENTS))
    ctx = _ctx(settings, lake)
    ctx.watermark = mark
    context = inc.context_windows({"lstm": {"sequence_length": 10}, "level_shift_windows": 10, "min_duration_windows": 2})
    assert context == 19
    assert inc.detect_start(ctx) == m(-19)
    assert inc.rca_start(ctx) == m(-60)
    assert inc.explain_start(ctx, inc.rca_start(ctx)) == m(-60)
    ctx.window = TimeWindow(mark, m(60))
    with inc.stage_window(ctx, m(-19)):
        assert ctx.window == TimeWindow(m(-19), m(60))
    assert ctx.window == TimeWindow(mark, m(60))
    ctx.watermark = None  # a first run: no look-back
    assert inc.detect_start(ctx) is None and inc.rca_start(ctx) is None
