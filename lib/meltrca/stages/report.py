"""`meltrca report`: one self-contained report.html for a results folder."""

from __future__ import annotations

import argparse

from meltrca.stages.common import not_implemented

DESCRIPTION = "Write a self-contained HTML report (incidents, timelines, dependency graph, evaluation)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR", help="results folder of `meltrca run`")


def lake_root(args: argparse.Namespace) -> str:
    return args.results


execute = not_implemented
