"""spark-submit entry point for `meltrca report` (logic in meltrca.stages.report)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import report as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("report", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
