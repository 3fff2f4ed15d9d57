"""`meltrca detect` on real Spark + Delta: anomalies, models, change events, reruns, fit / score-only, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from conftest import run_cli
from meltrca.config import load_settings
from meltrca.detection import detection_plan
from meltrca.jobrunner import JobContext, run_stage
from meltrca.schemas import FEATURES
from meltrca.stages import detect
from meltrca.timewindow import TimeWindow

T0 = datetime(2024, 9, 26)
N = 720  # 12 hours of one-minute windows
FAST = {"detection.models.lstm.epochs": 4, "detection.models.lstm.sequence_length": 6, "detection.models.lstm.units": 8}


def at(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def feature_rows() -> list[tuple]:
    """Two systems. shop: db CPU saturates at 08:20 (after a deploy at 08:18), api errors follow;
    bank: one service whose latency doubles at 10:00; batch (shop) lives only 25 minutes and
    saturates in its last minutes (cold start)."""
    rng = np.random.default_rng(42)
    rows: list[tuple] = []

    def add(system, service, i, comp, feat, v):
        rows.append((system, service, at(i), at(i + 1), comp, feat, float(v), at(i).date()))

    for system, service in [("shop", "api"), ("shop", "db"), ("shop", "cache"), ("bank", "ledger")]:
        cpu = 40 + rng.normal(0, 2, N)
        lat = 100 + rng.normal(0, 5, N)
        err = rng.poisson(0.3, N)
        if service == "db":
            cpu[500:520] += 30
            lat[505:525] *= 2
        if service == "api":
            err[510:525] += 20
        if service == "ledger":
            lat[600:630] *= 2
        for i in range(N):
            add(system, service, i, "metric", "cpu_usage_mean", cpu[i])
            add(system, service, i, "trace", "latency_p95_ms", lat[i])
            add(system, service, i, "log", "ERROR_count", err[i])  # 0 included, as the features stage fills it
    add("shop", "db", 498, "event", "deploy_count", 1)
    add("shop", "cache", 100, "event", "scale_count", 0)  # a zero count is no event
    for i in range(N - 25, N):
        add("shop", "batch", i, "metric", "cpu_usage_mean", 500.0 if i in (N - 4, N - 3) else 20 + (i % 3))
    return rows


@pytest.fixture(scope="module")
def fast_settings():
    return load_settings(environ={}, overrides=FAST)


@pytest.fixture(scope="module")
def lake_root(spark, tmp_path_factory):
    from meltrca.io import Lake

    root = tmp_path_factory.mktemp("detect") / "lake"
    Lake(spark, root).overwrite("features", spark.createDataFrame(feature_rows(), FEATURES))
    return str(root)


def context(spark, settings, root: str, run_id: str, window: TimeWindow | None = None) -> JobContext:
    args = argparse.Namespace(master=None, verbose=False, fit=False, score_only=False)
    ctx = JobContext(job="detect", args=args, settings=settings, run_id=run_id, window=window or TimeWindow(), lake_root=root)
    ctx._spark = spark
    return ctx


def expected_id(system, service, component, feature, ts: datetime) -> str:
    key = f"{system}|{service}|{component}|{feature}|{ts:%Y-%m-%dT%H:%M:%SZ}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def summary(df) -> dict:
    """(system, service, component, feature, type) -> (first window index, last, count)."""
    out = {}
    for r in df.groupBy("system", "service", "component", "feature", "anomaly_type").agg(
        F.min("window_start").alias("a"), F.max("window_start").alias("b"), F.count("*").alias("n")
    ).collect():
        key = (r["system"], r["service"], r["component"], r["feature"], r["anomaly_type"])
        out[key] = (int((r["a"] - T0).total_seconds() // 60), int((r["b"] - T0).total_seconds() // 60), r["n"])
    return out


@pytest.fixture(scope="module")
def first_run(spark, fast_settings, lake_root):
    ctx = context(spark, fast_settings, lake_root, "detect-run-1")
    detect.process(ctx, mode="fit_score")
    return ctx


def test_detect_finds_the_faults_and_passes_change_events_through(spark, first_run, lake_root):
    from meltrca.io import Lake

    lake = Lake(spark, lake_root)
    anomalies = lake.read("anomalies")
    got = summary(anomalies)
    assert got == {
        ("shop", "db", "metric", "cpu_usage_mean", "resource_saturation"): (500, 519, 20),
        ("shop", "db", "trace", "latency_p95_ms", "latency_degradation"): (505, 524, 20),
        ("shop", "api", "log", "ERROR_count", "error_burst"): (510, 524, 15),
        ("bank", "ledger", "trace", "latency_p95_ms", "latency_degradation"): (600, 629, 30),
        ("shop", "db", "event", "deploy_count", "change_event"): (498, 498, 1),
        ("shop", "batch", "metric", "cpu_usage_mean", "resource_saturation"): (N - 4, N - 3, 2),
    }
    assert first_run.systems == ["bank", "shop"]
    assert first_run.counts["anomalies"] == anomalies.count() == 88
    rows = anomalies.collect()
    for r in rows:
        assert r["anomaly_id"] == expected_id(r["system"], r["service"], r["component"], r["feature"], r["window_start"])
        assert r["window_end"] - r["window_start"] == timedelta(minutes=1)
        assert r["run_id"] == "detect-run-1" and r["date"] == r["window_start"].date()
        assert 0.0 <= r["confidence"] <= 1.0
        if r["component"] == "event":
            continue
        assert r["ensemble_score"] >= 0.95
        assert not (r["expected_low"] <= r["value"] <= r["expected_high"])
        expected_keys = {"zscore"} if r["service"] == "batch" else {"zscore", "isolation_forest", "lstm"}
        assert set(r["detector_scores"]) == expected_keys
        assert r["cold_start"] == (r["service"] == "batch")
    event = anomalies.where("component = 'event'").select(
        "system", "service", "window_start", "feature", "value", "detector_scores", "ensemble_score", "anomaly_type",
        "severity", "confidence", "cold_start",
    )
    assertDataFrameEqual(
        event,
        spark.createDataFrame(
            [("shop", "db", at(498), "deploy_count", 1.0, {}, 1.0, "change_event", "low", 1.0, False)], event.schema
        ),
    )


def test_severity_counts_the_services_anomalous_in_the_same_window(spark, first_run, lake_root):
    from meltrca.io import Lake

    rows = Lake(spark, lake_root).read("anomalies").where("component != 'event'").collect()
    by_window: dict[tuple, set] = {}
    for r in rows:
        by_window.setdefault((r["system"], r["window_start"]), set()).add(r["service"])
    for r in rows:
        blast = len(by_window[(r["system"], r["window_start"])])
        margin = np.log10(0.05 / max(1 - r["ensemble_score"], 1e-300))
        level = min(int(np.floor(margin)), 2) + (blast >= 3) + (blast >= 6)
        assert r["severity"] == ["low", "medium", "high", "critical"][min(level, 3)]


def test_models_are_saved_per_service_and_detector_in_safe_formats(spark, first_run, lake_root):
    from meltrca.io import Lake

    models = Lake(spark, lake_root).read("models")
    got = sorted((r["system"], r["service"], r["detector"], r["format"], r["baseline_windows"], r["cold_start"])
                 for r in models.collect())
    full = [(s, svc, d, f, 360, False) for s, svc in [("bank", "ledger"), ("shop", "api"), ("shop", "cache"), ("shop", "db")]
            for d, f in [("isolation_forest", "skops+json"), ("lstm", "keras+json"), ("zscore", "json")]]
    assert got == sorted([*full, ("shop", "batch", "zscore", "json", 13, True)])
    for r in models.collect():
        assert r["version"] == r["run_id"] == "detect-run-1"
        assert r["path"] == f"{lake_root}/model_store/{r['system']}/{r['service']}/{r['detector']}/detect-run-1"
        files = sorted(os.listdir(r["path"]))
        assert files == {"json": ["model.json"], "skops+json": ["model.json", "model.skops"],
                         "keras+json": ["model.json", "model.keras"]}[r["format"]]
        assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in files)


def test_rerun_of_the_same_window_replaces_its_anomalies(spark, fast_settings, first_run, lake_root):
    """A rerun (here scoring with the saved models) replaces the window's rows: same ids, no duplicates."""
    from meltrca.io import Lake

    lake = Lake(spark, lake_root)
    before = {r["anomaly_id"]: r for r in lake.read("anomalies").collect()}
    detect.process(context(spark, fast_settings, lake_root, "detect-run-2"), mode="score")
    after = lake.read("anomalies").collect()
    assert len(after) == len(before)
    assert {r["anomaly_id"] for r in after} == set(before)
    assert {r["run_id"] for r in after} == {"detect-run-2"}
    # The saved models reproduce the first run's scores exactly, and no new model version appeared.
    for r in after:
        assert r["ensemble_score"] == before[r["anomaly_id"]]["ensemble_score"]
        assert r["detector_scores"] == before[r["anomaly_id"]]["detector_scores"]
    assert {r["version"] for r in lake.read("models").collect()} == {"detect-run-1"}


def test_fit_on_a_window_then_score_later_windows_without_refitting(spark, fast_settings, lake_root, tmp_path):
    from meltrca.io import Lake

    src = Lake(spark, lake_root)
    lake = Lake(spark, tmp_path / "lake2")
    lake.overwrite("features", src.read("features", systems=["shop"]))
    morning = TimeWindow(T0, T0 + timedelta(hours=6))
    afternoon = TimeWindow(T0 + timedelta(hours=6), T0 + timedelta(hours=12))

    fit_ctx = context(spark, fast_settings, lake.root, "detect-fit", morning)
    detect.process(fit_ctx, mode="fit")
    assert not lake.exists("anomalies")
    models = lake.read("models").collect()
    assert {(r["service"], r["baseline_windows"]) for r in models} == {("api", 360), ("db", 360), ("cache", 360)}
    stamps = {p: p.stat().st_mtime_ns for p in Path(lake.root, "model_store").rglob("*") if p.is_file()}

    score_ctx = context(spark, fast_settings, lake.root, "detect-score", afternoon)
    detect.process(score_ctx, mode="score")
    assert "models" not in score_ctx.counts
    assert lake.read("models").count() == len(models)
    assert {p: p.stat().st_mtime_ns for p in Path(lake.root, "model_store").rglob("*") if p.is_file()} == stamps
    got = summary(lake.read("anomalies"))
    assert got == {
        ("shop", "db", "metric", "cpu_usage_mean", "resource_saturation"): (500, 519, 20),
        ("shop", "db", "trace", "latency_p95_ms", "latency_degradation"): (505, 524, 20),
        ("shop", "api", "log", "ERROR_count", "error_burst"): (510, 524, 15),
        ("shop", "db", "event", "deploy_count", "change_event"): (498, 498, 1),
        # batch has no saved model: scored cold-start on its own first windows
        ("shop", "batch", "metric", "cpu_usage_mean", "resource_saturation"): (N - 4, N - 3, 2),
    }


def test_the_plan_shipped_to_executors_is_plain_data(fast_settings):
    plan = detection_plan(fast_settings, window_seconds=60)
    assert json.loads(json.dumps(plan)) == plan
    assert plan["enabled"] == ["zscore", "isolation_forest", "lstm"] and plan["block"] == 1440


# ---- the command line: flags parsed by the job runner, and a real subprocess for the errors ----


def test_cli_models_and_threshold_flags(lake_root, tmp_path, capfd):
    conf = tmp_path / "fast.yaml"
    conf.write_text("detection:\n  models:\n    lstm:\n      epochs: 2\n")
    code = run_stage("detect", detect, ["--lake", lake_root, "--models", "zscore", "--threshold", "0.99",
                                        "--config", str(conf), "--master", "local[2]"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "[meltrca] score" in err
    from pyspark.sql import SparkSession

    from meltrca.io import Lake

    lake = Lake(SparkSession.getActiveSession(), lake_root)
    rows = lake.read("anomalies").where("component != 'event'").collect()
    assert rows and all(set(r["detector_scores"]) == {"zscore"} and r["ensemble_score"] >= 0.99 for r in rows)
    runs = lake.read("runs").where("job = 'detect' AND status = 'succeeded'").collect()
    assert any(r["row_counts"].get("anomalies") == len(rows) + 1 for r in runs)
    # batch lives 25 minutes: too short to model, said in the summary and kept in its `runs` row
    note = "shop/batch: too short to model (13 baseline windows, fewer than min_history 30): cold start, z-score only"
    assert f"[meltrca] note: {note}" in err.splitlines()
    assert [r["notes"] for r in runs if r["row_counts"].get("anomalies") == len(rows) + 1] == [[note]]


def test_cli_fails_in_one_line_without_features_or_saved_models(tmp_path):
    empty = tmp_path / "empty"
    res = run_cli("detect", "--lake", str(empty), "--master", "local[1]")
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        f"meltrca detect: error: lake table 'features' not found at {empty}/features (run the stage that writes it first)"
    ]
    assert not empty.exists()  # refused before Spark: a mistyped --lake leaves no new lake (nor `runs`) behind
    bad = run_cli("detect", "--lake", str(empty), "--models", "bogus")
    assert bad.returncode != 0 and "unknown detector 'bogus'" in bad.stderr.strip().splitlines()[-1]


def test_sparse_logs_are_compared_with_their_peer_windows(spark):
    """api's logs exist in 12 of its 60 windows (exported only around incidents), its metrics in all:
    the window whose ERROR share of the lines jumps is an anomaly (unless a detector already flagged
    it). db logs all along: its jump is left to the detectors, never peer-compared."""
    from meltrca.detection import CANDIDATES, sparse_peer_anomalies

    def row(service, minute, comp, feat, v):
        return ("shop", service, at(minute), at(minute + 1), comp, feat, float(v), at(minute).date())

    rows = [row(s, m, "metric", "cpu_usage_mean", 40) for s in ("api", "db") for m in range(60)]
    for m in (0, 1, 2, 20, 21, 22, 40, 41, 42, 50, 51, 52):
        rows += [row("api", m, "log", "log_count", 100), row("api", m, "log", "ERROR_count", 30 if m == 51 else 2)]
    for m in range(60):
        rows += [row("db", m, "log", "log_count", 100), row("db", m, "log", "ERROR_count", 30 if m == 51 else 2)]
    feats = spark.createDataFrame(rows, FEATURES)
    nothing = spark.createDataFrame([], CANDIDATES)
    got = sparse_peer_anomalies(feats, nothing, min_z=3.5).collect()
    assert [(r["service"], r["feature"], r["window_start"], r["value"], r["anomaly_type"]) for r in got] == [
        ("api", "ERROR_count", at(51), 30.0, "peer_deviation")]
    (r,) = got
    # peers: a 2% ERROR share, MAD 0 -> one line in 100; the range in lines of that window
    assert (r["expected_low"], r["expected_high"]) == (pytest.approx(2 - 3.5), pytest.approx(2 + 3.5))
    assert r["detector_scores"] == {"peer": r["ensemble_score"]} and r["ensemble_score"] > 0.99
    # a row the detectors already flagged is theirs; windows outside the emit range are context
    flagged = spark.createDataFrame([("shop", "api", at(51), "log", "ERROR_count", 30.0, 0.0, 5.0, 0.99, None, None,
                                     0.99, "error_burst", 0.9, False)], CANDIDATES)
    assert sparse_peer_anomalies(feats, flagged, min_z=3.5).count() == 0
    assert sparse_peer_anomalies(feats, nothing, min_z=3.5, emit_from=at(52)).count() == 0
