"""`meltrca features`: bronze -> silver windowed features (and log templates)."""

from __future__ import annotations

import argparse

from meltrca.stages.common import add_lake_argument, not_implemented

DESCRIPTION = "Build windowed features (metric, log, trace, event) from the bronze tables."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)
    p.add_argument("--window", help="tumbling window, e.g. '1 minute' (default features.window)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"features.window": args.window}


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


execute = not_implemented
