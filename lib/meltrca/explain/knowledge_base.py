"""The knowledge base: evidence patterns -> likely causes (conf/knowledge_base.yaml).

A rule names conditions on the evidence and the causes they suggest. Evidence is what the
data shows about one subject (an anomaly, or an incident's root-cause service): its anomalous
signals (component, feature, anomaly type), the indicator *kind* of each (cpu, memory, latency,
errors, log_pattern, ... from ``rca.indicator_kinds``, shared with RCA), the anomalous features of
the whole incident (fault signatures), and the change events (deploy, config_change, restart,
scale) seen on the subject's service shortly before it.

Rules whose conditions all hold suggest their causes; more specific rules (more conditions)
come first, ties in file order. Fallback rules apply only when nothing else matched, so every
subject gets at least one suggestion.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meltrca.config import resolve_conf_path
from meltrca.errors import ConfigError
from meltrca.indicators import IndicatorKinds

LIST_CONDITIONS = ("kind", "anomaly_type", "component", "incident_kind", "change_event")
REGEX_CONDITIONS = ("feature", "incident_feature")
CONDITIONS = LIST_CONDITIONS + REGEX_CONDITIONS


@dataclass(frozen=True)
class Signal:
    """One anomalous series of the subject."""

    component: str
    feature: str
    anomaly_type: str | None = None


@dataclass(frozen=True)
class Evidence:
    """What the data shows about one subject (see module docstring)."""

    signals: tuple[Signal, ...]
    incident_signals: tuple[Signal, ...] = ()
    change_events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    rule_id: str
    causes: tuple[str, ...]
    lists: Mapping[str, frozenset[str]] = field(default_factory=dict)
    regexes: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    fallback: bool = False

    @property
    def specificity(self) -> int:
        return len(self.lists) + len(self.regexes)


class KnowledgeBase:
    """Compiled rules plus the indicator kinds they refer to."""

    def __init__(self, rules: Sequence[Rule], kinds: IndicatorKinds, version: str) -> None:
        self.rules = list(rules)
        self.kinds = kinds
        self.version = version

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> KnowledgeBase:
        """Build from the plain dict ``to_plain`` returns (what Spark closures carry)."""
        origin = str(plain.get("origin", "knowledge base"))
        raw_rules = plain.get("rules")
        if not isinstance(raw_rules, list) or not raw_rules:
            raise ConfigError(f"{origin}: 'rules' must be a non-empty list")
        rules = [_parse_rule(r, i, origin) for i, r in enumerate(raw_rules)]
        if not any(r.fallback for r in rules):
            raise ConfigError(f"{origin}: needs at least one rule with 'fallback: true'")
        kinds = IndicatorKinds.from_config(plain["indicator_kinds"], plain.get("intrinsic_kinds", []))
        return cls(rules, kinds, str(plain.get("version", "")))

    @staticmethod
    def plain_from_file(path: str | Path, indicator_kinds: Mapping[str, Sequence[str]],
                        intrinsic_kinds: Sequence[str] = ()) -> dict[str, Any]:
        """Read the YAML into plain values (rules, kinds, a content hash as version)."""
        p = resolve_conf_path(path)
        if not p.is_file():
            raise ConfigError(f"knowledge base not found: {path} (explain.knowledge_base)")
        text = p.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"knowledge base {p} is not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"knowledge base {p} must hold a mapping with 'rules'")
        kinds = {str(k): [str(x) for x in v] for k, v in dict(indicator_kinds).items()}
        version = hashlib.sha1((text + repr(sorted(kinds.items()))).encode()).hexdigest()[:12]
        return {"origin": str(p), "rules": data.get("rules"), "indicator_kinds": kinds,
                "intrinsic_kinds": list(intrinsic_kinds), "version": version}

    @classmethod
    def from_settings(cls, settings: Any) -> KnowledgeBase:
        return cls.from_plain(cls.plain_from_settings(settings))

    @classmethod
    def plain_from_settings(cls, settings: Any) -> dict[str, Any]:
        rca = settings.rca
        kinds = {str(k): list(v) for k, v in rca.indicator_kinds.items()}
        return cls.plain_from_file(settings.explain.knowledge_base, kinds, list(rca.intrinsic_kinds))

    # ---- matching -----------------------------------------------------------------------------
    def kind_of(self, signal: Signal) -> str:
        return self.kinds.kind(signal.component, signal.feature)

    def _holds(self, rule: Rule, ev: Evidence) -> bool:
        facts: dict[str, set[str]] = {
            "kind": {self.kind_of(s) for s in ev.signals},
            "anomaly_type": {s.anomaly_type for s in ev.signals if s.anomaly_type},
            "component": {s.component for s in ev.signals},
            "incident_kind": {self.kind_of(s) for s in ev.incident_signals},
            "change_event": set(ev.change_events),
        }
        for name, wanted in rule.lists.items():
            if not facts[name] & wanted:
                return False
        names = {
            "feature": [s.feature for s in ev.signals],
            "incident_feature": [s.feature for s in ev.incident_signals],
        }
        return all(any(rx.search(f) for f in names[name]) for name, rx in rule.regexes.items())

    def matching_rules(self, ev: Evidence) -> list[Rule]:
        """Rules that hold, most specific first (fallbacks only when nothing else holds)."""
        hits = [r for r in self.rules if not r.fallback and self._holds(r, ev)]
        if not hits:
            hits = [r for r in self.rules if r.fallback and self._holds(r, ev)]
        primary = Evidence(ev.signals[:1], ev.incident_signals, ev.change_events)
        order = {id(r): i for i, r in enumerate(self.rules)}
        return sorted(hits, key=lambda r: (-r.specificity, not self._holds(r, primary), order[id(r)]))

    def suggest(self, ev: Evidence, limit: int) -> list[str]:
        """Likely causes for the evidence, best first, without repeats."""
        out: list[str] = []
        for rule in self.matching_rules(ev):
            for cause in rule.causes:
                if cause not in out:
                    out.append(cause)
        return out[:limit]


def _parse_rule(raw: Any, index: int, origin: str) -> Rule:
    where = f"{origin}: rule #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with 'id', 'when' and 'causes'")
    rule_id = str(raw.get("id") or f"rule{index + 1}")
    where = f"{origin}: rule '{rule_id}'"
    unknown = set(raw) - {"id", "when", "causes", "fallback"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    causes = raw.get("causes")
    if not isinstance(causes, list) or not causes or not all(isinstance(c, str) and c.strip() for c in causes):
        raise ConfigError(f"{where}: 'causes' must be a non-empty list of strings")
    when = raw.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"{where}: 'when' must be a mapping")
    bad = set(when) - set(CONDITIONS)
    if bad:
        raise ConfigError(f"{where}: unknown condition(s) {', '.join(sorted(bad))} (use {', '.join(CONDITIONS)})")
    lists = {k: frozenset(_as_list(when[k], where, k)) for k in LIST_CONDITIONS if k in when}
    regexes: dict[str, re.Pattern[str]] = {}
    for k in REGEX_CONDITIONS:
        if k in when:
            try:
                regexes[k] = re.compile(str(when[k]), re.IGNORECASE)
            except re.error as exc:
                raise ConfigError(f"{where}: condition '{k}' is not a valid regex ({exc})") from None
    fallback = bool(raw.get("fallback", False))
    return Rule(rule_id, tuple(c.strip() for c in causes), lists, regexes, fallback)


def _as_list(value: Any, where: str, key: str) -> Iterable[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(x, str) and x for x in items):
        raise ConfigError(f"{where}: condition '{key}' must be a string or a list of strings")
    return items
