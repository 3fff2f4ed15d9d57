"""Saving and loading fitted detectors in formats that execute no code when loaded.

A saved detector is a few named files (bytes), written wherever the caller stores them:
- ``model.json``: parameters, the baseline, calibration and threshold (all detectors);
- ``model.skops``: the scikit-learn Isolation Forest (skops, loaded with an explicit list of
  trusted types; anything else in the file is refused);
- ``model.keras``: the Keras LSTM autoencoder (Keras v3 format, loaded with safe_mode=True,
  so no lambda/custom code is deserialised).
Never pickle: models sit in a shared lake.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from sklearn.ensemble import IsolationForest

from meltrca.detectors.base import Detector
from meltrca.detectors.iforest import IsolationForestDetector
from meltrca.detectors.lstm import LSTMAutoencoder, keras_module
from meltrca.detectors.zscore import RobustZScore

DETECTOR_CLASSES: dict[str, type[Detector]] = {
    RobustZScore.name: RobustZScore,
    IsolationForestDetector.name: IsolationForestDetector,
    LSTMAutoencoder.name: LSTMAutoencoder,
}
# The only non-builtin types an Isolation Forest file may hold.
TRUSTED_SKOPS_TYPES = ["sklearn.tree._tree.Tree"]
STATE_FILE = "model.json"
MODEL_FILES = {IsolationForestDetector.name: "model.skops", LSTMAutoencoder.name: "model.keras"}
FORMATS = {RobustZScore.name: "json", IsolationForestDetector.name: "skops+json", LSTMAutoencoder.name: "keras+json"}


class UnsafeModelError(ValueError):
    """A model file holds types outside the trusted list."""


def dump_detector(det: Detector) -> dict[str, bytes]:
    """File name -> bytes of a fitted detector."""
    files = {STATE_FILE: json.dumps(det.state(), separators=(",", ":")).encode("utf-8")}
    if isinstance(det, IsolationForestDetector):
        import skops.io as sio

        files[MODEL_FILES[det.name]] = sio.dumps(det.model_)
    elif isinstance(det, LSTMAutoencoder):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            det.model_.save(path)
            with open(path, "rb") as fh:
                files[MODEL_FILES[det.name]] = fh.read()
    return files


def load_detector(files: dict[str, bytes], *, threads: int = 1) -> Detector:
    """A detector from the files dump_detector wrote (safe loaders only)."""
    state: dict[str, Any] = json.loads(files[STATE_FILE].decode("utf-8"))
    name = state["detector"]
    cls = DETECTOR_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"unknown detector {name!r} in saved model")
    det = cls.from_state(state)
    if isinstance(det, IsolationForestDetector):
        import skops.io as sio

        data = files[MODEL_FILES[name]]
        untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_SKOPS_TYPES]
        if untrusted:
            raise UnsafeModelError(f"isolation forest file holds untrusted types: {', '.join(untrusted)}")
        model = sio.loads(data, trusted=TRUSTED_SKOPS_TYPES)
        if not isinstance(model, IsolationForest):
            raise UnsafeModelError(f"isolation forest file holds a {type(model).__name__}, not an IsolationForest")
        det.model_ = model
    elif isinstance(det, LSTMAutoencoder):
        det.threads = threads
        keras = keras_module(threads)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            with open(path, "wb") as fh:
                fh.write(files[MODEL_FILES[name]])
            det.model_ = keras.saving.load_model(path, compile=False, safe_mode=True)
    return det
