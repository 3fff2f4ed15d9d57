"""spark-submit entry point for `meltrca detect` (logic in meltrca.stages.detect)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import detect as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("detect", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
