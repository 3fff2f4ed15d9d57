"""`meltrca generate`: synthetic MELT telemetry with injected faults and labels.json."""

from __future__ import annotations

import argparse
from typing import Any

from meltrca.stages.common import not_implemented

DESCRIPTION = "Generate synthetic MELT telemetry (metrics, logs, spans, events) with labelled faults."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--services", type=int, help="number of services (default 3)")
    p.add_argument("--duration", type=float, help="hours of telemetry (default 12)")
    p.add_argument("--interval", type=int, help="minutes between metric samples (default 1)")
    p.add_argument("--faults", type=int, help="faults to inject")
    p.add_argument("--seed", type=int, help="random seed (same seed, same output)")
    p.add_argument("--systems", type=int, help="number of monitored systems to generate")
    p.add_argument("--format", choices=["parquet", "delta"], help="table format (default delta)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {f"generate.{k}": getattr(args, k) for k in ("services", "duration", "interval", "faults", "seed", "systems", "format")}


execute = not_implemented
