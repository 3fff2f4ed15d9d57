"""`meltrca detect`: per-series detectors and their ensemble -> gold `anomalies`."""

from __future__ import annotations

import argparse
from typing import Any

from meltrca.stages.common import add_detection_arguments, add_lake_argument, detection_overrides, not_implemented

DESCRIPTION = "Fit and score anomaly detectors (z-score, Isolation Forest, LSTM autoencoder) per service."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)
    add_detection_arguments(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fit", action="store_true", help="fit models on the baseline and save them, then score")
    mode.add_argument("--score-only", action="store_true", help="score with the saved models, never refit")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return detection_overrides(args)


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


execute = not_implemented
