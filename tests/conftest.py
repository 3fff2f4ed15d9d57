"""Shared fixtures: one local[2] Spark session for the whole run, temp lakes, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
NEZHA = DATASETS / "nezha-trainticket-2023-01-30"

os.environ.setdefault("TZ", "UTC")
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")


@pytest.fixture(scope="session")
def settings():
    from meltrca.config import load_settings

    return load_settings(environ={})


@pytest.fixture(scope="session")
def spark(tmp_path_factory, settings):
    """local[2], 2 shuffle partitions, UI off, UTC, temp warehouse and checkpoint dirs."""
    from meltrca.logs import setup_logging
    from meltrca.spark import build_session

    setup_logging("WARNING")
    tmp = tmp_path_factory.mktemp("spark")
    session = build_session(
        settings,
        master="local[2]",
        app_name="meltrca-tests",
        extra={
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.sql.warehouse.dir": str(tmp / "warehouse"),
            "spark.checkpoint.dir": str(tmp / "checkpoints"),
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.sql.adaptive.enabled": "false",
        },
    )
    yield session
    session.stop()


@pytest.fixture
def lake(spark, tmp_path):
    from meltrca.io import Lake

    return Lake(spark, tmp_path / "lake")


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 900):
    """Run `meltrca ...` as a real subprocess (the installed console script)."""
    exe = Path(sys.executable).with_name("meltrca")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout
    )
