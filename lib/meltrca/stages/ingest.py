"""`meltrca ingest`: telemetry files -> validated bronze tables via a source mapping."""

from __future__ import annotations

import argparse

from meltrca.stages.common import add_lake_argument, not_implemented

DESCRIPTION = "Ingest telemetry through a source mapping into the bronze lake tables (bad rows to quarantine)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, metavar="YAML", help="source mapping (conf/sources/NAME.yaml)")
    p.add_argument("--path", metavar="DIR", help="root folder of the files (overrides the mapping's root)")
    p.add_argument("--system", help="monitored system name (overrides the mapping's)")
    add_lake_argument(p)


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


execute = not_implemented
