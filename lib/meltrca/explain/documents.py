"""The JSON documents of SPEC §5: one metadata document per anomaly, one incident document per incident.

``metadata_document`` and ``incident_document`` are pure functions (testable without Spark);
``metadata_rows`` runs the first over the anomaly context in Spark (mapInPandas) and yields
``metadata`` table rows. The shipped JSON Schemas (conf/schemas/*.schema.json) describe both;
``schema_validator`` loads them for the export check and the tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from meltrca.config import conf_dir
from meltrca.errors import ConfigError
from meltrca.explain.context import SEVERITIES
from meltrca.explain.knowledge_base import Evidence, KnowledgeBase, Signal
from meltrca.explain.template import article, event_word, signal_sentence
from meltrca.explain.text import clock, duration_phrase, expected_range, finite_or_none, fmt_num, iso, sanitize_text
from meltrca.indicators import PATTERN_PREFIX

ANOMALY_TYPES = (
    "spike", "drop", "level_shift", "unusual_frequency", "new_error_pattern", "latency_degradation",
    "error_burst", "resource_saturation", "change_event",
)
COMPONENTS = ("metric", "log", "trace", "event")
TEMPLATE_WRITER = "template"
DOCUMENT_ROWS = StructType([
    StructField("anomaly_id", StringType(), False),
    StructField("system", StringType(), False),
    StructField("service", StringType(), False),
    StructField("component", StringType(), True),
    StructField("feature", StringType(), True),
    StructField("timestamp", TimestampType(), False),
    StructField("incident_id", StringType(), True),
    StructField("severity", StringType(), True),
    StructField("document", StringType(), False),
    StructField("explanation_writer", StringType(), True),
])


# ---- anomaly details ---------------------------------------------------------------------------------


def severity_of(value: Any, score: Any) -> str:
    """The detector's severity; when missing, derived from the ensemble score (documented bands)."""
    if isinstance(value, str) and value.lower() in SEVERITIES:
        return value.lower()
    s = finite_or_none(score) or 0.0
    return "critical" if s >= 0.995 else "high" if s >= 0.98 else "medium" if s >= 0.95 else "low"


def anomaly_type_of(value: Any, component: str, v: Any, low: Any, high: Any) -> str:
    """The detector's anomaly type; when missing, change_event / spike / drop / level_shift."""
    if isinstance(value, str) and value in ANOMALY_TYPES:
        return value
    if component == "event":
        return "change_event"
    x, lo, hi = finite_or_none(v), finite_or_none(low), finite_or_none(high)
    if x is not None and hi is not None and x > hi:
        return "spike"
    if x is not None and lo is not None and x < lo:
        return "drop"
    return "level_shift"


def _bounds(r: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Expected range: detect's baseline, else the features baseline, else 0-0 for change events."""
    lo, hi = finite_or_none(r.get("expected_low")), finite_or_none(r.get("expected_high"))
    if lo is None or hi is None:
        lo, hi = finite_or_none(r.get("base_low")), finite_or_none(r.get("base_high"))
    if (lo is None or hi is None) and r.get("component") == "event":
        lo, hi = 0.0, 0.0
    return lo, hi


def _loads(text: Any) -> list[dict[str, Any]]:
    if not isinstance(text, str) or not text:
        return []
    value = json.loads(text)
    return value if isinstance(value, list) else []


def anomaly_sentence(r: Mapping[str, Any], lo: float | None, hi: float | None, details: Mapping[str, Any]) -> str:
    """One sentence on the anomaly itself, then its place in the incident."""
    changes = _loads(r.get("change_events_json"))
    own_events = [c for c in changes if (finite_or_none(c.get("minutes_before")) or 0.0) <= 0.0]
    if r.get("component") == "event" and own_events:
        c = own_events[0]
        text = f"Change event: {event_word(str(c.get('event_type')))} on {r.get('service')} at {clock(c.get('at'))}"
        text += f" (\"{c['message']}\")." if c.get("message") else "."
    else:
        sig = {"feature": r.get("feature"), "service": r.get("service"), "component": r.get("component"),
               "value": r.get("value"), "expected_low": lo, "expected_high": hi, "at": r.get("window_start"),
               "template_text": r.get("template_text")}
        text = (f"{signal_sentence(sig)} ({details['anomaly_type']}, {details['severity']} severity, "
                f"confidence {fmt_num(details['confidence'])}).")
    if r.get("template_text") and not str(r.get("feature") or "").startswith(PATTERN_PREFIX):
        text += f" Log template: \"{r['template_text']}\"."
    if changes and r.get("component") != "event":
        c = changes[-1]
        before = finite_or_none(c.get("minutes_before")) or 0.0
        rel = f"{duration_phrase(before * 60)} earlier" if before > 0 else "at the same time" if before == 0 \
            else f"{duration_phrase(-before * 60)} later"
        word = event_word(str(c.get("event_type")))
        text += f" {article(word).capitalize()} {word} on {r.get('service')} came {rel} ({clock(c.get('at'))})."
    incident = r.get("incident_id")
    if incident:
        first, lag = r.get("first_service"), finite_or_none(r.get("own_lag_seconds"))
        if first and first != r.get("service") and lag is not None and lag > 0:
            text += f" {first} deviated {duration_phrase(lag)} earlier in incident {incident}."
        elif first and first != r.get("service") and lag is not None:
            text += f" It deviated in the same minute as {first}, the first service of incident {incident}."
        elif first == r.get("service"):
            text += f" {first} was the first service to deviate in incident {incident}."
    return text


def metadata_document(r: Mapping[str, Any], kb: KnowledgeBase, *, max_causes: int, max_chars: int) -> dict[str, Any]:
    """The SPEC §5 document of one anomaly context row (see context.anomaly_context)."""
    component = str(r.get("component") or "")
    lo, hi = _bounds(r)
    confidence = finite_or_none(r.get("confidence"))
    if confidence is None:
        confidence = finite_or_none(r.get("ensemble_score")) or 0.0
    details = {
        "value": finite_or_none(r.get("value")),
        "expected_range": expected_range(lo, hi),
        "anomaly_type": anomaly_type_of(r.get("anomaly_type"), component, r.get("value"), lo, hi),
        "severity": severity_of(r.get("severity"), r.get("ensemble_score")),
        "confidence": round(min(1.0, max(0.0, confidence)), 3),
    }
    incident_signals = tuple(
        Signal(str(s.get("component")), str(s.get("feature")), s.get("anomaly_type"))
        for s in _loads(r.get("incident_signals_json"))
    )
    changes = tuple(sorted({str(c.get("event_type")) for c in _loads(r.get("change_events_json"))}))
    evidence = Evidence((Signal(component, str(r.get("feature")), details["anomaly_type"]),), incident_signals, changes)
    explanation = anomaly_sentence(r, lo, hi, details)
    if r.get("incident_explanation"):
        explanation += " " + str(r["incident_explanation"])
    return {
        "anomaly_id": r.get("anomaly_id"),
        "timestamp": iso(r.get("window_start")),
        "system": r.get("system"),
        "service": r.get("service"),
        "component": component,
        "feature": r.get("feature"),
        "anomaly_details": details,
        "root_cause_analysis": {
            "incident_id": r.get("incident_id") or None,
            "correlated_anomalies": _loads(r.get("correlated_json")),
            "suggested_causes": kb.suggest(evidence, max_causes),
        },
        "explanation": sanitize_text(explanation, max_chars),
    }


def metadata_rows(context: DataFrame, *, kb_plain: Mapping[str, Any], max_causes: int, max_chars: int) -> DataFrame:
    """mapInPandas over anomaly context rows -> DOCUMENT_ROWS (the closure holds plain values only)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        kb = KnowledgeBase.from_plain(kb_plain)
        for pdf in batches:
            rows = []
            for rec in pdf.astype(object).where(pdf.notna(), None).to_dict("records"):
                doc = metadata_document(rec, kb, max_causes=max_causes, max_chars=max_chars)
                rows.append({
                    "anomaly_id": rec["anomaly_id"], "system": rec["system"], "service": rec["service"],
                    "component": rec.get("component"), "feature": rec.get("feature"),
                    "timestamp": rec["window_start"], "incident_id": rec.get("incident_id"),
                    "severity": doc["anomaly_details"]["severity"],
                    "document": json.dumps(doc, ensure_ascii=False, allow_nan=False),
                    "explanation_writer": rec.get("incident_writer") or TEMPLATE_WRITER,
                })
            out = pd.DataFrame(rows, columns=DOCUMENT_ROWS.fieldNames())
            out["timestamp"] = pd.to_datetime(out["timestamp"])
            yield out

    return context.mapInPandas(run, DOCUMENT_ROWS)


# ---- incident documents ---------------------------------------------------------------------------------


def incident_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """The incidents.jsonl document of one `incidents` table row (dict or Row.asDict(recursive=True))."""
    causes = sorted(row.get("root_causes") or [], key=lambda c: (c.get("rank") or 1 << 30, -(c.get("score") or 0)))
    chain = sorted(row.get("causal_chain") or [], key=lambda c: (finite_or_none(c.get("lag_seconds")) or 0.0,
                                                                  iso(c.get("onset")) or ""))
    return {
        "system": row.get("system"),
        "incident_id": row.get("incident_id"),
        "start": iso(row.get("start")),
        "end": iso(row.get("end")),
        "severity": severity_of(row.get("severity"), None),
        "root_causes": [
            {"service": c.get("service"), "score": finite_or_none(c.get("score")),
             "rank": int(c["rank"]) if c.get("rank") is not None else i + 1,
             "indicator": c.get("indicator"), "evidence": c.get("evidence")}
            for i, c in enumerate(causes)
        ],
        "causal_chain": [
            {"service": c.get("service"), "onset": iso(c.get("onset")), "lag_seconds": finite_or_none(c.get("lag_seconds"))}
            for c in chain
        ],
        "affected_services": sorted(row.get("services") or []),
        "anomaly_ids": list(row.get("anomaly_ids") or []),
        "explanation": row.get("explanation") or "",
        "explanation_writer": row.get("explanation_writer") or TEMPLATE_WRITER,
    }


# ---- JSON Schemas -------------------------------------------------------------------------------------


@cache
def load_schema(name: str) -> dict[str, Any]:
    """conf/schemas/<name>.schema.json (metadata or incident)."""
    path = conf_dir() / "schemas" / f"{name}.schema.json"
    if not path.is_file():
        raise ConfigError(f"JSON Schema not found: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def schema_validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)
