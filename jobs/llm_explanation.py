"""spark-submit entry point for `meltrca explain` (logic in meltrca.stages.explain)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import explain as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("explain", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
