"""Turning raw detector scores into comparable tail probabilities.

Each detector's raw score (|z|, isolation depth, reconstruction error) lives on its own scale.
``TailCalibrator`` learns the baseline distribution of a score: the empirical quantile in the
body and an exponential tail beyond a high quantile (a peaks-over-threshold fit), so scores far
beyond anything seen in the baseline keep getting rarer instead of saturating at quantile 1.

The tail probability ``p`` (share of baseline windows expected to score at least as high) is the
common currency. ``block_score(p, block)`` = (1 - p) ** block is the probability that the window
beats the *maximum* of ``block`` baseline windows: on minute windows a detector at threshold 0.95
with block 1440 raises about one false alarm per 20 days of normal data, which is what an on-call
team can live with (a plain 0.95 quantile would alarm every 20 minutes).

Baselines are rarely clean (faults happen while we learn "normal"): ``fit`` trims windows that
its own fit calls extreme and refits, a few rounds, so a contaminated baseline does not inflate
the tail. Everything is vectorised over columns so the per-feature z-score calibrates many series
at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Knots of the empirical body (quantile levels); more points buy nothing at these sample sizes.
BODY_LEVELS = np.linspace(0.0, 1.0, 41)
MIN_LOG_P = -700.0  # exp(-700) is still a finite double: log-probabilities never reach -inf
TRIM_SCORE = 0.5  # baseline windows whose block score reaches this are refitted without
TRIM_ROUNDS = 3


def block_score(p: np.ndarray, block: int) -> np.ndarray:
    """(1 - p) ** block, computed in log space (stable for tiny p)."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return np.exp(block * np.log1p(-np.minimum(p, 1.0 - 1e-16)))


def p_from_block_score(score: float, block: int) -> float:
    """Inverse of block_score: the tail probability at which a window reaches `score`."""
    score = min(max(float(score), 1e-300), 1.0 - 1e-16)
    return float(-np.expm1(np.log(score) / block))


@dataclass
class TailCalibrator:
    """Per-column empirical CDF with an exponential tail; ``pvalue`` is its survival function."""

    # The tail is fitted above the 80th percentile with the median excess: robust while up to
    # ~10% of the baseline is contaminated by faults (the median excess is then still clean).
    tail_level: float = 0.8
    tau_floor: float = 1e-6
    block: int = 1440
    # fitted
    knots_: np.ndarray | None = None  # (len(BODY_LEVELS), k) quantiles of each column
    levels_: np.ndarray | None = None  # (k,) quantile level where the tail starts
    tau_: np.ndarray | None = None  # (k,) e-folding length of the tail
    n_: np.ndarray | None = None  # (k,) baseline sample sizes

    def fit(self, scores: np.ndarray, mask: np.ndarray | None = None) -> TailCalibrator:
        """Learn each column's baseline distribution (NaN and masked-out rows ignored)."""
        s = _as_2d(scores)
        keep = np.isfinite(s)
        if mask is not None:
            keep &= np.asarray(mask, dtype=bool).reshape(-1, 1)
        k = s.shape[1]
        self.knots_ = np.zeros((len(BODY_LEVELS), k))
        self.levels_ = np.full(k, 0.0)
        self.tau_ = np.full(k, self.tau_floor)
        self.n_ = np.zeros(k)
        for j in range(k):
            col = s[keep[:, j], j]
            for _ in range(TRIM_ROUNDS):
                self._fit_column(j, col)
                extreme = block_score(self._pvalue_column(j, col), self.block) >= TRIM_SCORE
                if not extreme.any() or extreme.mean() > 0.25:
                    break
                col = col[~extreme]
        return self

    def _fit_column(self, j: int, col: np.ndarray) -> None:
        n = col.size
        self.n_[j] = n
        if n == 0:
            self.knots_[:, j] = 0.0
            self.levels_[j] = 0.0
            self.tau_[j] = self.tau_floor
            return
        knots = np.quantile(col, BODY_LEVELS)
        # The tail starts at tail_level, or lower for small samples so it has a few points.
        level = min(self.tail_level, max(0.5, 1.0 - 5.0 / n)) if n >= 10 else 0.5
        u = float(np.quantile(col, level))
        excess = col[col > u] - u
        # Median excess / ln 2 is the exponential scale, robust to a few huge baseline scores.
        tau = float(np.median(excess) / np.log(2.0)) if excess.size >= 3 else 0.0
        spread = float(u - knots[len(BODY_LEVELS) // 2])
        self.knots_[:, j] = knots
        self.levels_[j] = level
        self.tau_[j] = max(tau, 0.25 * spread, self.tau_floor)

    def _pvalue_column(self, j: int, x: np.ndarray) -> np.ndarray:
        knots = self.knots_[:, j]
        level = self.levels_[j]
        u = float(np.interp(level, BODY_LEVELS, knots))
        # The tail never claims more certainty than the sample supports: at least 1/(n+1) at u.
        p_u = max(1.0 - level, 1.0 / (self.n_[j] + 1.0))
        body = 1.0 - np.interp(x, knots, BODY_LEVELS, left=0.0, right=1.0)
        body = np.maximum(body, p_u)
        logp_tail = np.log(p_u) - (x - u) / self.tau_[j]
        tail = np.exp(np.maximum(logp_tail, MIN_LOG_P))
        out = np.where(x > u, tail, body)
        return np.where(np.isfinite(x), out, 1.0)

    def pvalue(self, scores: np.ndarray) -> np.ndarray:
        """Tail probability of each score under its column's baseline (1.0 for NaN)."""
        if self.knots_ is None:
            raise RuntimeError("TailCalibrator is not fitted")
        s = _as_2d(scores)
        out = np.empty_like(s, dtype=float)
        for j in range(s.shape[1]):
            out[:, j] = self._pvalue_column(j, s[:, j])
        return out.reshape(np.shape(scores)) if np.ndim(scores) == 1 else out

    def score_at(self, p: float) -> np.ndarray:
        """The raw score of each column whose tail probability is `p` (the calibrated threshold)."""
        if self.knots_ is None:
            raise RuntimeError("TailCalibrator is not fitted")
        out = np.empty(self.knots_.shape[1])
        for j in range(out.size):
            level = self.levels_[j]
            p_u = max(1.0 - level, 1.0 / (self.n_[j] + 1.0))
            u = float(np.interp(level, BODY_LEVELS, self.knots_[:, j]))
            if p >= p_u:
                out[j] = float(np.interp(1.0 - p, BODY_LEVELS, self.knots_[:, j]))
            else:
                out[j] = u + self.tau_[j] * (np.log(p_u) - np.log(max(p, 1e-300)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "tail_level": self.tail_level,
            "tau_floor": self.tau_floor,
            "block": self.block,
            "knots": _list(self.knots_),
            "levels": _list(self.levels_),
            "tau": _list(self.tau_),
            "n": _list(self.n_),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TailCalibrator:
        c = cls(tail_level=float(d["tail_level"]), tau_floor=float(d["tau_floor"]), block=int(d["block"]))
        c.knots_ = np.asarray(d["knots"], dtype=float).reshape(len(BODY_LEVELS), -1)
        c.levels_ = np.asarray(d["levels"], dtype=float)
        c.tau_ = np.asarray(d["tau"], dtype=float)
        c.n_ = np.asarray(d["n"], dtype=float)
        return c


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def _list(a: np.ndarray | None) -> list[Any] | None:
    return None if a is None else np.asarray(a, dtype=float).tolist()
