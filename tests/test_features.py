"""Windowed features on a small hand-built bronze set, every value asserted; reruns replace."""

from __future__ import annotations

import argparse
from datetime import date, datetime

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from meltrca.features import FeatureParams, align_window, window_seconds
from meltrca.jobrunner import JobContext
from meltrca.schemas import EVENTS, FEATURES, LOGS, METRICS, SPANS
from meltrca.stages import features as stage
from meltrca.templates import template_id
from meltrca.timewindow import TimeWindow

D = date(2024, 9, 26)
W0, W1, W2 = (datetime(2024, 9, 26, 10, m) for m in (0, 1, 2))
T1, T2 = "4bf92f3577b34da6a3ce929d0e0e4736", "5b8efff798038103d269b633813fc60c"


def ts(m: int, s: int = 0, us: int = 0) -> datetime:
    return datetime(2024, 9, 26, 10, m, s, us)


def seed_bronze(spark, lake) -> None:
    metrics = [
        ("s", ts(0, 0), "api", "api-1", "cpu_usage", 10.0, None, D),
        ("s", ts(0, 30), "api", "api-2", "cpu_usage", 30.0, None, D),
        ("s", ts(0, 59), "api", "api-1", "cpu_usage", 20.0, None, D),
        ("s", ts(1, 0), "api", "api-1", "cpu_usage", 40.0, None, D),
    ]
    spans = [
        # trace 1: frontend entry -> frontend client span -> cart server span (error) -> cart internal span
        ("s", T1, "a000000000000001", None, "frontend", "GET /", ts(0, 10), ts(0, 10, 100000), 100.0, "ok", "server", None, D),
        ("s", T1, "a000000000000002", "a000000000000001", "frontend", "call cart", ts(0, 10, 5000), ts(0, 10, 85000), 80.0, "ok", "client", None, D),
        ("s", T1, "a000000000000003", "a000000000000002", "cart", "Get", ts(0, 10, 10000), ts(0, 10, 70000), 60.0, "error", "server", None, D),
        ("s", T1, "a000000000000004", "a000000000000003", "cart", "redis", ts(0, 10, 20000), ts(0, 10, 30000), 10.0, "ok", "client", None, D),
        # trace 2: one frontend request a minute later
        ("s", T2, "b000000000000001", None, "frontend", "GET /", ts(1, 5), ts(1, 5, 50000), 50.0, "ok", "server", None, D),
    ]
    logs = [
        ("s", ts(0, 1), "api", "api-1", "INFO", "user 42 logged in", None, None, None, D),
        ("s", ts(0, 2), "api", "api-2", "INFO", "user 7 logged in", None, None, None, D),
        ("s", ts(0, 3), "api", "api-1", "ERROR", "db timeout after 30 ms", None, None, None, D),
        ("s", ts(1, 4), "api", "api-1", "WARN", "retry 3 of 5", None, None, None, D),
        ("s", ts(1, 5), "db", "db-0", "INFO", "cache warmed", None, None, None, D),
    ]
    events = [("s", ts(0, 30), "cart", "deploy", "cart v2", None, D)]
    for table, rows, schema in (("metrics", metrics, METRICS), ("spans", spans, SPANS), ("logs", logs, LOGS), ("events", events, EVENTS)):
        lake.replace_window(table, spark.createDataFrame(rows, schema), systems=["s"], window=None)


def run_features(spark, settings, lake, window: TimeWindow | None = None) -> JobContext:
    args = argparse.Namespace(master=None, verbose=False, debug=False, lake=lake.root, window=None)
    ctx = JobContext(job="features", args=args, settings=settings, run_id="t", window=window or TimeWindow(),
                     lake_root=lake.root, _spark=spark)
    stage.process(ctx)
    return ctx


def rows(component: str, items: list[tuple[str, datetime, str, float]]):
    return [("s", svc, w, datetime(w.year, w.month, w.day, w.hour, w.minute + 1), component, feat, val, D) for svc, w, feat, val in items]


ERR, WARN = template_id("db timeout after <NUM> ms"), template_id("retry <NUM> of <NUM>")


def expected_features(spark):
    metric = rows("metric", [
        ("api", W0, "cpu_usage_mean", 20.0), ("api", W0, "cpu_usage_max", 30.0), ("api", W0, "cpu_usage_p95", 30.0),
        ("api", W1, "cpu_usage_mean", 40.0), ("api", W1, "cpu_usage_max", 40.0), ("api", W1, "cpu_usage_p95", 40.0),
    ])
    trace = rows("trace", [
        ("frontend", W0, "request_count", 1), ("frontend", W0, "error_count", 0), ("frontend", W0, "error_ratio", 0.0),
        ("frontend", W0, "latency_p50_ms", 100), ("frontend", W0, "latency_p95_ms", 100), ("frontend", W0, "latency_p99_ms", 100),
        ("cart", W0, "request_count", 1), ("cart", W0, "error_count", 1), ("cart", W0, "error_ratio", 1.0),
        ("cart", W0, "latency_p50_ms", 60), ("cart", W0, "latency_p95_ms", 60), ("cart", W0, "latency_p99_ms", 60),
        ("frontend", W0, "edge:cart:call_count", 1), ("frontend", W0, "edge:cart:error_ratio", 1.0),
        ("frontend", W0, "edge:cart:latency_p50_ms", 60), ("frontend", W0, "edge:cart:latency_p95_ms", 60),
        ("frontend", W0, "edge:cart:latency_p99_ms", 60),
        # the frontend's client span waited 80 ms for 60 ms of cart's work
        ("frontend", W0, "edge:cart:network_gap_p50_ms", 20), ("frontend", W0, "edge:cart:network_gap_p95_ms", 20),
        ("frontend", W0, "edge:cart:network_gap_p99_ms", 20),
        ("frontend", W1, "request_count", 1), ("frontend", W1, "error_count", 0), ("frontend", W1, "error_ratio", 0.0),
        ("frontend", W1, "latency_p50_ms", 50), ("frontend", W1, "latency_p95_ms", 50), ("frontend", W1, "latency_p99_ms", 50),
        # silent a minute later: zeros, not gaps
        ("cart", W1, "request_count", 0), ("cart", W1, "error_count", 0), ("frontend", W1, "edge:cart:call_count", 0),
        # per-request patterns: a request to a service is its entry span; no log here carries a trace id
        ("frontend", W0, "pattern:requests@GET /", 1), ("frontend", W0, "pattern:call:cart@GET /", 1.0),
        ("cart", W0, "pattern:requests@Get", 1), ("cart", W0, "pattern:error@Get", 1.0),
        # the request a minute later made no call to cart: a share of 0, not a gap (also in a windowed rerun)
        ("frontend", W1, "pattern:requests@GET /", 1), ("frontend", W1, "pattern:call:cart@GET /", 0.0),
    ])

    def levels(svc, w, e, wa, i, n, new, rare):
        return [(svc, w, "ERROR_count", e), (svc, w, "WARN_count", wa), (svc, w, "INFO_count", i), (svc, w, "DEBUG_count", 0),
                (svc, w, "log_count", n), (svc, w, "new_template_count", new), (svc, w, "rare_template_count", rare)]

    log = rows("log", [
        *levels("api", W0, 1, 0, 2, 3, 3, 3), ("api", W0, "error_ratio", 1 / 3), ("api", W0, f"template_{ERR}_count", 1),
        # no zero for the WARN template at W0: api first logs it at W1 (features stay causal)
        *levels("api", W1, 0, 1, 0, 1, 1, 1), ("api", W1, "error_ratio", 0.0), ("api", W1, f"template_{WARN}_count", 1),
        ("api", W1, f"template_{ERR}_count", 0),
        *levels("db", W0, 0, 0, 0, 0, 0, 0),
        *levels("db", W1, 0, 0, 1, 1, 1, 1), ("db", W1, "error_ratio", 0.0),
    ])
    event = rows("event", [("cart", W0, "deploy_count", 1)])
    return spark.createDataFrame([(*r[:6], float(r[6]), r[7]) for r in metric + trace + log + event], FEATURES)


def test_features_of_every_signal(spark, settings, lake):
    seed_bronze(spark, lake)
    ctx = run_features(spark, settings, lake)
    expected = expected_features(spark)
    got = lake.read("features")
    for comp in ("metric", "trace", "log", "event"):
        assertDataFrameEqual(got.where(F.col("component") == comp), expected.where(F.col("component") == comp))
    assert ctx.systems == ["s"] and ctx.counts["features"] == expected.count()
    templates = {r["template"]: (r["count"], r["first_seen"]) for r in lake.read("log_templates").collect()}
    assert templates == {
        "user <NUM> logged in": (2, ts(0, 1)), "db timeout after <NUM> ms": (1, ts(0, 3)),
        "retry <NUM> of <NUM>": (1, ts(1, 4)), "cache warmed": (1, ts(1, 5)),
    }

    # A rerun over everything replaces: same features, template counts not doubled.
    run_features(spark, settings, lake)
    assertDataFrameEqual(lake.read("features"), expected)
    assert {r["template"]: r["count"] for r in lake.read("log_templates").collect()}["user <NUM> logged in"] == 2

    # A windowed rerun touches only its window (10:01 .. 10:02); new/rare use all history.
    run_features(spark, settings, lake, TimeWindow(ts(1, 30), ts(1, 40)))
    assertDataFrameEqual(lake.read("features"), expected)
    assert lake.read("log_template_counts").agg(F.sum("count")).first()[0] == 5


def test_window_helpers():
    assert window_seconds("1 minute") == 60 and window_seconds("30 seconds") == 30 and window_seconds("2 hours") == 7200
    w = align_window(TimeWindow(ts(1, 30), ts(3, 0, 1)), 60)
    assert (w.start, w.end) == (ts(1), ts(4))
    assert align_window(TimeWindow(), 60) == TimeWindow()


def test_features_without_bronze_is_a_clear_error(spark, settings, lake):
    from meltrca.errors import InputError

    with pytest.raises(InputError, match=r"no bronze rows .*\(run `meltrca ingest` first\)"):
        run_features(spark, settings, lake)


def test_feature_params_from_settings(settings):
    p = FeatureParams.from_settings(settings.features)
    assert p == FeatureParams(seconds=60, aggregates=("mean", "max", "p95"), percentiles=(50.0, 95.0, 99.0), rare_count=3, fill_zero_counts=True,
                            fill_lookback_minutes=60.0)


def test_network_gap_only_where_the_parent_is_the_callers_client_span(spark):
    """Kind 'client', or kind unknown with the call as its only child: the wait beyond the callee's
    work. A server span with several calls (its own work in between) says nothing about the network."""
    from meltrca.features import trace_features

    T3, T4 = "c" * 32, "d" * 32
    spans = [
        # kind unknown, one child: a client span (gap 2000 - 15 = 1985 ms)
        ("s", T3, "c000000000000001", None, "preserve", "POST /preserve", ts(0, 1), ts(0, 3), 2100.0, "ok", None, None, D),
        ("s", T3, "c000000000000002", "c000000000000001", "preserve", "HTTP GET", ts(0, 1), ts(0, 3), 2000.0, "ok", None, None, D),
        ("s", T3, "c000000000000003", "c000000000000002", "contacts", "GET /contacts", ts(0, 1), ts(0, 2), 15.0, "ok", None, None, D),
        # kind unknown, two children of other services: the parent's own work is in the gap -> no gap feature
        ("s", T4, "d000000000000001", None, "gateway", "GET /", ts(0, 5), ts(0, 6), 300.0, "ok", None, None, D),
        ("s", T4, "d000000000000002", "d000000000000001", "contacts", "GET /contacts", ts(0, 5), ts(0, 6), 10.0, "ok", None, None, D),
        # a server-kind parent with a single call: still no gap feature
        ("s", T4, "d000000000000003", "d000000000000001", "auth", "GET /auth", ts(0, 5), ts(0, 6), 20.0, "ok", "SERVER", None, D),
        ("s", T4, "d000000000000004", "d000000000000003", "users", "GET /user", ts(0, 5), ts(0, 6), 5.0, "ok", "server", None, D),
    ]
    df = spark.createDataFrame(spans, SPANS)
    params = FeatureParams(seconds=60, aggregates=("mean",), percentiles=(50.0, 95.0), rare_count=3, fill_zero_counts=False)
    got = trace_features(df, params=params).where(F.col("feature").contains("network_gap")).select("service", "feature", "value")
    expected = spark.createDataFrame(
        [("preserve", "edge:contacts:network_gap_p50_ms", 1985.0), ("preserve", "edge:contacts:network_gap_p95_ms", 1985.0)],
        "service string, feature string, value double",
    )
    assertDataFrameEqual(got, expected)
