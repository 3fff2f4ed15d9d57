"""What "normal" looks like for each feature of a service: a robust, load- and season-aware baseline.

Every detector sees features as standardised residuals z = (x - expected) / scale. Per feature,
the expected value is the one of three robust models that explains the baseline best (it must
cut the residual MAD to SEASONAL_GAIN of the flat model's, or it is not used):
- flat: the baseline median;
- daily profile (where the baseline spans a day): the median per time-of-day bin, smoothed by a
  circular rolling median over ``rolling_window`` windows;
- load: a robust line (Tukey biweight) on the service's own traffic (its least noisy request
  rate/count feature), so CPU, pools, threads, log volume and queueing latency that follow the
  traffic — over the day *and* in a benign surge — are expected, while the same CPU without the
  traffic is not. The traffic feature itself keeps a flat/daily model.
The scale is 1.4826 x MAD of the residuals with floors (a constant series gets a tiny scale, not
zero; a count gets at least one event) so scores stay finite. Median/MAD and the biweight shrug
off the faults a real baseline contains.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from meltrca.detectors.classify import upward_only

PERIOD_SECONDS = 86_400
PROFILE_BIN_SECONDS = 600  # daily profile resolution (10 minutes), interpolated between bins
SEASONAL_GAIN = 0.8  # the profile is used only when it cuts the residual MAD to this share or less
Z_CAP = 1e6  # |z| never exceeds this (finite scores, whatever the input)
KEY_SEP = "|"  # a service's matrix column is "component|feature" (log and trace both have error_ratio)
LOAD_TOLERANCE = 1.15  # a load model may be this much noisier than the daily one and still win
LOAD_PATTERN = re.compile(r"request", re.I)  # traffic features a service's load can be read from


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
    load_: int = -1  # column of the traffic feature load-driven columns follow (-1: none)
    intercept_: np.ndarray | None = None  # (k,) load model: expected = intercept + slope * load
    slope_: np.ndarray | None = None  # (k,) NaN for columns without a load model

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
        self.intercept_ = np.zeros(k)
        self.slope_ = np.full(k, np.nan)
        mad_flat = _mad(v - self.center_)
        best = mad_flat.copy()  # residual MAD of the chosen model, per column
        if span >= PERIOD_SECONDS:
            profile = self._daily_profile(X.index, v, n_bins)
            mad_seasonal = _mad(v - _interp_profile(profile, time_of_day_bins(X.index)))
            seasonal = np.isfinite(profile).all(axis=0) & (mad_seasonal < SEASONAL_GAIN * mad_flat)
            self.profile_[:, seasonal] = profile[:, seasonal]
            best = np.where(seasonal, mad_seasonal, best)
        self.load_ = self._pick_load(v)
        if self.load_ >= 0:
            self._fit_load_models(v, mad_flat, best)
        resid = v - self.expected(X)
        self.scale_ = self._robust_scale(resid, self.center_)
        return self

    def _pick_load(self, v: np.ndarray) -> int:
        """The least noisy traffic feature seen in most baseline windows: lowest minute-to-minute
        jitter (MAD of first differences) relative to its level (sampled trace counts are noisy)."""
        best, best_cv = -1, np.inf
        for j, key in enumerate(self.features):
            name = key.partition(KEY_SEP)[2]
            col = v[:, j]
            if not LOAD_PATTERN.search(name) or upward_only(name) or np.isfinite(col).mean() < 0.8:
                continue
            med = np.nanmedian(col)
            cv = _mad(np.diff(col).reshape(-1, 1))[0] / med if med > 0 else np.inf
            if cv < best_cv:
                best, best_cv = j, cv
        return best

    def _fit_load_models(self, v: np.ndarray, mad_flat: np.ndarray, best: np.ndarray) -> None:
        """Load models where they beat the flat model and roughly match the daily one: when the
        traffic explains a feature as well as the clock does, it also explains a surge."""
        load = v[:, self.load_]
        for j in range(v.shape[1]):
            if j == self.load_:
                continue
            ok = np.isfinite(load) & np.isfinite(v[:, j])
            if ok.sum() < 30:
                continue
            a, b = robust_line(load[ok], v[ok, j])
            mad = _mad((v[ok, j] - (a + b * load[ok])).reshape(-1, 1))[0]
            if mad < SEASONAL_GAIN * mad_flat[j] and mad <= LOAD_TOLERANCE * best[j]:
                self.intercept_[j], self.slope_[j] = a, b
                self.profile_[:, j] = np.nan

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

    def expected(self, X: pd.DataFrame) -> np.ndarray:
        """Expected value per (window, feature) of X (its index and, for load models, its traffic)."""
        index = X.index
        n, k = len(index), len(self.features)
        out = np.broadcast_to(self.center_, (n, k)).copy()
        seasonal = self.seasonal_
        if seasonal.any() and n:
            out[:, seasonal] = _interp_profile(self.profile_[:, seasonal], time_of_day_bins(index))
        driven = np.isfinite(self.slope_) if self.slope_ is not None else np.zeros(k, dtype=bool)
        if self.load_ >= 0 and driven.any() and n:
            key = self.features[self.load_]
            load = X[key].to_numpy(dtype=float) if key in X.columns else np.full(n, np.nan)
            fit = self.intercept_[driven] + np.outer(load, self.slope_[driven])
            out[:, driven] = np.where(np.isfinite(fit), fit, out[:, driven])  # no traffic seen: fall back
        return out

    def expected_range(self, X: pd.DataFrame, width: float) -> tuple[np.ndarray, np.ndarray]:
        """[expected - width*scale, expected + width*scale]; never below 0 for non-negative series."""
        mid = self.expected(X)
        low = mid - width * self.scale_
        return np.where(self.nonneg_, np.maximum(low, 0.0), low), mid + width * self.scale_

    @property
    def upward_only_(self) -> np.ndarray:
        return np.array([upward_only(f.partition(KEY_SEP)[2]) for f in self.features], dtype=bool)

    def evidence(self, Z: np.ndarray) -> np.ndarray:
        """Deviations that count as trouble: for upward-only features (errors, latency, resources)
        a value below normal is no evidence (0); other features keep their sign."""
        return np.where(self.upward_only_ & (Z < 0), 0.0, Z)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Standardised residuals (n, k) in the fitted feature order; NaN where X is missing."""
        v = X.reindex(columns=self.features).to_numpy(dtype=float)
        v = np.where(np.isfinite(v), v, np.nan)  # inf is bad data, not an infinitely bad window
        z = (v - self.expected(X)) / self.scale_
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
            "load": self.load_,
            "intercept": self.intercept_.tolist(),
            "slope": [None if np.isnan(x) else float(x) for x in self.slope_],
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
        b.load_ = int(d["load"])
        b.intercept_ = np.asarray(d["intercept"], dtype=float)
        b.slope_ = np.asarray([np.nan if x is None else x for x in d["slope"]], dtype=float)
        return b


def robust_line(x: np.ndarray, y: np.ndarray, iterations: int = 8) -> tuple[float, float]:
    """Intercept and slope of y ~ x by iteratively reweighted least squares (Tukey biweight)."""
    w = np.ones_like(y)
    A = np.column_stack([np.ones_like(x), x])
    beta = np.array([float(np.median(y)), 0.0])
    for _ in range(iterations):
        sw = np.sqrt(w)
        if (sw > 0).sum() < 3:
            break
        beta = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)[0]
        r = y - A @ beta
        s = 1.4826 * np.median(np.abs(r - np.median(r)))
        if s <= 0:
            break
        u = r / (4.685 * s)
        w = np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
    return float(beta[0]), float(beta[1])


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
