"""`meltrca ingest`: telemetry files -> validated bronze tables via a source mapping."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from meltrca.stages.common import INCREMENTAL_HELP, add_lake_argument, require_folder

if TYPE_CHECKING:
    from meltrca.ingest import IngestReport
    from meltrca.jobrunner import JobContext

DESCRIPTION = "Ingest telemetry through a source mapping into the bronze lake tables (bad rows to quarantine)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, metavar="YAML", help="source mapping (conf/sources/NAME.yaml)")
    p.add_argument("--path", metavar="DIR", help="root folder of the files (overrides the mapping's root)")
    p.add_argument("--system", help="monitored system name (overrides the mapping's)")
    add_lake_argument(p)
    p.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)


def lake_root(args: argparse.Namespace) -> str:
    return args.lake


def process(ctx: JobContext, *, source: str, path: str | None = None, system: str | None = None) -> IngestReport:
    """Ingest what the mapping (or, for source 'bronze', a generated bronze folder at path) describes."""
    from meltrca.ingest import ingest_bronze_dir, load_mapping, run_ingest

    if source == "bronze":
        if not path:
            from meltrca.errors import ConfigError

            raise ConfigError("--source bronze needs --path (the generated bronze folder)")
        return ingest_bronze_dir(ctx, path, system=system)
    return run_ingest(ctx, load_mapping(source), root=path, system=system)


def preflight(args: argparse.Namespace, settings: Any) -> None:
    """The mapping parses and names real fields, and local input folders exist, before Spark starts."""
    if args.source != "bronze":
        from meltrca.ingest import load_mapping

        load_mapping(args.source)
    if args.path:
        require_folder(args.path, "input folder")


def execute(ctx: JobContext) -> None:
    if ctx.args.incremental:
        from meltrca import incremental as inc

        if not inc.begin(ctx):
            inc.nothing_new(ctx)
            return
        process(ctx, source=ctx.args.source, path=ctx.args.path, system=ctx.args.system)
        if not inc.close(ctx, inc.BRONZE_TABLES):
            inc.nothing_new(ctx)
        return
    process(ctx, source=ctx.args.source, path=ctx.args.path, system=ctx.args.system)
