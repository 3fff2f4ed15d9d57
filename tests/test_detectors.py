"""Detectors on crafted series, without Spark: which windows are flagged, which are not, finite scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meltrca.detectors import IsolationForestDetector, RobustZScore, SeriesBaseline
from meltrca.detectors.calibration import TailCalibrator, block_score, p_from_block_score

N, NB = 1200, 600  # windows, of which the first NB are the baseline


def frame(cols: dict[str, np.ndarray], start: str = "2024-09-26") -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    return pd.DataFrame(cols, index=pd.date_range(start, periods=n, freq="1min"))


def service(seed: int, n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "metric|cpu_usage_mean": 50 + rng.normal(0, 1, n),
        "metric|memory_usage_mean": 500 + rng.normal(0, 5, n),
        "trace|latency_p95_ms": 100 + rng.normal(0, 3, n),
        "log|ERROR_count": rng.poisson(0.3, n).astype(float),
        "log|INFO_count": rng.poisson(30, n).astype(float),
    }


def seasonal(seed: int, days: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 1440 * days
    t = np.arange(n)
    return frame({
        "metric|cpu_usage_mean": 50 + 15 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 1, n),
        "metric|memory_usage_mean": 500 + 30 * np.sin(2 * np.pi * t / 1440 + 1) + rng.normal(0, 2, n),
        "trace|latency_p95_ms": 100 + rng.normal(0, 3, n),
        "log|INFO_count": rng.poisson(20 + 10 * np.sin(2 * np.pi * t / 1440)).astype(float),
    })


def flagged(det, X: pd.DataFrame) -> list[int]:
    return np.flatnonzero(det.predict(X)).tolist()


# ---- z-score --------------------------------------------------------------------------------


def test_zscore_flags_a_spike_at_its_index_only():
    cols = service(1)
    cols["trace|latency_p95_ms"][900] += 40  # 13 sigma, one window
    X = frame(cols)
    det = RobustZScore().fit(X.iloc[:NB])
    assert flagged(det, X) == [900]
    flags = det.feature_flags(X)
    assert np.flatnonzero(flags[900]).tolist() == [det.baseline_.features.index("trace|latency_p95_ms")]


def test_zscore_flags_a_level_shift_for_its_whole_duration():
    cols = service(2)
    cols["metric|cpu_usage_mean"][800:950] += 15
    X = frame(cols)
    det = RobustZScore().fit(X.iloc[:NB])
    assert flagged(det, X) == list(range(800, 950))


def test_zscore_flags_a_slow_drift_once_it_leaves_the_normal_range():
    cols = service(3)
    drift = np.linspace(0, 80, N - NB)  # memory leak: +80 MiB (16 sigma) over 600 windows
    cols["metric|memory_usage_mean"][NB:] += drift
    X = frame(cols)
    det = RobustZScore().fit(X.iloc[:NB])
    hits = flagged(det, X)
    # Nothing while the drift is within ~3 sigma, everything once it is beyond ~10 sigma.
    assert not [i for i in hits if i < NB + 100]
    assert set(range(NB + 400, N)) <= set(hits)


def test_zscore_learns_the_daily_profile_and_stays_quiet_on_a_normal_day():
    X = seasonal(4)
    det = RobustZScore().fit(X.iloc[:1440])
    # CPU, memory and the log volume follow the day; latency does not.
    assert det.baseline_.seasonal_.tolist() == [True, True, False, True]
    assert flagged(det, X) == []
    # +12 on CPU is within the daily swing (+-15) but a clear shift against the profile.
    Y = X.copy()
    Y.iloc[2000:2030, 0] += 12
    assert flagged(det, Y) == list(range(2000, 2030))


def test_constant_series_scores_finite_and_a_step_away_from_it_is_flagged():
    cols = service(5)
    cols["metric|cpu_usage_mean"] = np.full(N, 7.0)
    cols["log|ERROR_count"] = np.zeros(N)
    X = frame(cols)
    det = RobustZScore().fit(X.iloc[:NB])
    for scores in (det.decision_function(X), det.normalized(X), det.feature_pvalues(X)):
        assert np.isfinite(scores).all()
    assert flagged(det, X) == []
    Y = X.copy()
    Y.iloc[1000, 0] = 9.0  # a constant that moves is news
    Y.iloc[1100, 3] = 12.0  # twelve errors where there were none
    assert flagged(det, Y) == [1000, 1100]


def test_gaps_nans_and_infinities_never_crash_or_leak_into_scores():
    cols = service(6)
    rng = np.random.default_rng(0)
    cols["trace|latency_p95_ms"][rng.random(N) < 0.2] = np.nan
    cols["metric|cpu_usage_mean"][700:760] = np.nan
    cols["metric|cpu_usage_mean"][1000] = np.inf
    cols["log|INFO_count"][:] = np.nan  # a feature never seen at all
    X = frame(cols).drop(frame(cols).index[300:330])
    for det in (RobustZScore(), IsolationForestDetector()):
        det.fit(X.iloc[:NB])
        assert np.isfinite(det.decision_function(X)).all()
        assert np.isfinite(det.normalized(X)).all()
        assert flagged(det, X) == []


# ---- Isolation Forest ------------------------------------------------------------------------


def test_isolation_forest_finds_deviations_that_only_stand_out_together():
    rng = np.random.default_rng(7)
    n = 1500
    X = frame({
        "metric|cpu_usage_mean": 50 + rng.normal(0, 2, n),
        "metric|memory_usage_mean": 500 + rng.normal(0, 5, n),
        "trace|latency_p95_ms": 100 + rng.normal(0, 4, n),
        "trace|error_ratio": 0.01 + np.abs(rng.normal(0, 0.003, n)),
        "log|WARN_count": rng.poisson(3, n).astype(float),
    })
    # CPU, trace latency and warnings all moderately up at once (each alone is ordinary noise).
    X.iloc[1200:1215, 0] += 2 * 3.5
    X.iloc[1200:1215, 2] += 4 * 3.5
    X.iloc[1200:1215, 4] += 6
    # On its own the forest is a weak witness (its scores saturate at the baseline's edge), so it
    # is asked at a low threshold here; what matters is that it ranks the joint deviation first.
    det = IsolationForestDetector(threshold=0.1).fit(X.iloc[:800])
    assert det.families() == ["error_burst", "latency_degradation", "resource_saturation", "unusual_frequency"]
    hits = flagged(det, X)
    assert len(hits) >= 8 and set(hits) <= set(range(1200, 1215))
    # The per-feature z-score sees almost none of it: no feature alone is extreme.
    assert len(flagged(RobustZScore().fit(X.iloc[:800]), X)) <= 2
    # Ranking: most of the 10 highest-scoring windows are joint-deviation windows.
    top = np.argsort(-det.decision_function(X))[:10]
    assert all(1200 <= i < 1215 for i in top)


def forest_ranks(X: pd.DataFrame, fault: slice | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Tail probabilities of the fault windows and of the other post-baseline windows."""
    det = IsolationForestDetector().fit(X.iloc[:NB])
    p = det.pvalue(X)
    inside = np.zeros(len(X), dtype=bool)
    inside[fault] = True
    outside = ~inside
    outside[:NB] = False
    assert np.isfinite(p).all() and (p > 0).all()
    return p[inside], p[outside]


# On its own the forest is a weak witness: a deviation in one feature family is isolated only a
# few splits faster than the baseline's edge, so its tail probability lands around 1e-3, short of
# the ~3.6e-5 the 0.95 block threshold needs (it adds evidence in the ensemble). What it must do
# on every crafted fault is rank the fault windows as its rarest.


def test_isolation_forest_ranks_a_spike_and_a_level_shift_above_every_normal_window():
    cols = service(1)
    cols["trace|latency_p95_ms"][900] += 40  # 13 sigma, one window
    fault, normal = forest_ranks(frame(cols), [900])
    assert fault.max() < normal.min()
    cols = service(2)
    cols["metric|cpu_usage_mean"][800:950] += 15  # 15 sigma for 150 windows
    fault, normal = forest_ranks(frame(cols), slice(800, 950))
    assert fault.max() < normal.min()
    assert np.median(fault) < np.median(normal) / 20


def test_isolation_forest_sees_a_slow_drift_grow_rarer():
    cols = service(3)
    cols["metric|memory_usage_mean"][NB:] += np.linspace(0, 80, N - NB)
    X = frame(cols)
    det = IsolationForestDetector().fit(X.iloc[:NB])
    p = det.pvalue(X)
    early, late = p[NB : NB + 100], p[N - 100 :]  # within ~3 sigma vs beyond ~13 sigma
    assert np.median(late) < np.median(early) / 20
    assert np.median(early) > 0.05  # the drift's first hundred windows look ordinary


def test_isolation_forest_on_a_constant_series_is_finite_and_ranks_a_step_away_first():
    cols = service(5)
    cols["metric|cpu_usage_mean"] = np.full(N, 7.0)
    cols["log|ERROR_count"] = np.zeros(N)
    X = frame(cols)
    X.iloc[1000:1010, 0] = 9.0
    fault, normal = forest_ranks(X, slice(1000, 1010))
    assert fault.max() < normal.min()


def test_isolation_forest_is_quiet_on_seasonal_data_and_excludes_baseline_contamination():
    X = seasonal(8)
    Y = X.copy()
    Y.iloc[300:320, [0, 2, 3]] *= 3  # a fault inside the baseline
    det = IsolationForestDetector(contamination=0.02).fit(Y.iloc[:1440])
    assert flagged(det, X) == []
    assert np.isfinite(det.decision_function(Y)).all()


# ---- calibration ---------------------------------------------------------------------------


def test_tail_calibrator_is_the_empirical_quantile_in_the_body_and_keeps_falling_beyond_it():
    rng = np.random.default_rng(9)
    s = rng.exponential(1.0, 20_000)
    cal = TailCalibrator(block=1440).fit(s)
    p = cal.pvalue(np.array([0.0, np.log(2), np.log(10), 10.0, 20.0, np.nan]))
    assert p[0] == pytest.approx(1.0)
    assert p[1] == pytest.approx(0.5, abs=0.01)
    assert p[2] == pytest.approx(0.1, abs=0.005)
    assert p[3] == pytest.approx(np.exp(-10), rel=0.3)  # exponential tail extrapolated
    assert 0 < p[4] < p[3]
    assert p[5] == 1.0
    # threshold_ round trip: the score at which the block score reaches 0.95
    q = p_from_block_score(0.95, 1440)
    x = cal.score_at(q)[0]
    assert block_score(cal.pvalue(np.array([x])), 1440)[0] == pytest.approx(0.95, abs=1e-6)


def test_tail_calibrator_trims_a_contaminated_baseline():
    rng = np.random.default_rng(10)
    clean = np.abs(rng.normal(0, 1, 2000))
    dirty = np.concatenate([clean, np.full(60, 40.0)])  # 3% of windows are a fault at 40 sigma
    p_clean = TailCalibrator(block=1440).fit(clean).pvalue(np.array([8.0]))[0]
    p_dirty = TailCalibrator(block=1440).fit(dirty).pvalue(np.array([8.0]))[0]
    assert p_dirty == pytest.approx(p_clean, rel=0.5)
    assert block_score(np.array([p_dirty]), 1440)[0] > 0.95


def test_block_score_is_stable_at_the_extremes():
    s = block_score(np.array([0.0, 1e-300, 1e-9, 0.5, 1.0]), 1440)
    assert s.tolist()[:2] == [1.0, 1.0]
    assert s[2] == pytest.approx(1 - 1440e-9, rel=1e-6)
    assert s[3] == 0.0 and s[4] == 0.0


def test_baseline_scale_floors_keep_counts_and_constants_finite():
    X = frame({"log|ERROR_count": np.zeros(100), "metric|cpu_usage_mean": np.full(100, 3.0)})
    b = SeriesBaseline().fit(X)
    assert b.scale_.tolist() == [1.0, pytest.approx(3e-3)]
    low, high = b.expected_range(X.iloc[:1], 3.5)
    assert low.tolist() == [[0.0, pytest.approx(3.0 - 0.0105)]]
    assert high.tolist() == [[3.5, pytest.approx(3.0 + 0.0105)]]


def test_load_driven_features_follow_the_traffic_so_a_surge_is_not_a_fault():
    rng = np.random.default_rng(11)
    n = 2 * 1440
    t = np.arange(n)
    rate = 100 + 50 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 2, n)
    rate[2000:2025] *= 1.6  # a benign traffic surge
    cpu = 5 + 0.3 * rate + rng.normal(0, 1, n)
    cpu[2400:2430] += 20  # CPU hog: the same CPU rise without the traffic
    X = frame({"metric|request_rate_mean": rate, "metric|cpu_usage_mean": cpu,
               "log|INFO_count": rng.poisson(rate / 2).astype(float)})
    det = RobustZScore().fit(X.iloc[:1440])
    base = det.baseline_
    assert base.features[base.load_] == "metric|request_rate_mean"
    assert np.isfinite(base.slope_).tolist() == [False, True, True]  # CPU and log volume follow traffic
    assert base.slope_[1] == pytest.approx(0.3, abs=0.02)
    flags = det.feature_flags(X)
    cpu_hits = np.flatnonzero(flags[:, 1]).tolist()
    assert cpu_hits == list(range(2400, 2430))  # the hog, not the surge
    assert np.flatnonzero(flags[:, 2]).tolist() == []
