"""Detection for one service, in plain pandas/numpy: what a Spark group (or a loop) runs.

``to_matrix`` turns the service's long feature rows into a regular window x feature matrix.
``fit_service`` fits the shared baseline and the enabled detectors on the baseline windows
(z-score alone for a cold start). ``score_service`` scores every window and returns the
anomalous (window, feature) rows with their per-detector and ensemble scores.

Ensemble (see calibration.py for the scale): each detector gives a tail probability p_d — per
feature for the z-score, per window for Isolation Forest and the LSTM. A row's combined
probability is the weighted geometric mean  p = exp(sum_d w_d ln p_d / sum_d w_d), and
ensemble_score = (1 - p) ** block. One detector that is merely unusual cannot carry a row;
one that is overwhelming, or several that agree, can. A row names a feature that deviates by at
least zscore.threshold robust sigmas in the direction that means trouble and, when the z-score
runs, whose value is rare *for that feature* (tail probability at most 1/block); without the
z-score, each window's most deviant feature stands for it. Rows are kept only where the service
stays anomalous for at least min_duration_windows windows: a lone one-window blip is no incident.

The plan is a plain dict (see meltrca.detection.detection_plan): no settings objects, no
sessions — it is what Spark ships to executors.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from meltrca.detectors.base import Detector
from meltrca.detectors.baseline import KEY_SEP, SeriesBaseline, is_count_feature
from meltrca.detectors.calibration import TRIM_SCORE, block_score
from meltrca.detectors.classify import anomaly_type, confidence, run_lengths
from meltrca.detectors.iforest import IsolationForestDetector
from meltrca.detectors.lstm import LSTMAutoencoder
from meltrca.detectors.zscore import RobustZScore

DETECTOR_ORDER = (RobustZScore.name, IsolationForestDetector.name, LSTMAutoencoder.name)

ROW_COLUMNS = [
    "window_start", "component", "feature", "value", "expected_low", "expected_high",
    *DETECTOR_ORDER, "ensemble_score", "anomaly_type", "confidence", "cold_start",
]


def series_seed(*parts: str) -> int:
    """A stable seed per series (same model for the same data, whatever the partitioning)."""
    return zlib.crc32("|".join(parts).encode("utf-8")) & 0x7FFFFFFF


def to_matrix(rows: pd.DataFrame, window_seconds: int) -> pd.DataFrame:
    """Long rows (window_start, component, feature, value) -> regular window x feature matrix.

    Missing windows stay NaN (a gap); a count feature absent from a window that has other data
    *of its component* is 0 there (no ERROR line in a window with log data = 0 ERROR lines; a
    window with metrics but no log export at all is a gap of the log series, not a zero: traces and
    logs exported only around incidents must not read as silence everywhere else). Non-finite
    values become NaN. The result does not depend on the order of `rows`.
    """
    if rows.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="window_start"))
    ts = pd.to_datetime(rows["window_start"])
    key = rows["component"].astype(str) + KEY_SEP + rows["feature"].astype(str)
    vals = pd.to_numeric(rows["value"], errors="coerce").astype(float)
    vals = vals.where(np.isfinite(vals))
    # Spark hands a group's rows over in partition order: sort them so duplicate (window, feature)
    # rows average in one order and the matrix is bit-identical however the data was partitioned.
    long = pd.DataFrame({"t": ts.to_numpy(), "k": key.to_numpy(), "v": vals.to_numpy(),
                         "c": rows["component"].astype(str).to_numpy()})
    long = long.sort_values(["t", "k", "v"], kind="stable", na_position="last", ignore_index=True)
    wide = long.pivot_table(index="t", columns="k", values="v", aggfunc="mean", dropna=False)
    step = pd.Timedelta(seconds=window_seconds)
    grid = pd.date_range(wide.index.min().floor(step), wide.index.max(), freq=step, name="window_start")
    wide = wide.reindex(grid)
    counts = [c for c in wide.columns if is_count_feature(c)]
    by_component: dict[str, list[str]] = {}
    for c in counts:
        by_component.setdefault(str(c).split(KEY_SEP, 1)[0], []).append(c)
    for component, cols in sorted(by_component.items()):
        seen = pd.DatetimeIndex(long.loc[long["c"] == component, "t"].unique())
        present = pd.Series(True, index=seen).reindex(grid, fill_value=False).to_numpy()  # aligns across time units
        filled = wide[cols].fillna(0.0)
        filled.loc[~present] = np.nan
        wide[cols] = filled
    wide.columns = [str(c) for c in wide.columns]
    return wide.sort_index(axis=1)


def persistent(flags: np.ndarray, min_windows: int) -> np.ndarray:
    """Flags that belong to at least `min_windows` flagged windows within a span of 2*min_windows-1
    around them: an isolated one-window blip (a lone error burst) is not an incident."""
    flags = np.asarray(flags, dtype=bool)
    if min_windows <= 1 or not flags.any():
        return flags
    width = 2 * min_windows - 1
    near = np.convolve(flags.astype(int), np.ones(width, dtype=int), mode="same")
    return flags & (near >= min_windows)


def make_detector(name: str, plan: Mapping[str, Any], seed: int) -> Detector:
    common = {
        "threshold": float(plan["threshold"]), "block": int(plan["block"]),
        "rolling_window": int(plan["zscore"]["rolling_window"]), "window_seconds": int(plan["window_seconds"]),
        "seed": seed,
    }
    if name == RobustZScore.name:
        return RobustZScore(min_z=float(plan["zscore"]["threshold"]), **common)
    if name == IsolationForestDetector.name:
        p = plan["isolation_forest"]
        return IsolationForestDetector(contamination=float(p["contamination"]), n_estimators=int(p["n_estimators"]), **common)
    if name == LSTMAutoencoder.name:
        p = plan["lstm"]
        return LSTMAutoencoder(
            sequence_length=int(p["sequence_length"]), epochs=int(p["epochs"]), batch_size=int(p["batch_size"]),
            patience=int(p["patience"]), units=int(p["units"]), threads=int(p["threads"]), **common,
        )
    raise ValueError(f"unknown detector {name!r}")


@dataclass
class FittedService:
    detectors: dict[str, Detector]
    cold_start: bool
    baseline_start: pd.Timestamp | None
    baseline_end: pd.Timestamp | None
    baseline_windows: int
    note: str = ""  # why the series is not fully modelled (too short: cold start, no features), else ""


def baseline_mask(index: pd.DatetimeIndex, fraction: float) -> np.ndarray:
    """The first `fraction` of the series' time span (at least one window)."""
    if len(index) == 0:
        return np.zeros(0, dtype=bool)
    cut = index[0] + (index[-1] - index[0]) * fraction
    mask = np.asarray(index <= cut)
    mask[0] = True
    return mask


def baseline_columns(rows: pd.DataFrame, X: pd.DataFrame, baseline: np.ndarray | None = None) -> list[str]:
    """Columns of X (built from `rows` by to_matrix) with a feature row inside the baseline windows.

    A model knows only the series its baseline had. to_matrix zero-fills a count series born after
    the baseline (a log template first seen during a fault) back to the first window; fitting on
    that imagined past would make "fit and score in one pass" disagree with "fit on the baseline
    window (--fit), then --score-only", where the series does not exist yet. A new template still
    counts, through the service's new_template_count / rare_template_count."""
    if X.empty or rows.empty:
        return [str(c) for c in X.columns]
    last = X.index[np.asarray(baseline, dtype=bool)].max() if baseline is not None else X.index.max()
    key = (rows["component"].astype(str) + KEY_SEP + rows["feature"].astype(str)).to_numpy()
    first = pd.Series(pd.to_datetime(rows["window_start"]).to_numpy()).groupby(key).min()
    seen = set(first.index[first.to_numpy() <= np.datetime64(last)])
    return [c for c in X.columns if c in seen]


def fit_service(X: pd.DataFrame, plan: Mapping[str, Any], seed: int, baseline: np.ndarray | None = None) -> FittedService:
    """Fit the enabled detectors on the baseline rows of X (all rows when `baseline` is None)."""
    base = X if baseline is None else X.loc[np.asarray(baseline, dtype=bool)]
    has_data = base.notna().any(axis=1).to_numpy()
    windows = int(has_data.sum())
    cold = windows < int(plan["min_history"])
    enabled = [d for d in DETECTOR_ORDER if d in plan["enabled"]]
    names = [RobustZScore.name] if cold else enabled
    if not names or base.shape[1] == 0:
        note = f"not modelled: no feature in its {windows} baseline windows" if base.shape[1] == 0 else ""
        return FittedService({}, cold, None, None, windows, note)
    shared = SeriesBaseline(int(plan["zscore"]["rolling_window"]), int(plan["window_seconds"])).fit(base)
    note = ""
    if cold:
        note = (f"too short to model: {windows} baseline window{'' if windows == 1 else 's'} (fewer than "
                f"min_history {int(plan['min_history'])}), cold start with the z-score only; {shared.model_}")
    clean = has_data.copy()
    fitted: dict[str, Detector] = {}
    for name in names:
        det = make_detector(name, plan, seed).fit(base, baseline=shared, clean=clean)
        fitted[name] = det
        # Later (costlier) learners do not learn from what earlier ones already call extreme.
        clean &= block_score(det.pvalue(base), det.block) < TRIM_SCORE
    return FittedService(fitted, cold, base.index.min(), base.index.max(), windows, note)


def fit_baseline_series(rows: pd.DataFrame, X: pd.DataFrame, plan: Mapping[str, Any], seed: int,
                        baseline: np.ndarray | None = None) -> FittedService:
    """fit_service on the series the baseline had (baseline_columns): what every fit path calls."""
    return fit_service(X[baseline_columns(rows, X, baseline)], plan, seed, baseline)


def score_service(
    X: pd.DataFrame,
    detectors: Mapping[str, Detector],
    plan: Mapping[str, Any],
    *,
    emit: np.ndarray | None = None,
    cold_start: bool = False,
) -> pd.DataFrame:
    """Anomalous (window, feature) rows of X (only windows where `emit` is True)."""
    names = [d for d in DETECTOR_ORDER if d in detectors and (d in plan["enabled"] or cold_start)]
    if not names or X.empty:
        return pd.DataFrame(columns=ROW_COLUMNS)
    first = detectors[names[0]]
    base = first.baseline_
    Z = first.standardize(X)
    absz = np.abs(np.nan_to_num(Z, nan=0.0))
    n, k = Z.shape
    weights = plan["weights"]
    logp: dict[str, np.ndarray] = {}
    for name in names:
        det = detectors[name]
        if isinstance(det, RobustZScore):
            p = det.feature_pvalues(X)
        else:
            p = np.broadcast_to(det.pvalue(X).reshape(-1, 1), (n, k))
        logp[name] = np.log(np.clip(p, 1e-300, 1.0))
    wsum = sum(float(weights.get(d, 1.0)) for d in names)
    combined = sum(float(weights.get(d, 1.0)) * logp[d] for d in names) / wsum
    block = int(plan["block"])
    ensemble = block_score(np.exp(combined), block)

    min_z = float(plan["zscore"]["threshold"])
    cand = absz >= min_z
    zscore = detectors.get(RobustZScore.name) if RobustZScore.name in names else None
    if zscore is not None:
        # A row names a feature that is itself rare for that feature (rarer than once per calibration
        # horizon): service-wide evidence does not make an ordinary value of a noisy feature anomalous.
        cand &= zscore.feature_tail(X) <= 1.0 / block
    elif k:  # no per-feature evidence: the window's most deviant feature speaks for it
        top = np.argmax(absz, axis=1)
        cand[np.arange(n), top] |= absz[np.arange(n), top] >= 1.0
    cand &= np.isfinite(Z)
    flagged = cand & (ensemble >= float(plan["threshold"]))
    flagged &= persistent(flagged.any(axis=1), int(plan["min_duration_windows"])).reshape(-1, 1)
    if emit is not None:
        flagged &= np.asarray(emit, dtype=bool).reshape(-1, 1)
    if not flagged.any():
        return pd.DataFrame(columns=ROW_COLUMNS)

    runs = run_lengths(flagged)
    ii, jj = np.nonzero(flagged)
    low, high = base.expected_range(X, min_z)
    values = X.reindex(columns=base.features).to_numpy(dtype=float)
    keys = [base.features[j] for j in jj]
    comp = [key.split(KEY_SEP, 1)[0] for key in keys]
    feat = [key.split(KEY_SEP, 1)[1] for key in keys]
    det_scores = {d: block_score(np.exp(logp[d][ii, jj]), block) for d in names}
    out = pd.DataFrame({
        "window_start": X.index[ii],
        "component": comp,
        "feature": feat,
        "value": values[ii, jj],
        "expected_low": low[ii, jj],
        "expected_high": high[ii, jj],
        **{d: det_scores.get(d, np.full(len(ii), np.nan)) for d in DETECTOR_ORDER},
        "ensemble_score": ensemble[ii, jj],
    })
    level_shift = int(plan["level_shift_windows"])
    out["anomaly_type"] = [
        anomaly_type(f, Z[i, j], int(runs[i, j]), level_shift_windows=level_shift)
        for f, i, j in zip(feat, ii, jj, strict=True)
    ]
    cold = np.full(len(out), bool(cold_start))
    out["confidence"] = confidence(
        out["ensemble_score"].to_numpy(), out[list(DETECTOR_ORDER)].to_numpy(), float(plan["threshold"]), cold
    )
    out["cold_start"] = cold
    return out[ROW_COLUMNS].reset_index(drop=True)
