"""What kind of trouble a feature indicates (cpu, memory, latency, errors, log pattern, change, ...).

RCA weighs a service's *own* trouble (resources, new error patterns, changes) above symptoms it
may inherit from callees (latency, error ratios); explanations pick likely causes by kind. The
feature-name patterns live in config (``rca.indicator_kinds``) so other systems' metric names
map without code changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EDGE_PREFIX = "edge:"
LOG_PATTERN_FEATURES = ("new_template_count", "rare_template_count")
PATTERN_PREFIX = "pattern:"  # meltrca.features.patterns: per-request event shares


def parse_edge_feature(feature: str) -> tuple[str, str] | None:
    """'edge:<callee>:<stat>' -> (callee, stat); None for other features."""
    if not feature.startswith(EDGE_PREFIX):
        return None
    rest = feature[len(EDGE_PREFIX) :]
    callee, sep, stat = rest.rpartition(":")
    return (callee, stat) if sep and callee else None


@dataclass(frozen=True)
class IndicatorKinds:
    """Compiled ``rca.indicator_kinds`` patterns, checked in order."""

    patterns: tuple[tuple[str, tuple[re.Pattern[str], ...]], ...]
    intrinsic: frozenset[str]

    @classmethod
    def from_config(cls, kinds: Mapping[str, Sequence[str]], intrinsic: Sequence[str]) -> IndicatorKinds:
        compiled = tuple((k, tuple(re.compile(p, re.IGNORECASE) for p in pats)) for k, pats in kinds.items())
        return cls(compiled, frozenset(intrinsic))

    def _match(self, name: str) -> str:
        for kind, pats in self.patterns:
            if any(p.search(name) for p in pats):
                return kind
        return "other"

    def kind(self, component: str, feature: str) -> str:
        """The indicator kind of one (component, feature)."""
        if component == "event":
            return "change"
        if component == "log":
            if feature in LOG_PATTERN_FEATURES or (feature.startswith("template_") and feature.endswith("_count")):
                return "log_pattern"
            if feature.upper().startswith(("ERROR", "WARN", "FATAL", "CRITICAL")) or feature == "error_ratio":
                return "log_errors"
            return "log_volume"
        if feature.startswith(PATTERN_PREFIX):
            # what a service's requests did: its own code path (log lines, errors) or its calls out
            return "calls" if feature.startswith(PATTERN_PREFIX + "call:") else "code_path"
        edge = parse_edge_feature(feature)
        return self._match(edge[1] if edge else feature)

    def is_intrinsic(self, component: str, feature: str) -> bool:
        """Whether the feature is the service's own trouble (not an inherited symptom)."""
        if parse_edge_feature(feature):
            return False  # an edge stat describes the callee as seen by this caller
        return self.kind(component, feature) in self.intrinsic

    def is_intrinsic_edge(self, feature: str) -> bool:
        """Whether a caller's edge stat describes the callee's own trouble (a network gap: the
        caller waited longer than the callee worked), not a symptom it may inherit (latency)."""
        edge = parse_edge_feature(feature)
        return edge is not None and self._match(edge[1]) in self.intrinsic
