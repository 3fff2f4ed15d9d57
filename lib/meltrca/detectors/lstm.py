"""LSTM autoencoder over sequences of a service's windows; reconstruction error is the score.

The model reads ``sequence_length`` consecutive windows of standardised residuals and must
reproduce them through a small bottleneck. Trained on the (clean) baseline only, it learns how
the service's features move together over time; a window it cannot reconstruct breaks that
pattern. A window's score is the error on the last step of the sequence ending at it (the first
windows use the first sequence). Training: Adam, MSE, early stopping on a held-out tail of the
baseline (the best epoch's weights are kept); inference is batched forward passes.

Training runs its own epoch loop of ``train_on_batch`` on a compiled model kept per input shape in
the process (``_trainer``), not ``Model.fit``: a worker fits hundreds of small service models,
and fit's per-call and per-epoch machinery (a traced train function per new model, a tf.data
pipeline and callbacks every epoch) cost more than the training itself: about 2-4x the time
(issue 19: 650 service models). Each fit starts from the weights a freshly built model gets from
the series seed and from an optimizer as new, and shuffles with a NumPy generator of that seed,
so the result does not depend on which models the process trained before. The trained weights
are copied into that fresh model, which is what scores and is saved.

TensorFlow runs on CPU with ``threads`` intra-op threads (executors share few cores; one thread
also keeps sums in one order). Every fit reseeds Python, NumPy, TensorFlow and Keras from the
series seed, so a service's model does not depend on which worker process fits it or what it
fitted before. (tf enable_op_determinism is not needed for that on one CPU thread, and makes
tf.data log an error-level line per fit.)
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from meltrca.detectors.base import Detector, model_inputs

_THREADS_SET = False
PREDICT_CHUNK = 4096  # sequences per forward pass when scoring (bounds the activations held at once)
# compiled models (with their optimizer's starting state) by (features, sequence length, units)
_TRAINERS: dict[tuple[int, ...], tuple[Any, list[np.ndarray]]] = {}
MAX_TRAINERS = 32


def keras_module(threads: int = 1) -> Any:
    """Import Keras (TensorFlow backend, CPU, quiet) with a bounded thread pool, once per process."""
    global _THREADS_SET
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN prints an error-level line on CPUs without AVX-512 and then falls back to Eigen anyway.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    if not _THREADS_SET:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # the runtime was initialised earlier in this process: keep its pools
            pass
        _THREADS_SET = True
    return keras


def sequences(A: np.ndarray, length: int) -> np.ndarray:
    """Sliding windows (n - length + 1, length, k) over rows of A (a view, no copy)."""
    return np.lib.stride_tricks.sliding_window_view(A, length, axis=0).transpose(0, 2, 1)


class LSTMAutoencoder(Detector):
    name: ClassVar[str] = "lstm"
    tau_floor: ClassVar[float] = 1e-4

    def __init__(self, *, sequence_length: int = 10, epochs: int = 20, batch_size: int = 64,
                 patience: int = 3, units: int = 16, threads: int = 1, **kw: Any) -> None:
        super().__init__(**kw)
        self.sequence_length = int(sequence_length)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.patience = int(patience)
        self.units = int(units)
        self.threads = int(threads)
        self.model_: Any = None
        self.history_: dict[str, list[float]] = {}

    def _build(self, k: int) -> Any:
        keras = keras_module(self.threads)
        layers = keras.layers
        inp = keras.Input(shape=(self.sequence_length, k))
        x = layers.LSTM(self.units)(inp)
        x = layers.RepeatVector(self.sequence_length)(x)
        x = layers.LSTM(self.units, return_sequences=True)(x)
        out = layers.TimeDistributed(layers.Dense(k))(x)
        model = keras.Model(inp, out)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=5e-3), loss="mse")
        return model

    def _trainer(self, k: int, start: Any) -> Any:
        """This process's compiled model for k features (built once per shape: its traced train
        step is reused), set to `start`'s weights with its optimizer as new."""
        key = (k, self.sequence_length, self.units)
        if key not in _TRAINERS:
            if len(_TRAINERS) >= MAX_TRAINERS:
                _TRAINERS.pop(next(iter(_TRAINERS)))
            model = self._build(k)
            model.optimizer.build(model.trainable_variables)  # its slots now, to snapshot their start
            _TRAINERS[key] = (model, [np.array(v.numpy()) for v in model.optimizer.variables])
        trainer, optimizer_start = _TRAINERS[key]
        trainer.set_weights(start.get_weights())
        for var, value in zip(trainer.optimizer.variables, optimizer_start, strict=True):
            var.assign(value)  # step 0, empty moments, the configured learning rate
        return trainer

    def _fit_core(self, Z: np.ndarray, clean: np.ndarray) -> np.ndarray:
        keras = keras_module(self.threads)
        keras.utils.set_random_seed(self.seed)
        A = model_inputs(Z).astype("float32")
        L = self.sequence_length
        self.model_ = self._build(A.shape[1])
        if len(A) < L:
            return clean
        seqs = sequences(A, L)
        # Train only on sequences made entirely of clean windows.
        ok = sequences(clean.reshape(-1, 1).astype(np.int8), L).reshape(len(seqs), -1).all(axis=1)
        train = np.ascontiguousarray(seqs[ok] if ok.sum() >= 8 else seqs)
        held = int(len(train) * 0.1) if len(train) >= 50 else 0  # the tail, as fit's validation_split
        fit, val = train[: len(train) - held], train[len(train) - held :]
        trainer = self._trainer(A.shape[1], self.model_)
        rng = np.random.default_rng(self.seed)
        history: dict[str, list[float]] = {"loss": [], **({"val_loss": []} if held else {})}
        best, best_weights, waited = np.inf, trainer.get_weights(), 0
        for _ in range(self.epochs):
            order = rng.permutation(len(fit))
            total = 0.0
            for i in range(0, len(fit), self.batch_size):
                batch = fit[order[i : i + self.batch_size]]
                total += float(np.asarray(trainer.train_on_batch(batch, batch)).reshape(-1)[0]) * len(batch)
            history["loss"].append(total / len(fit))
            if held:
                # test_on_batch: the compiled loss (an eager call of the model costs 5x a training step)
                history["val_loss"].append(float(np.asarray(trainer.test_on_batch(val, val)).reshape(-1)[0]))
            monitored = history["val_loss" if held else "loss"][-1]
            if monitored < best:
                best, best_weights, waited = monitored, trainer.get_weights(), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        self.model_.set_weights(best_weights)
        self.history_ = history
        return clean

    def _calibration_scores(self, baseline_scores: np.ndarray) -> np.ndarray:
        # In-sample errors are optimistic: scale them by held-out / training loss at the best epoch.
        val, loss = self.history_.get("val_loss"), self.history_.get("loss")
        if not val or not loss:
            return baseline_scores
        best = int(np.argmin(val))
        ratio = val[best] / loss[best] if loss[best] > 0 else 1.0
        return baseline_scores * float(np.clip(ratio, 1.0, 3.0))

    def reconstruction_errors(self, Z: np.ndarray) -> np.ndarray:
        """(n, k) squared error per window and feature, from batched forward passes."""
        if self.model_ is None:
            raise RuntimeError("lstm detector is not fitted")
        A = model_inputs(Z).astype("float32")
        n, k = A.shape
        L = self.sequence_length
        if n == 0 or k == 0:
            return np.zeros((n, k))
        if n < L:  # too short for one sequence: pad with expected values (0)
            A = np.vstack([np.zeros((L - n, k), dtype="float32"), A])
        seqs = np.ascontiguousarray(sequences(A, L))
        # A direct (eager) call per chunk, not Model.predict: predict compiles a tf.function per model
        # and retraces it for every new input length (each service, baseline vs. scoring, the last
        # partial batch), which is slower and what TensorFlow's "retracing" warnings were about.
        step = max(PREDICT_CHUNK, self.batch_size)
        recon = np.concatenate(
            [np.asarray(self.model_(seqs[i : i + step], training=False)) for i in range(0, len(seqs), step)]
        )
        err = (seqs - recon) ** 2  # (m, L, k)
        out = np.vstack([err[0, : L - 1], err[:, -1]])  # first windows from the first sequence
        return out[-n:].astype(float)

    def _score_core(self, Z: np.ndarray) -> np.ndarray:
        if Z.shape[1] == 0:
            return np.zeros(len(Z))
        return self.reconstruction_errors(Z).mean(axis=1)

    def params(self) -> dict[str, Any]:
        return {
            **super().params(), "sequence_length": self.sequence_length, "epochs": self.epochs,
            "batch_size": self.batch_size, "patience": self.patience, "units": self.units, "threads": self.threads,
        }

    def _core_state(self) -> dict[str, Any]:
        return {"history": self.history_}

    def _load_core_state(self, state: dict[str, Any]) -> None:
        self.history_ = dict(state.get("history") or {})
