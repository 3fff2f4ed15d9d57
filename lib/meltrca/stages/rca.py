"""`meltrca rca`: service graph, cross-signal incidents and ranked root causes."""

from __future__ import annotations

import argparse

from meltrca.stages.common import add_lake_argument, not_implemented

DESCRIPTION = "Group anomalies into incidents and rank their root-cause services along the dependency graph."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


execute = not_implemented
