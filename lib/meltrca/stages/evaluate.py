"""`meltrca evaluate`: detection, root-cause and metadata metrics against labels (SPEC §7)."""

from __future__ import annotations

import argparse

from meltrca.stages.common import not_implemented

DESCRIPTION = "Score results against fault labels: precision/recall/F1, AC@k, Avg@5, metadata validity."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR", help="results folder of `meltrca run`")
    p.add_argument("--labels", required=True, metavar="PATH", help="labels.json (or a source mapping's labels)")
    p.add_argument("--metrics", default="accuracy,precision,recall,f1,ac@k", help="metrics to print")


execute = not_implemented
