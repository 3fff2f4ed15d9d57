"""LSTM autoencoder (real TensorFlow training) and safe model files, without Spark."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from meltrca.detectors import IsolationForestDetector, LSTMAutoencoder, RobustZScore
from meltrca.detectors.store import STATE_FILE, UnsafeModelError, dump_detector, load_detector
from test_detectors import NB, N, flagged, frame, seasonal, service

FAST = {"epochs": 8, "sequence_length": 8}


@pytest.fixture(scope="module")
def shifted() -> pd.DataFrame:
    cols = service(21)
    cols["metric|cpu_usage_mean"][800:900] += 10  # level shift
    cols["trace|latency_p95_ms"][1000] += 45  # spike
    return frame(cols)


@pytest.fixture(scope="module")
def lstm(shifted) -> LSTMAutoencoder:
    return LSTMAutoencoder(**FAST).fit(shifted.iloc[:NB])


def test_lstm_trains_with_early_stopping_and_flags_shift_and_spike(lstm, shifted):
    hist = lstm.history_
    assert set(hist) == {"loss", "val_loss"}
    assert 1 <= len(hist["loss"]) <= FAST["epochs"]
    assert hist["loss"][-1] < hist["loss"][0]  # it learned something
    hits = flagged(lstm, shifted)
    assert set(range(800, 900)) | {1000} <= set(hits)
    # Outside the faults at most the few windows whose sequence still holds a fault window.
    stray = [i for i in hits if not (800 <= i < 900 + FAST["sequence_length"] or 1000 <= i < 1000 + FAST["sequence_length"])]
    assert stray == []


def test_lstm_scores_in_chunked_forward_passes_without_tf_function_retracing(lstm, shifted, monkeypatch):
    """Model.predict compiled a tf.function per model and retraced it for every new input length, so
    `make demo` printed TensorFlow's retracing warnings; scoring is now plain forward passes."""
    import logging

    from meltrca.detectors import lstm as lstm_module

    whole = lstm.decision_function(shifted)
    assert whole.shape == (N,) and np.isfinite(whole).all()
    monkeypatch.setattr(lstm_module, "PREDICT_CHUNK", 100)  # many chunks, the last one partial
    np.testing.assert_allclose(lstm.decision_function(shifted), whole, rtol=1e-5, atol=1e-7)
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    tf_log = logging.getLogger("tensorflow")
    tf_log.addHandler(handler)
    try:  # a worker fits and scores one model per service, each on its own number of windows
        for n in (300, 420, 555, 640):
            model = LSTMAutoencoder(**FAST, units=4).fit(shifted.iloc[: n // 2])
            assert np.isfinite(model.decision_function(shifted.iloc[:n])).all()
    finally:
        tf_log.removeHandler(handler)
    assert not [m for m in seen if "retracing" in m]


def test_lstm_is_quiet_on_a_seasonal_day_and_handles_gaps_and_constants():
    X = seasonal(22, days=2)
    det = LSTMAutoencoder(**FAST).fit(X.iloc[:1440])
    assert flagged(det, X) == []
    Y = X.copy()
    Y.iloc[100:400, 0] = np.nan  # a gap
    Y.iloc[:, 2] = 5.0  # a constant column
    Y.iloc[2000, 3] = np.inf
    det = LSTMAutoencoder(**FAST).fit(Y.iloc[:1440])
    assert np.isfinite(det.decision_function(Y)).all()
    assert np.isfinite(det.normalized(Y)).all()
    assert flagged(det, Y) == []  # a gap is missing data, not an anomaly
    Y.iloc[2500:2520, 2] = 6.0  # the constant moves
    assert flagged(det, Y) == list(range(2500, 2520))


def test_lstm_flags_a_slow_drift_once_it_leaves_the_normal_range():
    cols = service(23)
    cols["metric|memory_usage_mean"][NB:] += np.linspace(0, 80, N - NB)
    X = frame(cols)
    det = LSTMAutoencoder(**FAST).fit(X.iloc[:NB])
    hits = flagged(det, X)
    assert not [i for i in hits if i < NB + 100]
    assert set(range(NB + 450, N)) <= set(hits)


def test_a_series_gets_the_same_model_whatever_the_worker_fitted_before(shifted):
    """Executors fit many services in one process: a fit depends only on its data and series seed,
    although models of the same shape share one compiled trainer (and its traced train step)."""
    first = LSTMAutoencoder(**FAST, seed=3).fit(shifted.iloc[:NB]).decision_function(shifted)
    LSTMAutoencoder(**FAST, seed=4).fit(seasonal(25, days=1))  # another service in the same worker
    # same features, other lengths: the trainer sees new batch and held-out shapes, and trains on
    other = LSTMAutoencoder(**FAST, seed=5).fit(shifted.iloc[NB // 3 : NB])
    LSTMAutoencoder(**FAST, seed=6).fit(shifted.iloc[: NB // 5])
    again = LSTMAutoencoder(**FAST, seed=3).fit(shifted.iloc[:NB]).decision_function(shifted)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(other.decision_function(shifted), first)  # its own model, not the last one trained


def test_short_series_scores_without_a_full_sequence():
    X = frame(service(24, n=40))
    det = LSTMAutoencoder(**FAST).fit(X.iloc[:30])
    assert det.decision_function(X.iloc[-3:]).shape == (3,)


# ---- model files ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RobustZScore, IsolationForestDetector, LSTMAutoencoder])
def test_saved_models_reload_with_identical_scores(cls, shifted):
    det = cls(**(FAST if cls is LSTMAutoencoder else {})).fit(shifted.iloc[:NB])
    files = dump_detector(det)
    expected = {RobustZScore: {STATE_FILE}, IsolationForestDetector: {STATE_FILE, "model.skops"},
                LSTMAutoencoder: {STATE_FILE, "model.keras"}}[cls]
    assert set(files) == expected
    assert json.loads(files[STATE_FILE])["detector"] == cls.name
    back = load_detector(files)
    assert type(back) is cls
    np.testing.assert_allclose(back.decision_function(shifted), det.decision_function(shifted), rtol=1e-5)
    np.testing.assert_allclose(back.normalized(shifted), det.normalized(shifted), rtol=1e-5, atol=1e-9)
    assert back.threshold_ == pytest.approx(det.threshold_)


def test_a_skops_file_with_untrusted_types_is_refused(shifted):
    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    det = IsolationForestDetector().fit(shifted.iloc[:NB])
    files = dump_detector(det)
    files["model.skops"] = sio.dumps(make_pipeline(FunctionTransformer(print)))
    with pytest.raises(UnsafeModelError, match="untrusted types: builtins.print"):
        load_detector(files)
    files["model.skops"] = sio.dumps(make_pipeline(FunctionTransformer(np.exp)))  # trusted parts, wrong model
    with pytest.raises(UnsafeModelError, match="holds a Pipeline"):
        load_detector(files)


def test_a_keras_file_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    inp = keras.Input(shape=(8, 5))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)
    path = tmp_path / "evil.keras"
    keras.Model(inp, out).save(path)
    assert zipfile.is_zipfile(path)
    det = LSTMAutoencoder(**FAST)
    det.baseline_ = None
    files = {STATE_FILE: json.dumps(det.state()).encode(), "model.keras": path.read_bytes()}
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        load_detector(files)
