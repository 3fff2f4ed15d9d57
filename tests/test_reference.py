"""Reference baselines (meltrca.reference): parsing, the mapping's `reference:` recorded at ingest,
fitting on the reference and judging sparse series against it."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from meltrca.config import load_settings
from meltrca.detection import fit_mask, pattern_anomalies, peer_deviations
from meltrca.errors import ConfigError
from meltrca.ingest import load_mapping, run_ingest
from meltrca.io import Lake
from meltrca.jobrunner import JobContext
from meltrca.reference import (
    ALL,
    in_reference,
    parse_range,
    reference_mask,
    references_by_system,
)
from meltrca.schemas import BASELINES, FEATURES
from meltrca.stages import detect
from meltrca.timewindow import TimeWindow

T0 = datetime(2024, 9, 26)


def at(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def test_parse_range_and_its_errors():
    assert parse_range("2024-09-26T00:00:00Z/2024-09-26T06:00:00Z") == (T0, T0 + timedelta(hours=6))
    assert parse_range("2024-09-26 01:00+01:00/2024-09-26T01:00Z") == (T0, T0 + timedelta(hours=1))
    for bad, msg in [("2024-09-26T00:00Z", "is not START/END"), ("a/b", "not an ISO-8601 time"),
                     ("2024-09-26T06:00Z/2024-09-26T00:00Z", "the end must be after the start")]:
        with pytest.raises(ConfigError, match=msg):
            parse_range(bad)


def test_config_and_flag_validation():
    s = load_settings(environ={}, overrides={"detection.baseline": ["2024-09-26T00:00Z/2024-09-26T06:00Z"]})
    assert list(s.detection.baseline) == ["2024-09-26T00:00Z/2024-09-26T06:00Z"]
    with pytest.raises(ConfigError, match=r"detection.baseline.*is not START/END"):
        load_settings(environ={}, overrides={"detection.baseline": ["yesterday"]})


def test_reference_mask_overlap_and_fit_mask_fallback():
    index = pd.date_range(T0, periods=10, freq="1min")
    # a range starting mid-window takes that window (it overlaps), and ends before the window at its end
    mask = reference_mask(index, [(at(2) + timedelta(seconds=30), at(5))], 60)
    assert mask.tolist() == [False, False, True, True, True, False, False, False, False, False]
    assert fit_mask(index, fraction=0.5, ranges=[(at(2), at(5))], min_history=3, window_seconds=60).tolist() == \
        [False, False, True, True, True, False, False, False, False, False]
    # too few windows in the reference: the first baseline_fraction, as without one
    assert fit_mask(index, fraction=0.5, ranges=[(at(2), at(5))], min_history=4, window_seconds=60).tolist() == \
        [True] * 5 + [False] * 5
    assert fit_mask(index, fraction=None, ranges=None, min_history=4, window_seconds=60) is None


def test_references_by_system_prefers_configured_ranges():
    rows = [{"system": "b", "start": at(5), "end": at(9)}, {"system": "a", "start": at(0), "end": at(3)},
            {"system": "a", "start": at(10), "end": at(12)}]
    assert references_by_system([], rows) == {"a": [(at(0), at(3)), (at(10), at(12))], "b": [(at(5), at(9))]}
    assert references_by_system([(at(1), at(2))], rows) == {ALL: [(at(1), at(2))]}
    assert references_by_system([], []) == {}


def sparse_rows() -> list[tuple]:
    """One trace latency series (25 windows) of system s: 100 ms in the reference (windows 0-7), 200 ms
    after, 2 s in window 24; and of system t the same values, without a reference."""
    rows = []
    for system in ("s", "t"):
        for i in range(25):
            v = 100.0 + i % 3 if i < 8 else 200.0 + i % 3
            if i == 24:
                v = 2000.0
            rows.append((system, "api", at(i), at(i + 1), "trace", "latency_p95_ms", v, at(i).date()))
    return rows


def test_peer_deviations_judge_against_the_reference_windows(spark):
    features = spark.createDataFrame(sparse_rows(), FEATURES)
    without = peer_deviations(features, min_z=3.5).select("system", "window_start")
    # all peers: the median is ~200 ms, so only the 2 s window deviates
    assertDataFrameEqual(without, spark.createDataFrame([("s", at(24)), ("t", at(24))], "system string, window_start timestamp"))
    ref = in_reference({"s": [(at(0), at(8))]})
    got = peer_deviations(features, min_z=3.5, reference=ref).select("system", "window_start")
    # system s against its reference (100 ms): every window from 8 on; t has no reference
    want = [("s", at(i)) for i in range(8, 25)] + [("t", at(24))]
    assertDataFrameEqual(got, spark.createDataFrame(want, "system string, window_start timestamp"))
    # fewer than five reference windows: all peers, as without one
    short = peer_deviations(features, min_z=3.5, reference=in_reference({"s": [(at(0), at(4))]}))
    assertDataFrameEqual(short.select("system", "window_start"), without)


def test_pattern_anomalies_judge_against_the_reference_windows(spark):
    """A log line every request wrote in the reference, missing from 12 of 20 windows after it: against
    all windows its median share is 0 (nothing is a drop); against the reference it is 1."""
    rows = []
    for i in range(20):
        share = 1.0 if i < 8 else 0.0
        rows.append(("s", "api", at(i), at(i + 1), "trace", "pattern:requests@GET /a", 10.0, at(i).date()))
        rows.append(("s", "api", at(i), at(i + 1), "trace", "pattern:log:t1@GET /a", share, at(i).date()))
    features = spark.createDataFrame(rows, FEATURES)
    kw = {"min_shift": 0.5, "min_requests": 3, "max_p": 1e-6}
    assert pattern_anomalies(features, **kw).count() == 0
    got = pattern_anomalies(features, **kw, reference=in_reference({ALL: [(at(0), at(8))]}))
    assertDataFrameEqual(got.select("window_start", "anomaly_type", "value", "expected_low"),
                         spark.createDataFrame([(at(i), "drop", 0.0, 1.0) for i in range(8, 20)],
                                               "window_start timestamp, anomaly_type string, value double, expected_low double"))


def test_mapping_reference_is_recorded_per_system_at_ingest(spark, settings, tmp_path):
    src = tmp_path / "in"
    (src / "normal").mkdir(parents=True)
    (src / "incident").mkdir()
    (src / "normal" / "m.csv").write_text("ts,svc,v\n2024-09-26T00:00:10Z,api,1\n2024-09-26T00:04:50Z,api,2\n")
    (src / "incident" / "m.csv").write_text("ts,svc,v\n2024-09-26T01:00:00Z,api,9\n2024-09-26T01:01:00Z,db,9\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "system: shop\n"
        "reference:\n  files: ['normal/*.csv']\n  ranges: ['2024-09-25T00:00Z/2024-09-25T06:00Z']\n"
        "metrics:\n  files: ['*/m.csv']\n  format: csv\n"
        "  fields: {ts: {column: ts, format: iso}, service: svc}\n  values: {columns: {v: cpu}}\n"
    )
    lake = Lake(spark, tmp_path / "lake")
    ctx = JobContext(job="ingest", args=argparse.Namespace(master=None, verbose=False, debug=False), settings=settings,
                     run_id="ing-1", window=TimeWindow(), lake_root=str(lake.root), _spark=spark)
    run_ingest(ctx, load_mapping(mapping), root=str(src))
    want = spark.createDataFrame([
        ("shop", T0 + timedelta(seconds=10), T0 + timedelta(minutes=4, seconds=50, microseconds=1), "mapping", "ing-1"),
        ("shop", T0 - timedelta(days=1), T0 - timedelta(hours=18), "mapping", "ing-1"),
    ], BASELINES)
    assertDataFrameEqual(lake.read("baselines"), want)
    run_ingest(ctx, load_mapping(mapping), root=str(src))  # a rerun replaces, never duplicates
    assertDataFrameEqual(lake.read("baselines"), want)


def test_mapping_reference_errors(tmp_path):
    for body, msg in [("reference: normal/\n", "reference must be a mapping"),
                      ("reference: {folder: x}\n", r"unknown key\(s\) folder"),
                      ("reference: {ranges: [nope]}\n", "reference.ranges 'nope' is not START/END")]:
        p = tmp_path / "m.yaml"
        p.write_text("system: x\n" + body + "metrics: {files: a.csv, format: csv, fields: {ts: ts, service: s}, values: {columns: {v: cpu}}}\n")
        with pytest.raises(ConfigError, match=msg):
            load_mapping(p)


def test_detect_fits_on_the_reference(spark, tmp_path):
    """Two services, 120 windows; the reference is windows 60-99: every model's baseline is exactly
    those 40 windows (the default would take the first half), and the run notes the reference."""
    rng = np.random.default_rng(3)
    rows = [("s", svc, at(i), at(i + 1), "metric", "cpu_usage_mean", float(40 + rng.normal(0, 1)), at(i).date())
            for svc in ("api", "db") for i in range(120)]
    lake = Lake(spark, tmp_path / "lake")
    lake.overwrite("features", spark.createDataFrame(rows, FEATURES))
    settings = load_settings(environ={}, overrides={
        "detection.enabled": ["zscore"], "detection.baseline": ["2024-09-26T01:00:00Z/2024-09-26T01:40:00Z"]})
    ctx = JobContext(job="detect", args=argparse.Namespace(master=None, verbose=False, fit=False, score_only=False),
                     settings=settings, run_id="det-ref", window=TimeWindow(), lake_root=str(lake.root), _spark=spark)
    detect.process(ctx, mode="fit_score")
    models = lake.read("models").select("service", "baseline_start", "baseline_end", "baseline_windows", "cold_start")
    assertDataFrameEqual(models, spark.createDataFrame(
        [(svc, at(60), at(99), 40, False) for svc in ("api", "db")],
        "service string, baseline_start timestamp, baseline_end timestamp, baseline_windows long, cold_start boolean"))
    assert ctx.notes == ["reference baseline: 2024-09-26T01:00:00Z/2024-09-26T01:40:00Z"]
    assert lake.read("anomalies").where(F.col("component") != "event").count() == 0
