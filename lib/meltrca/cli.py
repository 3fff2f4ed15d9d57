"""The `meltrca` console script: one subcommand per job in jobs/ (same code, same flags)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from meltrca import __version__

# subcommand -> (module in jobs/ (installed as meltrca_jobs), stage module in meltrca.stages)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate_data", "generate"),
    "ingest": ("ingest", "ingest"),
    "features": ("features", "features"),
    "detect": ("detect", "detect"),
    "rca": ("rca", "rca"),
    "explain": ("llm_explanation", "explain"),
    "run": ("anomaly_detection", "run"),
    "evaluate": ("metadata_evaluation", "evaluate"),
    "report": ("report", "report"),
    "queue": ("event_queue", "queue"),
}


def usage() -> str:
    lines = [
        "usage: meltrca <command> [options]   (meltrca <command> --help for its options)",
        "",
        "Find anomalies in microservice telemetry (MELT) and name their root causes.",
        "",
        "commands:",
    ]
    for name, (_, stage) in SUBCOMMANDS.items():
        desc = importlib.import_module(f"meltrca.stages.{stage}").DESCRIPTION
        lines.append(f"  {name:<10} {desc}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"meltrca {__version__}")
        return 0
    name = args[0]
    if name not in SUBCOMMANDS:
        print(f"meltrca: error: unknown command {name!r} (one of: {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    job = importlib.import_module(f"meltrca_jobs.{SUBCOMMANDS[name][0]}")
    return int(job.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
