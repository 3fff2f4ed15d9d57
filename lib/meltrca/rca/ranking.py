"""Root-cause ranking of one system's incidents (pure pandas; Spark calls it per system).

Each candidate service of an incident (a service with anomalies, or a callee whose callers'
edge stats are anomalous) gets nine evidence terms in [0, 1], combined with ``rca.weights``:

- explains:   share of the incident's other anomalous services that call it, directly or
              transitively (a callee's failure explains its callers' symptoms, not the reverse);
              1 when it is the only anomalous service.
- deepest:    1 / (1 + troubled services it calls (own anomalies or callers' edge stats about
              them) that were already troubled when it was; half weight for later ones, and
              weight scaled down when a callee is troubled in fewer windows than it is); the
              root sits at the bottom of the troubled part of the call graph.
- precedence: exp(-(onset - incident start) / rca.precedence_minutes); who started first.
- intrinsic:  best score among its *own* trouble (cpu, memory, pool, gc, threads, new error
              templates, ...: ``rca.intrinsic_kinds``) as opposed to symptoms it may inherit
              (latency, error ratios, traffic).
- change:     a deploy / config change / restart / scale on it from ``rca.change_lookback_minutes``
              before the incident until its end (1 for deploy/config, 0.6 for restart/scale).
- strength:   mean of its three strongest anomaly scores (half weight when it is only seen
              through its callers' edge stats), times sqrt(coverage): the share of the
              incident's windows in which it shows trouble (a fault persists; noise blips).
- code_path:  its strongest request-pattern anomaly (meltrca.features.patterns: a log line, a
              call or an error status whose share of its requests moved) as -log10(1 - score),
              relative to the incident's strongest; 0 without one. A code fault changes what
              the faulty service's requests do; its callers see errors or slowness, and hubs
              that many anomalous services call collect "explains" from the noise.
- waited_on:  how much longer its callers waited on it than it worked: the largest excess over the
              expected high among its callers' edge stats about it of an intrinsic kind
              (``edge:<it>:network_gap_p50_ms`` is kind network; of percentiles only the median
              and below, what a typical call saw, so it needs 50 or less in
              ``features.latency_percentiles``), relative to the incident's largest; 0 without.
              A delay on a service's network (or a proxy, a connection queue in front of it) never
              shows in its own spans, and every anomaly score saturates near 1: callers waiting
              2 s longer on it and 20 ms longer on a busy hub score alike; the excess does not.
- deviation:  how far its most deviant series went, in its own normal range's widths: the largest
              |value - middle of the expected range| / (expected_high - expected_low) among its own
              rows (its callers' edge stats about it when it has none), relative
              to the incident's largest. A robust z-score against each series' own reference (the
              range is the detector's baseline median +- min_z robust sigmas), so it compares a
              cpu in percent with a latency in ms; unlike the anomaly score it does not saturate.
              It counts only in a system without a call graph (metrics only), where it is what
              tells the root from the services that feel it: a cpu hog or a slow network moves its
              own series by many of their widths, its callers' latency by a few (BARO, Pham et al.
              FSE 2024, ranks by this alone). With a graph it is 0: callers' error ratios that jump
              from 0 move by hundreds of widths, and on Train Ticket 2023-01-30 it named callers
              (AC@1 0.647 -> 0.118); the graph terms tell root from symptom there (and the
              weighted mean leaves its weight out).

Score = weighted mean of the terms. Ties break on onset, then name.

Admission: an incident needs ``rca.min_anomalies`` anomalies (or one at ``rca.min_peak_score``)
and corroboration: two or more services, two or more signal kinds (metric, log, trace), a change
event, or trouble lasting ``rca.corroboration_minutes`` (one pod's metric blip is not an
incident). In a system without a call graph (metrics only, so one signal kind), two or more
indicator kinds also corroborate (memory and errors; not one series' mean and max): a service
whose memory fills until its requests fail is an incident however short. With a graph they do
not: on Train Ticket the metric kinds of a pod move together often enough to triple the false
incidents of a day. It is dropped as a *load surge* when traffic rose on at least ``rca.surge_service_share`` of its
services, strictly before any other kind of anomaly, no change event preceded it and at most
``rca.surge_max_error_share`` of its anomalies are errors or new error patterns: everything got
busier first and nothing broke.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from meltrca.features.patterns import describe
from meltrca.indicators import PATTERN_PREFIX, IndicatorKinds, parse_edge_feature

SEVERITIES = ("low", "medium", "high", "critical")
STRONG_CHANGES = ("deploy", "config_change")
TERMS = ("explains", "deepest", "precedence", "intrinsic", "change", "strength", "code_path", "waited_on",
         "deviation")
ERROR_KINDS = ("errors", "log_errors", "log_pattern")
PERCENTILE = re.compile(r"_p(\d+)(?:_|$)")  # latency_p95_ms -> 95


def range_deviation(row: Mapping[str, Any]) -> float:
    """|value - middle of the expected range| / its width (0 when either is missing or the width is 0)."""
    v, lo, hi = row.get("value"), row.get("expected_low"), row.get("expected_high")
    if v is None or lo is None or hi is None or not all(math.isfinite(x) for x in (v, lo, hi)) or hi <= lo:
        return 0.0
    return abs(v - (lo + hi) / 2) / (hi - lo)


def _above(row: Mapping[str, Any]) -> bool:
    """The value is above its expected range (an increase, not a drop)."""
    hi, v = row.get("expected_high"), row.get("value")
    return v is not None and hi is not None and math.isfinite(v) and math.isfinite(hi) and v > hi


@dataclass(frozen=True)
class RankingParams:
    """Plain values only: captured by the Spark UDF closure."""

    weights: Mapping[str, float]
    kinds: Mapping[str, Sequence[str]]
    intrinsic_kinds: Sequence[str]
    change_lookback_s: float = 1800.0
    precedence_s: float = 120.0
    slack_s: float = 60.0
    min_anomalies: int = 2
    min_peak_score: float = 0.995
    surge_service_share: float = 0.5
    surge_max_error_share: float = 0.1
    corroboration_s: float = 600.0
    top_k: int = 5

    @classmethod
    def from_settings(cls, rca: Mapping[str, Any]) -> RankingParams:
        return cls(
            weights={k: float(v) for k, v in dict(rca["weights"]).items()},
            kinds={k: list(v) for k, v in dict(rca["indicator_kinds"]).items()},
            intrinsic_kinds=list(rca["intrinsic_kinds"]),
            change_lookback_s=float(rca["change_lookback_minutes"]) * 60,
            precedence_s=float(rca["precedence_minutes"]) * 60,
            slack_s=float(rca["time_tolerance_minutes"]) * 60 / 3,
            min_anomalies=int(rca["min_anomalies"]),
            min_peak_score=float(rca["min_peak_score"]),
            surge_service_share=float(rca["surge_service_share"]),
            surge_max_error_share=float(rca["surge_max_error_share"]),
            corroboration_s=float(rca["corroboration_minutes"]) * 60,
            top_k=int(rca["top_k"]),
        )


@dataclass
class Candidate:
    service: str
    own: list[Mapping[str, Any]] = field(default_factory=list)  # its own anomaly rows
    seen_by_callers: list[Mapping[str, Any]] = field(default_factory=list)  # callers' edge rows about it
    changes: list[Mapping[str, Any]] = field(default_factory=list)
    terms: dict[str, float] = field(default_factory=dict)
    score: float = 0.0

    @property
    def evidence_rows(self) -> list[Mapping[str, Any]]:
        return self.own or self.seen_by_callers

    @property
    def onset(self) -> datetime:
        return min(r["window_start"] for r in self.evidence_rows)

    @property
    def windows(self) -> int:
        return len({r["window_start"] for r in self.evidence_rows})


def incident_id(system: str, start: datetime, first_service: str) -> str:
    key = f"{system}|{start.strftime('%Y-%m-%dT%H:%M:%SZ')}|{first_service}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "?"
    return f"{x:.3g}"


def _severity(rows: Sequence[Mapping[str, Any]], services: int) -> str:
    worst = max((SEVERITIES.index(r["severity"]) for r in rows if r.get("severity") in SEVERITIES), default=0)
    if services >= 3:
        worst = min(worst + 1, len(SEVERITIES) - 1)
    return SEVERITIES[worst]


class IncidentRanker:
    """Ranks candidates of incidents of one system, given its reachability pairs."""

    def __init__(self, params: RankingParams, reach: set[tuple[str, str]]) -> None:
        self.p = params
        self.reach = reach  # (caller, callee) pairs, transitively, caller != callee
        # No call graph (metrics only): the deviation term and indicator-kind corroboration apply.
        self.graphless = not reach
        self.kinds = IndicatorKinds.from_config(params.kinds, params.intrinsic_kinds)

    def admitted(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        return len(rows) >= self.p.min_anomalies or max(r["ensemble_score"] for r in rows) >= self.p.min_peak_score

    def corroborated(self, rows: Sequence[Mapping[str, Any]], changes: Sequence[Mapping[str, Any]]) -> bool:
        """More than one service, signal kind or indicator kind, a change, or lasting trouble."""
        if changes or len({r["service"] for r in rows}) >= 2 or len({r["component"] for r in rows}) >= 2:
            return True
        if self.graphless and len({self.kinds.kind(r["component"], r["feature"]) for r in rows} - {"other"}) >= 2:
            return True  # metrics only: other kinds of its metrics are the other evidence there is
        start = min(r["window_start"] for r in rows)
        end = max(r["window_end"] for r in rows)
        return (end - start).total_seconds() >= self.p.corroboration_s

    def load_surge(self, rows: Sequence[Mapping[str, Any]], changes: Sequence[Mapping[str, Any]]) -> bool:
        """Traffic rose first on most services, nothing changed, (almost) nothing failed."""
        if changes:
            return False
        kinds = [self.kinds.kind(r["component"], r["feature"]) for r in rows]
        up = [r for r, k in zip(rows, kinds, strict=True) if k == "traffic" and _above(r)]
        if not up:
            return False
        services = {r["service"] for r in rows}
        if len({r["service"] for r in up}) < self.p.surge_service_share * len(services):
            return False
        errors = sum(1 for r, k in zip(rows, kinds, strict=True) if k in ERROR_KINDS and _above(r))
        if errors > self.p.surge_max_error_share * len(rows):
            return False
        # A surge arrives before its consequences: traffic alone in the first window(s). When
        # latency or errors start together with the extra traffic (retries, a stuck dependency
        # holding connections), something broke and the traffic is a symptom.
        others = [r["window_start"] for r, k in zip(rows, kinds, strict=True) if k != "traffic"]
        return not others or min(r["window_start"] for r in up) < min(others)

    def candidates(self, rows: Sequence[Mapping[str, Any]], changes: Sequence[Mapping[str, Any]]) -> list[Candidate]:
        cands: dict[str, Candidate] = {}
        for r in rows:
            cands.setdefault(r["service"], Candidate(r["service"])).own.append(r)
            edge = parse_edge_feature(r["feature"])
            if edge and edge[0] != r["service"]:
                cands.setdefault(edge[0], Candidate(edge[0])).seen_by_callers.append(r)
        for ch in changes:
            if ch["service"] in cands:
                cands[ch["service"]].changes.append(ch)
        return list(cands.values())

    @staticmethod
    def code_path_surprise(c: Candidate) -> float:
        """-log10(1 - score) of its strongest request-pattern anomaly (0: none); unlike the score,
        it does not saturate near 1, so a whole endpoint changing outranks a few requests."""
        scores = [r["ensemble_score"] for r in c.own if str(r["feature"]).startswith(PATTERN_PREFIX)
                  and r["ensemble_score"] is not None and math.isfinite(r["ensemble_score"])]
        return max((-math.log10(max(1.0 - x, 1e-12)) for x in scores), default=0.0)

    def wait_excess(self, c: Candidate) -> tuple[float, Mapping[str, Any] | None]:
        """Largest excess over the expected high among callers' intrinsic-kind edge stats about it
        (how much longer they waited on it than it worked), with its row; (0, None) without. Of
        percentile stats only the median and below count: what a typical call saw (one slow request
        moves a p99, and a busy service's queue a p95, but not every call)."""
        best: tuple[float, Mapping[str, Any] | None] = (0.0, None)
        for r in c.seen_by_callers:
            v, hi = r.get("value"), r.get("expected_high")
            pct = PERCENTILE.search(r["feature"])
            if (self.kinds.is_intrinsic_edge(r["feature"]) and (pct is None or int(pct.group(1)) <= 50)
                    and v is not None and hi is not None
                    and math.isfinite(v) and math.isfinite(hi) and v - hi > best[0]):
                best = (v - hi, r)
        return best

    @staticmethod
    def deviation_size(c: Candidate) -> float:
        """Largest range_deviation of its own rows, or of its callers' edge rows about it when it has
        none (a service that is down emits nothing: its callers' calls to it are its measurement)."""
        return max((range_deviation(r) for r in c.evidence_rows), default=0.0)

    def score(self, cands: list[Candidate], start: datetime, n_windows: int) -> None:
        w = self.p.weights
        anomalous = {c.service: c for c in cands if c.own}
        surprise = {c.service: self.code_path_surprise(c) for c in cands}
        top_surprise = max(surprise.values(), default=0.0)
        waits = {c.service: self.wait_excess(c)[0] for c in cands}
        top_wait = max(waits.values(), default=0.0)
        deviations = {c.service: self.deviation_size(c) if self.graphless else 0.0 for c in cands}
        top_deviation = max(deviations.values(), default=0.0)
        # With a call graph the deviation term does not apply: its weight is not in the mean either,
        # so a graph system's scores read as they did before the term existed.
        terms = [t for t in TERMS if self.graphless or t != "deviation"]
        total_w = sum(w.get(t, 0.0) for t in terms) or 1.0
        for c in cands:
            others = [s for s in anomalous if s != c.service]
            callers = [s for s in others if (s, c.service) in self.reach]
            onset = c.onset
            coverage = c.windows / max(n_windows, 1)
            # Callees in trouble (their own anomalies, or callers' edge stats about them) that
            # were already in trouble when this one started explain it away.
            blocking = [
                (1.0 if (d.onset - onset).total_seconds() <= self.p.slack_s else 0.5) * min(1.0, d.windows / c.windows)
                for d in cands
                if d is not c and (c.service, d.service) in self.reach
            ]
            intrinsic = [r["ensemble_score"] for r in c.own if self.kinds.is_intrinsic(r["component"], r["feature"])]
            scores = sorted((r["ensemble_score"] for r in c.own), reverse=True)
            if not scores:
                scores = [0.5 * r["ensemble_score"] for r in sorted(c.seen_by_callers, key=lambda r: -r["ensemble_score"])]
            change = max((1.0 if ch["feature"].removesuffix("_count") in STRONG_CHANGES else 0.6 for ch in c.changes), default=0.0)
            c.terms = {
                "explains": len(callers) / len(others) if others else 1.0,
                "deepest": 1.0 / (1.0 + sum(blocking)),
                "precedence": math.exp(-max(0.0, (onset - start).total_seconds()) / self.p.precedence_s),
                "intrinsic": max(intrinsic, default=0.0),
                "change": change,
                "strength": (sum(scores[:3]) / min(3, len(scores)) if scores else 0.0) * math.sqrt(coverage),
                "code_path": surprise[c.service] / top_surprise if top_surprise > 0 else 0.0,
                "waited_on": waits[c.service] / top_wait if top_wait > 0 else 0.0,
                "deviation": deviations[c.service] / top_deviation if top_deviation > 0 else 0.0,
            }
            c.score = sum(w.get(t, 0.0) * c.terms[t] for t in terms) / total_w
        cands.sort(key=lambda c: (-c.score, c.onset, c.service))

    def indicator(self, c: Candidate) -> Mapping[str, Any]:
        """The row that best shows the candidate's trouble: own intrinsic, else own, else callers' view."""
        intrinsic = [r for r in c.own if self.kinds.is_intrinsic(r["component"], r["feature"])]
        pool = intrinsic or c.own or c.seen_by_callers
        return max(pool, key=lambda r: (r["ensemble_score"], -r["window_start"].timestamp()))

    def evidence(self, c: Candidate, first: Candidate, n_anomalous: int) -> str:
        r = self.indicator(c)
        pattern = describe(r["service"], r["feature"], r.get("value"), r.get("expected_low"))
        parts = [
            f"{pattern} at {r['window_start']:%H:%M}" if pattern else
            f"{r['service']} {r['feature']} = {_fmt(r.get('value'))} vs normal {_fmt(r.get('expected_low'))}"
            f"–{_fmt(r.get('expected_high'))} at {r['window_start']:%H:%M}"
        ]
        lag = (c.onset - first.onset).total_seconds()
        parts.append("first anomalous service" if lag <= 0 else f"anomalous {lag / 60:.0f} min after {first.service}")
        others = max(n_anomalous - (1 if c.own else 0), 0)
        if others:
            parts.append(f"{round(c.terms['explains'] * others)} of {others} other anomalous services call it")
        if c.terms["deepest"] >= 1.0:
            parts.append("none of its callees is anomalous")
        excess, wait = self.wait_excess(c)
        if wait is not None and c.terms.get("waited_on", 0.0) > 0:
            stat = parse_edge_feature(wait["feature"])[1]  # type: ignore[index]
            parts.append(f"its callers' {stat} up to {_fmt(excess)} above normal ({wait['service']} at "
                         f"{wait['window_start']:%H:%M})")
        if not c.own:
            parts.append("seen only through its callers' calls to it")
        for ch in sorted(c.changes, key=lambda x: x["window_start"])[:2]:
            mins = (first.onset - ch["window_start"]).total_seconds() / 60
            when = f"{mins:.0f} min before the incident" if mins > 0 else "during the incident"
            parts.append(f"{ch['feature'].removesuffix('_count')} at {ch['window_start']:%H:%M} ({when})")
        return "; ".join(parts)

    def causal_chain(self, root: Candidate, cands: Sequence[Candidate]) -> list[dict[str, Any]]:
        """Root first, then anomalous services that (transitively) call it, by onset."""
        ups = [c for c in cands if c.own and c is not root and (c.service, root.service) in self.reach]
        ups.sort(key=lambda c: (c.onset, c.service))
        return [
            {"service": c.service, "onset": c.onset.to_pydatetime() if hasattr(c.onset, "to_pydatetime") else c.onset,
             "lag_seconds": float((c.onset - root.onset).total_seconds())}
            for c in [root, *ups]
        ]

    def incident(self, system: str, rows: list[Mapping[str, Any]], changes: list[Mapping[str, Any]], run_id: str,
                 *, alerted: bool = False) -> dict[str, Any] | None:
        """The incident document of these rows, or None when they do not make an incident.

        alerted: an alert already says something is wrong (triggered RCA), so admission,
        corroboration and the load-surge filter do not apply: rank whatever trouble there is."""
        if not rows or not (alerted or self.admitted(rows)):
            return None
        start = min(r["window_start"] for r in rows)
        end = max(r["window_end"] for r in rows)
        lo = start - pd.Timedelta(seconds=self.p.change_lookback_s)
        near = [ch for ch in changes if lo <= ch["window_start"] <= end]
        own_changes = [ch for ch in near if ch["service"] in {r["service"] for r in rows}]
        if not alerted and (not self.corroborated(rows, own_changes) or self.load_surge(rows, own_changes)):
            return None
        cands = self.candidates(rows, near)
        self.score(cands, start, len({r["window_start"] for r in rows}))
        first = min((c for c in cands if c.own), key=lambda c: (c.onset, c.service))
        n_anomalous = sum(1 for c in cands if c.own)
        root_causes = [
            {
                "service": c.service,
                "score": round(float(c.score), 4),
                "rank": i + 1,
                "indicator": self.indicator(c)["feature"],
                "evidence": self.evidence(c, first, n_anomalous),
            }
            for i, c in enumerate(cands[: self.p.top_k])
        ]
        services = sorted({r["service"] for r in rows})
        ids = sorted({r["anomaly_id"] for r in rows} | {ch["anomaly_id"] for ch in near if ch["service"] in services})
        return {
            "system": system,
            "incident_id": incident_id(system, start, first.service),
            "start": start,
            "end": end,
            "services": services,
            "anomaly_ids": ids,
            "root_causes": root_causes,
            "causal_chain": self.causal_chain(cands[0], cands),
            "severity": _severity(rows, len(services)),
            "explanation": None,
            "explanation_writer": None,
            "run_id": run_id,
            "date": start.date(),
        }


INCIDENT_COLUMNS = [
    "system", "incident_id", "start", "end", "services", "anomaly_ids", "root_causes", "causal_chain",
    "severity", "explanation", "explanation_writer", "run_id", "date",
]


def rank_system_incidents(
    anomalies: pd.DataFrame, reach: pd.DataFrame, params: RankingParams, run_id: str
) -> pd.DataFrame:
    """All incidents of one system. `anomalies` carries `incident_key` (null for change events)."""
    if anomalies.empty:
        return pd.DataFrame(columns=INCIDENT_COLUMNS)
    system = str(anomalies["system"].iloc[0])
    pairs = {(s, d) for s, d in zip(reach.get("src", []), reach.get("dst", []), strict=False) if s != d}
    ranker = IncidentRanker(params, pairs)
    is_change = anomalies["component"] == "event"
    changes = anomalies[is_change].to_dict("records")
    out = []
    for _, grp in anomalies[~is_change & anomalies["incident_key"].notna()].groupby("incident_key", sort=True):
        inc = ranker.incident(system, grp.to_dict("records"), changes, run_id)
        if inc is not None:
            out.append(inc)
    return pd.DataFrame(out, columns=INCIDENT_COLUMNS)
