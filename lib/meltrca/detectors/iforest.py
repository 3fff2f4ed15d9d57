"""Isolation Forest over a service's multivariate deviation profile (windows x feature kinds).

Isolation Forest picks a random feature per split, so over a raw matrix of 50-100 features a
fault that moves five of them is almost never isolated: the irrelevant dimensions drown it
(measured: 8 sigma on 3 of 60 Gaussian features scores like a normal window). The forest
therefore sees one column per feature *kind* of the service (errors, latency, resources,
volumes, log patterns, other — see classify.feature_kind) holding log(1 + the largest
directional |z| of that kind in the window). What it adds over the per-feature z-score is
co-occurrence: latency, errors and resources a little off *together* is rarer than any alone.

A forest cannot isolate a point beyond its training range faster than the range's edge, so its
scores saturate at the baseline's most isolated windows. Each tree therefore grows on the whole
baseline plus one anchor per kind at the clip limit (|z| = 20): split values can then fall
beyond the baseline's range and a window far outside it is isolated in a split or two. Even so
the forest is a weak witness on its own (its calibrated scores rarely reach the threshold); in
the ensemble it adds evidence.

``contamination`` is the share of baseline windows presumed anomalous: the forest is refitted
without them, so faults inside the baseline do not teach it that faults are normal.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.ensemble import IsolationForest

from meltrca.detectors.base import CLIP_Z, Detector, model_inputs
from meltrca.detectors.baseline import KEY_SEP
from meltrca.detectors.classify import feature_kind


def feature_family(key: str) -> str:
    """'trace|edge:db:latency_p95_ms' -> 'latency_degradation' (the kind, whatever the signal)."""
    return feature_kind(key.partition(KEY_SEP)[2])


class IsolationForestDetector(Detector):
    name: ClassVar[str] = "isolation_forest"
    tau_floor: ClassVar[float] = 0.002  # isolation scores live in (0, 1)

    def __init__(self, *, contamination: float = 0.01, n_estimators: int = 100, **kw: Any) -> None:
        super().__init__(**kw)
        self.contamination = float(contamination)
        self.n_estimators = int(n_estimators)
        self.model_: IsolationForest | None = None

    def _forest(self, n: int) -> IsolationForest:
        return IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=max(n, 1),
            contamination="auto",
            random_state=self.seed,
            n_jobs=1,
        )

    def _grow(self, P: np.ndarray) -> IsolationForest:
        """A forest on the baseline plus one anchor per family at the clip limit (see module doc)."""
        anchors = np.eye(P.shape[1]) * np.log1p(CLIP_Z)
        data = np.vstack([P, anchors])
        return self._forest(len(data)).fit(data)

    def families(self) -> list[str]:
        return sorted({feature_family(f) for f in self.baseline_.features})

    def profile(self, Z: np.ndarray) -> np.ndarray:
        """(n, families): log(1 + max |z|) per feature family and window."""
        A = np.abs(model_inputs(Z))
        fams = [feature_family(f) for f in self.baseline_.features]
        names = self.families()
        out = np.zeros((len(A), len(names)))
        for g, name in enumerate(names):
            cols = [j for j, f in enumerate(fams) if f == name]
            out[:, g] = np.log1p(A[:, cols].max(axis=1)) if len(A) else 0.0
        return out

    def _fit_core(self, Z: np.ndarray, clean: np.ndarray) -> np.ndarray:
        P = self.profile(Z)
        rows = clean if clean.sum() >= 2 else np.ones(len(P), dtype=bool)
        self.model_ = self._grow(P[rows])
        # Drop the `contamination` most isolated baseline windows and learn again without them.
        scores = -self.model_.score_samples(P)
        cut = np.quantile(scores[rows], 1.0 - self.contamination) if rows.any() else np.inf
        kept = rows & (scores < cut)
        if kept.sum() >= 2 and kept.sum() < rows.sum():
            self.model_ = self._grow(P[kept])
            return kept
        return rows

    def _score_core(self, Z: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("isolation_forest detector is not fitted")
        if len(Z) == 0:
            return np.zeros(0)
        return -self.model_.score_samples(self.profile(Z))

    def params(self) -> dict[str, Any]:
        return {**super().params(), "contamination": self.contamination, "n_estimators": self.n_estimators}
