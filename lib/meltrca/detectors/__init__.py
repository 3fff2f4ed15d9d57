"""Anomaly detectors as plain pandas/numpy classes (no Spark), one pyod-like interface.

- baseline.SeriesBaseline: robust, seasonality-aware standardisation shared by all detectors;
- zscore.RobustZScore, iforest.IsolationForestDetector, lstm.LSTMAutoencoder: the detectors;
- calibration: raw score -> tail probability -> [0, 1] on the ensemble's scale;
- service: fit/score one service's feature matrix and build anomaly rows (the ensemble);
- classify: anomaly type, severity, confidence; store: safe (no-pickle) model files.
"""

from meltrca.detectors.base import Detector
from meltrca.detectors.baseline import SeriesBaseline
from meltrca.detectors.iforest import IsolationForestDetector
from meltrca.detectors.lstm import LSTMAutoencoder
from meltrca.detectors.zscore import RobustZScore

__all__ = ["Detector", "IsolationForestDetector", "LSTMAutoencoder", "RobustZScore", "SeriesBaseline"]
