"""`meltrca explain`: anomaly metadata documents and incident explanations."""

from __future__ import annotations

import argparse
from typing import Any

from meltrca.stages.common import add_lake_argument, not_implemented

DESCRIPTION = "Write anomaly metadata (SPEC §5) and incident explanations (template or LLM), plus alerts."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lake_argument(p)
    p.add_argument("--writer", choices=["template", "llm"], help="explanation writer (default explain.writer)")
    p.add_argument("--output", metavar="DIR", help="folder for metadata.jsonl / incidents.jsonl (default: the lake)")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"explain.writer": args.writer}


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


execute = not_implemented
