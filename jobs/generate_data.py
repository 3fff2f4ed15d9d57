"""spark-submit entry point for `meltrca generate` (logic in meltrca.stages.generate)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import generate as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("generate", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
