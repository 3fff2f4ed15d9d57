"""Flags and helpers several stages share."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from meltrca.config import DETECTORS
from meltrca.errors import ConfigError, InputError, MeltrcaError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

MODEL_ALIASES = {"isolation": "isolation_forest", "iforest": "isolation_forest", "zscore": "zscore", "lstm": "lstm"}


class NotImplementedStage(MeltrcaError):
    """The subcommand exists but its stage is not built yet."""


def not_implemented(ctx: Any) -> None:
    raise NotImplementedStage("not implemented yet")


def add_lake_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--lake", required=required, metavar="DIR", help="lake root folder (Delta tables)")


def widest_window_seconds(df: DataFrame) -> int | None:
    """The feature window (seconds) of rows with window_start/window_end; None when there are no rows."""
    from pyspark.sql import functions as F

    width = df.select(F.max(F.unix_timestamp("window_end") - F.unix_timestamp("window_start")).alias("w")).first()
    return None if width is None or width["w"] is None else max(int(width["w"]), 1)


INCREMENTAL_HELP = "only windows after the last succeeded run of this job (watermark in `runs`), up to --end or the newest data"


def add_detection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        metavar="LIST",
        help="detectors: comma list of isolation,zscore,lstm or 'all' (default: detection.enabled)",
    )
    parser.add_argument("--threshold", type=float, metavar="Q", help="ensemble threshold in (0,1] (default 0.95)")
    parser.add_argument(
        "--baseline", action="append", metavar="START/END",
        help="a fault-free reference range (ISO-8601 UTC, repeatable): fit on it and judge sparse series "
             "against it (default: detection.baseline, else the mapping's recorded reference)",
    )


def parse_models(text: str | None) -> list[str] | None:
    """'isolation,zscore' -> ['isolation_forest', 'zscore']; 'all' -> every detector."""
    if text is None:
        return None
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(DETECTORS)
    out: list[str] = []
    for n in names:
        if n not in MODEL_ALIASES:
            raise ConfigError(f"--models: unknown detector {n!r} (use isolation, zscore, lstm or all)")
        if MODEL_ALIASES[n] not in out:
            out.append(MODEL_ALIASES[n])
    if not out:
        raise ConfigError("--models: give at least one detector")
    return out


def detection_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"detection.enabled": parse_models(args.models), "detection.threshold": args.threshold,
            "detection.baseline": getattr(args, "baseline", None)}



def require_tables(root: str, *tables: str) -> None:
    """Preflight: fail before starting Spark when a local lake lacks a table the stage must read.

    Same error as ``Lake.read(required=True)``; nothing is written, so a mistyped --lake never
    leaves a new lake folder (with a `runs` table) behind. Cluster URIs are checked by Spark later.
    """
    from meltrca.io import local_path, missing_table

    folder = local_path(root)
    if folder is None:
        return
    for table in tables:
        if not (folder / table / "_delta_log").is_dir():
            raise missing_table(root, table)


def require_folder(root: str, what: str) -> None:
    """Preflight: a local input folder must exist (cluster URIs are checked by Spark later)."""
    from meltrca.io import local_path

    folder = local_path(root)
    if folder is not None and not folder.exists():
        raise InputError(f"{what} not found: {root}")
