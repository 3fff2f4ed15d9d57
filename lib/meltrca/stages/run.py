"""`meltrca run`: the whole pipeline on the embedded lake under --output."""

from __future__ import annotations

import argparse
from typing import Any

from meltrca.stages.common import add_detection_arguments, detection_overrides, not_implemented

DESCRIPTION = "Run ingest -> features -> detect -> rca -> explain -> export -> report into --output."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="DIR", help="bronze folder (from generate) or files for --source")
    p.add_argument("--source", metavar="YAML", help="source mapping for --input (default: bronze tables)")
    p.add_argument("--output", required=True, metavar="DIR", help="results folder (lake + JSON + report)")
    add_detection_arguments(p)
    p.add_argument("--incremental", action="store_true", help="only windows after the last successful run")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return detection_overrides(args)


def lake_root(args: argparse.Namespace) -> str:
    return args.output


execute = not_implemented
