"""spark-submit entry point for `meltrca queue` (logic in meltrca.stages.queue)."""

from __future__ import annotations

import sys

from meltrca.jobrunner import run_stage
from meltrca.stages import queue as stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("queue", stage, argv)


if __name__ == "__main__":
    sys.exit(main())
