"""Triggered RCA (issue 26): an alert fired at a time; rank the causes of the trouble around it.

Pure pandas ranking on hand-built anomalies, then `rca --at` and `evaluate --triggered` on a small
lake (real Spark, real Delta, the GraphFrames engine)."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from meltrca.errors import ConfigError
from meltrca.jobrunner import JobContext
from meltrca.rca.triggered import Alert, rank_alert
from meltrca.schemas import ANOMALIES, FEATURES, SPANS
from meltrca.stages import evaluate as evaluate_stage
from meltrca.stages import rca as rca_stage
from meltrca.timewindow import TimeWindow, parse_duration
from test_rca import EDGES, T0, anomaly, params, reach_pdf, span_rows

RANK_KEYS = ["system", "anomaly_id", "service", "component", "feature", "window_start", "window_end", "value",
             "expected_low", "expected_high", "ensemble_score", "anomaly_type", "severity"]


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows)[RANK_KEYS]


def pairs() -> set[tuple[str, str]]:
    return set(map(tuple, reach_pdf().to_numpy()))


def test_alert_ranks_the_trouble_around_it_even_what_detection_would_not_call_an_incident(settings):
    """One weak blip on db (a detected incident needs more) and its caller's latency: with an alert
    at minute 10 both are ranked, db first (it explains api); trouble an hour earlier is not in it."""
    rows = [
        anomaly("db", "ERROR_count", 10, 0.96, component="log"),
        anomaly("api", "latency_p95_ms", 11, 0.97, component="trace"),
        anomaly("cache", "cpu_usage_mean", -60, 0.999), anomaly("cache", "cpu_usage_mean", -59, 0.999),
    ]
    doc = rank_alert(frame(rows), pairs(), params(settings), "run-t", system="shop", alert=Alert(T0 + timedelta(minutes=10)))
    assert [(c["rank"], c["service"]) for c in doc["root_causes"]] == [(1, "db"), (2, "api")]
    assert (doc["start"], doc["end"], doc["services"]) == (T0 + timedelta(minutes=10), T0 + timedelta(minutes=12), ["api", "db"])
    assert [c["service"] for c in doc["causal_chain"]] == ["db", "api"]
    # the same rows as a detected incident: one log blip and one trace row are not admitted
    assert rank_alert(frame(rows[:1]), pairs(), params(settings), "run-t", system="shop",
                      alert=Alert(T0 + timedelta(minutes=10)))["root_causes"][0]["service"] == "db"


def test_alert_window_reaches_back_the_tolerance_and_forward_the_window(settings):
    alert = Alert(T0 + timedelta(minutes=10), after=timedelta(minutes=5), before=timedelta(minutes=3))
    assert alert.span == TimeWindow(T0 + timedelta(minutes=7), T0 + timedelta(minutes=15))
    inside = [anomaly("auth", "memory_usage_mean", 7, 0.99), anomaly("api", "cpu_usage_mean", 15, 0.99)]
    outside = [anomaly("db", "cpu_usage_mean", 5, 0.999), anomaly("cache", "cpu_usage_mean", 16, 0.999)]
    doc = rank_alert(frame(inside + outside), pairs(), params(settings), "r", system="shop", alert=alert)
    assert sorted(c["service"] for c in doc["root_causes"]) == ["api", "auth"]
    assert rank_alert(frame(outside), pairs(), params(settings), "r", system="shop",
                      alert=Alert(T0 + timedelta(minutes=40))) is None


@pytest.mark.parametrize("text,seconds", [("5m", 300), ("90s", 90), ("1h", 3600), ("5 minutes", 300), ("2 min", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5x", "0m", "-1m", "m", ""])
def test_bad_durations_are_one_line_errors(text):
    with pytest.raises(ConfigError, match="--window .* is not a duration"):
        parse_duration(text, flag="--window")


def test_rca_at_and_evaluate_triggered_on_a_lake(spark, lake, settings, tmp_path, capsys):
    """`rca --at` on a lake with spans and anomalies of two faults prints the ranking and writes the
    incident document; `evaluate --triggered` ranks each labelled fault at its start."""
    spans = spark.createDataFrame(span_rows("shop", EDGES, 0) + span_rows("shop", EDGES, 30), SPANS)
    lake.replace_window("spans", spans, systems=["shop"], window=None)
    rows = [
        # fault 1 at minute 10: db errors, api (its caller) slow
        anomaly("db", "ERROR_count", 10, 0.97, component="log"),
        anomaly("api", "latency_p95_ms", 11, 0.99, component="trace"),
        # fault 2 at minute 40: auth memory; front (its caller) errors a minute later
        anomaly("auth", "memory_usage_mean", 40, 0.98),
        anomaly("front", "error_ratio", 41, 0.999, component="trace"),
    ]
    lake.replace_window("anomalies", spark.createDataFrame([tuple(r[f.name] for f in ANOMALIES) for r in rows], ANOMALIES),
                        systems=["shop"], window=None)
    feats = [("shop", s, T0 + timedelta(minutes=m), T0 + timedelta(minutes=m + 1), "metric", "cpu_usage_mean", 1.0,
              (T0 + timedelta(minutes=m)).date()) for s in ("front", "api", "db", "auth", "cache") for m in range(60)]
    lake.replace_window("features", spark.createDataFrame(feats, FEATURES), systems=["shop"], window=None)

    out = tmp_path / "alert.jsonl"
    args = argparse.Namespace(lake=lake.root, at="2024-09-26T10:10:30Z", system="shop", window="5m",
                              alert_output=str(out), incremental=False)
    ctx = JobContext(job="rca", args=args, settings=settings, run_id="rca-at", window=TimeWindow(),
                     lake_root=lake.root, _spark=spark)
    capsys.readouterr()
    rca_stage.execute(ctx)
    printed = capsys.readouterr().out
    assert "shop: root causes of the trouble around 2024-09-26T10:10:30Z" in printed
    assert [line.split()[:2] for line in printed.splitlines() if line.startswith("  ")] == [["1.", "db"], ["2.", "api"]]
    (doc,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(c["rank"], c["service"]) for c in doc["root_causes"]] == [(1, "db"), (2, "api")]
    assert (doc["start"], doc["end"], doc["affected_services"]) == ("2024-09-26T10:10:00Z", "2024-09-26T10:12:00Z", ["api", "db"])
    assert not lake.exists("incidents")  # triggered mode writes no incidents table rows

    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([
        {"fault_id": "f1", "system": "shop", "root_cause_service": "db", "fault_type": "exception",
         "start": "2024-09-26T10:10:00Z", "end": "2024-09-26T10:13:00Z", "affected_services": ["api", "db"]},
        {"fault_id": "f2", "system": "shop", "root_cause_service": "auth", "fault_type": "memory",
         "start": "2024-09-26T10:40:00Z", "end": "2024-09-26T10:43:00Z", "affected_services": ["auth", "front"]},
    ]))
    rca_stage.process(JobContext(job="rca", args=argparse.Namespace(lake=lake.root), settings=settings, run_id="rca-1",
                                 window=TimeWindow(), lake_root=lake.root, _spark=spark))
    ectx = JobContext(job="evaluate", args=argparse.Namespace(results=lake.root), settings=settings, run_id="ev",
                      window=TimeWindow(), lake_root=lake.root, _spark=spark)
    result = evaluate_stage.process(ectx, labels=str(labels), triggered=True, window="5m")
    got = [(r["fault_id"], r["rank"], r["top3"]) for r in result["triggered"]["faults"]]
    assert got == [("f1", 1, ["db", "api"]), ("f2", 1, ["auth", "front"])]
    assert result["triggered"]["accuracy"]["ac@1"] == 1.0
    assert "triggered RCA (rca --at each fault start, --window 5m): AC@1 1.000" in capsys.readouterr().out


def test_peer_deviations_compare_a_sparse_series_with_its_other_windows(spark):
    """Logs exported only in a few windows: in the alert span, api's ERROR share of its lines jumps
    (a row, in lines, with the peers' range scaled to that window's volume); db writes four times
    its usual lines with the same mix (its volume deviates, its ERROR share does not); cache has
    too few peer windows to judge."""
    from meltrca.rca.triggered import peer_rows

    def rows(service, minute, lines, errors):
        ws = T0 + timedelta(minutes=minute)
        return [("shop", service, ws, ws + timedelta(minutes=1), "log", f, float(v), ws.date())
                for f, v in (("log_count", lines), ("ERROR_count", errors))]

    data = []
    for m in (0, 1, 2, 20, 21, 22, 40, 41, 42):  # exported around earlier incidents only
        data += rows("api", m, 100, 2 + m % 2) + rows("db", m, 50, 1)
    data += rows("api", 60, 100, 30) + rows("db", 60, 200, 4)  # the alert span
    data += rows("cache", 1, 10, 0) + rows("cache", 60, 10, 9)
    feats = spark.createDataFrame(data, FEATURES)
    span = Alert(T0 + timedelta(minutes=60), after=timedelta(minutes=2), before=timedelta(minutes=1)).span
    got = peer_rows(feats, span, min_z=3.5)
    assert list(got.columns) == [*RANK_KEYS, "sparse"]
    assert not got["sparse"].any()  # these services log in every window they have: dense signals
    assert sorted(zip(got["service"], got["feature"], got["value"], strict=True)) == [
        ("api", "ERROR_count", 30.0), ("db", "log_count", 200.0)]
    row = got[got["service"] == "api"].iloc[0]
    median, scale = 0.02, 0.01  # ERROR share of api's lines in its peer windows; MAD 0 -> floor of 1 line in 100
    assert row["anomaly_type"] == "peer_deviation"
    assert row["expected_low"] == pytest.approx((median - 3.5 * scale) * 100)
    assert row["expected_high"] == pytest.approx((median + 3.5 * scale) * 100)
    z = (0.30 - median) / scale
    assert row["ensemble_score"] == pytest.approx(1 - 0.05 * np.exp(-(z - 3.5) / 2))
    db = got[got["service"] == "db"].iloc[0]  # raw volume: median 50 lines, MAD 0 -> one line
    assert (db["expected_low"], db["expected_high"]) == (pytest.approx(50 - 3.5), pytest.approx(50 + 3.5))


def test_an_error_ratio_deviates_only_with_errors_its_peers_make_unlikely(spark):
    """Error ratios are counts of requests: median and MAD are 0 where errors are rare, so the
    windows must also hold more errors than the peers' pooled rate makes as likely as a 3.5-sigma
    deviation. api errs now and then (1 in 80 requests in a fifth of its windows): one error in 80
    in the alert span is no trouble. pay never errs: 2 errors in 5 requests (and api's calls to it,
    and its log lines at ERROR) are."""
    from meltrca.rca.triggered import peer_rows

    def rows(service, minute, comp, pairs):
        ws = T0 + timedelta(minutes=minute)
        return [("shop", service, ws, ws + timedelta(minutes=1), comp, f, float(v), ws.date()) for f, v in pairs]

    data = []
    for m in range(40):
        background = 1 if m % 5 == 0 else 0
        data += rows("api", m, "trace", [("request_count", 80), ("error_ratio", background / 80),
                                         ("edge:pay:call_count", 10), ("edge:pay:error_ratio", 0.0)])
        data += rows("pay", m, "trace", [("request_count", 10), ("error_ratio", 0.0)])
        data += rows("pay", m, "log", [("log_count", 20), ("error_ratio", 0.0)])
    data += rows("api", 60, "trace", [("request_count", 80), ("error_ratio", 1 / 80),
                                      ("edge:pay:call_count", 5), ("edge:pay:error_ratio", 2 / 5)])
    data += rows("pay", 60, "trace", [("request_count", 5), ("error_ratio", 2 / 5)])
    data += rows("pay", 60, "log", [("log_count", 10), ("error_ratio", 2 / 10)])
    feats = spark.createDataFrame(data, FEATURES)
    span = Alert(T0 + timedelta(minutes=60), after=timedelta(minutes=2), before=timedelta(minutes=1)).span
    got = peer_rows(feats, span, min_z=3.5)
    assert sorted(zip(got["service"], got["component"], got["feature"], got["value"], strict=True)) == [
        ("api", "trace", "edge:pay:error_ratio", 0.4), ("pay", "log", "error_ratio", 0.2),
        ("pay", "trace", "error_ratio", 0.4)]
    assert set(got["anomaly_type"]) == {"peer_deviation"} and not got["sparse"].any()


def test_dense_peer_rows_join_only_where_the_detectors_saw_nothing():
    """A sparse signal's peer rows always join the alert's trouble; a dense signal's only in a
    system whose detectors flagged nothing in the span; a row the detectors flagged keeps theirs."""
    from meltrca.rca.triggered import admitted_peer_rows

    def peer(system, service, anomaly_id, sparse):
        return {"system": system, "service": service, "anomaly_id": anomaly_id, "component": "log", "sparse": sparse}

    peers = pd.DataFrame([peer("a", "x", "p1", True), peer("a", "y", "p2", False), peer("b", "z", "p3", False),
                          peer("a", "w", "d1", True)])
    detected = pd.DataFrame([{"system": "a", "anomaly_id": "d1", "component": "metric"},
                             {"system": "b", "anomaly_id": "e1", "component": "event"}])
    got = admitted_peer_rows(peers, detected)
    assert list(got.columns) == ["system", "service", "anomaly_id", "component"]
    assert list(got["anomaly_id"]) == ["p1", "p3"]
    empty = pd.DataFrame(columns=["system", "anomaly_id", "component"])
    assert list(admitted_peer_rows(peers, empty)["anomaly_id"]) == ["p1", "p2", "p3", "d1"]
