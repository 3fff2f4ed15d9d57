"""spark-submit entry point for `meltrca ingest` (logic in meltrca.stages.ingest)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import ingest as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("ingest", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
