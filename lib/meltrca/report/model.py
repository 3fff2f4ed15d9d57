"""What the report shows, as plain Python values (no Spark): rendering is testable on its own.

``gather`` (Spark) fills these from the lake; ``timeline``, ``graph_svg`` and ``page`` render them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meltrca.rca.ranking import SEVERITIES

# Most severe first; an unknown severity sorts last.
SEVERITY_ORDER: tuple[str, ...] = tuple(reversed(SEVERITIES))


def severity_rank(severity: str | None) -> int:
    """0 for critical ... 3 for low, 4 for anything else (so the worst incidents come first)."""
    s = (severity or "").lower()
    return SEVERITY_ORDER.index(s) if s in SEVERITY_ORDER else len(SEVERITY_ORDER)


@dataclass(frozen=True)
class SeriesStat:
    """One anomalous series of an incident, summarised (input of ``choose_series``)."""

    service: str
    component: str
    feature: str
    peak: float
    anomalies: int
    onset: datetime


@dataclass
class Series:
    """A feature's values around an incident, its anomalous windows and its expected range."""

    service: str
    component: str
    feature: str
    points: list[tuple[datetime, float]] = field(default_factory=list)
    anomaly_windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    expected: tuple[float, float] | None = None

    @property
    def label(self) -> str:
        return f"{self.service} · {self.feature} ({self.component})"


@dataclass(frozen=True)
class ChangeMarker:
    """A change event (deploy, config change, restart, scale) near an incident."""

    ts: datetime
    service: str
    kind: str


@dataclass
class IncidentView:
    system: str
    incident_id: str
    start: datetime
    end: datetime
    severity: str
    services: list[str]
    root_causes: list[dict[str, Any]]
    causal_chain: list[dict[str, Any]]
    explanation: str | None
    explanation_writer: str | None
    anomaly_count: int
    series: list[Series] = field(default_factory=list)
    changes: list[ChangeMarker] = field(default_factory=list)

    @property
    def top_cause(self) -> dict[str, Any] | None:
        return self.root_causes[0] if self.root_causes else None


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    calls: int | None = None
    error_ratio: float | None = None
    p95_ms: float | None = None


@dataclass
class ReportData:
    results: str
    generated_at: datetime
    window: str
    systems: list[str]
    incidents: list[IncidentView]
    total_incidents: int
    severity_counts: dict[str, int]
    anomaly_counts: dict[str, int]
    graphs: dict[str, list[Edge]]
    evaluation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def sort_root_causes(causes: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Root causes best first (by rank; a missing rank sorts last, then by score)."""
    return sorted(
        (dict(c) for c in causes or []),
        key=lambda c: (c.get("rank") if c.get("rank") is not None else 10**9, -(c.get("score") or 0.0)),
    )


def choose_series(stats: Sequence[SeriesStat], root_causes: Sequence[Mapping[str, Any]], k: int) -> list[SeriesStat]:
    """The `k` series to plot: the top root cause's indicator first, then the strongest series,
    spreading over services (a second series of a service only after every service had one)."""
    pool = list(stats)
    chosen: list[SeriesStat] = []
    top = sort_root_causes(root_causes)[:1]
    if top:
        for s in pool:
            if s.service == top[0].get("service") and s.feature == top[0].get("indicator"):
                chosen.append(s)
                pool.remove(s)
                break
    per_service: dict[str, int] = {}
    for s in chosen:
        per_service[s.service] = per_service.get(s.service, 0) + 1
    while pool and len(chosen) < k:
        best = min(
            pool,
            key=lambda s: (per_service.get(s.service, 0), -s.peak, -s.anomalies, s.onset, s.service, s.feature),
        )
        chosen.append(best)
        pool.remove(best)
        per_service[best.service] = per_service.get(best.service, 0) + 1
    return chosen[:k]
