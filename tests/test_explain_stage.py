"""`meltrca explain` on a hand-built lake: metadata documents, explanations, correlations, alerts, reruns."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from meltrca.explain.documents import schema_validator
from meltrca.io import Lake, read_jsonl
from meltrca.stages import explain
from meltrca.timewindow import TimeWindow
from test_explain_lake import (
    INCIDENT_A,
    INCIDENT_B,
    INCIDENT_LAB,
    at,
    build_lake,
    feature_rows,
    make_ctx,
    series_values,
)

INCIDENT_COLUMNS = ["system", "incident_id", "start", "end", "services", "anomaly_ids", "root_causes",
                    "causal_chain", "severity", "run_id", "date"]


@pytest.fixture(scope="module")
def explained(spark, settings, tmp_path_factory):
    """The lake after one explain run (template writer), plus the input incidents as they were."""
    root = tmp_path_factory.mktemp("explain")
    lake = Lake(spark, root / "lake")
    build_lake(spark, lake)
    before = lake.read("incidents").select(INCIDENT_COLUMNS).localCheckpoint()
    ctx = make_ctx(spark, lake, settings, output=str(root / "out"))
    explain.process(ctx, output=str(root / "out"))
    return {"lake": lake, "out": root / "out", "before": before, "ctx": ctx}


def docs_by(explained):
    return {(d["service"], d["feature"], d["timestamp"]): d for d in read_jsonl(explained["out"] / "metadata.jsonl")}


def test_every_metadata_line_validates_and_covers_every_anomaly(explained):
    lake = explained["lake"]
    lines = (explained["out"] / "metadata.jsonl").read_text().splitlines()
    validator = schema_validator("metadata")
    docs = [json.loads(x) for x in lines]
    assert [list(validator.iter_errors(d)) for d in docs] == [[] for _ in docs]
    ids = {r[0] for r in lake.read("anomalies").select("anomaly_id").collect()}
    assert len(docs) == len(ids) == 74 and {d["anomaly_id"] for d in docs} == ids
    # The table holds the same documents as the file, with its key columns.
    table = lake.read("metadata")
    assert sorted(r["document"] for r in table.collect()) == sorted(lines)
    keys = table.select("anomaly_id", "system", "service", "component", "feature", F.col("timestamp").alias("window_start"))
    assertDataFrameEqual(keys, lake.read("anomalies").select("anomaly_id", "system", "service", "component", "feature",
                                                              "window_start"))
    assert explained["ctx"].counts["documents_invalid"] == 0


def _window_values(service, comp, feature, lo, hi, count_like):
    """Per-minute values of a series in [lo, hi) minutes (None when absent, 0 for count-like)."""
    vals = series_values()[(service, comp, feature)]
    return {m: (vals[m] if m < len(vals) and vals[m] is not None else (0.0 if count_like else None))
            for m in range(lo, hi) if m < len(vals)}


def test_correlation_scores_are_pearson_over_the_incident_window(explained):
    doc = docs_by(explained)[("payments", "cpu_usage_mean", "2024-09-26T10:40:00Z")]
    got = doc["root_cause_analysis"]["correlated_anomalies"]
    # Incident A spans minutes 40..57; widened by 30 minutes on each side -> [10, 87).
    cpu = _window_values("payments", "metric", "cpu_usage_mean", 10, 87, False)
    peers = [("payments", "log", "ERROR_count"), ("payments", "log", "template_t1_count"),
             ("orders", "trace", "latency_p95_ms"), ("frontend", "trace", "error_ratio")]
    expected = []
    for service, comp, feature in peers:
        other = _window_values(service, comp, feature, 10, 87, feature.endswith("_count"))
        shared = [m for m in cpu if cpu[m] is not None and other.get(m) is not None]
        r = np.corrcoef([cpu[m] for m in shared], [other[m] for m in shared])[0, 1]
        expected.append({"service": service, "metric": feature, "correlation_score": round(float(r), 3)})
    expected.sort(key=lambda x: (-abs(x["correlation_score"]), x["service"], x["metric"]))
    assert [e["metric"] for e in got] == [e["metric"] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["service"] == e["service"] and g["correlation_score"] == pytest.approx(e["correlation_score"], abs=1e-3)
    assert got[0]["correlation_score"] > 0.8  # the callers' symptoms track the CPU saturation


def test_pearson_gives_no_score_for_one_shared_point_or_a_constant_series(spark):
    """Spark 4 runs ANSI mode: F.corr over a constant series divides by zero and raised
    DIVIDE_BY_ZERO, ending the whole run (issue 25). Such pairs now get no score; others keep r."""
    from meltrca.explain.correlation import pearson

    t = [at(m) for m in range(5)]
    series = {"up": [1, 2, 3, 4, 5], "twice": [2, 4, 6, 8, 10.5], "flat": [7, 7, 7, 7, 7], "once": [None, None, 3, None, None]}
    features = spark.createDataFrame(
        [("shop", name, "metric", "x", ts, ts, float(v), ts.date())
         for name, values in series.items() for ts, v in zip(t, values, strict=True) if v is not None],
        "system string, service string, component string, feature string, window_start timestamp, "
        "window_end timestamp, value double, date date",
    )
    lo, hi = t[0].timestamp() - 60, t[-1].timestamp() + 60
    pairs = spark.createDataFrame(
        [("k", "shop", "up", "metric", "x", other, "metric", "x", lo, hi) for other in ("twice", "flat", "once")],
        "corr_key string, system string, a_service string, a_component string, a_feature string, "
        "b_service string, b_component string, b_feature string, lo_s double, hi_s double",
    )
    r = round(float(np.corrcoef(series["up"], series["twice"])[0, 1]), 3)
    for min_points in (1, 3):
        got = pearson(pairs, features, min_points=min_points).select("b_service", "correlation_score", "points")
        assertDataFrameEqual(got, spark.createDataFrame([("twice", r, 5)], got.schema))


def test_anomalies_outside_incidents_correlate_with_their_neighbours(explained):
    docs = docs_by(explained)
    fe = docs[("frontend", "request_count", "2024-09-26T11:25:00Z")]
    assert fe["root_cause_analysis"]["incident_id"] is None
    (item,) = fe["root_cause_analysis"]["correlated_anomalies"]
    # Window [11:25 - 30 min, 11:26 + 30 min) clipped to the data: minutes 55..89.
    a = series_values()[("frontend", "trace", "request_count")][55:90]
    b = series_values()[("orders", "trace", "request_count")][55:90]
    assert item == {"service": "orders", "metric": "request_count",
                    "correlation_score": pytest.approx(round(float(np.corrcoef(a, b)[0, 1]), 3), abs=1e-3)}
    # The lone deploy has no neighbours: nothing is invented.
    deploy = docs[("payments", "deploy_count", "2024-09-26T10:25:00Z")]
    assert deploy["root_cause_analysis"]["correlated_anomalies"] == []


def test_expected_range_comes_from_the_baseline(explained):
    docs = docs_by(explained)
    assert docs[("payments", "cpu_usage_mean", "2024-09-26T10:40:00Z")]["anomaly_details"]["expected_range"] == "24-36"
    # frontend error_ratio has no detector range: p5-p95 of its previous 60 minutes of features.
    doc = docs[("frontend", "error_ratio", "2024-09-26T10:45:00Z")]
    history = sorted(v for (_, s, ws, _, _c, f, v, _) in feature_rows()
                     if (s, f) == ("frontend", "error_ratio") and at(-15) <= ws < at(45))
    lo = np.quantile(history, 0.05, method="inverted_cdf")
    hi = np.quantile(history, 0.95, method="inverted_cdf")
    from meltrca.explain.text import expected_range

    assert doc["anomaly_details"]["expected_range"] == expected_range(lo, hi)
    # No features at all (system lab): the range is unknown rather than made up.
    lab = next(d for d in read_jsonl(explained["out"] / "metadata.jsonl") if d["system"] == "lab")
    assert lab["anomaly_details"]["expected_range"] == "unknown"
    assert lab["anomaly_details"]["severity"] == "high"  # derived from ensemble 0.99 (detector left none)


def test_incident_explanations_cite_numbers_and_keep_rca_columns(explained):
    lake = explained["lake"]
    rows = {r["incident_id"]: r for r in lake.read("incidents").collect()}
    a = rows[INCIDENT_A]
    assert a["explanation_writer"] == "template"
    for phrase in (
        "Most likely root cause: payments (score 0.82): cpu_usage_mean on payments was",
        "the upper bound of its normal range 24-36",
        "payments deviated first, at 10:40Z, 2 min before orders and 3 min before frontend",
        "A deploy on payments at 10:25Z preceded the incident by 14 min (\"rollout payments v2.3.1\")",
        "50 ERROR lines on payments such as \"Timeout acquiring worker thread after 5000 ms\"",
        "Likely causes: A recent change introduced a CPU-heavy code path or setting",
    ):
        assert phrase in a["explanation"]
    b = rows[INCIDENT_B]["explanation"]
    assert "Most likely root cause: postgres (score 0.9): conn_pool_usage_mean on postgres was" in b
    assert "Database connection pool exhaustion" in b
    assert {r["explanation_writer"] for r in rows.values()} == {"template"}
    assertDataFrameEqual(lake.read("incidents").select(INCIDENT_COLUMNS), explained["before"])
    # incidents.jsonl: one valid document per incident, explanation included.
    docs = read_jsonl(explained["out"] / "incidents.jsonl")
    validator = schema_validator("incident")
    assert [list(validator.iter_errors(d)) for d in docs] == [[], [], []]
    assert {d["incident_id"]: d["explanation"] for d in docs} == {k: r["explanation"] for k, r in rows.items()}


def test_suggested_causes_follow_the_evidence(explained):
    docs = docs_by(explained)
    edge = docs[("orders", "edge:postgres:latency_p95_ms", "2024-09-26T11:11:00Z")]
    assert edge["root_cause_analysis"]["suggested_causes"][0] == (
        "Requests queueing for an exhausted database connection pool further down the call path")
    errors = docs[("payments", "ERROR_count", "2024-09-26T10:41:00Z")]
    assert errors["root_cause_analysis"]["suggested_causes"][0].startswith("Faulty deployment")
    assert "A deploy on payments came 16 min earlier (10:25Z)." in errors["explanation"]
    template = docs[("payments", "template_t1_count", "2024-09-26T10:42:00Z")]
    assert 'Log template: "Timeout acquiring worker thread after <*> ms".' in template["explanation"]


def test_telemetry_text_is_sanitised_everywhere(explained):
    texts = (explained["out"] / "metadata.jsonl").read_text() + (explained["out"] / "incidents.jsonl").read_text()
    for line in texts.splitlines():
        for value in _strings(json.loads(line)):
            assert value.isprintable(), value


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _version(payload: str) -> str:
    return json.loads(payload)["content_version"]


def test_alert_outbox_opens_and_resolves_with_stable_keys(explained):
    rows = explained["lake"].read("alerts").collect()
    got = sorted((r["system"], r["incident_id"], r["event"], r["status"], r["attempts"]) for r in rows)
    # shop's data runs to 11:30: A (ended 10:57) is resolved, B (ended 11:17) not yet; lab has no later data.
    assert got == sorted([
        ("shop", INCIDENT_A, "opened", "pending", 0), ("shop", INCIDENT_A, "resolved", "pending", 0),
        ("shop", INCIDENT_B, "opened", "pending", 0), ("lab", INCIDENT_LAB, "opened", "pending", 0),
    ])
    for r in rows:
        key = hashlib.sha1(f"{r['system']}|{r['incident_id']}|{r['event']}|{_version(r['payload'])}".encode()).hexdigest()
        assert r["dedup_key"] == key and r["alert_id"] == key[:16]
        payload = json.loads(r["payload"])
        assert payload["dedup_key"] == key and payload["event"] == r["event"] and payload["explanation"]


def test_rerun_replaces_instead_of_duplicating(explained, spark, settings):
    lake, out = explained["lake"], explained["out"]
    meta_before = lake.read("metadata").select("anomaly_id", "document", "explanation_writer").localCheckpoint()
    alerts_before = lake.read("alerts").localCheckpoint()
    files_before = {n: (out / n).read_bytes() for n in ("metadata.jsonl", "incidents.jsonl")}
    explain.process(make_ctx(spark, lake, settings), output=str(out))
    assertDataFrameEqual(lake.read("metadata").select("anomaly_id", "document", "explanation_writer"), meta_before)
    assertDataFrameEqual(lake.read("alerts"), alerts_before)
    assert {n: (out / n).read_bytes() for n in files_before} == files_before


def test_changed_incident_gets_an_updated_alert_and_windows_stay_scoped(explained, spark, settings):
    lake, out = explained["lake"], explained["out"]
    others = lake.read("metadata").where(F.col("system") == "lab").localCheckpoint()
    # RCA reruns with more data: incident B grows by three minutes and becomes high severity.
    grown = lake.read("incidents").where(F.col("incident_id") == INCIDENT_B).withColumn(
        "end", F.lit(datetime(2024, 9, 26, 11, 20))).withColumn("severity", F.lit("high"))
    lake.merge("incidents", grown, keys=["incident_id"])
    window = TimeWindow(at(60), at(90))
    explain.process(make_ctx(spark, lake, settings, window=window, systems=["shop"], run_id="explain-2"),
                    output=str(out))
    alerts = lake.read("alerts").collect()
    new = [(r["incident_id"], r["event"]) for r in alerts if r["event"] == "updated"]
    assert new == [(INCIDENT_B, "updated")] and len(alerts) == 5
    upd = next(r for r in alerts if r["event"] == "updated")
    assert json.loads(upd["payload"])["severity"] == "high" and json.loads(upd["payload"])["end"] == "2024-09-26T11:20:00Z"
    # Other systems and windows were left alone; the window's documents were replaced, not added.
    assertDataFrameEqual(lake.read("metadata").where(F.col("system") == "lab"), others)
    assert lake.read("metadata").count() == 74
    runs = lake.read("metadata").groupBy(F.col("timestamp") >= at(60)).agg(F.collect_set("run_id")).collect()
    assert sorted((r[0], r[1]) for r in runs) == [(False, ["explain-test"]), (True, ["explain-2"])]


def test_sibling_aggregates_are_one_signal(spark):
    """cpu_usage_mean/max of the anomaly's own service are left out; a peer metric is listed once."""
    from meltrca.explain.correlation import correlated_anomalies

    anomalies = spark.createDataFrame(
        [("x" * 16, "s", "api", "metric", "cpu_usage_mean")],
        "anomaly_id string, system string, service string, component string, feature string")
    membership = spark.createDataFrame([("s", "x" * 16, "i" * 16)], "system string, anomaly_id string, incident_id string")
    scores = spark.createDataFrame(
        [("i" * 16, "s", "api", "metric", "cpu_usage_mean", b_svc, b_comp, b_feat, r, 30)
         for b_svc, b_comp, b_feat, r in [
             ("api", "metric", "cpu_usage_max", 0.99), ("db", "trace", "latency_p95_ms", 0.7),
             ("db", "trace", "latency_p99_ms", 0.8), ("db", "metric", "latency_p95_ms_max", -0.9),
             ("api", "log", "ERROR_count", 0.5)]],
        "corr_key string, system string, a_service string, a_component string, a_feature string, b_service string, "
        "b_component string, b_feature string, correlation_score double, points long")
    (row,) = correlated_anomalies(anomalies, membership, scores, limit=5).collect()
    assert json.loads(row["correlated_json"]) == [
        {"service": "db", "metric": "latency_p95_ms_max", "correlation_score": -0.9},
        {"service": "api", "metric": "ERROR_count", "correlation_score": 0.5},
    ]
