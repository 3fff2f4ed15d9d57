"""The HTML page: one self-contained document (inline CSS, inline PNG/SVG, no scripts, no fetches).

Written for an SRE at 3 a.m.: the most severe incidents first, the root cause in the first line
of each incident, then why (ranked causes, evidence, explanation), the timeline and the graph.
A Content-Security-Policy forbids every network fetch, so a stray external URL cannot leak.
Every text from the lake is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from meltrca.report.graph_svg import focus, graph_svg
from meltrca.report.model import SEVERITY_ORDER, IncidentView, ReportData
from meltrca.report.timeline import png_data_uri, timeline_png

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SUSPECT_RANKS = 3  # ranked causes after the first that the graph marks as suspects

CSS = """
:root { --crit:#7f0000; --high:#d62728; --med:#ff9f40; --low:#6b8fb3; --ink:#1c2733; --muted:#5c6b7a; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0; background: #f6f8fa; line-height: 1.4; }
header { background: #1c2733; color: #fff; padding: 14px 24px; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header .meta { color: #c8d1db; font-size: 13px; }
main { padding: 16px 24px 48px; max-width: 1200px; }
h2 { font-size: 17px; margin: 24px 0 8px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #d5dbe1; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.when { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.sev { display: inline-block; min-width: 64px; text-align: center; border-radius: 4px; padding: 1px 6px;
       font-weight: bold; font-size: 12px; color: #fff; text-transform: uppercase; }
.sev-critical { background: var(--crit); } .sev-high { background: var(--high); }
.sev-medium { background: var(--med); color: #1a1a1a; } .sev-low, .sev-unknown { background: var(--low); }
.chips span { margin-right: 10px; }
section.incident { background: #fff; border: 1px solid #d5dbe1; border-left: 6px solid var(--low);
                   border-radius: 6px; padding: 10px 16px 14px; margin: 18px 0; }
section.incident.sev-critical-border { border-left-color: var(--crit); }
section.incident.sev-high-border { border-left-color: var(--high); }
section.incident.sev-medium-border { border-left-color: var(--med); }
.incident-title { font-size: 18px; margin: 4px 0 2px; }
.incident-title .root-cause { color: #b00000; }
.incident-sub { color: var(--muted); font-size: 13px; margin-bottom: 8px; }
.explanation { white-space: pre-wrap; background: #f6f8fa; border-left: 3px solid #9aa5b1; padding: 6px 10px;
               font-size: 14px; margin: 8px 0; }
img.timeline { max-width: 100%; height: auto; border: 1px solid #e1e6eb; }
.graph-wrap { overflow-x: auto; border: 1px solid #e1e6eb; background: #fff; padding: 4px; }
svg.service-graph { max-width: 100%; height: auto; }
.legend span { display: inline-block; margin-right: 12px; font-size: 12px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 3px; vertical-align: -2px;
            margin-right: 4px; border: 1px solid #555; }
.note { color: #8a4b00; font-size: 13px; }
.empty { font-size: 15px; padding: 20px; background: #fff; border: 1px solid #d5dbe1; border-radius: 6px; }
a { color: #0b5cad; }
"""


def render_page(data: ReportData, *, max_graph_nodes: int = 30) -> str:
    """The whole report.html as a string."""
    body = [
        _header(data),
        "<main>",
        *(f'<p class="note">{escape(n)}</p>' for n in data.notes),
        _incident_index(data),
        *(_incident_section(inc, data, max_graph_nodes) for inc in data.incidents),
        _evaluation(data.evaluation) if data.evaluation is not None else "",
        "</main>",
    ]
    title = f"meltrca report — {data.total_incidents} incident(s)"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(p for p in body if p)
        + "\n</body></html>\n"
    )


def _ts(dt: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return dt.strftime(fmt) if dt else "—"


def _sev(sev: str) -> str:
    s = escape(sev or "unknown")
    return f'<span class="sev sev-{s}">{s}</span>'


def _header(data: ReportData) -> str:
    chips = " ".join(
        f"<span>{_sev(s)} {data.severity_counts[s]}</span>"
        for s in (*SEVERITY_ORDER, *sorted(set(data.severity_counts) - set(SEVERITY_ORDER)))
        if data.severity_counts.get(s)
    )
    anomalies = sum(data.anomaly_counts.values())
    by_comp = ", ".join(f"{escape(c)} {n:,}" for c, n in sorted(data.anomaly_counts.items()))
    links = ' · <a href="#evaluation" style="color:#9fd0ff">evaluation</a>' if data.evaluation is not None else ""
    return (
        f"<header><h1>meltrca report: {data.total_incidents} incident(s)</h1>"
        f'<div class="meta">results {escape(data.results)} · generated {_ts(data.generated_at)} UTC · window '
        f"{escape(data.window)} · systems {escape(', '.join(data.systems) or '—')} · anomalies {anomalies:,}"
        f"{' (' + by_comp + ')' if by_comp else ''}{links}</div>"
        f'<div class="meta chips">{chips}</div></header>'
    )


def _incident_index(data: ReportData) -> str:
    if not data.incidents:
        return '<p class="empty" id="no-incidents">No incidents found in these results.</p>'
    shown = len(data.incidents)
    cap = (
        f'<p class="note">Showing the {shown} most severe of {data.total_incidents} incidents.</p>'
        if shown < data.total_incidents
        else ""
    )
    rows = []
    for inc in data.incidents:
        top = inc.top_cause or {}
        others = ", ".join(escape(str(c.get("service"))) for c in inc.root_causes[1:SUSPECT_RANKS])
        rows.append(
            f'<tr class="incident-row" data-incident="{escape(inc.incident_id)}"><td>{_sev(inc.severity)}</td>'
            f'<td class="when">{_ts(inc.start)} – {_ts(inc.end, "%H:%M")}</td><td>{escape(inc.system)}</td>'
            f'<td><a href="#incident-{escape(inc.incident_id)}"><strong>{escape(str(top.get("service", "—")))}</strong></a>'
            f" <small>{escape(str(top.get('indicator') or ''))}</small></td><td>{others or '—'}</td>"
            f'<td class="num">{len(inc.services)}</td><td class="num">{inc.anomaly_count}</td></tr>'
        )
    return (
        '<h2 id="incidents">Incidents (most severe first)</h2>' + cap
        + '<table class="incident-index"><thead><tr><th>severity</th><th>time (UTC)</th><th>system</th>'
        "<th>root cause</th><th>next suspects</th><th class=\"num\">services</th><th class=\"num\">anomalies</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _incident_section(inc: IncidentView, data: ReportData, max_graph_nodes: int) -> str:
    top = inc.top_cause
    iid = escape(inc.incident_id)
    if top:
        first = (
            f'Root cause: <strong class="root-cause" data-service="{escape(str(top["service"]))}">'
            f"{escape(str(top['service']))}</strong>"
            + (f" — {escape(str(top['indicator']))}" if top.get("indicator") else "")
        )
    else:
        first = '<strong class="root-cause">root cause not determined</strong>'
    dur = max((inc.end - inc.start).total_seconds() / 60, 0)
    parts = [
        f'<section class="incident sev-{escape(inc.severity)}-border" id="incident-{iid}" data-incident="{iid}"'
        f' data-severity="{escape(inc.severity)}">',
        f'<h3 class="incident-title">{_sev(inc.severity)} {first}</h3>',
        f'<div class="incident-sub">{escape(inc.system)} · {_ts(inc.start)} – {_ts(inc.end, "%H:%M")} UTC'
        f" ({dur:.0f} min) · {len(inc.services)} service(s): {escape(', '.join(inc.services))} · "
        f"{inc.anomaly_count} anomalies · incident {iid}</div>",
        _root_cause_table(inc),
    ]
    if inc.explanation:
        writer = f" <small>({escape(inc.explanation_writer)})</small>" if inc.explanation_writer else ""
        parts.append(f'<div class="explanation">{escape(inc.explanation)}{writer}</div>')
    if inc.causal_chain:
        chain = " → ".join(
            f"{escape(str(c['service']))} <small>(+{(c.get('lag_seconds') or 0) / 60:.0f} min)</small>"
            for c in inc.causal_chain
        )
        parts.append(f'<p class="causal-chain"><strong>Causal chain:</strong> {chain}</p>')
    if inc.changes:
        ch = ", ".join(f"{escape(c.kind)} on {escape(c.service)} at {_ts(c.ts, '%H:%M')}" for c in inc.changes)
        parts.append(f'<p class="changes"><strong>Changes:</strong> {ch}</p>')
    alt = "timeline of " + ", ".join(s.label for s in inc.series) if inc.series else "timeline"
    parts.append(
        f'<h4>Timeline</h4><img class="timeline" alt="{escape(alt)}" src="{png_data_uri(timeline_png(inc))}">'
    )
    parts.append(_graph_block(inc, data, max_graph_nodes))
    parts.append("</section>")
    return "\n".join(parts)


def _root_cause_table(inc: IncidentView) -> str:
    if not inc.root_causes:
        return ""
    return _table(
        f"root-causes-{escape(inc.incident_id)}",
        [("rank", True), ("service", False), ("score", True), ("indicator", False), ("evidence", False)],
        ([_get(c, "rank"), _get(c, "service"), _num(c.get("score"), ".3f"), _get(c, "indicator"), _get(c, "evidence")]
         for c in inc.root_causes),
        cls="root-causes",
    )


def graph_roles(inc: IncidentView) -> tuple[dict[str, str], dict[str, int]]:
    """Service -> role on the graph, and service -> rank for the ranked causes shown."""
    roles = {s: "affected" for s in inc.services}
    ranks: dict[str, int] = {}
    for i, c in enumerate(inc.root_causes[:SUSPECT_RANKS]):
        svc = str(c.get("service"))
        ranks[svc] = int(c.get("rank") or i + 1)
        roles[svc] = "root-cause" if i == 0 else "suspect"
    return roles, ranks


def _graph_block(inc: IncidentView, data: ReportData, max_graph_nodes: int) -> str:
    roles, ranks = graph_roles(inc)
    edges = data.graphs.get(inc.system, [])
    nodes, sub, note = focus(edges, roles, max_graph_nodes)
    svg = graph_svg(
        nodes, sub, roles, ranks=ranks, uid=inc.incident_id, title=f"dependency graph of {inc.system}"
    )
    legend = "".join(
        f'<span><i style="background:{c}"></i>{label}</span>'
        for c, label in (("#d62728", "root cause"), ("#ff9f40", "next suspects"), ("#ffe08a", "other incident services"),
                         ("#eef1f5", "not in the incident"))
    )
    missing = "" if edges else '<p class="note">No call graph for this system (no spans); services shown alone.</p>'
    return (
        f"<h4>Dependency graph (caller → callee)</h4>{missing}"
        f'<div class="legend">{legend}{" · " + escape(note) if note else ""}</div>'
        f'<div class="graph-wrap">{svg}</div>'
    )


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, int | float) else "—"


def _table(table_id: str, columns: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]], cls: str = "evaluation") -> str:
    """A table from (header, numeric) columns and rows of ready-made cell HTML."""
    head = "".join(f'<th class="num">{h}</th>' if num else f"<th>{h}</th>" for h, num in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if num else f"<td>{c}</td>" for c, (_, num) in zip(row, columns, strict=True)) + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _evaluation(ev: Mapping[str, Any]) -> str:
    """The evaluation tables (evaluation.json of `meltrca evaluate`), robust to missing parts."""
    out = ['<h2 id="evaluation">Evaluation against labels</h2>']
    el, pl = ev.get("event_level") or {}, ev.get("point_level") or {}
    prf = ("precision", "recall", "f1")
    out.append(_table("evaluation-detection", [("detection", False), ("precision", True), ("recall", True), ("F1", True), ("counts", False)], [
        ["event level", *_nums(el, prf), f'{_get(el, "detected")}/{_get(el, "faults")} faults detected, '
         f'{_get(el, "incidents")} incidents, {_get(el, "false_positive_incidents")} false positive'],
        ["point level", *_nums(pl, prf), f'accuracy {_num(pl.get("accuracy"), ".3f")} (tp {_get(pl, "tp")}, '
         f'fp {_get(pl, "fp")}, fn {_get(pl, "fn")}, tn {_get(pl, "tn")})'],
    ]))
    rc = ev.get("root_cause") or {}
    keys = ("ac@1", "ac@3", "ac@5", "avg@5")
    out.append(_table(
        "evaluation-root-cause", [("root cause", False), *((k.upper(), True) for k in keys), ("n", True)],
        ([label, *_nums(rc.get(part) or {}, keys), _get(rc.get(part) or {}, "n")]
         for part, label in (("all_faults", "all faults"), ("detected_faults", "detected faults"),
                             ("case_level", "case level (every overlapping incident)")) if part in rc),
    ))
    if ev.get("per_fault_type"):
        out.append(_table(
            "evaluation-fault-types",
            [("fault type", False), ("faults", True), ("detected", True), ("AC@1", True), ("AC@3", True)],
            ([escape(str(t)), _get(r, "faults"), _get(r, "detected"), *_nums(r, ("ac@1", "ac@3"))]
             for t, r in ev["per_fault_type"].items()),
        ))
    if ev.get("per_signal"):
        out.append(_table(
            "evaluation-signals", [("signal", False), ("faults with an anomaly", True), ("recall", True)],
            ([escape(str(c)), _get(r, "faults_with_anomaly"), *_nums(r, ("recall",))] for c, r in ev["per_signal"].items()),
        ))
    if ev.get("faults"):
        out.append(_table(
            "evaluation-faults",
            [("fault", False), ("system", False), ("type", False), ("true root cause", False), ("start", False),
             ("detected", False), ("rank", True), ("top 3", False), ("incident", False)],
            ([*(_get(f, k) for k in ("fault_id", "system", "fault_type", "root_cause_service", "start")),
              "yes" if f.get("detected") else "no", _get(f, "rank"), escape(", ".join(map(str, f.get("top3") or []))),
              f'<a href="#incident-{_get(f, "incident_id")}">{_get(f, "incident_id")}</a>' if f.get("incident_id") else "—"]
             for f in ev["faults"]),
        ))
    meta = ev.get("metadata") or {}
    if meta.get("documents"):
        out.append(
            f'<p>Metadata documents valid against the SPEC §5 schema: {_get(meta, "valid")}/{_get(meta, "documents")}'
            f' ({_num(meta.get("share_valid"), ".1%")}).</p>'
        )
    return "\n".join(out)


def _get(d: Mapping[str, Any], key: str) -> str:
    v = d.get(key)
    return "—" if v is None else escape(str(v))


def _nums(d: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [_num(d.get(k), ".3f") for k in keys]
