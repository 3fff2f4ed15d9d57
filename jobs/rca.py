"""spark-submit entry point for `meltrca rca` (logic in meltrca.stages.rca)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import rca as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("rca", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
