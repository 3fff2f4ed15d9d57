"""`meltrca queue`: deliver pending alerts from the `alerts` outbox to a sink."""

from __future__ import annotations

import argparse

from meltrca.stages.common import not_implemented

DESCRIPTION = "Deliver pending incident alerts to a JSON-lines file or an HTTP webhook (at-least-once, deduplicated)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR", help="results folder / lake root holding `alerts`")
    p.add_argument("--sink", required=True, metavar="SINK", help="jsonl:PATH or webhook:URL")


def lake_root(args: argparse.Namespace) -> str:
    return args.results


execute = not_implemented
