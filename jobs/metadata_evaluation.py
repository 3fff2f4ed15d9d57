"""spark-submit entry point for `meltrca evaluate` (logic in meltrca.stages.evaluate)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import evaluate as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("evaluate", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
