"""Scores results against fault labels (SPEC §7). Pure Python: testable without Spark.

Definitions
- Event level: a fault is *detected* when an incident of the same system overlaps its window
  [start - tol, end + tol]. An incident that overlaps no fault is a false positive. Precision =
  matched incidents / incidents, recall = detected faults / faults.
- Point level: one point per (system, window) over the evaluated span. A point is labelled
  anomalous when it lies inside a fault window, predicted anomalous when a non-event anomaly of
  that system starts in it. Accuracy counts true negatives over the span.
- Root cause (RCAEval): for a detected fault, the matched incident is the overlapping one with the
  longest overlap (ties: earliest start). AC@k = share of faults whose root-cause service is in the
  incident's top k; Avg@5 = mean of AC@1..AC@5. Reported over all faults (missed = wrong) and over
  detected faults.
- Case level (per fault over every incident): where one fault may surface as several incidents
  (metrics-only systems, services a graph does not join), every service named by any incident
  that overlaps the fault's window, ranked by its best score there (ties: better rank, then
  name); AC@k and Avg@5 of that ranking, all faults counted.
- Metadata: share of documents that validate against the SPEC §5 JSON Schema.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from meltrca.errors import InputError
from meltrca.timewindow import parse_utc

K_VALUES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Fault:
    fault_id: str
    system: str
    root_cause_service: str
    fault_type: str
    start: datetime
    end: datetime
    affected_services: tuple[str, ...]
    indicator: str | None


@dataclass(frozen=True)
class Incident:
    incident_id: str
    system: str
    start: datetime
    end: datetime
    ranking: tuple[str, ...]  # root-cause services, best first
    scores: tuple[float, ...] = ()  # their scores, same order


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else parse_utc(value.isoformat())
    return parse_utc(str(value))


def parse_faults(labels: Iterable[Mapping[str, Any]]) -> list[Fault]:
    """Labels (SPEC §7 dicts) -> Faults; a label missing a key is an InputError naming it."""
    out: list[Fault] = []
    for i, lab in enumerate(labels):
        try:
            out.append(
                Fault(
                    fault_id=str(lab["fault_id"]),
                    system=str(lab["system"]),
                    root_cause_service=str(lab["root_cause_service"]),
                    fault_type=str(lab.get("fault_type") or "unknown"),
                    start=_ts(lab["start"]),
                    end=_ts(lab["end"]),
                    affected_services=tuple(lab.get("affected_services") or ()),
                    indicator=lab.get("indicator"),
                )
            )
        except KeyError as exc:
            raise InputError(f"label #{i} lacks key {exc.args[0]!r}") from None
    return out


def parse_incidents(docs: Iterable[Mapping[str, Any]]) -> list[Incident]:
    """incidents.jsonl documents (SPEC §5) -> Incidents with their root-cause ranking."""
    out: list[Incident] = []
    for d in docs:
        causes = sorted(d.get("root_causes") or [], key=lambda c: (c.get("rank") or 10**9))
        out.append(
            Incident(
                incident_id=str(d["incident_id"]),
                system=str(d["system"]),
                start=_ts(d["start"]),
                end=_ts(d.get("end") or d["start"]),
                ranking=tuple(str(c["service"]) for c in causes),
                scores=tuple(float(c.get("score") or 0.0) for c in causes),
            )
        )
    return out


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> float:
    return (min(a1, b1) - max(a0, b0)).total_seconds()


def match_incidents(
    faults: Sequence[Fault], incidents: Sequence[Incident], tolerance: timedelta
) -> tuple[dict[str, Incident], set[str]]:
    """fault_id -> best overlapping incident, and the ids of incidents that match some fault."""
    best: dict[str, Incident] = {}
    matched: set[str] = set()
    for f in faults:
        f0, f1 = f.start - tolerance, f.end + tolerance
        cands = [i for i in incidents if i.system == f.system and _overlap(i.start, i.end, f0, f1) >= 0]
        for i in cands:
            matched.add(i.incident_id)
        if cands:
            best[f.fault_id] = max(cands, key=lambda i: (_overlap(i.start, i.end, f.start, f.end), -i.start.timestamp()))
    return best, matched


def case_ranking(fault: Fault, incidents: Sequence[Incident], tolerance: timedelta) -> tuple[str, ...]:
    """Every service named by an incident overlapping the fault (module doc: case level), best first."""
    f0, f1 = fault.start - tolerance, fault.end + tolerance
    best: dict[str, tuple[float, int]] = {}
    for i in incidents:
        if i.system != fault.system or _overlap(i.start, i.end, f0, f1) < 0:
            continue
        for rank, service in enumerate(i.ranking):
            score = i.scores[rank] if rank < len(i.scores) else 0.0
            if service not in best or (-score, rank) < (-best[service][0], best[service][1]):
                best[service] = (score, rank)
    return tuple(sorted(best, key=lambda s: (-best[s][0], best[s][1], s)))


def _prf(tp: float, n_pred: float, n_true: float) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


def event_level(faults: Sequence[Fault], incidents: Sequence[Incident], tolerance: timedelta) -> dict[str, Any]:
    best, matched = match_incidents(faults, incidents, tolerance)
    p = len(matched) / len(incidents) if incidents else 0.0
    r = len(best) / len(faults) if faults else 0.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
        "faults": len(faults),
        "detected": len(best),
        "incidents": len(incidents),
        "false_positive_incidents": len(incidents) - len(matched),
    }


def rank_in(ranking: Sequence[str], service: str) -> int | None:
    """1-based rank of a service in a ranking, None when absent."""
    return ranking.index(service) + 1 if service in ranking else None


def rank_of(fault: Fault, incident: Incident | None) -> int | None:
    """1-based rank of the true root cause in the incident's ranking, None when absent/undetected."""
    return None if incident is None else rank_in(incident.ranking, fault.root_cause_service)


def root_cause_accuracy(ranks: Sequence[int | None]) -> dict[str, float]:
    """AC@1..5 and Avg@5 for a list of ranks (None = not found)."""
    n = len(ranks)
    out: dict[str, float] = {}
    for k in K_VALUES:
        out[f"ac@{k}"] = round(sum(1 for r in ranks if r is not None and r <= k) / n, 4) if n else 0.0
    out["avg@5"] = round(sum(out[f"ac@{k}"] for k in K_VALUES) / len(K_VALUES), 4)
    out["n"] = n
    return out


def point_level(
    faults: Sequence[Fault],
    anomalies: Iterable[Mapping[str, Any]],
    spans: Mapping[str, tuple[datetime, datetime]],
    window: timedelta,
) -> dict[str, Any]:
    """Per (system, window) confusion counts over each system's evaluated span."""
    predicted: dict[str, set[int]] = defaultdict(set)
    step = window.total_seconds()
    for a in anomalies:
        if a.get("component") == "event":
            continue
        predicted[str(a["system"])].add(int(_ts(a["timestamp"]).timestamp() // step))
    tp = fp = fn = tn = 0
    for system, (s0, s1) in spans.items():
        first, last = int(s0.timestamp() // step), int((s1.timestamp() - 1) // step)
        truth: set[int] = set()
        for f in faults:
            if f.system == system:
                truth.update(range(int(f.start.timestamp() // step), int((f.end.timestamp() - 1) // step) + 1))
        pred = {p for p in predicted.get(system, set()) if first <= p <= last}
        truth = {t for t in truth if first <= t <= last}
        total = last - first + 1
        tp += len(pred & truth)
        fp += len(pred - truth)
        fn += len(truth - pred)
        tn += total - len(pred | truth)
    res = _prf(tp, tp + fp, tp + fn)
    n = tp + fp + fn + tn
    res.update({"accuracy": round((tp + tn) / n, 4) if n else 0.0, "tp": tp, "fp": fp, "fn": fn, "tn": tn})
    return res


def per_signal_recall(
    faults: Sequence[Fault], anomalies: Sequence[Mapping[str, Any]], tolerance: timedelta
) -> dict[str, dict[str, Any]]:
    """For each component: share of faults with an anomaly of that component on an affected service."""
    hit: dict[str, set[str]] = defaultdict(set)
    by_system: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for a in anomalies:
        by_system[str(a["system"])].append(a)
    for f in faults:
        services = set(f.affected_services) | {f.root_cause_service}
        for a in by_system.get(f.system, []):
            t = _ts(a["timestamp"])
            if a["service"] in services and f.start - tolerance <= t <= f.end + tolerance:
                hit[str(a["component"])].add(f.fault_id)
    n = len(faults)
    return {c: {"faults_with_anomaly": len(ids), "recall": round(len(ids) / n, 4) if n else 0.0} for c, ids in sorted(hit.items())}


def metadata_validity(docs: Sequence[Mapping[str, Any]], schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Share of metadata documents valid against the SPEC §5 schema."""
    if not docs:
        return {"documents": 0, "valid": 0, "share_valid": 0.0}
    if schema is None:
        raise InputError("metadata JSON Schema not found (conf/schemas/metadata.schema.json)")
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    valid = sum(1 for d in docs if validator.is_valid(d))
    return {"documents": len(docs), "valid": valid, "share_valid": round(valid / len(docs), 4)}


def evaluate(
    faults: Sequence[Fault],
    incidents: Sequence[Incident],
    anomalies: Sequence[Mapping[str, Any]],
    spans: Mapping[str, tuple[datetime, datetime]],
    *,
    tolerance: timedelta,
    window: timedelta,
    metadata_docs: Sequence[Mapping[str, Any]] = (),
    metadata_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole evaluation document (evaluation.json)."""
    best, _ = match_incidents(faults, incidents, tolerance)
    ranks = {f.fault_id: rank_of(f, best.get(f.fault_id)) for f in faults}
    detected = [f for f in faults if f.fault_id in best]
    case_ranks = [rank_in(case_ranking(f, incidents, tolerance), f.root_cause_service) for f in faults]
    per_type: dict[str, Any] = {}
    for ftype in sorted({f.fault_type for f in faults}):
        fs = [f for f in faults if f.fault_type == ftype]
        per_type[ftype] = {
            "faults": len(fs),
            "detected": sum(1 for f in fs if f.fault_id in best),
            **{k: v for k, v in root_cause_accuracy([ranks[f.fault_id] for f in fs]).items() if k != "n"},
        }
    return {
        "event_level": event_level(faults, incidents, tolerance),
        "point_level": point_level(faults, anomalies, spans, window),
        "root_cause": {
            "all_faults": root_cause_accuracy([ranks[f.fault_id] for f in faults]),
            "detected_faults": root_cause_accuracy([ranks[f.fault_id] for f in detected]),
            "case_level": root_cause_accuracy(case_ranks),
        },
        "per_fault_type": per_type,
        "per_signal": per_signal_recall(faults, anomalies, tolerance),
        "metadata": metadata_validity(metadata_docs, metadata_schema) if metadata_docs else {"documents": 0},
        "faults": [
            {
                "fault_id": f.fault_id,
                "system": f.system,
                "fault_type": f.fault_type,
                "root_cause_service": f.root_cause_service,
                "start": f.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "detected": f.fault_id in best,
                "incident_id": best[f.fault_id].incident_id if f.fault_id in best else None,
                "rank": ranks[f.fault_id],
                "case_rank": case_ranks[i],
                "top3": list(best[f.fault_id].ranking[:3]) if f.fault_id in best else [],
            }
            for i, f in enumerate(faults)
        ],
    }


def format_table(result: Mapping[str, Any]) -> str:
    """The printed summary: detection, root cause, per fault type, metadata."""
    ev, pt = result["event_level"], result["point_level"]
    rc_all, rc_det = result["root_cause"]["all_faults"], result["root_cause"]["detected_faults"]
    lines = [
        f"{'metric':<28}{'value':>10}",
        f"{'event precision':<28}{ev['precision']:>10.3f}",
        f"{'event recall':<28}{ev['recall']:>10.3f}",
        f"{'event F1':<28}{ev['f1']:>10.3f}",
        f"{'faults detected':<28}{ev['detected']:>6}/{ev['faults']:<3}",
        f"{'false-positive incidents':<28}{ev['false_positive_incidents']:>10}",
        f"{'point precision':<28}{pt['precision']:>10.3f}",
        f"{'point recall':<28}{pt['recall']:>10.3f}",
        f"{'point F1':<28}{pt['f1']:>10.3f}",
        f"{'point accuracy':<28}{pt['accuracy']:>10.3f}",
    ]
    for k in ("ac@1", "ac@3", "ac@5", "avg@5"):
        lines.append(f"{k.upper() + ' (all faults)':<28}{rc_all[k]:>10.3f}")
    for k in ("ac@1", "ac@3", "avg@5"):
        lines.append(f"{k.upper() + ' (detected)':<28}{rc_det[k]:>10.3f}")
    if "case_level" in result["root_cause"]:
        for k in ("ac@1", "ac@3", "avg@5"):
            lines.append(f"{k.upper() + ' (case level)':<28}{result['root_cause']['case_level'][k]:>10.3f}")
    meta = result.get("metadata", {})
    if meta.get("documents"):
        lines.append(f"{'metadata valid':<28}{meta['share_valid']:>10.3f}")
    lines.append("")
    lines.append(f"{'fault type':<32}{'n':>4}{'det':>5}{'AC@1':>7}{'AC@3':>7}")
    for ftype, row in result["per_fault_type"].items():
        lines.append(f"{ftype:<32}{row['faults']:>4}{row['detected']:>5}{row['ac@1']:>7.2f}{row['ac@3']:>7.2f}")
    return "\n".join(lines)


def load_labels_file(path: str | Path) -> list[dict[str, Any]]:
    """labels.json: a JSON array of SPEC §7 label objects."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"labels file {p} is not valid JSON (line {exc.lineno})") from None
    if isinstance(data, dict) and "faults" in data:
        data = data["faults"]
    if not isinstance(data, list):
        raise InputError(f"labels file {p} must hold a JSON array of faults")
    return data
