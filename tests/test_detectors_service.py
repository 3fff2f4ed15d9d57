"""One service end to end in pandas: matrix building, fitting, the ensemble, typing, severity, confidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meltrca.detectors.calibration import block_score
from meltrca.detectors.classify import anomaly_type, confidence, run_lengths, severity_labels
from meltrca.detectors.service import (
    ROW_COLUMNS,
    baseline_columns,
    baseline_mask,
    fit_service,
    score_service,
    to_matrix,
)

PLAN = {
    "enabled": ["zscore", "isolation_forest"],
    "threshold": 0.95,
    "block": 1440,
    "min_history": 30,
    "baseline_fraction": 0.5,
    "level_shift_windows": 10,
    "min_duration_windows": 1,
    "weights": {"zscore": 1.0, "isolation_forest": 1.0, "lstm": 1.0},
    "window_seconds": 60,
    "zscore": {"threshold": 3.5, "rolling_window": 60},
    "isolation_forest": {"contamination": 0.01, "n_estimators": 100},
    "lstm": {"sequence_length": 8, "epochs": 5, "batch_size": 64, "patience": 2, "units": 8, "threads": 1},
}


def long_rows(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """A service's long feature rows: CPU and latency every window; ERROR_count every window too, as the
    features stage writes it (0 in a window where the service logged no error), except that only
    windows with errors carry a row here, plus one INFO_count row per window saying logs were
    exported (so those windows' missing ERROR_count rows are zeros, not gaps)."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2024-09-26", periods=n, freq="1min")
    cpu = 40 + rng.normal(0, 2, n)
    lat = 100 + rng.normal(0, 5, n)
    err = rng.poisson(0.3, n).astype(float)
    cpu[900:930] += 30  # resource saturation, 15 sigma, 30 windows
    err[950] = 25  # an error burst, one window
    lat[1000:1003] -= 40  # latency *drop*: good news, not an anomaly
    info = 50 + rng.poisson(5, n).astype(float)
    rows = [("metric", "cpu_usage_mean", cpu), ("trace", "latency_p95_ms", lat), ("log", "ERROR_count", err),
            ("log", "INFO_count", info)]
    out = []
    for comp, feat, v in rows:
        keep = v > 0 if feat == "ERROR_count" else np.ones(n, dtype=bool)
        out.append(pd.DataFrame({"window_start": t[keep], "component": comp, "feature": feat, "value": v[keep]}))
    return pd.concat(out, ignore_index=True)


def test_to_matrix_makes_a_regular_grid_fills_counts_and_keeps_gaps():
    t = pd.Timestamp("2024-09-26 10:00")
    m = pd.Timedelta(minutes=1)
    rows = pd.DataFrame({
        "window_start": [t, t, t + m, t + 3 * m, t + 3 * m, t + 3 * m, t + 3 * m],
        "component": ["metric", "log", "metric", "metric", "trace", "log", "trace"],
        "feature": ["cpu_usage_mean", "ERROR_count", "cpu_usage_mean", "cpu_usage_mean", "error_ratio", "error_ratio",
                    "request_count"],
        "value": [1.0, 2.0, np.inf, 4.0, 0.5, 0.25, 7.0],
    })
    X = to_matrix(rows, 60)
    expected = pd.DataFrame(
        {
            "log|ERROR_count": [2.0, np.nan, np.nan, 0.0],  # 0 where the window has log data, else a gap
            "log|error_ratio": [np.nan, np.nan, np.nan, 0.25],
            "metric|cpu_usage_mean": [1.0, np.nan, np.nan, 4.0],  # inf is not a value
            "trace|error_ratio": [np.nan, np.nan, np.nan, 0.5],
            "trace|request_count": [np.nan, np.nan, np.nan, 7.0],  # metrics alone do not say "no requests"
        },
        index=pd.date_range(t, periods=4, freq="1min", name="window_start"),
    )
    pd.testing.assert_frame_equal(X, expected, check_freq=False)


def test_row_order_changes_neither_the_matrix_nor_the_anomalies():
    """Spark hands a group over in partition order; the same data must give bit-identical rows."""
    rows = long_rows()
    dups = [rows.iloc[::97].assign(value=lambda d, o=o: d["value"] + o) for o in (0.1, 0.7)]  # averaged
    rows = pd.concat([rows, *dups], ignore_index=True)
    shuffled = rows.sample(frac=1.0, random_state=3)
    X, Y = to_matrix(rows, 60), to_matrix(shuffled, 60)
    pd.testing.assert_frame_equal(X, Y, check_exact=True)
    out = []
    for M in (X, Y):
        fitted = fit_service(M, PLAN, seed=1, baseline=baseline_mask(M.index, 0.5))
        out.append(score_service(M, fitted.detectors, PLAN))
    assert len(out[0]) == 31
    pd.testing.assert_frame_equal(out[0], out[1], check_exact=True)


def test_a_service_with_too_little_history_is_cold_start_with_zscore_only():
    X = to_matrix(long_rows(), 60)
    fitted = fit_service(X.iloc[:20], PLAN, seed=1)
    assert fitted.cold_start and list(fitted.detectors) == ["zscore"]
    rows = score_service(X, fitted.detectors, PLAN, cold_start=True)
    assert rows["cold_start"].all()
    assert rows[["isolation_forest", "lstm"]].isna().all().all()


def test_score_service_rows_carry_scores_ranges_types_and_the_ensemble():
    X = to_matrix(long_rows(), 60)
    mask = baseline_mask(X.index, 0.5)
    assert mask.sum() == 600
    fitted = fit_service(X, PLAN, seed=1, baseline=mask)
    assert not fitted.cold_start and list(fitted.detectors) == ["zscore", "isolation_forest"]
    assert fitted.baseline_windows == 600
    rows = score_service(X, fitted.detectors, PLAN)
    assert list(rows.columns) == ROW_COLUMNS

    found = rows.groupby(["component", "feature", "anomaly_type"])["window_start"].agg(["min", "max", "count"])
    t0 = pd.Timestamp("2024-09-26")
    m = pd.Timedelta(minutes=1)
    assert found.to_dict("index") == {
        ("log", "ERROR_count", "error_burst"): {"min": t0 + 950 * m, "max": t0 + 950 * m, "count": 1},
        ("metric", "cpu_usage_mean", "resource_saturation"): {"min": t0 + 900 * m, "max": t0 + 929 * m, "count": 30},
    }
    # Each value lies outside its expected range, and the ensemble is the weighted geometric mean.
    outside = (rows["value"] < rows["expected_low"]) | (rows["value"] > rows["expected_high"])
    assert outside.all()
    p = {d: 1 - rows[d].to_numpy() ** (1 / 1440) for d in ("zscore", "isolation_forest")}
    combined = block_score(np.sqrt(p["zscore"] * p["isolation_forest"]), 1440)
    np.testing.assert_allclose(rows["ensemble_score"], combined, rtol=1e-6, atol=1e-9)
    assert (rows["ensemble_score"] >= 0.95).all()
    assert rows["confidence"].between(0, 1).all() and not rows["cold_start"].any()
    assert rows["lstm"].isna().all()


def test_a_series_born_after_the_baseline_is_not_modelled_in_either_way_of_fitting():
    """Fit+score in one pass equals fitting on the baseline window alone and then scoring: a count
    series first seen after the baseline (a template born in a fault) is in neither model."""
    rows = long_rows()
    t = pd.date_range("2024-09-26", periods=1200, freq="1min")
    born = pd.DataFrame({"window_start": t[700:], "component": "log", "feature": "template_9a_count", "value": 4.0})
    born.loc[born.index[200:230], "value"] = 60.0  # a burst of the new template during the CPU fault
    rows = pd.concat([rows, born], ignore_index=True)

    X = to_matrix(rows, 60)
    mask = baseline_mask(X.index, 0.5)
    assert X["log|template_9a_count"].iloc[:600].eq(0).all()  # zero-filled back into the baseline (logs were there)
    cols = baseline_columns(rows, X, mask)
    assert cols == ["log|ERROR_count", "log|INFO_count", "metric|cpu_usage_mean", "trace|latency_p95_ms"]
    assert baseline_columns(rows, X) == list(X.columns)  # no baseline mask: all of X is the baseline
    one_pass = fit_service(X[cols], PLAN, seed=1, baseline=mask)

    cut = X.index[mask].max()
    base_rows = rows[pd.to_datetime(rows["window_start"]) <= cut]
    B = to_matrix(base_rows, 60)
    assert baseline_columns(base_rows, B) == cols
    two_step = fit_service(B, PLAN, seed=1)

    assert one_pass.detectors["zscore"].baseline_.features == two_step.detectors["zscore"].baseline_.features == cols
    a = score_service(X, one_pass.detectors, PLAN)
    b = score_service(X, two_step.detectors, PLAN)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert "template_9a_count" not in set(a["feature"])
    assert set(a["feature"]) == {"cpu_usage_mean", "ERROR_count"}


def test_windows_outside_the_emit_mask_are_context_only():
    X = to_matrix(long_rows(), 60)
    fitted = fit_service(X, PLAN, seed=1, baseline=baseline_mask(X.index, 0.5))
    emit = np.asarray(X.index >= pd.Timestamp("2024-09-26 15:50"))  # window 950 onwards
    rows = score_service(X, fitted.detectors, PLAN, emit=emit)
    assert sorted(set(rows["feature"])) == ["ERROR_count"]


@pytest.mark.parametrize(
    ("feature", "direction", "run", "expected"),
    [
        ("template_3f2a_count", 1, 1, "new_error_pattern"),
        ("new_template_count", 1, 30, "new_error_pattern"),
        ("ERROR_count", 1, 1, "error_burst"),
        ("edge:db:error_ratio", 1, 5, "error_burst"),
        ("cpu_usage_max", 1, 1, "resource_saturation"),
        ("conn_pool_usage_mean", 1, 40, "resource_saturation"),
        ("latency_p99_ms", 1, 3, "latency_degradation"),
        ("edge:db:latency_p95_ms", 1, 3, "latency_degradation"),
        ("request_count", -1, 3, "unusual_frequency"),
        ("INFO_count", 1, 3, "unusual_frequency"),
        ("latency_p99_ms", -1, 3, "drop"),
        ("queue_depth", 1, 2, "spike"),
        ("queue_depth", 1, 12, "level_shift"),
    ],
)
def test_anomaly_type_from_meaning_direction_and_duration(feature, direction, run, expected):
    assert anomaly_type(feature, direction, run, level_shift_windows=10) == expected


def test_run_lengths_of_consecutive_flags():
    flags = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], dtype=bool)
    assert run_lengths(flags).tolist() == [[2, 0], [2, 3], [0, 3], [1, 3]]


def test_severity_grows_with_margin_and_blast_radius():
    score = np.array([0.96, 0.996, 0.9999, 0.96, 0.96, 0.9999])
    blast = np.array([1, 1, 1, 3, 6, 6])
    assert severity_labels(score, blast, 0.95).tolist() == ["low", "medium", "high", "medium", "high", "critical"]


def test_confidence_is_agreement_times_margin_and_halved_for_cold_start():
    score = np.array([0.95, 0.9995, 0.9995, 0.9995])
    det = np.array([[1.0, np.nan, np.nan], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, np.nan, np.nan]])
    cold = np.array([False, False, False, True])
    assert confidence(score, det, 0.95, cold).tolist() == [0.5, 1.0, pytest.approx(0.5774, abs=1e-4), 0.5]


def test_counts_of_a_signal_exported_only_around_incidents_have_gaps_not_zeros():
    """Logs exported only in a few windows (traces and logs kept around incidents, metrics all day):
    the log counts are gaps where no log data exists, zeros only where the service's logs were there."""
    t = pd.date_range("2024-09-26", periods=6, freq="1min")
    rows = pd.DataFrame({
        "window_start": [*t, t[1], t[1], t[4]],
        "component": ["metric"] * 6 + ["log", "log", "log"],
        "feature": ["cpu_usage_mean"] * 6 + ["INFO_count", "template_a_count", "INFO_count"],
        "value": [1.0] * 6 + [10.0, 3.0, 12.0],
    })
    X = to_matrix(rows, 60)
    pd.testing.assert_frame_equal(X, pd.DataFrame({
        "log|INFO_count": [np.nan, 10.0, np.nan, np.nan, 12.0, np.nan],
        "log|template_a_count": [np.nan, 3.0, np.nan, np.nan, 0.0, np.nan],
        "metric|cpu_usage_mean": [1.0] * 6,
    }, index=pd.DatetimeIndex(t, name="window_start")), check_freq=False)
