"""Triggered RCA: an alert fired at a time; rank the root causes of the trouble around it.

This is how on-call engineers use RCA (and how research tools are scored): no incident needs to
have been detected. The rule:

- the trouble is every anomaly (change events aside) of the system whose window overlaps
  [at - lookback, at + window]: ``--window`` after the alert (default 5 minutes) and
  ``rca.time_tolerance_minutes`` before it (faults start a little before anyone alerts);
- change events count from ``rca.change_lookback_minutes`` before that;
- the services are ranked with the same evidence terms as detected incidents
  (``meltrca.rca.ranking``) on the system's call graph; the alert is the admission, so the
  minimum-evidence, corroboration and load-surge filters do not apply.

Sparse signals (logs and traces exported only around incidents) rarely have the history a
detector calibrates on, so the anomalies table may hold nothing of them. Triggered RCA therefore
also compares each log and trace feature in the alert span with the *other* windows of the same
series (peer windows: a fault on one service at 10:04 is normal for every other window; the rule
is ``meltrca.detection.peer_deviations``'s): a sparse signal's ``peer_deviation`` row joins the
trouble; a dense signal's (present all along, so a detector judged it) only where the detectors
flagged nothing of the system in the span (``admitted_peer_rows``). Rows the detectors already
flagged keep their own score.

The result is one incident document (SPEC §5 shape) per system with trouble in that span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from meltrca.detection import anomaly_id, peer_deviations, sparse_signals
from meltrca.io import Lake
from meltrca.rca.incidents import RANK_COLUMNS, system_reachability
from meltrca.rca.ranking import IncidentRanker, RankingParams
from meltrca.rca.service_graph import build_service_graph, graph_from_edge_features
from meltrca.reference import Range, in_reference
from meltrca.timewindow import TimeWindow


def peer_rows(features: DataFrame, span: TimeWindow, *, min_z: float, reference: Column | None = None) -> pd.DataFrame:
    """Log/trace rows in `span` at least min_z robust sigmas above the other windows of their series
    (inside the reference baseline where it holds enough of them: meltrca.reference; columns:
    RANK_COLUMNS but incident_key, and `sparse`: the row's signal is a sparse one,
    meltrca.detection.sparse_signals); only the few deviating rows reach the driver."""
    in_span = (F.col("window_end") > F.lit(span.start)) & (F.col("window_start") <= F.lit(span.end))
    sparse = sparse_signals(features).withColumn("sparse", F.lit(True))
    rows = (
        peer_deviations(features, min_z=min_z, judged=in_span, reference=reference)
        .withColumn("anomaly_id", anomaly_id())
        .join(sparse, ["system", "service", "component"], "left")
        .withColumn("sparse", F.coalesce(F.col("sparse"), F.lit(False)))
    )
    return rows.select(*[c for c in RANK_COLUMNS if c != "incident_key"], "sparse").toPandas()


def admitted_peer_rows(peer: pd.DataFrame, detected: pd.DataFrame) -> pd.DataFrame:
    """The peer rows that join the trouble: every sparse signal's (no detector could calibrate on
    it), and a dense signal's only in a system whose detectors flagged nothing in the span (a
    detector judges a dense series against its own calibrated history; its everyday wobble against
    the peers of one day is noise beside what the detectors flagged, but where they saw nothing —
    say the alert falls inside the history they were fitted on — the peers are the evidence left).
    `detected`: the anomalies table's rows of the span (change events included)."""
    seen = set(detected.loc[detected["component"] != "event", "system"]) if not detected.empty else set()
    keep = peer["sparse"] | ~peer["system"].isin(seen)
    return peer[keep & ~peer["anomaly_id"].isin(set(detected["anomaly_id"]))].drop(columns="sparse")


def overlapping(rows: pd.DataFrame, span: TimeWindow) -> pd.DataFrame:
    """The rows whose window overlaps `span` (peer_rows' rule, in pandas)."""
    return rows[(rows["window_end"] > pd.Timestamp(span.start)) & (rows["window_start"] <= pd.Timestamp(span.end))]


@dataclass(frozen=True)
class Alert:
    """When the alert fired and how far around it to look."""

    at: datetime
    after: timedelta = timedelta(minutes=5)
    before: timedelta = timedelta(minutes=3)

    @property
    def span(self) -> TimeWindow:
        return TimeWindow(self.at - self.before, self.at + self.after)


def rank_alert(anomalies: pd.DataFrame, reach: set[tuple[str, str]], params: RankingParams, run_id: str,
               *, system: str, alert: Alert) -> dict[str, Any] | None:
    """The incident document of one system's trouble around the alert (None: no trouble there).

    `anomalies`: the system's anomaly rows (RANK_COLUMNS but incident_key), change events included."""
    if anomalies.empty:
        return None
    span = alert.span
    is_change = anomalies["component"] == "event"
    signals = anomalies[~is_change]
    inside = overlapping(signals, span)
    ranker = IncidentRanker(params, {(s, d) for s, d in reach if s != d})
    return ranker.incident(system, inside.to_dict("records"), anomalies[is_change].to_dict("records"), run_id, alerted=True)


def reach_pairs(lake: Lake, systems: Sequence[str], *, engine: str, run_id: str, features_window: TimeWindow | None = None,
                scratch_dir: str | None = None) -> dict[str, set[tuple[str, str]]]:
    """(caller, callee) pairs, transitively, per system: the lake's service_graph (or, before any
    rca, the graph of its spans) plus the edges its trace features name."""
    if not lake.exists("service_graph"):  # rca never ran on this lake: the graph from its spans
        edges = build_service_graph(lake.read("spans", systems=systems), run_id=run_id).select("system", "src", "dst")
    else:
        edges = lake.read("service_graph", systems=systems).select("system", "src", "dst")
    edges = edges.union(graph_from_edge_features(lake.read("features", systems=systems, window=features_window))).distinct()
    reach = system_reachability(edges, engine=engine, scratch_dir=scratch_dir)
    pairs: dict[str, set[tuple[str, str]]] = {}
    for r in reach.where(F.col("system").isin(list(systems))).select("system", "src", "dst").collect():
        pairs.setdefault(r["system"], set()).add((r["src"], r["dst"]))
    return pairs


def alert_incidents(lake: Lake, params: RankingParams, run_id: str, *, alert: Alert, systems: Sequence[str] | None,
                    engine: str, min_z: float, scratch_dir: str | None = None,
                    pairs: dict[str, set[tuple[str, str]]] | None = None,
                    references: Mapping[str, Sequence[Range]] | None = None) -> list[dict[str, Any]]:
    """Triggered RCA over a lake: one incident document per system with trouble around the alert.

    min_z: least peer deviation (robust sigmas) of a sparse series' row to count as trouble.
    pairs: reach_pairs of those systems when the caller ranks many alerts on one lake.
    references: each system's reference baseline (meltrca.reference.system_references)."""
    span = alert.span
    look = TimeWindow(span.start - timedelta(seconds=params.change_lookback_s), span.end)
    rows = lake.read("anomalies", systems=systems or None, window=look).select(
        *[c for c in RANK_COLUMNS if c != "incident_key"]
    ).toPandas()
    peer = peer_rows(lake.read("features", systems=systems or None), span, min_z=min_z,
                     reference=in_reference(references or {}))
    peer = admitted_peer_rows(peer, overlapping(rows, span))
    rows = pd.concat([rows, peer], ignore_index=True) if not peer.empty else rows
    found = sorted(rows.loc[rows["component"] != "event", "system"].unique()) if not rows.empty else []
    if not found:
        return []
    if pairs is None:
        pairs = reach_pairs(lake, found, engine=engine, run_id=run_id, features_window=span, scratch_dir=scratch_dir)
    docs = []
    for system in found:
        doc = rank_alert(rows[rows["system"] == system], pairs.get(system, set()), params, run_id,
                         system=system, alert=alert)
        if doc is not None:
            docs.append(doc)
    return docs
