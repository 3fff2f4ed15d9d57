"""The one detector interface (pyod-like), shared by z-score, Isolation Forest and LSTM.

A detector is fitted on a baseline (a DataFrame: window start -> one column per feature of one
service) and then scores any later windows:

- ``decision_function(X)``: raw score per window, higher = more anomalous;
- ``pvalue(X)``: the calibrated tail probability of that score under the baseline
  (see calibration.py); ``normalized(X)`` = block score in [0, 1] on the ensemble's scale;
- ``threshold_``: the raw score at which ``normalized`` reaches the threshold passed to ``fit``
  (pyod's calibrated cut-off); ``predict(X)`` = decision_function >= threshold_.

Detectors share a fitted ``SeriesBaseline`` (the standardisation step) when one is passed in;
they never see NaN or inf in what they learn from, and never return them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from meltrca.detectors.baseline import SeriesBaseline
from meltrca.detectors.calibration import TailCalibrator, block_score, p_from_block_score

CLIP_Z = 20.0  # standardised inputs of the learned models are clipped here (robust training)


class Detector(ABC):
    """Fit on a baseline; score windows; calibrated threshold. Subclasses implement the core."""

    name: ClassVar[str]
    tau_floor: ClassVar[float] = 1e-6

    def __init__(self, *, threshold: float = 0.95, block: int = 1440, rolling_window: int = 60,
                 window_seconds: int = 60, seed: int = 0) -> None:
        self.threshold = float(threshold)
        self.block = int(block)
        self.rolling_window = int(rolling_window)
        self.window_seconds = int(window_seconds)
        self.seed = int(seed)
        self.baseline_: SeriesBaseline | None = None
        self.calibrator_: TailCalibrator | None = None
        self.decision_scores_: np.ndarray | None = None
        self.threshold_: float = float("inf")

    # -- the core each detector implements -----------------------------------------------------
    @abstractmethod
    def _fit_core(self, Z: np.ndarray, clean: np.ndarray) -> np.ndarray:
        """Learn from standardised baseline residuals Z (n, k) where `clean`; return the rows
        the calibration may trust (the detector may drop suspects of its own)."""

    @abstractmethod
    def _score_core(self, Z: np.ndarray) -> np.ndarray:
        """Raw score per row of Z (n,), finite."""

    def _calibration_scores(self, baseline_scores: np.ndarray) -> np.ndarray:
        """Baseline scores as new data would score (a learner that saw them scores them too well)."""
        return baseline_scores

    def _core_state(self) -> dict[str, Any]:
        return {}

    def _load_core_state(self, state: dict[str, Any]) -> None:
        return None

    # -- shared behaviour -----------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, *, baseline: SeriesBaseline | None = None,
            clean: np.ndarray | None = None) -> Detector:
        """Fit on baseline windows X. `clean` (bool per row) excludes suspected anomalies from learning."""
        self.baseline_ = baseline or SeriesBaseline(self.rolling_window, self.window_seconds).fit(X)
        Z = self.baseline_.evidence(self.baseline_.transform(X))
        ok = np.ones(len(X), dtype=bool) if clean is None else np.asarray(clean, dtype=bool)
        ok = self._fit_core(Z, ok)
        self.decision_scores_ = self._score_core(Z)
        reference = self._calibration_scores(self.decision_scores_)
        self.calibrator_ = TailCalibrator(tau_floor=self.tau_floor, block=self.block).fit(reference, ok)
        self.threshold_ = float(self.calibrator_.score_at(p_from_block_score(self.threshold, self.block))[0])
        return self

    def standardize(self, X: pd.DataFrame) -> np.ndarray:
        """Directional standardised residuals (see SeriesBaseline.evidence)."""
        if self.baseline_ is None:
            raise RuntimeError(f"{self.name} detector is not fitted")
        return self.baseline_.evidence(self.baseline_.transform(X))

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return self._score_core(self.standardize(X))

    def pvalue(self, X: pd.DataFrame) -> np.ndarray:
        return self.pvalue_of(self.decision_function(X))

    def pvalue_of(self, scores: np.ndarray) -> np.ndarray:
        if self.calibrator_ is None:
            raise RuntimeError(f"{self.name} detector is not fitted")
        return self.calibrator_.pvalue(scores)

    def normalized(self, X: pd.DataFrame) -> np.ndarray:
        """Score in [0, 1] on the ensemble scale (anomalous at >= the detection threshold)."""
        return block_score(self.pvalue(X), self.block)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 where the window is anomalous on this detector alone."""
        return (self.decision_function(X) >= self.threshold_).astype(int)

    # -- persistence (JSON-able state; learned models add their own files, see store.py) -------
    def state(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "params": self.params(),
            "baseline": self.baseline_.to_dict() if self.baseline_ else None,
            "calibrator": self.calibrator_.to_dict() if self.calibrator_ else None,
            "threshold_": self.threshold_,
            "core": self._core_state(),
        }

    def params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "block": self.block, "rolling_window": self.rolling_window,
            "window_seconds": self.window_seconds, "seed": self.seed,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Detector:
        det = cls(**state["params"])
        det.baseline_ = SeriesBaseline.from_dict(state["baseline"]) if state.get("baseline") else None
        det.calibrator_ = TailCalibrator.from_dict(state["calibrator"]) if state.get("calibrator") else None
        det.threshold_ = float(state["threshold_"])
        det._load_core_state(state.get("core") or {})
        return det


def model_inputs(Z: np.ndarray) -> np.ndarray:
    """Standardised residuals as a learned model's input: missing -> expected (0), clipped."""
    return np.clip(np.nan_to_num(Z, nan=0.0, posinf=CLIP_Z, neginf=-CLIP_Z), -CLIP_Z, CLIP_Z)
