"""Per-request event patterns (features.patterns) and their anomalies (detection.pattern_anomalies)
on a hand-built spans + logs frame: a missing template, a new error template, a changed callee set,
error spans; whole DataFrames asserted."""

from __future__ import annotations

import math
from datetime import date, datetime

import numpy as np
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from meltrca.detection import pattern_anomalies
from meltrca.features import FeatureParams
from meltrca.features.patterns import known_patterns, pattern_features
from meltrca.indicators import IndicatorKinds
from meltrca.schemas import SPANS

D = date(2024, 9, 26)
OP = "POST /pay"
FAULT = 5  # the sixth minute


def w(m: int) -> datetime:
    return datetime(2024, 9, 26, 10, m)


def bronze(spark, minutes: int = 6, per_minute: int = 10):
    """front -> pay (10 requests a minute). Normally pay logs 'charge' and calls bank; in the FAULT
    minute it logs an exception instead, ends in error, and calls audit instead of bank."""
    spans, templates = [], []
    for m in range(minutes):
        for i in range(per_minute):
            t = f"t{m:02d}{i}"
            start = datetime(2024, 9, 26, 10, m, 10 + i)
            fault = m == FAULT
            spans += [
                ("s", t, f"{t}-f", None, "front", "GET /checkout", start, start, 5.0, "ok", "server", None, D),
                ("s", t, f"{t}-p", f"{t}-f", "pay", OP, start, start, 3.0, "error" if fault else "ok", "server", None, D),
                ("s", t, f"{t}-p2", f"{t}-p", "pay", "sql", start, start, 1.0, "ok", "client", None, D),
                ("s", t, f"{t}-c", f"{t}-p2", "audit" if fault else "bank", "POST /x", start, start, 1.0, "ok", "server", None, D),
            ]
            templates.append(("s", t, "pay", "exc" if fault else "charge", w(m)))
    return (spark.createDataFrame(spans, SPANS),
            spark.createDataFrame(templates, "system string, trace_id string, service string, template_id string, "
                                             "window_start timestamp"))


def test_request_pattern_features(spark):
    spans, templates = bronze(spark, minutes=2, per_minute=4)
    got = pattern_features(spans, templates, params=FeatureParams())
    front = "GET /checkout"
    rows = []
    for m in range(2):
        rows += [("front", m, f"pattern:requests@{front}", 4.0), ("front", m, f"pattern:call:pay@{front}", 1.0),
                 ("pay", m, f"pattern:requests@{OP}", 4.0), ("pay", m, f"pattern:log:charge@{OP}", 1.0),
                 ("pay", m, f"pattern:call:bank@{OP}", 1.0)]
    # the internal 'sql' span is not a request of its own (its parent is pay's); bank/audit are
    # requests without events, so they have a requests count only
    for m in range(2):
        rows += [("bank", m, "pattern:requests@POST /x", 4.0)]
    expected = spark.createDataFrame(
        [("s", svc, w(m), w(m + 1), "trace", f, v) for svc, m, f, v in rows],
        "system string, service string, window_start timestamp, window_end timestamp, component string, "
        "feature string, value double")
    assertDataFrameEqual(got, expected)


def test_missing_new_and_changed_callee_patterns_are_anomalies(spark):
    spans, templates = bronze(spark)
    features = pattern_features(spans, templates, params=FeatureParams())
    got = pattern_anomalies(features, min_shift=0.5, min_requests=3, max_p=1e-6).select(
        "service", "window_start", "feature", "value", "expected_low", "expected_high", "anomaly_type",
        F.round("ensemble_score", 4).alias("score"))
    # 10 requests, the whole share moved: z = 1 x sqrt(10) against 0.5 x sqrt(3) at the threshold
    score = round(1 - 0.05 * math.exp(-(math.sqrt(10) - 0.5 * math.sqrt(3)) / 2), 4)
    expected = spark.createDataFrame([
        ("pay", w(FAULT), f"pattern:log:charge@{OP}", 0.0, 1.0, 1.0, "drop", score),  # 'charge' now missing
        ("pay", w(FAULT), f"pattern:log:exc@{OP}", 1.0, 0.0, 0.0, "new_error_pattern", score),  # a new template
        ("pay", w(FAULT), f"pattern:error@{OP}", 1.0, 0.0, 0.0, "new_error_pattern", score),  # error spans
        ("pay", w(FAULT), f"pattern:call:bank@{OP}", 0.0, 1.0, 1.0, "drop", score),  # a call skipped
        ("pay", w(FAULT), f"pattern:call:audit@{OP}", 1.0, 0.0, 0.0, "unusual_frequency", score),  # a call added
    ], "service string, window_start timestamp, feature string, value double, expected_low double, "
       "expected_high double, anomaly_type string, score double")
    assertDataFrameEqual(got, expected)
    kinds = IndicatorKinds.from_config({"errors": ["error"], "traffic": ["call"]}, ["code_path"])
    assert [kinds.kind("trace", f) for f in (f"pattern:error@{OP}", f"pattern:call:bank@{OP}")] == ["code_path", "calls"]
    assert kinds.is_intrinsic("trace", f"pattern:log:exc@{OP}") and not kinds.is_intrinsic("trace", f"pattern:call:bank@{OP}")


def test_few_requests_few_peer_windows_or_likely_counts_are_not_anomalies(spark):
    spans, templates = bronze(spark, per_minute=2)  # 2 requests a minute: below min_requests
    features = pattern_features(spans, templates, params=FeatureParams())
    assert pattern_anomalies(features, min_shift=0.5, min_requests=3, max_p=0.05).count() == 0
    # 2 of 2 requests showing an event seen in a sixth of them is not unlikely enough (p = 1/36)
    assert pattern_anomalies(features, min_shift=0.5, min_requests=2, max_p=1e-6).count() == 0
    assert pattern_anomalies(features, min_shift=0.5, min_requests=2, max_p=0.05).count() == 5
    spans, templates = bronze(spark)
    four_windows = pattern_features(spans, templates, params=FeatureParams()).where(F.col("window_start") >= w(2))
    assert pattern_anomalies(four_windows, min_shift=0.5, min_requests=3, max_p=1e-6).count() == 0  # fewer than 5 peers


def test_binomial_tail():
    from meltrca.detection import binomial_tail

    got = binomial_tail(np.array([0.0, 2.0, 3.0]), np.array([4.0, 2.0, 3.0]), np.array([0.5, 0.5, 0.1]),
                        np.array([True, False, False]))
    assert np.allclose(got, [0.5**4, 0.25, 0.001])


def test_known_patterns_of_a_features_table(spark):
    spans, templates = bronze(spark, minutes=1)
    got = known_patterns(pattern_features(spans, templates, params=FeatureParams()))
    expected = spark.createDataFrame(
        [("s", "front", "GET /checkout", "call:pay"), ("s", "pay", OP, "log:charge"), ("s", "pay", OP, "call:bank")],
        "system string, service string, operation string, event string")
    assertDataFrameEqual(got, expected)


def test_a_pattern_anomaly_reads_as_a_sentence():
    from meltrca.features.patterns import describe

    assert describe("pay", f"pattern:log:abc@{OP}", 0.08, 1.0, "Start charge card") == (
        "pay: log 'Start charge card' now missing in 92% of requests to POST /pay (normally in 100%)")
    assert describe("pay", f"pattern:call:bank@{OP}", 0.0, 0.9) == (
        "pay: the call to bank now missing in 100% of requests to POST /pay (normally in 90%)")
    assert describe("pay", f"pattern:error@{OP}", 0.75, 0.0) == (
        "pay: an error status now in 75% of requests to POST /pay (normally in 0%)")
    assert describe("pay", f"pattern:log:abc@{OP}", 1.0, 0.0) == (
        "pay: log template abc now in 100% of requests to POST /pay (normally in 0%)")
    assert describe("pay", "cpu_usage_mean", 1.0, 0.0) is None
    assert describe("pay", f"pattern:requests@{OP}", 4.0, 4.0) is None


def test_pattern_zeros_are_causal_and_a_request_counts_its_own_window_only(spark):
    spans, templates = bronze(spark)
    got = pattern_features(spans, templates, params=FeatureParams())
    exc = f"pattern:log:exc@{OP}"
    # first seen in the fault minute: no zeros before it (a split run could not know them)
    assert [(r["window_start"], r["value"]) for r in got.where(F.col("feature") == exc).collect()] == [(w(FAULT), 1.0)]
    # known from before a windowed run: zeros from the run's start
    known = spark.createDataFrame([("s", "pay", OP, "log:exc")], "system string, service string, operation string, event string")
    zeros = pattern_features(spans, templates, params=FeatureParams(), known=known).where(F.col("feature") == exc)
    assert sorted(r["value"] for r in zeros.collect()) == [0.0] * FAULT + [1.0]
    # the 'charge' line of minute 0's requests written in minute 1 belongs to no request
    late = templates.withColumn("window_start", F.when(F.col("window_start") == w(0), w(1)).otherwise(F.col("window_start")))
    shares = pattern_features(spans, late, params=FeatureParams()).where(F.col("feature") == f"pattern:log:charge@{OP}")
    assert {(r["window_start"], r["value"]) for r in shares.collect()} == {(w(m), 1.0) for m in range(1, FAULT)} | {(w(FAULT), 0.0)}
