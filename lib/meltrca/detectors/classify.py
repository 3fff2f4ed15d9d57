"""What an anomaly row is (type), how bad (severity) and how sure we are (confidence).

- anomaly_type: from the feature's meaning and the deviation's direction and duration —
  new_error_pattern (log templates), latency_degradation, error_burst, resource_saturation
  (CPU, memory, pools, threads, GC), unusual_frequency (volumes and rates), else by shape:
  drop (below normal), level_shift (a long run), spike. change_event is set for events.
- severity: evidence strength (decades of tail probability beyond the threshold) raised by the
  blast radius (how many services of the system are anomalous in the same window).
- confidence in [0, 1]: detector agreement (mean normalised score of the detectors that scored
  the row) times the score margin; halved for cold-start rows (z-score alone, little history).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

SEVERITIES = ("low", "medium", "high", "critical")
ANOMALY_TYPES = (
    "spike", "drop", "level_shift", "unusual_frequency", "new_error_pattern", "latency_degradation",
    "error_burst", "resource_saturation", "change_event",
)
# (type, pattern over the feature name, needs an upward deviation)
_FEATURE_TYPES: tuple[tuple[str, re.Pattern[str], bool], ...] = (
    ("new_error_pattern", re.compile(r"^(template_.+_count|new_template_count|rare_template_count)$"), True),
    ("error_burst", re.compile(r"error|fail|exception|5xx", re.I), True),
    ("resource_saturation", re.compile(r"cpu|mem|heap|pool|thread|(^|_)gc|disk|util|saturation", re.I), True),
    ("latency_degradation", re.compile(r"latency|duration|response_time|_ms($|_)|(^|_)p(50|9[059])", re.I), True),
    ("unusual_frequency", re.compile(r"count$|rate$|request|throughput|qps|rps", re.I), False),
)


def feature_kind(feature: str) -> str:
    """The meaning a feature name carries (the first _FEATURE_TYPES match), or 'other'."""
    for name, pattern, _ in _FEATURE_TYPES:
        if pattern.search(feature):
            return name
    return "other"


def upward_only(feature: str) -> bool:
    """Errors, latency, resource use and new log patterns are trouble only when they go *up*:
    memory falling after a restart or latency falling is no incident. Volumes count both ways."""
    for _, pattern, needs_up in _FEATURE_TYPES:
        if pattern.search(feature):
            return needs_up
    return False


def anomaly_type(feature: str, direction: float, run_length: int, *, level_shift_windows: int) -> str:
    """Type of one anomalous (feature, window): meaning first, then shape."""
    up = direction > 0
    for name, pattern, needs_up in _FEATURE_TYPES:
        if (up or not needs_up) and pattern.search(feature):
            return name
    if not up:
        return "drop"
    return "level_shift" if run_length >= level_shift_windows else "spike"


def run_lengths(flags: np.ndarray) -> np.ndarray:
    """For a (n, k) bool matrix: length of the run of consecutive Trues each True belongs to."""
    flags = np.asarray(flags, dtype=bool)
    out = np.zeros(flags.shape, dtype=int)
    for j in range(flags.shape[1]):
        col = flags[:, j]
        if not col.any():
            continue
        edges = np.diff(np.concatenate([[0], col.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for s, e in zip(starts, ends, strict=True):
            out[s:e, j] = e - s
    return out


def margin_decades(score: np.ndarray, threshold: float) -> np.ndarray:
    """How many decades rarer than the threshold the window is: log10((1-thr)/(1-score)) >= 0."""
    s = np.clip(np.asarray(score, dtype=float), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        d = np.log10((1.0 - threshold) / np.maximum(1.0 - s, 1e-300))
    return np.clip(d, 0.0, 300.0)


def severity_labels(score: np.ndarray, blast_radius: np.ndarray, threshold: float,
                    blast_steps: Sequence[int] = (3, 6)) -> np.ndarray:
    """low/medium/high from the score margin (<1, <2, >=2 decades), one level up per blast step."""
    level = np.minimum(np.floor(margin_decades(score, threshold)), 2).astype(int)
    blast = np.asarray(blast_radius, dtype=float)
    for step in blast_steps:
        level += (blast >= step).astype(int)
    return np.asarray(SEVERITIES, dtype=object)[np.minimum(level, len(SEVERITIES) - 1)]


def confidence(score: np.ndarray, detector_scores: np.ndarray, threshold: float, cold_start: np.ndarray) -> np.ndarray:
    """Agreement (mean normalised detector score, NaN = not scored) x margin, in [0, 1]."""
    with np.errstate(all="ignore"):
        agreement = np.nanmean(np.asarray(detector_scores, dtype=float), axis=1)
    agreement = np.clip(np.nan_to_num(agreement, nan=0.0), 0.0, 1.0)
    margin = np.minimum(margin_decades(score, threshold) / 2.0, 1.0)
    conf = np.sqrt(agreement) * (0.5 + 0.5 * margin)
    conf = np.where(np.asarray(cold_start, dtype=bool), 0.5 * conf, conf)
    return np.round(np.clip(conf, 0.0, 1.0), 4)
