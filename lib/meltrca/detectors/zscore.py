"""Robust z-score: how many robust sigmas each feature is from its (seasonal) baseline.

Per feature, |z| is calibrated against that feature's own baseline |z| (heavy-tailed counts and
ratios are not Gaussian). The window's raw score is -ln of the smallest per-feature tail
probability, and *that* is calibrated again on the baseline: this second step is an empirical
look-elsewhere correction (a service with 80 correlated features sees small per-feature
p-values more often than one with 5) without assuming the features are independent.

``feature_pvalues`` gives, per (window, feature), the service-level tail probability of seeing a
feature that extreme — what an anomaly row of that feature carries into the ensemble.
``min_z`` (detection.models.zscore.threshold) is the least deviation, in robust sigmas, for a
feature to be reported at all: an anomalous feature's value always lies outside
[expected_low, expected_high] = expected ± min_z · scale.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from meltrca.detectors.base import Detector
from meltrca.detectors.calibration import MIN_LOG_P, TailCalibrator, block_score


class RobustZScore(Detector):
    name: ClassVar[str] = "zscore"
    tau_floor: ClassVar[float] = 0.5  # in units of -ln p

    def __init__(self, *, min_z: float = 3.5, **kw: Any) -> None:
        super().__init__(**kw)
        self.min_z = float(min_z)
        self.feature_calibrator_: TailCalibrator | None = None

    def _fit_core(self, Z: np.ndarray, clean: np.ndarray) -> np.ndarray:
        # |z| tails are calibrated in z units: at least one e-fold per half sigma beyond the body.
        self.feature_calibrator_ = TailCalibrator(tau_floor=0.5, block=self.block).fit(np.abs(Z), clean)
        return clean

    def _raw_pvalues(self, Z: np.ndarray) -> np.ndarray:
        p = self.feature_calibrator_.pvalue(np.abs(Z))
        return np.where(np.isfinite(Z), p, 1.0)

    def _score_core(self, Z: np.ndarray) -> np.ndarray:
        if Z.shape[1] == 0:
            return np.zeros(len(Z))
        p = self._raw_pvalues(Z)
        return -np.maximum(np.log(np.maximum(p.min(axis=1), 1e-300)), MIN_LOG_P)

    def feature_tail(self, X: pd.DataFrame) -> np.ndarray:
        """(n, k) each feature's own tail probability (how rare the value is *for that feature*)."""
        return self._raw_pvalues(self.standardize(X))

    def feature_pvalues(self, X: pd.DataFrame) -> np.ndarray:
        """(n, k) service-level tail probability of each feature's deviation."""
        Z = self.standardize(X)
        p = self._raw_pvalues(Z)
        score = -np.maximum(np.log(np.maximum(p, 1e-300)), MIN_LOG_P)
        return self.pvalue_of(score.ravel()).reshape(score.shape)

    def feature_flags(self, X: pd.DataFrame) -> np.ndarray:
        """(n, k) bool: the feature alone makes the window anomalous on this detector."""
        Z = self.standardize(X)
        strong = block_score(self.feature_pvalues(X), self.block) >= self.threshold
        return strong & (np.abs(np.nan_to_num(Z)) >= self.min_z)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.feature_flags(X).any(axis=1).astype(int)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "min_z": self.min_z}

    def _core_state(self) -> dict[str, Any]:
        return {"feature_calibrator": self.feature_calibrator_.to_dict()}

    def _load_core_state(self, state: dict[str, Any]) -> None:
        self.feature_calibrator_ = TailCalibrator.from_dict(state["feature_calibrator"])
