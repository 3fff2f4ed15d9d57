"""What "normal" looks like for each feature of a service: a robust, seasonality-aware baseline.

Every detector sees features as standardised residuals z = (x - expected(t)) / scale. The
expected value is the baseline median, or — where the baseline spans at least one period (a day)
and it really explains the series — a daily profile: the median per time-of-day bin, smoothed by
a circular rolling median over ``rolling_window`` windows. The scale is 1.4826 x MAD of the
residuals with floors (a constant series gets a tiny scale, not zero; a count gets at least one
event) so scores stay finite. Median/MAD shrug off the faults that a real baseline contains.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PERIOD_SECONDS = 86_400
PROFILE_BIN_SECONDS = 600  # daily profile resolution (10 minutes), interpolated between bins
SEASONAL_GAIN = 0.8  # the profile is used only when it cuts the residual MAD to this share or less
Z_CAP = 1e6  # |z| never exceeds this (finite scores, whatever the input)
KEY_SEP = "|"  # a service's matrix column is "component|feature" (log and trace both have error_ratio)


def is_count_feature(name: str) -> bool:
    """Counts are 0 when absent from a window that exists (no ERROR logs = 0 ERROR logs)."""
    return name.endswith("_count")


def time_of_day_bins(index: pd.DatetimeIndex, bin_seconds: int = PROFILE_BIN_SECONDS) -> np.ndarray:
    """Fractional daily-profile bin of each timestamp (for interpolation between bin centres)."""
    secs = index.asi8 // 1_000_000_000 % PERIOD_SECONDS
    return secs / bin_seconds


@dataclass
class SeriesBaseline:
    """Per-feature expected value (flat or daily profile) and robust scale, fitted on a baseline."""

    rolling_window: int = 60
    window_seconds: int = 60
    features: list[str] = field(default_factory=list)
    center_: np.ndarray | None = None  # (k,)
    profile_: np.ndarray | None = None  # (bins, k); NaN columns = not seasonal
    scale_: np.ndarray | None = None  # (k,)
    history_: np.ndarray | None = None  # (k,) non-missing baseline points per feature
    nonneg_: np.ndarray | None = None  # (k,) bool: never negative in the baseline (counts, ratios)

    def fit(self, X: pd.DataFrame) -> SeriesBaseline:
        """Learn center/profile/scale per column of X (index: window start, UTC)."""
        with warnings.catch_warnings():  # all-NaN columns are expected (a feature never seen)
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._fit(X)

    def _fit(self, X: pd.DataFrame) -> SeriesBaseline:
        self.features = [str(c) for c in X.columns]
        v = X.to_numpy(dtype=float)
        v = np.where(np.isfinite(v), v, np.nan)
        k = v.shape[1]
        n_bins = PERIOD_SECONDS // PROFILE_BIN_SECONDS
        self.history_ = np.isfinite(v).sum(axis=0).astype(float)
        self.nonneg_ = ~(np.nan_to_num(v, nan=0.0) < 0).any(axis=0)
        with np.errstate(all="ignore"):
            center = np.nanmedian(v, axis=0) if len(v) else np.full(k, np.nan)
        self.center_ = np.where(np.isfinite(center), center, 0.0)
        self.profile_ = np.full((n_bins, k), np.nan)
        span = (X.index.max() - X.index.min()).total_seconds() + self.window_seconds if len(X) else 0.0
        flat_resid = v - self.center_
        mad_flat = _mad(flat_resid)
        if span >= PERIOD_SECONDS:
            profile = self._daily_profile(X.index, v, n_bins)
            resid = v - _interp_profile(profile, time_of_day_bins(X.index))
            mad_seasonal = _mad(resid)
            seasonal = np.isfinite(profile).all(axis=0) & (mad_seasonal < SEASONAL_GAIN * mad_flat)
            self.profile_[:, seasonal] = profile[:, seasonal]
        resid = v - self.expected(X.index)
        self.scale_ = self._robust_scale(resid, self.center_)
        return self

    def _daily_profile(self, index: pd.DatetimeIndex, v: np.ndarray, n_bins: int) -> np.ndarray:
        bins = np.floor(time_of_day_bins(index)).astype(int) % n_bins
        per_bin = pd.DataFrame(v).groupby(bins).median().reindex(range(n_bins))
        width = max(1, round(self.rolling_window * self.window_seconds / PROFILE_BIN_SECONDS)) | 1
        half = width // 2
        wrapped = pd.concat([per_bin.iloc[-half:], per_bin, per_bin.iloc[:half]]) if half else per_bin
        smooth = wrapped.rolling(width, center=True, min_periods=1).median()
        return smooth.iloc[half : half + n_bins].to_numpy(dtype=float)

    def _robust_scale(self, resid: np.ndarray, center: np.ndarray) -> np.ndarray:
        mad = 1.4826 * _mad(resid)
        with np.errstate(all="ignore"):
            std = np.nanstd(resid, axis=0) if len(resid) else np.zeros(resid.shape[1])
        std = np.where(np.isfinite(std), std, 0.0)
        counts = np.array([is_count_feature(f) for f in self.features], dtype=bool)
        floor = np.maximum(1e-3 * np.abs(center), 1e-9)
        floor = np.where(counts, np.maximum(floor, 1.0), floor)
        # MAD is 0 for mostly-constant series with rare blips: fall back to a share of the std.
        scale = np.where(mad > 0, mad, 0.5 * std)
        return np.maximum(np.where(np.isfinite(scale), scale, 0.0), floor)

    @property
    def seasonal_(self) -> np.ndarray:
        return np.isfinite(self.profile_).all(axis=0)

    def expected(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Expected value per (window, feature)."""
        n, k = len(index), len(self.features)
        out = np.broadcast_to(self.center_, (n, k)).copy()
        seasonal = self.seasonal_
        if seasonal.any() and n:
            out[:, seasonal] = _interp_profile(self.profile_[:, seasonal], time_of_day_bins(index))
        return out

    def expected_range(self, index: pd.DatetimeIndex, width: float) -> tuple[np.ndarray, np.ndarray]:
        """[expected - width*scale, expected + width*scale]; never below 0 for non-negative series."""
        mid = self.expected(index)
        low = mid - width * self.scale_
        return np.where(self.nonneg_, np.maximum(low, 0.0), low), mid + width * self.scale_

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Standardised residuals (n, k) in the fitted feature order; NaN where X is missing."""
        v = X.reindex(columns=self.features).to_numpy(dtype=float)
        v = np.where(np.isfinite(v), v, np.nan)  # inf is bad data, not an infinitely bad window
        z = (v - self.expected(X.index)) / self.scale_
        return np.clip(z, -Z_CAP, Z_CAP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rolling_window": self.rolling_window,
            "window_seconds": self.window_seconds,
            "features": self.features,
            "center": self.center_.tolist(),
            "profile": [[None if np.isnan(x) else float(x) for x in row] for row in self.profile_.T],
            "scale": self.scale_.tolist(),
            "history": self.history_.tolist(),
            "nonneg": self.nonneg_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeriesBaseline:
        b = cls(rolling_window=int(d["rolling_window"]), window_seconds=int(d["window_seconds"]))
        b.features = list(d["features"])
        b.center_ = np.asarray(d["center"], dtype=float)
        b.profile_ = np.asarray(
            [[np.nan if x is None else x for x in row] for row in d["profile"]], dtype=float
        ).T.reshape(PERIOD_SECONDS // PROFILE_BIN_SECONDS, len(b.features))
        b.scale_ = np.asarray(d["scale"], dtype=float)
        b.history_ = np.asarray(d["history"], dtype=float)
        b.nonneg_ = np.asarray(d["nonneg"], dtype=bool)
        return b


def _mad(resid: np.ndarray) -> np.ndarray:
    if not len(resid):
        return np.zeros(resid.shape[1])
    with np.errstate(all="ignore"):
        med = np.nanmedian(resid, axis=0)
        mad = np.nanmedian(np.abs(resid - med), axis=0)
    return np.where(np.isfinite(mad), mad, 0.0)


def _interp_profile(profile: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation between bin centres of a circular daily profile."""
    n_bins = profile.shape[0]
    x = pos - 0.5
    lo = np.floor(x).astype(int) % n_bins
    hi = (lo + 1) % n_bins
    frac = (x - np.floor(x)).reshape(-1, 1)
    return profile[lo] * (1.0 - frac) + profile[hi] * frac
