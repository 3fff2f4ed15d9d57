"""spark-submit entry point for `meltrca run` (logic in meltrca.stages.run)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import run as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("run", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
