"""spark-submit entry point for `meltrca features` (logic in meltrca.stages.features)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import features as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("features", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
