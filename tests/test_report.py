"""The HTML report: graph layout, plots and page (plain Python), and the report stage on a hand-made lake."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.image import imread

from conftest import run_cli
from meltrca import evaluation
from meltrca.jobrunner import JobContext
from meltrca.report.graph_svg import break_cycles, focus, graph_svg, layered_layout
from meltrca.report.model import Edge, IncidentView, ReportData, Series, SeriesStat, choose_series
from meltrca.report.page import render_page
from meltrca.report.timeline import timeline_png
from meltrca.schemas import ANOMALIES, FEATURES, INCIDENTS, SERVICE_GRAPH
from meltrca.stages import report as report_stage
from meltrca.timewindow import TimeWindow, to_iso

T0 = datetime(2024, 9, 26, 10, 0)
SHOP_EDGES = [("front", "api"), ("api", "db"), ("api", "cache"), ("front", "auth")]
BANK_EDGES = [("gateway", "ledger"), ("ledger", "vault")]


# ---- a small hand-made results lake (shared with the browser test) ---------------------------


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def anomaly_row(system, service, component, feature, minute, value, score=0.99, lo=1.0, hi=2.0, atype="spike"):
    ws = at(minute)
    key = f"{system}|{service}|{component}|{feature}|{to_iso(ws)}"
    return {
        "anomaly_id": hashlib.sha1(key.encode()).hexdigest()[:16], "system": system, "service": service,
        "component": component, "feature": feature, "window_start": ws, "window_end": ws + timedelta(minutes=1),
        "value": value, "expected_low": lo, "expected_high": hi, "detector_scores": {"zscore": score},
        "ensemble_score": score, "anomaly_type": atype, "severity": "high", "confidence": 0.9,
        "cold_start": False, "run_id": "r1", "date": ws.date(),
    }


def baseline(service: str, feature: str, minute: int) -> float:
    """A deterministic, gently wavy normal level per series."""
    level = {"cpu_usage_mean": 30.0, "latency_p95_ms": 120.0, "ERROR_count": 2.0, "conn_pool_usage_mean": 40.0}[feature]
    return level + 2.0 * math.sin(minute / 5.0 + len(service))


# (system, service, component, feature, anomalous minutes, anomalous value, expected range, score)
FAULTS = [
    ("shop", "db", "metric", "cpu_usage_mean", range(60, 67), 95.0, (25.0, 35.0), 0.99),
    ("shop", "api", "trace", "latency_p95_ms", range(61, 69), 900.0, (100.0, 140.0), 0.999),
    ("shop", "front", "trace", "latency_p95_ms", range(62, 69), 950.0, (100.0, 140.0), 0.98),
    ("shop", "auth", "log", "ERROR_count", range(100, 102), 40.0, (0.0, 5.0), 0.997),
    ("bank", "ledger", "metric", "conn_pool_usage_mean", range(30, 36), 100.0, (30.0, 50.0), 0.995),
    ("bank", "gateway", "trace", "latency_p95_ms", range(31, 36), 2000.0, (100.0, 140.0), 0.99),
]
SERIES = {
    "shop": [("front", "trace", "latency_p95_ms"), ("api", "trace", "latency_p95_ms"), ("db", "metric", "cpu_usage_mean"),
             ("cache", "metric", "cpu_usage_mean"), ("auth", "log", "ERROR_count")],
    "bank": [("gateway", "trace", "latency_p95_ms"), ("ledger", "metric", "conn_pool_usage_mean"),
             ("vault", "metric", "cpu_usage_mean")],
}
MINUTES = 120
EXPLANATION = "db CPU saturated after a deploy <script>alert('x')</script> & api/front slowed down."


def hand_made_rows():
    """(features, anomalies, incidents, service_graph) rows of two systems."""
    anomalous = {(s, svc, c, f, m): v for s, svc, c, f, ms, v, _, _ in FAULTS for m in ms}
    features = []
    for system, series in SERIES.items():
        for svc, comp, feat in series:
            for m in range(MINUTES):
                v = anomalous.get((system, svc, comp, feat, m), baseline(svc, feat, m))
                features.append((system, svc, at(m), at(m + 1), comp, feat, float(v), at(m).date()))
    features.append(("shop", "db", at(55), at(56), "event", "deploy_count", 1.0, at(55).date()))
    anomalies = [
        anomaly_row(s, svc, c, f, m, v, score, lo, hi) for s, svc, c, f, ms, v, (lo, hi), score in FAULTS for m in ms
    ]
    deploy = anomaly_row("shop", "db", "event", "deploy_count", 55, 1.0, 1.0, None, None, "change_event")
    anomalies.append(deploy)
    ids = {}
    for a in anomalies:
        ids.setdefault((a["system"], a["service"]), []).append(a["anomaly_id"])

    def incident(system, start, end, services, causes, severity, explanation=None):
        iid = hashlib.sha1(f"{system}|{to_iso(at(start))}|{services[0]}".encode()).hexdigest()[:16]
        chain = [(svc, at(start + i), 60.0 * i) for i, svc in enumerate(c[0] for c in causes)]
        return (
            system, iid, at(start), at(end), sorted(services),
            sorted(a for svc in services for a in ids.get((system, svc), [])),
            [(svc, score, rank, ind, f"evidence for {svc}") for rank, (svc, score, ind) in enumerate(causes, 1)],
            chain, severity, explanation, "template" if explanation else None, "r1", at(start).date(),
        )

    incidents = [
        incident("shop", 60, 69, ["db", "api", "front"],
                 [("db", 0.81, "cpu_usage_mean"), ("api", 0.55, "latency_p95_ms"), ("front", 0.31, "latency_p95_ms")],
                 "high", EXPLANATION),
        incident("shop", 100, 102, ["auth"], [("auth", 0.7, "ERROR_count")], "low"),
        incident("bank", 30, 36, ["ledger", "gateway"],
                 [("ledger", 0.9, "conn_pool_usage_mean"), ("gateway", 0.4, "latency_p95_ms")], "critical",
                 "Connection pool of ledger exhausted."),
    ]
    graph = [(sys_, a, b, 100, 0.0, 5.0, 12.0, at(0), at(MINUTES), "r1")
             for sys_, edges in (("shop", SHOP_EDGES), ("bank", BANK_EDGES)) for a, b in edges]
    graph[1] = ("shop", "api", "db", 100, 0.2, 5.0, 80.0, at(0), at(MINUTES), "r1")  # a failing edge
    return features, anomalies, incidents, graph


def write_evaluation(results: Path, incidents) -> dict:
    """evaluation.json as `meltrca evaluate` writes it, computed by the real evaluation code."""
    labels = [
        {"fault_id": "f1", "system": "shop", "root_cause_service": "db", "fault_type": "cpu_hog",
         "start": to_iso(at(59)), "end": to_iso(at(67)), "affected_services": ["api", "front"], "indicator": "cpu_usage_mean"},
        {"fault_id": "f2", "system": "bank", "root_cause_service": "ledger", "fault_type": "conn_pool_exhaustion",
         "start": to_iso(at(30)), "end": to_iso(at(36)), "affected_services": ["gateway"], "indicator": "conn_pool_usage_mean"},
        {"fault_id": "f3", "system": "shop", "root_cause_service": "cache", "fault_type": "memory_leak",
         "start": to_iso(at(10)), "end": to_iso(at(15)), "affected_services": [], "indicator": "memory_usage_mean"},
    ]
    docs = [{"system": i[0], "incident_id": i[1], "start": i[2], "end": i[3],
             "root_causes": [{"service": c[0], "rank": c[2]} for c in i[6]]} for i in incidents]
    result = evaluation.evaluate(
        evaluation.parse_faults(labels), evaluation.parse_incidents(docs), [],
        {"shop": (at(0), at(MINUTES)), "bank": (at(0), at(MINUTES))},
        tolerance=timedelta(minutes=3), window=timedelta(minutes=1),
    )
    (results / "evaluation.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def build_results_lake(spark, root: Path, *, with_evaluation: bool = True) -> dict:
    """A results folder as `meltrca run` + `meltrca evaluate` leave it (Delta tables + evaluation.json)."""
    from meltrca.io import Lake

    features, anomalies, incidents, graph = hand_made_rows()
    lake = Lake(spark, root)
    lake.replace_window("features", spark.createDataFrame(features, FEATURES), systems=None, window=None)
    lake.replace_window(
        "anomalies", spark.createDataFrame([tuple(a[f.name] for f in ANOMALIES) for a in anomalies], ANOMALIES),
        systems=None, window=None,
    )
    lake.replace_window("incidents", spark.createDataFrame(incidents, INCIDENTS), systems=None, window=None)
    lake.replace_window("service_graph", spark.createDataFrame(graph, SERVICE_GRAPH), systems=None, window=None)
    ev = write_evaluation(root, incidents) if with_evaluation else None
    return {"lake": lake, "incidents": incidents, "evaluation": ev}


# ---- a tiny DOM of the page, for assertions ---------------------------------------------------


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    def all(self):
        yield self
        for c in self.children:
            yield from c.all()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [
            n for n in self.all()
            if (tag is None or n.tag == tag)
            and (cls is None or cls in n.attrs.get("class", "").split())
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def full_text(self) -> str:
        return self.text + "".join(c.full_text() for c in self.children)


VOID = {"meta", "img", "br", "hr", "input", "link"}


class DomBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        leaf = Node("#text", {}, self.cur)
        leaf.text = data
        self.cur.children.append(leaf)


def parse_html(text: str) -> Node:
    b = DomBuilder()
    b.feed(text)
    return b.root


def external_references(dom: Node) -> list[str]:
    """Every src/href/url that would make the browser fetch something (data: and #fragments are local)."""
    out = []
    for n in dom.all():
        for k in ("src", "href", "xlink:href", "action", "poster", "data"):
            v = n.attrs.get(k)
            if v and not v.startswith(("data:", "#")):
                out.append(f"{n.tag}[{k}]={v}")
    return out


# ---- graph layout and SVG ----------------------------------------------------------------------


def test_layers_follow_longest_call_path_and_names_break_ties():
    layers = layered_layout([], [*SHOP_EDGES, ("front", "db")])
    assert layers == [["front"], ["api", "auth"], ["cache", "db"]]  # db stays behind api, not beside it


def test_cycles_and_self_loops_are_broken_not_looped_forever():
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "d")]
    assert break_cycles(["a", "b", "c", "d"], edges) == {"a": ["b"], "b": ["c"], "c": ["d"], "d": []}
    assert layered_layout(["lonely"], edges) == [["a", "lonely"], ["b"], ["c"], ["d"]]


def test_barycenter_ordering_removes_a_crossing():
    # x1 -> y2 and x2 -> y1: name order would cross, barycenter order must not.
    layers = layered_layout([], [("r", "x1"), ("r", "x2"), ("x1", "y2"), ("x2", "y1")])
    assert layers[1] == ["x1", "x2"] and layers[2] == ["y2", "y1"]


def test_graph_svg_highlights_the_root_cause_and_escapes_names():
    edges = [Edge("front", "api", 10), Edge("api", "db", 10, 0.3), Edge("api", "<cache&co>", 10)]
    svg = graph_svg(["auth"], edges, {"db": "root-cause", "api": "suspect", "front": "affected"},
                    ranks={"db": 1, "api": 2}, uid="inc 1")
    root = ET.fromstring(svg)  # well-formed XML, names escaped
    ns = {"s": "http://www.w3.org/2000/svg"}
    nodes = {g.get("data-service"): g for g in root.iterfind("s:g", ns)}
    assert set(nodes) == {"front", "api", "db", "<cache&co>", "auth"}
    assert {k: g.get("data-role") for k, g in nodes.items()} == {
        "front": "affected", "api": "suspect", "db": "root-cause", "<cache&co>": "other", "auth": "other"
    }
    assert nodes["db"].find("s:text", ns).text == "#1 db"
    assert nodes["db"].find("s:rect", ns).get("fill") == "#d62728"
    paths = root.findall("s:path", ns)
    assert [(p.get("data-src"), p.get("data-dst")) for p in paths] == [(e.src, e.dst) for e in edges]
    assert [p.get("class") for p in paths] == ["edge", "edge failing", "edge"]
    assert {p.get("marker-end") for p in paths} <= {"url(#arrow-inc-1-n)", "url(#arrow-inc-1-e)", "url(#arrow-inc-1-h)"}
    # callers left of callees
    x = {k: float(g.find("s:rect", ns).get("x")) for k, g in nodes.items()}
    assert x["front"] < x["api"] < x["db"]


def test_big_graphs_focus_on_the_incident_neighbourhood():
    edges = [Edge(f"s{i}", f"s{i + 1}") for i in range(40)]
    nodes, sub, note = focus(edges, {"s10"}, max_nodes=30)
    assert nodes == ["s10", "s11", "s9"] and [(e.src, e.dst) for e in sub] == [("s9", "s10"), ("s10", "s11")]
    assert note == "showing 3 of 41 services (incident services and their direct neighbours)"
    assert focus(edges[:5], {"s1"}, max_nodes=30)[2] is None


# ---- series choice and timeline plot ------------------------------------------------------------


def test_series_choice_puts_the_indicator_first_and_spreads_over_services():
    stats = [
        SeriesStat("api", "trace", "latency_p95_ms", 0.999, 8, at(61)),
        SeriesStat("api", "trace", "error_ratio", 0.998, 8, at(61)),
        SeriesStat("front", "trace", "latency_p95_ms", 0.98, 7, at(62)),
        SeriesStat("db", "metric", "cpu_usage_mean", 0.97, 7, at(60)),
        SeriesStat("db", "metric", "memory_usage_mean", 0.99, 2, at(60)),
    ]
    causes = [{"service": "db", "rank": 1, "indicator": "cpu_usage_mean"}, {"service": "api", "rank": 2}]
    got = [(s.service, s.feature) for s in choose_series(stats, causes, 3)]
    assert got == [("db", "cpu_usage_mean"), ("api", "latency_p95_ms"), ("front", "latency_p95_ms")]
    got4 = [(s.service, s.feature) for s in choose_series(stats, causes, 4)]
    assert got4[3] == ("api", "error_ratio")  # second series of a service only after each service had one


def incident_view(series: list[Series], **kw) -> IncidentView:
    base = dict(
        system="shop", incident_id="abc123", start=at(60), end=at(69), severity="high", services=["api", "db"],
        root_causes=[{"service": "db", "rank": 1, "score": 0.8, "indicator": "cpu_usage_mean", "evidence": "e"}],
        causal_chain=[], explanation=None, explanation_writer=None, anomaly_count=3,
    )
    base.update(kw)
    return IncidentView(series=series, **base)


def red_shading_pixels(png: bytes) -> int:
    """Pixels tinted by the anomaly shading (clearly redder than green and blue; nothing else is)."""
    img = imread(io.BytesIO(png))[:, :, :3] * 255
    r, g, b = img[:, :, 0], img[:, :, 1], img[:, :, 2]
    return int(((r - g > 25) & (r - b > 25)).sum())


def test_timeline_shades_anomalous_windows_only_where_there_are_some():
    pts = [(at(m), baseline("db", "cpu_usage_mean", m)) for m in range(30, 100)]
    calm = timeline_png(incident_view([Series("db", "metric", "cpu_usage_mean", pts, [], (25.0, 35.0))]))
    windows = [(at(m), at(m + 1)) for m in range(60, 67)]
    hot = timeline_png(incident_view([Series("db", "metric", "cpu_usage_mean", pts, windows, (25.0, 35.0))]))
    assert hot[:8] == b"\x89PNG\r\n\x1a\n"
    h, w = imread(io.BytesIO(hot)).shape[:2]
    assert (w, h) == (960, int(96 * (1.0 + 1.9)))
    assert red_shading_pixels(calm) == 0
    assert red_shading_pixels(hot) > 10_000  # 7 of 70 minutes of a ~930 px wide, ~200 px high panel


def test_timeline_without_series_still_draws_a_panel():
    png = timeline_png(incident_view([]))
    assert imread(io.BytesIO(png)).shape[:2] == (int(96 * 2.9), 960)


# ---- the page -------------------------------------------------------------------------------------


def report_data(**kw) -> ReportData:
    pts = [(at(m), 30.0 + m % 3) for m in range(40, 90)]
    inc = incident_view([Series("db", "metric", "cpu_usage_mean", pts, [(at(60), at(61))], (25.0, 35.0))],
                        explanation='<img src="http://evil.example/x.png"> & more')
    base = dict(
        results="/tmp/r", generated_at=at(200), window="[-inf, +inf)", systems=["shop"], incidents=[inc],
        total_incidents=1, severity_counts={"high": 1}, anomaly_counts={"metric": 7},
        graphs={"shop": [Edge("api", "db", 5)]}, evaluation=None,
    )
    base.update(kw)
    return ReportData(**base)


def test_page_escapes_lake_text_and_references_nothing_outside():
    html = render_page(report_data())
    dom = parse_html(html)
    assert external_references(dom) == []
    expl = dom.find_all("div", cls="explanation")
    assert len(expl) == 1 and expl[0].full_text() == '<img src="http://evil.example/x.png"> & more'
    csp = dom.find_all("meta", http_equiv="Content-Security-Policy")
    assert csp[0].attrs["content"] == "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert not dom.find_all("script") and not dom.find_all("link")


def test_page_first_line_of_an_incident_names_the_root_cause():
    dom = parse_html(render_page(report_data()))
    (section,) = dom.find_all("section", cls="incident")
    title = section.find_all("h3")[0]
    assert " ".join(title.full_text().split()) == "high Root cause: db — cpu_usage_mean"
    assert section.find_all(cls="root-cause")[0].attrs["data-service"] == "db"
    assert len(section.find_all("img", cls="timeline")) == 1
    assert not dom.find_all(id="evaluation")


def test_page_without_incidents_says_so():
    dom = parse_html(render_page(report_data(incidents=[], total_incidents=0, severity_counts={})))
    assert dom.find_all(id="no-incidents")[0].full_text() == "No incidents found in these results."
    assert not dom.find_all("section")


# ---- the stage on a hand-made lake ----------------------------------------------------------------


def stage_ctx(spark, settings, root: Path, systems=(), window=None) -> JobContext:
    args = argparse.Namespace(results=str(root), max_incidents=100, context_minutes=30.0)
    return JobContext(job="report", args=args, settings=settings, run_id="report-1", window=window or TimeWindow(),
                      lake_root=str(root), systems=list(systems), _spark=spark)


def incident_id(system: str, minute: int, first: str) -> str:
    return hashlib.sha1(f"{system}|{to_iso(at(minute))}|{first}".encode()).hexdigest()[:16]


SHOP_HIGH, SHOP_LOW, BANK_CRIT = incident_id("shop", 60, "db"), incident_id("shop", 100, "auth"), incident_id("bank", 30, "ledger")


@pytest.fixture(scope="module")
def results(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    build_results_lake(spark, root)
    return root


def test_report_gathers_incidents_series_graph_and_evaluation(spark, settings, results, capsys):
    from meltrca.report import ReportParams, build_report

    path, data = build_report(
        stage_ctx(spark, settings, results).lake, params=ReportParams(context_minutes=10.0, change_lookback_minutes=30.0)
    )
    assert path == results / "report.html"
    assert [(i.incident_id, i.severity) for i in data.incidents] == [
        (BANK_CRIT, "critical"), (SHOP_HIGH, "high"), (SHOP_LOW, "low")
    ]
    assert data.total_incidents == 3 and data.severity_counts == {"critical": 1, "high": 1, "low": 1}
    assert data.anomaly_counts == {"metric": 13, "trace": 20, "log": 2, "event": 1}
    shop = data.incidents[1]
    assert [(s.service, s.feature) for s in shop.series] == [
        ("db", "cpu_usage_mean"), ("api", "latency_p95_ms"), ("front", "latency_p95_ms")
    ]
    db = shop.series[0]
    # 10 minutes either side of [10:60, 10:69]: windows 50..78
    assert [t for t, _ in db.points] == [at(m) for m in range(50, 79)]
    assert dict(db.points)[at(63)] == 95.0 and dict(db.points)[at(50)] == pytest.approx(baseline("db", "cpu_usage_mean", 50))
    assert db.anomaly_windows == [(at(m), at(m + 1)) for m in range(60, 67)]
    assert db.expected == (25.0, 35.0)
    assert [(c.service, c.kind, c.ts) for c in shop.changes] == [("db", "deploy", at(55))]
    assert shop.explanation == EXPLANATION
    assert [c["service"] for c in shop.root_causes] == ["db", "api", "front"]
    assert [c["service"] for c in shop.causal_chain] == ["db", "api", "front"]
    assert data.incidents[0].changes == [] and data.incidents[2].changes == []
    assert [(e.src, e.dst, e.error_ratio) for e in data.graphs["shop"]] == [
        ("api", "cache", 0.0), ("api", "db", 0.2), ("front", "api", 0.0), ("front", "auth", 0.0)
    ]
    assert data.evaluation["event_level"]["faults"] == 3 and data.evaluation["event_level"]["detected"] == 2


def test_report_stage_writes_a_page_with_every_incident(spark, settings, results, capsys):
    path = report_stage.process(stage_ctx(spark, settings, results))
    assert capsys.readouterr().out.strip() == f"report: {path.resolve()}"
    dom = parse_html(path.read_text(encoding="utf-8"))
    assert external_references(dom) == []
    sections = dom.find_all("section", cls="incident")
    assert [s.attrs["data-incident"] for s in sections] == [BANK_CRIT, SHOP_HIGH, SHOP_LOW]
    expected_root = {BANK_CRIT: "ledger", SHOP_HIGH: "db", SHOP_LOW: "auth"}
    for s in sections:
        iid = s.attrs["data-incident"]
        assert s.find_all("strong", cls="root-cause")[0].full_text() == expected_root[iid]
        (img,) = s.find_all("img", cls="timeline")
        assert img.attrs["src"].startswith("data:image/png;base64,")
        (svg,) = s.find_all("svg", cls="service-graph")
        roots = [g.attrs["data-service"] for g in svg.find_all("g", data_role="root-cause")]
        assert roots == [expected_root[iid]]
    shop_svg = sections[1].find_all("svg")[0]
    assert sorted(g.attrs["data-service"] for g in shop_svg.find_all("g", cls="node")) == ["api", "auth", "cache", "db", "front"]
    assert sorted(g.attrs["data-service"] for g in shop_svg.find_all("g", data_role="suspect")) == ["api", "front"]
    assert " ".join(sections[1].find_all(cls="changes")[0].full_text().split()) == "Changes: deploy on db at 10:55"
    assert sections[1].find_all(cls="explanation")[0].full_text().startswith(EXPLANATION)
    index = [r.attrs["data-incident"] for r in dom.find_all("tr", cls="incident-row")]
    assert index == [BANK_CRIT, SHOP_HIGH, SHOP_LOW]
    det = dom.find_all("table", id="evaluation-detection")[0]
    cells = [c.full_text() for c in det.find_all("tr")[1].find_all("td")]
    assert cells[:4] == ["event level", "0.667", "0.667", "0.667"]  # 2 of 3 incidents match, 2 of 3 faults found
    faults = dom.find_all("table", id="evaluation-faults")[0].find_all("tr")[1:]
    assert [[c.full_text() for c in r.find_all("td")][:7] for r in faults] == [
        ["f1", "shop", "cpu_hog", "db", "2024-09-26T10:59:00Z", "yes", "1"],
        ["f2", "bank", "conn_pool_exhaustion", "ledger", "2024-09-26T10:30:00Z", "yes", "1"],
        ["f3", "shop", "memory_leak", "cache", "2024-09-26T10:10:00Z", "no", "—"],
    ]


def tables_only(results: Path, target: Path) -> Path:
    """Another results folder over the same Delta tables (symlinked), without evaluation.json or report."""
    target.mkdir()
    for table in results.iterdir():
        if (table / "_delta_log").is_dir():
            (target / table.name).symlink_to(table, target_is_directory=True)
    return target


def test_report_for_one_system_and_window_without_evaluation(spark, settings, results, tmp_path):
    root = tables_only(results, tmp_path / "results")
    ctx = stage_ctx(spark, settings, root, systems=["shop"], window=TimeWindow(at(90), at(120)))
    path = report_stage.process(ctx, max_incidents=5)
    dom = parse_html(path.read_text(encoding="utf-8"))
    assert [s.attrs["data-incident"] for s in dom.find_all("section", cls="incident")] == [SHOP_LOW]
    assert not dom.find_all(id="evaluation")
    assert "systems shop" in dom.find_all("header")[0].full_text()


def test_report_caps_the_incident_list_and_says_so(spark, settings, results):
    path = report_stage.process(stage_ctx(spark, settings, results), max_incidents=1)
    dom = parse_html(path.read_text(encoding="utf-8"))
    assert [s.attrs["data-incident"] for s in dom.find_all("section", cls="incident")] == [BANK_CRIT]
    assert "Showing the 1 most severe of 3 incidents." in dom.full_text()


def test_unreadable_evaluation_is_a_note_not_a_crash(spark, settings, results, tmp_path):
    root = tables_only(results, tmp_path / "results")
    (root / "evaluation.json").write_text("{not json", encoding="utf-8")
    dom = parse_html(report_stage.process(stage_ctx(spark, settings, root)).read_text(encoding="utf-8"))
    assert not dom.find_all(id="evaluation")
    assert "evaluation.json could not be read (JSONDecodeError" in dom.find_all("p", cls="note")[0].full_text()


def test_cli_without_incidents_table_is_a_one_line_error(tmp_path):
    res = run_cli("report", "--results", str(tmp_path / "nothing-here"), "--master", "local[1]")
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("meltrca report: error: lake table 'incidents' not found"), res.stderr
    assert not (tmp_path / "nothing-here").exists()  # refused before Spark: nothing written
