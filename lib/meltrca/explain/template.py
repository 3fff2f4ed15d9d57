"""The template writer: offline, deterministic explanations from the structured facts.

Same facts in, same text out. Each sentence cites the numbers behind it: the root-cause signal's
value against its normal range, which service deviated first and how much earlier than the
next, which change event preceded the incident and by how long, the strongest log evidence,
and the knowledge base's likely causes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meltrca.explain.text import clock, deviation_phrase, duration_phrase, finite_or_none, fmt_num, iso
from meltrca.features.patterns import describe

WRITER = "template"
EVENT_WORDS = {"deploy": "deploy", "config_change": "config change", "restart": "restart", "scale": "scaling event"}


def event_word(event_type: str) -> str:
    return EVENT_WORDS.get(event_type, event_type.replace("_", " "))


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def signal_sentence(sig: Mapping[str, Any]) -> str:
    """'cpu_usage_mean on payment was 97.2 at 10:31Z, 2.8x the upper bound of its normal range 20-35'."""
    value = fmt_num(sig.get("value"))
    where = f"{sig.get('feature')} on {sig.get('service')}"
    if sig.get("component") == "event":
        return f"{where} counted {value} at {clock(sig.get('at'))} (a change event)"
    pattern = describe(str(sig.get("service")), str(sig.get("feature")), finite_or_none(sig.get("value")),
                       finite_or_none(sig.get("expected_low")), sig.get("template_text"))
    if pattern:
        return f"{pattern} at {clock(sig.get('at'))}"
    dev = deviation_phrase(sig.get("value"), sig.get("expected_low"), sig.get("expected_high"))
    return f"{where} was {value} at {clock(sig.get('at'))}, {dev}"


def join_words(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _onset_sentence(onsets: Sequence[Mapping[str, Any]]) -> str | None:
    """Who deviated first, and how much earlier than the next services."""
    if not onsets:
        return None
    first_at = onsets[0].get("onset")
    together = [str(o["service"]) for o in onsets if o.get("onset") == first_at]
    if len(together) == 1:
        head = f"{together[0]} deviated first, at {clock(first_at)}"
    else:
        head = f"{join_words(together)} deviated first, together at {clock(first_at)}"
    later = [o for o in onsets if o.get("onset") != first_at][:2]
    if not later:
        return head + "."
    gaps = [f"{duration_phrase(o.get('lag_seconds'))} before {o['service']}" for o in later]
    return f"{head}, {' and '.join(gaps)}."


def _change_sentence(changes: Sequence[Mapping[str, Any]], root: str | None) -> str | None:
    """The change nearest before the incident (on the root cause first), with its lead time."""
    if not changes:
        return None

    def key(c: Mapping[str, Any]) -> tuple[int, int, float]:
        before = finite_or_none(c.get("minutes_before"))
        return (0 if c.get("service") == root else 1, 0 if (before or 0) >= 0 else 1, abs(before or 0))

    c = sorted(changes, key=key)[0]
    word = event_word(str(c.get("event_type")))
    before = finite_or_none(c.get("minutes_before")) or 0.0
    when = (
        f"preceded the incident by {duration_phrase(before * 60)}" if before > 0
        else f"came {duration_phrase(-before * 60)} after it began" if before < 0
        else "coincided with its start"
    )
    text = f"{article(word).capitalize()} {word} on {c.get('service')} at {clock(c.get('at'))} {when}"
    msg = c.get("message")
    return f"{text} (\"{msg}\")." if msg else f"{text}."


def _log_sentence(logs: Sequence[Mapping[str, Any]], patterns: Sequence[Mapping[str, Any]]) -> str | None:
    if logs:
        top = logs[0]
        lines = "line" if top.get("count") == 1 else "lines"
        return (f"Top log evidence: {fmt_num(top.get('count'))} {top.get('level')} {lines} on {top.get('service')} "
                f"such as \"{top.get('message')}\".")
    if patterns:
        p = patterns[0]
        return f"Log pattern behind {p.get('feature')} on {p.get('service')}: \"{p.get('template')}\"."
    return None


def incident_text(facts: Mapping[str, Any]) -> str:
    """The incident explanation (a few sentences, numbers cited)."""
    services = facts.get("services") or []
    start, end = iso(facts.get("start")), iso(facts.get("end"))
    span = ""
    if start and end and end != start:
        span = f" to {clock(end)}"
    parts = [
        f"Incident {facts.get('incident_id')} in {facts.get('system')}: {len(services)} service"
        f"{'' if len(services) == 1 else 's'} ({', '.join(services[:6])}{', ...' if len(services) > 6 else ''}) "
        f"anomalous from {start}{span}, severity {facts.get('severity')}, {facts.get('anomaly_count', 0)} anomalies."
    ]
    root = facts.get("root_cause") or {}
    rsvc = root.get("service")
    sig = facts.get("root_signal")
    if rsvc:
        head = f"Most likely root cause: {rsvc} (score {fmt_num(root.get('score'))})"
        if sig:
            parts.append(f"{head}: {signal_sentence(sig)}.")
        else:
            parts.append(f"{head}, indicator {root.get('indicator') or 'n/a'}.")
    else:
        parts.append("No root cause could be ranked for this incident.")
    for sentence in (
        _onset_sentence(facts.get("onsets") or []),
        _change_sentence(facts.get("change_events") or [], rsvc),
    ):
        if sentence:
            parts.append(sentence)
    others = facts.get("other_candidates") or []
    if others:
        parts.append("Other candidates: " + ", ".join(f"{o.get('service')} ({fmt_num(o.get('score'))})" for o in others) + ".")
    logs = _log_sentence(facts.get("log_evidence") or [], facts.get("log_patterns") or [])
    if logs:
        parts.append(logs)
    causes = facts.get("suggested_causes") or []
    if causes:
        parts.append("Likely causes: " + "; ".join(causes[:2]) + ".")
    return " ".join(parts)


class TemplateWriter:
    """The default writer: ``write(facts) -> (text, 'template')``."""

    name = WRITER

    def write(self, facts: Mapping[str, Any]) -> tuple[str, str]:
        return incident_text(facts), WRITER
