"""Root-cause analysis on small hand-built graphs: ranking (pandas) and the rca stage (Spark)."""

from __future__ import annotations

import argparse
import hashlib
from datetime import datetime, timedelta

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from pyspark.sql import functions as F

from meltrca.jobrunner import JobContext
from meltrca.rca.ranking import RankingParams, rank_system_incidents
from meltrca.schemas import ANOMALIES, SPANS
from meltrca.stages import rca as rca_stage
from meltrca.timewindow import TimeWindow

T0 = datetime(2024, 9, 26, 10, 0)


def anomaly(service, feature, minute, score=0.99, component="metric", system="shop", value=10.0, severity="medium"):
    ws = T0 + timedelta(minutes=minute)
    key = f"{system}|{service}|{component}|{feature}|{ws:%Y-%m-%dT%H:%M:%SZ}"
    return {
        "anomaly_id": hashlib.sha1(key.encode()).hexdigest()[:16], "system": system, "service": service,
        "component": component, "feature": feature, "window_start": ws, "window_end": ws + timedelta(minutes=1),
        "value": value, "expected_low": 1.0, "expected_high": 2.0, "detector_scores": {"zscore": score},
        "ensemble_score": score, "anomaly_type": "spike", "severity": severity, "confidence": 0.9,
        "cold_start": False, "run_id": "r0", "date": ws.date(),
    }


def params(settings, without: str | None = None) -> RankingParams:
    """The configured ranking, or with one evidence term weighted 0 (what the ranking does without it)."""
    rca = settings.rca.to_dict()
    if without is not None:
        rca = {**rca, "weights": {**rca["weights"], without: 0.0}}
    return RankingParams.from_settings(rca)


# front -> api -> db, api -> cache ; front -> auth
EDGES = [("front", "api"), ("api", "db"), ("api", "cache"), ("front", "auth")]


def reach_pdf(edges=EDGES) -> pd.DataFrame:
    pairs = set(edges)
    changed = True
    while changed:
        new = {(a, d) for a, b in pairs for c, d in pairs if b == c} - pairs
        pairs |= new
        changed = bool(new)
    return pd.DataFrame(sorted(pairs), columns=["src", "dst"])


def rank(rows, settings, key="k1", without=None, edges=EDGES):
    pdf = pd.DataFrame(rows)
    pdf["incident_key"] = [None if r["component"] == "event" else key for r in rows]
    return rank_system_incidents(pdf, reach_pdf(edges), params(settings, without), "run-1")


def test_callee_fault_with_louder_caller_symptoms_ranks_callee_first(settings):
    rows = [
        anomaly("db", "cpu_usage_mean", 0, 0.97),
        anomaly("db", "latency_p95_ms", 1, 0.96, component="trace"),
        # Callers light up louder and more often, a minute later: inherited symptoms.
        *[anomaly("api", f, m, 0.999, component="trace") for f in ("latency_p95_ms", "error_ratio") for m in (1, 2, 3)],
        anomaly("api", "edge:db:latency_p95_ms", 1, 0.999, component="trace"),
        *[anomaly("front", "latency_p95_ms", m, 0.999, component="trace") for m in (2, 3, 4)],
    ]
    inc = rank(rows, settings)
    assert len(inc) == 1
    causes = inc.iloc[0]["root_causes"]
    assert [c["service"] for c in causes] == ["db", "api", "front"]
    assert [c["rank"] for c in causes] == [1, 2, 3]
    assert causes[0]["indicator"] == "cpu_usage_mean"
    assert "first anomalous service" in causes[0]["evidence"] and "2 of 2 other anomalous services call it" in causes[0]["evidence"]
    chain = inc.iloc[0]["causal_chain"]
    assert [(c["service"], c["lag_seconds"]) for c in chain] == [("db", 0.0), ("api", 60.0), ("front", 120.0)]
    assert inc.iloc[0]["services"] == ["api", "db", "front"]
    assert inc.iloc[0]["severity"] == "high"  # medium raised by a blast radius of 3 services


def test_deploy_shortly_before_errors_raises_that_service(settings):
    # api and cache both show errors at the same minute; only cache was deployed 5 minutes before.
    base = [
        anomaly("api", "error_ratio", 0, 0.98, component="trace"),
        anomaly("cache", "error_ratio", 0, 0.98, component="trace"),
        anomaly("front", "error_ratio", 1, 0.98, component="trace"),
    ]
    without = rank(base, settings).iloc[0]["root_causes"]
    deploy = anomaly("cache", "deploy_count", -5, 1.0, component="event")
    ranked = rank([*base, deploy], settings).iloc[0]
    with_deploy = ranked["root_causes"]
    assert with_deploy[0]["service"] == "cache"
    assert with_deploy[0]["score"] > next(c["score"] for c in without if c["service"] == "cache")
    assert "deploy at 09:55 (5 min before the incident)" in with_deploy[0]["evidence"]
    assert deploy["anomaly_id"] in ranked["anomaly_ids"]


def test_single_weak_blip_is_not_an_incident(settings):
    lenient = settings.with_overrides({"rca.corroboration_minutes": 0})
    assert rank([anomaly("auth", "cpu_usage_mean", 0, 0.96)], lenient).empty
    strong = rank([anomaly("auth", "cpu_usage_mean", 0, 0.999)], lenient)
    assert strong.iloc[0]["root_causes"][0]["service"] == "auth"


def test_one_service_one_signal_kind_needs_to_last(settings):
    """A pod's metric blip of a few minutes is not an incident; the same trouble lasting
    rca.corroboration_minutes (10), or also seen in its logs, or after a deploy on it, is. Without
    a call graph (metrics only), another kind of its metrics (memory besides cpu: not the same cpu's
    mean and max) corroborates too."""
    blip = [anomaly("auth", f, m, 0.999) for f in ("cpu_usage_mean", "cpu_usage_max") for m in range(3)]
    assert rank(blip, settings).empty
    lasting = [anomaly("auth", "cpu_usage_mean", m, 0.999) for m in range(10)]
    assert rank(lasting, settings).iloc[0]["root_causes"][0]["service"] == "auth"
    logged = [*blip, anomaly("auth", "ERROR_count", 1, 0.99, component="log")]
    assert rank(logged, settings).iloc[0]["root_causes"][0]["service"] == "auth"
    other_kind = [*blip, anomaly("auth", "memory_usage_max", 2, 0.999)]
    assert rank(other_kind, settings).empty  # a call graph exists
    assert rank(other_kind, settings, edges=[]).iloc[0]["root_causes"][0]["service"] == "auth"
    assert rank(blip, settings, edges=[]).empty
    unknown_kind = [*blip, anomaly("auth", "queue_depth", 2, 0.999)]  # matches no rca.indicator_kinds
    assert rank(unknown_kind, settings, edges=[]).empty
    deployed = [*blip, anomaly("auth", "deploy_count", -2, 1.0, component="event")]
    assert rank(deployed, settings).iloc[0]["root_causes"][0]["service"] == "auth"


def test_callee_seen_only_through_callers(settings):
    # db emits nothing (it is down); api's calls to it fail.
    rows = [
        anomaly("api", "edge:db:error_ratio", 0, 0.999, component="trace"),
        anomaly("api", "error_ratio", 0, 0.99, component="trace"),
        anomaly("front", "error_ratio", 1, 0.99, component="trace"),
    ]
    causes = rank(rows, settings).iloc[0]["root_causes"]
    assert causes[0]["service"] == "db"
    assert causes[0]["indicator"] == "edge:db:error_ratio"
    assert "seen only through its callers' calls to it" in causes[0]["evidence"]


def span_rows(system, pairs, minute):
    rows = []
    for i, (caller, callee) in enumerate(pairs):
        start = T0 + timedelta(minutes=minute, seconds=i)
        for tag, svc, parent in (("p", caller, None), ("c", callee, f"{i}p")):
            rows.append((system, f"t{minute}-{i}", f"{i}{tag}", parent, svc, "op", start,
                         start + timedelta(milliseconds=5), 5.0, "ok", "server", {}, start.date()))
    return rows


def test_rca_stage_two_simultaneous_independent_faults_make_two_incidents(spark, lake, settings):
    spans = spark.createDataFrame(span_rows("shop", EDGES, 0) + span_rows("shop", EDGES, 30), SPANS)
    lake.replace_window("spans", spans, systems=["shop"], window=None)
    rows = [
        # fault 1: db cpu, api and front inherit
        anomaly("db", "cpu_usage_mean", 10, 0.99), anomaly("db", "cpu_usage_mean", 11, 0.99),
        anomaly("api", "latency_p95_ms", 11, 0.99, component="trace"),
        # fault 2 at the same time on auth (only front calls it; front is not anomalous)
        anomaly("auth", "memory_usage_mean", 10, 0.99), anomaly("auth", "memory_usage_mean", 12, 0.99),
        anomaly("auth", "ERROR_count", 11, 0.99, component="log"),
        # a deploy elsewhere an hour earlier: a distractor
        anomaly("cache", "deploy_count", -50, 1.0, component="event"),
        # another system, same services, never mixed in
        anomaly("db", "cpu_usage_mean", 10, 0.999, system="bank"),
        anomaly("db", "latency_p95_ms", 10, 0.99, component="trace", system="bank"),
    ]
    lake.replace_window("anomalies", spark.createDataFrame([tuple(r[f.name] for f in ANOMALIES) for r in rows], ANOMALIES),
                        systems=["shop", "bank"], window=None)
    ctx = JobContext(job="rca", args=argparse.Namespace(lake=lake.root), settings=settings, run_id="rca-1",
                     window=TimeWindow(), lake_root=lake.root, _spark=spark)
    rca_stage.process(ctx)

    inc = lake.read("incidents").orderBy("system", "start", "incident_id")
    got = [(r["system"], [c["service"] for c in r["root_causes"]], r["services"], r["start"]) for r in inc.collect()]
    assert sorted(got) == sorted([
        ("bank", ["db"], ["db"], T0 + timedelta(minutes=10)),
        ("shop", ["db", "api"], ["api", "db"], T0 + timedelta(minutes=10)),
        ("shop", ["auth"], ["auth"], T0 + timedelta(minutes=10)),
    ])
    graph = lake.read("service_graph").where(F.col("system") == "shop").select("src", "dst", "calls").orderBy("src", "dst")
    assert [tuple(r) for r in graph.collect()] == sorted((a, b, 2) for a, b in EDGES)
    # A rerun over the same window replaces the incidents: same ids, no duplicates.
    ids = sorted(r["incident_id"] for r in inc.collect())
    rca_stage.process(ctx)
    assert sorted(r["incident_id"] for r in lake.read("incidents").collect()) == ids


def test_rca_stage_links_services_the_call_graph_does_not_name_by_time(spark, lake, settings):
    """Without a call graph time is the evidence: a metrics-only system's services troubled together
    make one incident, not one each; later trouble makes its own. Where a graph exists it decides:
    auth, not adjacent to db, stays apart, and so does a queue no span names (on real data such
    services' metric noise chained a day's incidents together)."""
    spans = spark.createDataFrame(span_rows("shop", EDGES, 0), SPANS)
    lake.replace_window("spans", spans, systems=["shop"], window=None)
    rows = [
        anomaly("web", "cpu_usage_mean", 10, 0.999, system="plant"), anomaly("web", "cpu_usage_mean", 11, 0.999, system="plant"),
        anomaly("cart", "latency_mean", 11, 0.99, system="plant"), anomaly("cart", "latency_mean", 12, 0.99, system="plant"),
        anomaly("pay", "latency_mean", 12, 0.99, system="plant"), anomaly("pay", "latency_mean", 13, 0.99, system="plant"),
        *[anomaly("cart", "memory_usage_mean", m, 0.999, system="plant") for m in range(130, 142)],  # lasts: admitted
        anomaly("db", "cpu_usage_mean", 10, 0.99), anomaly("db", "cpu_usage_mean", 11, 0.99),
        anomaly("db", "ERROR_count", 11, 0.99, component="log"),
        *[anomaly("queue", "depth_max", m, 0.99) for m in range(11, 23)],
        anomaly("auth", "memory_usage_mean", 40, 0.99), anomaly("auth", "memory_usage_mean", 41, 0.99),
        anomaly("auth", "ERROR_count", 40, 0.99, component="log"),
    ]
    lake.replace_window("anomalies", spark.createDataFrame([tuple(r[f.name] for f in ANOMALIES) for r in rows], ANOMALIES),
                        systems=["shop", "plant"], window=None)
    ctx = JobContext(job="rca", args=argparse.Namespace(lake=lake.root), settings=settings, run_id="rca-g",
                     window=TimeWindow(), lake_root=lake.root, _spark=spark)
    rca_stage.process(ctx)
    got = sorted((r["system"], r["start"], r["services"]) for r in lake.read("incidents").collect())
    assert got == [
        ("plant", T0 + timedelta(minutes=10), ["cart", "pay", "web"]),
        ("plant", T0 + timedelta(minutes=130), ["cart"]),
        ("shop", T0 + timedelta(minutes=10), ["db"]),
        ("shop", T0 + timedelta(minutes=11), ["queue"]),
        ("shop", T0 + timedelta(minutes=40), ["auth"]),
    ]


def test_rca_stage_links_consecutive_hourly_windows_into_one_incident(spark, lake, settings):
    """Hourly series: a spike over three one-hour windows is one incident, not three (the 3-minute
    time tolerance is widened to the window, so neighbouring windows always link)."""
    hours = [anomaly("plant", "temperature_p95", 60 * h, 0.999) for h in (0, 1, 2)]
    for r in hours:
        r["window_end"] = r["window_start"] + timedelta(hours=1)
    far = anomaly("plant", "temperature_p95", 60 * 30, 0.999)  # a day later: its own incident
    far["window_end"] = far["window_start"] + timedelta(hours=1)
    rows = [tuple(r[f.name] for f in ANOMALIES) for r in [*hours, far]]
    lake.replace_window("anomalies", spark.createDataFrame(rows, ANOMALIES), systems=["shop"], window=None)
    ctx = JobContext(job="rca", args=argparse.Namespace(lake=lake.root), settings=settings, run_id="rca-h",
                     window=TimeWindow(), lake_root=lake.root, _spark=spark)
    rca_stage.process(ctx)
    got = sorted((r["start"], r["end"], r["services"]) for r in lake.read("incidents").where("system = 'shop'").collect())
    assert got == [
        (T0, T0 + timedelta(hours=3), ["plant"]),
        (T0 + timedelta(hours=30), T0 + timedelta(hours=31), ["plant"]),
    ]


@pytest.mark.parametrize("feature,kind", [
    ("cpu_usage_mean", "cpu"), ("CpuUsageRate(%)_mean", "cpu"), ("conn_pool_usage_max", "connection_pool"),
    ("memory_usage_p95", "memory"), ("latency_p95_ms", "latency"), ("error_rate_mean", "errors"),
    ("PodSuccessRate(%)_mean", "errors"), ("request_rate_mean", "traffic"), ("edge:db:latency_p95_ms", "latency"),
])
def test_indicator_kinds(settings, feature, kind):
    from meltrca.indicators import IndicatorKinds

    k = IndicatorKinds.from_config(settings.rca.indicator_kinds.to_dict(), settings.rca.intrinsic_kinds)
    assert k.kind("metric", feature) == kind
    assert k.kind("log", "template_ab12_count") == "log_pattern"
    assert k.kind("log", "ERROR_count") == "log_errors"
    assert k.kind("event", "deploy_count") == "change"
    assert not k.is_intrinsic("trace", "edge:db:cpu_usage")


def test_load_surge_without_errors_is_not_an_incident(settings):
    def up(service, feature, minute, component="metric"):
        r = anomaly(service, feature, minute, 0.999, component=component, value=300.0)
        r["expected_high"] = 200.0
        return r

    surge = [up(s, "request_rate_mean", m) for s in ("front", "api", "db") for m in (0, 1, 2)]
    surge += [up("db", "latency_p50_ms_mean", 1)]  # load-driven latency, no errors
    assert rank(surge, settings).empty
    # The same surge with errors piling up is an incident.
    broken = surge + [up("db", "error_ratio", m, component="trace") for m in (1, 2)]
    assert len(rank(broken, settings)) == 1
    # So is a surge right after a deploy on one of its services.
    deployed = [*surge, anomaly("api", "deploy_count", -3, 1.0, component="event")]
    assert len(rank(deployed, settings)) == 1
    # Traffic rising in the same minute as a latency jump (retries on a slow dependency) is a
    # symptom of a fault, not a surge: the slow service is named.
    retries = [up(s, "request_rate_mean", m) for s in ("front", "api") for m in (0, 1, 2)]
    retries += [up("api", "latency_p95_ms_mean", m) for m in (0, 1, 2)]
    incidents = rank(retries, settings)
    assert len(incidents) == 1
    assert incidents.iloc[0]["root_causes"][0]["service"] == "api"


def test_persistent_own_trouble_beats_sporadic_callee_views(settings):
    # front's cpu is anomalous throughout; its calls to api look slow in one window only.
    rows = [anomaly("front", "cpu_usage_mean", m, 0.999) for m in range(10)]
    rows.append(anomaly("front", "edge:api:latency_p99_ms", 0, 0.999, component="trace"))
    causes = rank(rows, settings).iloc[0]["root_causes"]
    assert [c["service"] for c in causes] == ["front", "api"]


def test_a_changed_code_path_outranks_a_louder_service(settings):
    """auth's requests stopped writing their 'token issued' line (a request pattern, issue 26)
    while api shows louder, longer cpu and latency trouble: without the code_path term api wins
    on strength and coverage; with it, auth. The evidence reads as a sentence."""
    rows = [
        *[anomaly("front", "latency_p95_ms", m, 0.999, component="trace") for m in range(3)],
        *[anomaly("api", "cpu_usage_mean", m, 0.999) for m in range(3)],
        *[anomaly("api", "latency_p95_ms", m, 0.999, component="trace") for m in range(3)],
        anomaly("api", "pattern:call:db@GET /items", 1, 0.96, component="trace", value=0.0),
        anomaly("auth", "pattern:log:3f2a@POST /token", 0, 0.9996, component="trace", value=0.0),
    ]
    (inc,) = rank(rows, settings).to_dict("records")
    assert [c["service"] for c in inc["root_causes"]][:2] == ["auth", "api"]
    assert inc["root_causes"][0]["evidence"].startswith(
        "auth: log template 3f2a now missing in 100% of requests to POST /token (normally in 100%) at 10:00")
    (inc,) = rank(rows, settings, without="code_path").to_dict("records")
    assert inc["root_causes"][0]["service"] == "api"


def test_callers_waiting_on_a_slow_network_name_it(settings):
    """A delay on cache's network never shows in cache's own spans; api's calls to it wait 2 s
    longer than cache works (edge network gap). db, which api also calls, shows louder own latency
    and a small gap: without the waited_on term db wins on its own rows; with it, cache."""
    def gap(callee, minute, value):
        return anomaly("api", f"edge:{callee}:network_gap_p50_ms", minute, 0.999, component="trace", value=value)

    rows = [
        *[anomaly("db", "latency_p95_ms", m, 0.999, component="trace", value=40.0) for m in (0, 1, 2)],
        gap("db", 1, 22.0),
        *[gap("cache", m, 2002.0) for m in (0, 1, 2)],
        *[anomaly("api", "latency_p95_ms", m, 0.999, component="trace", value=2100.0) for m in (0, 1, 2)],
        *[anomaly("front", "latency_p95_ms", m, 0.999, component="trace", value=2200.0) for m in (0, 1, 2)],
    ]
    (inc,) = rank(rows, settings).to_dict("records")
    assert [c["service"] for c in inc["root_causes"]][:2] == ["cache", "db"]
    # One slow request moves the p99, not what a typical call saw: a p99-only wait does not count.
    tail = [{**r, "feature": r["feature"].replace("_p50_", "_p99_")} if "cache" in r["feature"] else r for r in rows]
    assert rank(tail, settings).iloc[0]["root_causes"][0]["service"] == "db"
    assert inc["root_causes"][0]["evidence"] == (
        "api edge:cache:network_gap_p50_ms = 2e+03 vs normal 1–2 at 10:00; first anomalous service; "
        "2 of 3 other anomalous services call it; none of its callees is anomalous; "
        "its callers' network_gap_p50_ms up to 2e+03 above normal (api at 10:00); "
        "seen only through its callers' calls to it")
    (inc,) = rank(rows, settings, without="waited_on").to_dict("records")
    assert inc["root_causes"][0]["service"] == "db"


def test_without_a_call_graph_the_larger_deviation_names_the_root(settings):
    """Metrics only (no call graph), a slow network on gift: gift's latency leaves its normal range
    by 10 range widths, front's (which calls it, unseen) by 5, and front's thread count creeps just
    out of its range (an intrinsic kind). Without the deviation term front wins on that; with it,
    gift. With a call graph (front calls gift) the term is 0 and the graph terms name gift."""
    def row(service, feature, minute, value, low, high):
        return {**anomaly(service, feature, minute, 0.999, value=value), "expected_low": low, "expected_high": high}

    rows = [
        *[row("gift", "latency_p50_ms_mean", m, 191.9, 30.4, 44.5) for m in range(12)],
        *[row("front", "latency_p50_ms_mean", m, 140.5, 42.0, 58.4) for m in range(12)],
        *[row("front", "thread_count_mean", m, 34.5, 27.9, 33.3) for m in range(2, 8)],
    ]
    (inc,) = rank(rows, settings, edges=[]).to_dict("records")
    assert [c["service"] for c in inc["root_causes"]] == ["gift", "front"]
    (inc,) = rank(rows, settings, edges=[], without="deviation").to_dict("records")
    assert [c["service"] for c in inc["root_causes"]] == ["front", "gift"]
    with_graph = rank(rows, settings, edges=[("front", "gift")])
    assert with_graph.iloc[0]["root_causes"][0]["service"] == "gift"
    # with a graph the term and its weight are out: the very same incident as without the term
    assert_frame_equal(with_graph, rank(rows, settings, edges=[("front", "gift")], without="deviation"))
