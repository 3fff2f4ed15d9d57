"""Every sampling step from 1 s to 1 day fits and scores (issue 20).

A data platform sees 1 s scrapes, 1 min rollups, hourly and daily business metrics. Per step, one
service with a daily cycle and a planted three-window spike, and one service of five windows
(shorter than any profile), run through detect's Spark path (fit_models on the first half,
score_features on everything); the anomalies must be exactly the spike's rows. The hourly ten-month case crashed
the baseline's daily profile with an IndexError before; it also has a pure-pandas test.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from meltrca.config import load_settings
from meltrca.detection import detection_plan, fit_models, fit_notes, model_index, score_features
from meltrca.detectors import RobustZScore, SeriesBaseline
from meltrca.schemas import FEATURES, MODELS

DAY0 = datetime(2024, 1, 1)
SPIKE = 10.0  # 20 noise sigmas, twice the daily swing
SHORT = [20.0, 20.4, 19.8, 20.1, 20.2]  # five windows: cold start, no profile, nothing to flag
LSTM_FAST = {"detection.models.lstm.epochs": 2, "detection.models.lstm.sequence_length": 6,
             "detection.models.lstm.units": 8}

# step (seconds) -> windows of history: from two hours of seconds to a year of days
STEPS = {
    1: 2 * 3600,
    60: 3 * 1440,
    300: 14 * 288,
    1800: 60 * 48,
    3600: 7300,  # ten months of hours: the case
    86400: 365,
}


def temperature(step: int, n: int, seed: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """A daily cycle (+-5) with noise (sd 0.5), starting at 05:00 (near the peak: two hours of
    seconds see a level, not a slope) or at midnight for daily windows."""
    start = DAY0 if step >= 86400 else DAY0 + timedelta(hours=5)
    index = pd.date_range(start, periods=n, freq=pd.Timedelta(seconds=step))
    secs = (index.asi8 // 1_000_000_000) % 86400
    rng = np.random.default_rng(seed)
    return index, 20 + 5 * np.sin(2 * np.pi * (secs - 3600) / 86400) + rng.normal(0, 0.5, n)


def spike_at(n: int) -> list[int]:
    return [int(0.8 * n) + i for i in range(3)]


def feature_rows(step: int, n: int) -> tuple[list[tuple], set[tuple]]:
    """Service main: temperature (spiked) and humidity (noise only); service short: five windows."""
    index, temp = temperature(step, n, seed=step)
    hum = 50 + np.random.default_rng(step + 1).normal(0, 1, n)
    spiked = spike_at(n)
    temp[spiked] += SPIKE
    width = timedelta(seconds=step)
    rows = []
    for i, t in enumerate(index.to_pydatetime()):
        rows.append(("plant", "main", t, t + width, "metric", "temperature", float(temp[i]), t.date()))
        rows.append(("plant", "main", t, t + width, "metric", "humidity", float(hum[i]), t.date()))
    for i, v in enumerate(SHORT):
        t = index[0].to_pydatetime() + i * width
        rows.append(("plant", "short", t, t + width, "metric", "temperature", v, t.date()))
    expected = {("main", "temperature", index[i].to_pydatetime()) for i in spiked}
    return rows, expected


def fit_and_score(spark, settings, tmp_path, rows, step: int, enabled: list[str]):
    """Fit on the first half (baseline_fraction) and score every window, through Spark."""
    plan = {**detection_plan(settings, window_seconds=step), "enabled": enabled}
    features = spark.createDataFrame(rows, FEATURES)
    models = fit_models(features, plan=plan, store_root=str(tmp_path / "models"), version="v1",
                        fitted_at=datetime(2025, 1, 1), fraction=plan["baseline_fraction"]).collect()
    index = model_index(spark.createDataFrame(models, MODELS), enabled)
    return models, score_features(features, plan=plan, index=index).collect()


@pytest.fixture(scope="module")
def fast_settings():
    return load_settings(environ={}, overrides=LSTM_FAST)


@pytest.mark.parametrize("step", list(STEPS), ids=[f"{s}s" for s in STEPS])
def test_every_sampling_step_fits_scores_and_flags_exactly_the_planted_spike(spark, fast_settings, tmp_path, step):
    n = STEPS[step]
    rows, expected = feature_rows(step, n)
    # The hourly run had the whole default ensemble; the other steps skip the LSTM (time).
    enabled = ["zscore", "isolation_forest", *(["lstm"] if step == 3600 else [])]
    models, got = fit_and_score(spark, fast_settings, tmp_path, rows, step, enabled)
    assert {(r["service"], r["feature"], r["window_start"]) for r in got} == expected
    for r in got:
        assert r["anomaly_type"] == "spike" and not r["cold_start"]
        assert r["value"] > r["expected_high"] and r["ensemble_score"] >= 0.95
        assert {d for d in ("zscore", "isolation_forest", "lstm") if r[d] is not None and r[d] == r[d]} == set(enabled)
    assert {(r["service"], r["detector"], r["baseline_windows"], r["cold_start"]) for r in models} == {
        *[("main", d, (n - 1) // 2 + 1, False) for d in enabled], ("short", "zscore", 3, True),
    }
    assert fit_notes(models, 30) == [
        "plant/short: too short to model (3 baseline windows, fewer than min_history 30): cold start, z-score only"
    ]


# ---- the baseline alone (pandas): the case that crashed, and what it degrades to ----------------


def hourly_frame(n: int = STEPS[3600]) -> tuple[pd.DataFrame, list[int]]:
    index, temp = temperature(3600, n, seed=7)
    spiked = spike_at(n)
    temp[spiked] += SPIKE
    return pd.DataFrame({"metric|temperature": temp}, index=index), spiked


def test_hourly_ten_months_fit_a_one_hour_profile_and_flag_the_spike():
    # Before the fix the profile's smoothing (180 windows = 1081 ten-minute bins) was wider than the
    # day's 144 bins, the profile came out empty and fit raised IndexError in _interp_profile.
    X, spiked = hourly_frame()
    half = len(X) // 2
    base = SeriesBaseline(rolling_window=180, window_seconds=3600).fit(X.iloc[:half])
    assert base.seasonal_.tolist() == [True] and base.profile_.shape == (24, 1)
    assert base.model_.startswith("daily profile of 24 bins of 1 h")
    z = base.transform(X)[:, 0]
    assert np.all(z[spiked] > 15) and np.abs(np.delete(z, spiked)).max() < 5
    det = RobustZScore(rolling_window=180, window_seconds=3600).fit(X.iloc[:half])
    assert np.flatnonzero(det.predict(X)).tolist() == spiked
    again = SeriesBaseline.from_dict(base.to_dict())
    assert again.bin_seconds_ == 3600 and np.array_equal(again.transform(X), base.transform(X), equal_nan=True)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize(("step", "hours", "every", "model"), [
    (60, 72, 1, "daily profile of 144 bins of 10 min"),
    (1800, 24 * 60, 1, "daily profile of 48 bins of 30 min"),
    (3600, 36, 1, "daily profile of 12 bins of 2 h"),  # a day and a half: one point per hour bin
    (60, 24 * 20, 60, "daily profile of 48 bins of 30 min"),  # hourly points on a minute grid
    (3600, 26, 25, "no daily profile (too few baseline windows per time of day"),
    (21600, 24 * 90, 1, "daily profile of 4 bins of 6 h"),
    (28800, 24 * 90, 1, "no daily profile (8 h windows are too coarse for a daily profile)"),
    (86400, 24 * 365, 1, "no daily profile (1 d windows are too coarse for a daily profile)"),
    (1, 2, 1, "no daily profile (history of 2 h is shorter than a day)"),
    (3600, 5, 1, "no daily profile (history of 5 h is shorter than a day)"),
])
def test_the_baseline_takes_the_profile_the_data_supports_and_says_so(step, hours, every, model):
    n = hours * 3600 // step
    index, temp = temperature(step, n, seed=3)
    X = pd.DataFrame({"metric|temperature": temp}, index=index)
    X.iloc[np.arange(n) % every != 0] = np.nan
    logger = logging.getLogger("meltrca.detectors.baseline")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        base = SeriesBaseline(rolling_window=180, window_seconds=step).fit(X)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert base.model_.startswith(model), base.model_
    assert handler.lines == [f"baseline of {n} x {step_text(step)} windows, 1 features: {base.model_}"]
    z = base.transform(X)
    assert np.isfinite(z[np.isfinite(X.to_numpy())]).all()


def step_text(step: int) -> str:
    return {1: "1 s", 60: "1 min", 1800: "30 min", 3600: "1 h", 21600: "6 h", 28800: "8 h", 86400: "1 d"}[step]


def test_models_saved_before_profile_bins_were_sized_still_load():
    index, temp = temperature(60, 3 * 1440, seed=5)
    X = pd.DataFrame({"metric|temperature": temp}, index=index)
    state = SeriesBaseline(rolling_window=180, window_seconds=60).fit(X).to_dict()
    old = {k: v for k, v in state.items() if k not in ("profile_bin_seconds", "model")}
    loaded = SeriesBaseline.from_dict(old)
    assert loaded.bin_seconds_ == 600 and loaded.profile_.shape == (144, 1)
    assert np.array_equal(loaded.transform(X), SeriesBaseline.from_dict(state).transform(X), equal_nan=True)


def test_a_series_too_short_to_model_gets_a_note_not_a_crash():
    from meltrca.detectors.service import fit_service, score_service

    plan = {**_plan(3600), "enabled": ["zscore", "isolation_forest"]}
    index = pd.date_range(DAY0, periods=len(SHORT), freq="1h")
    X = pd.DataFrame({"metric|temperature": SHORT}, index=index)
    fitted = fit_service(X, plan, seed=1, baseline=np.arange(len(SHORT)) < 3)
    assert fitted.cold_start and list(fitted.detectors) == ["zscore"] and fitted.baseline_windows == 3
    assert fitted.note == (
        "too short to model: 3 baseline windows (fewer than min_history 30), cold start with the z-score only; "
        "no daily profile (history of 3 h is shorter than a day); flat median/MAD for 1"
    )
    assert score_service(X, fitted.detectors, plan, cold_start=True).empty
    empty = fit_service(X.iloc[:, :0], plan, seed=1)
    assert empty.detectors == {} and empty.note == "not modelled: no feature in its 0 baseline windows"


def _plan(step: int) -> dict:
    return detection_plan(load_settings(environ={}), window_seconds=step)
