"""What "normal" looks like for each feature of a service: a robust, load- and season-aware baseline.

Every detector sees features as standardised residuals z = (x - expected) / scale. Per feature,
the expected value is the one of three robust models that explains the baseline best (it must
cut the residual MAD to SEASONAL_GAIN of the flat model's, or it is not used):
- flat: the baseline median;
- daily profile (where the baseline spans a day): the median per time-of-day bin, smoothed by a
  circular rolling median over ``rolling_window`` windows (at most a quarter of the day);
- load: a robust line (Tukey biweight) on the service's own traffic (its least noisy request
  rate/count feature), so CPU, pools, threads, log volume and queueing latency that follow the
  traffic — over the day *and* in a benign surge — are expected, while the same CPU without the
  traffic is not. The traffic feature itself keeps a flat/daily model.
The profile takes what the sampling step and the history support: 10-minute bins, bins as wide
as the window when windows are coarser (an hourly series has 24 one-hour bins), coarser bins when
too few baseline windows fall in each, and no profile at all (flat median/MAD) when the history is
shorter than a day, the windows are too coarse for a daily shape (wider than 6 hours) or even
6-hour bins stay nearly empty. ``model_`` says which, and a debug line logs it.
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
from meltrca.logs import get_logger

PERIOD_SECONDS = 86_400
PROFILE_BIN_SECONDS = 600  # finest daily profile resolution (10 minutes), interpolated between bins
PROFILE_MIN_BINS = 4  # a daily profile has at least this many bins (6 hours each); coarser: none
PROFILE_MIN_POINTS = 2  # baseline windows per bin (median over the bins) a profile needs, else coarser bins
SMOOTH_MAX_SECONDS = PERIOD_SECONDS // 4  # the profile's rolling median never spans more than 6 hours
SEASONAL_GAIN = 0.8  # the profile is used only when it cuts the residual MAD to this share or less
Z_CAP = 1e6  # |z| never exceeds this (finite scores, whatever the input)
KEY_SEP = "|"  # a service's matrix column is "component|feature" (log and trace both have error_ratio)
LOAD_TOLERANCE = 1.15  # a load model may be this much noisier than the daily one and still win
LOAD_PATTERN = re.compile(r"request", re.I)  # traffic features a service's load can be read from
DAY_DIVISORS = tuple(sorted({d for i in range(1, 294) if PERIOD_SECONDS % i == 0 for d in (i, PERIOD_SECONDS // i)}))

log = get_logger("detectors.baseline")


def is_count_feature(name: str) -> bool:
    """Counts are 0 when absent from a window that exists (no ERROR logs = 0 ERROR logs)."""
    return name.endswith("_count")


def time_of_day_bins(index: pd.DatetimeIndex, bin_seconds: int = PROFILE_BIN_SECONDS,
                     shift_seconds: float = 0.0) -> np.ndarray:
    """Fractional daily-profile bin of each timestamp (+ shift_seconds), for interpolation between
    bin centres."""
    secs = index.asi8 // 1_000_000_000 % PERIOD_SECONDS
    return (secs + shift_seconds) / bin_seconds


def profile_bin_seconds(window_seconds: int) -> int:
    """The finest daily-profile bin a window size supports: PROFILE_BIN_SECONDS, or the window
    rounded up to a divisor of the day (an hourly series gets 24 one-hour bins, not 144 bins of
    which five in six never see a window); a day for windows of a day or more."""
    want = max(PROFILE_BIN_SECONDS, int(window_seconds))
    return next((d for d in DAY_DIVISORS if d >= want), PERIOD_SECONDS)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}" if seconds % size == 0 else f"{seconds / size:.1f} {unit}"
    return f"{seconds:g} s"


@dataclass
class SeriesBaseline:
    """Per-feature expected value (flat or daily profile) and robust scale, fitted on a baseline."""

    rolling_window: int = 60
    window_seconds: int = 60
    features: list[str] = field(default_factory=list)
    center_: np.ndarray | None = None  # (k,)
    profile_: np.ndarray | None = None  # (bins, k); NaN columns = not seasonal
    bin_seconds_: int = PROFILE_BIN_SECONDS  # width of one profile bin (PERIOD_SECONDS / bins)
    model_: str = ""  # what the data supported (daily profile at which bins, or why none): for notes/logs
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
        self.history_ = np.isfinite(v).sum(axis=0).astype(float)
        self.nonneg_ = ~(np.nan_to_num(v, nan=0.0) < 0).any(axis=0)
        with np.errstate(all="ignore"):
            center = np.nanmedian(v, axis=0) if len(v) else np.full(k, np.nan)
        self.center_ = np.where(np.isfinite(center), center, 0.0)
        bin_seconds, why_not = self._profile_bins(X.index, v)
        self.bin_seconds_ = bin_seconds or profile_bin_seconds(self.window_seconds)
        n_bins = PERIOD_SECONDS // self.bin_seconds_
        self.profile_ = np.full((n_bins, k), np.nan)
        self.intercept_ = np.zeros(k)
        self.slope_ = np.full(k, np.nan)
        mad_flat = _mad(v - self.center_)
        best = mad_flat.copy()  # residual MAD of the chosen model, per column
        if bin_seconds:
            profile = self._daily_profile(X.index, v, n_bins)
            mad_seasonal = _mad(v - _interp_profile(profile, self._profile_pos(X.index)))
            seasonal = np.isfinite(profile).all(axis=0) & (mad_seasonal < SEASONAL_GAIN * mad_flat)
            self.profile_[:, seasonal] = profile[:, seasonal]
            best = np.where(seasonal, mad_seasonal, best)
        self.load_ = self._pick_load(v)
        if self.load_ >= 0:
            self._fit_load_models(v, mad_flat, best)
        resid = v - self.expected(X)
        self.scale_ = self._robust_scale(resid, self.center_)
        self.model_ = self._describe(len(X), why_not)
        log.debug("baseline of %d x %s windows, %d features: %s", len(X), _duration(self.window_seconds), k, self.model_)
        return self

    def _profile_bins(self, index: pd.DatetimeIndex, v: np.ndarray) -> tuple[int | None, str]:
        """Profile bin width the baseline supports (None: no profile) and, if none, why not.

        Bins start as fine as the window allows (profile_bin_seconds) and double, triple, ... (any
        divisor of the day) until the median bin holds PROFILE_MIN_POINTS baseline windows; a
        profile needs PROFILE_MIN_BINS bins and a day of history."""
        rows = np.isfinite(v).any(axis=1) if v.shape[1] else np.zeros(len(v), dtype=bool)
        if not rows.any():
            return None, "no baseline windows with data"
        seen = index[rows]
        span = (seen.max() - seen.min()).total_seconds() + self.window_seconds
        if span < PERIOD_SECONDS:
            return None, f"history of {_duration(span)} is shorter than a day"
        finest = profile_bin_seconds(self.window_seconds)
        if PERIOD_SECONDS // finest < PROFILE_MIN_BINS:
            return None, f"{_duration(self.window_seconds)} windows are too coarse for a daily profile"
        secs = seen.asi8 // 1_000_000_000 % PERIOD_SECONDS
        for bin_seconds in (d for d in DAY_DIVISORS if d >= finest and d % finest == 0):
            n_bins = PERIOD_SECONDS // bin_seconds
            if n_bins < PROFILE_MIN_BINS:
                break
            counts = np.bincount(secs // bin_seconds, minlength=n_bins)
            if np.median(counts) >= PROFILE_MIN_POINTS:
                return bin_seconds, ""
        return None, (f"too few baseline windows per time of day ({int(rows.sum())} windows, "
                      f"fewer than {PROFILE_MIN_POINTS} per bin even in {PROFILE_MIN_BINS} bins)")

    def _profile_pos(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Profile position of each window: a bin's median sits at the mean start of the windows it
        holds, (bin - window) / 2 into the bin, so an hourly window falls on its own one-hour bin."""
        return time_of_day_bins(index, self.bin_seconds_, 0.5 * min(self.window_seconds, self.bin_seconds_))

    def _describe(self, n: int, why_not: str) -> str:
        k = len(self.features)
        seasonal = int(self.seasonal_.sum()) if k else 0
        driven = int(np.isfinite(self.slope_).sum()) if k else 0
        if why_not:
            text = f"no daily profile ({why_not})"
        else:
            n_bins = PERIOD_SECONDS // self.bin_seconds_
            text = (f"daily profile of {n_bins} bins of {_duration(self.bin_seconds_)} "
                    f"(rolling median over {self._smooth_width(n_bins)} bins) for {seasonal} of {k} features")
        if driven:
            text += f", load model for {driven}"
        rest = k - seasonal - driven
        if rest:
            text += f"; flat median/MAD for {rest}"
        if n < 3:
            text += f"; only {n} baseline window{'s' if n != 1 else ''}: too few to model, scales at their floors"
        return text

    def _smooth_width(self, n_bins: int) -> int:
        """Bins (odd) of the profile's circular rolling median: rolling_window windows, at most a
        quarter of the day (a rolling median that spans the day is a flat line), at least one bin."""
        seconds = min(self.rolling_window * self.window_seconds, SMOOTH_MAX_SECONDS)
        return min(max(1, round(seconds / self.bin_seconds_)) | 1, max(1, (n_bins - 1) | 1))

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
        bins = np.floor(time_of_day_bins(index, self.bin_seconds_)).astype(int) % n_bins
        per_bin = pd.DataFrame(v).groupby(bins).median().reindex(range(n_bins))
        width = self._smooth_width(n_bins)
        half = width // 2  # < n_bins: the wrap below is one turn of the circle on each side
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
            out[:, seasonal] = _interp_profile(self.profile_[:, seasonal], self._profile_pos(index))
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
            "model": self.model_,
            "center": self.center_.tolist(),
            "profile_bin_seconds": self.bin_seconds_,
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
        b.model_ = str(d.get("model", ""))
        b.center_ = np.asarray(d["center"], dtype=float)
        b.bin_seconds_ = int(d.get("profile_bin_seconds", PROFILE_BIN_SECONDS))  # older models: 10 min
        b.profile_ = np.asarray(
            [[np.nan if x is None else x for x in row] for row in d["profile"]], dtype=float
        ).T.reshape(PERIOD_SECONDS // b.bin_seconds_, len(b.features))
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
