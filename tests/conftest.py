"""Shared fixtures: one local[2] Spark session for the whole run, temp lakes, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
NEZHA = DATASETS / "nezha-trainticket-2023-01-30"

os.environ.setdefault("TZ", "UTC")
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")


# Tests move kilobytes per query, where compiling generated code costs more than it saves: the
# interpreted plans (same results, Spark's own suites run both) make the suite ~25% faster. Tests
# on millions of rows switch code generation back on with `compiled_plans`.
INTERPRETED = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
COMPILED = {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK"}


@contextmanager
def compiled_plans(spark) -> Iterator[None]:
    """Whole-stage code generation on (Spark's default) inside the block, interpreted again after."""
    for k, v in COMPILED.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in INTERPRETED.items():
            spark.conf.set(k, v)


def set_comparable(df):
    """Map columns as JSON of their sorted entries, so that set operations (distinct, exceptAll) accept them."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType

    return df.select([F.to_json(F.array_sort(F.map_entries(f.name))).alias(f.name) if isinstance(f.dataType, MapType)
                      else F.col(f.name) for f in df.schema.fields])


@pytest.fixture(scope="session")
def settings():
    from meltrca.config import load_settings

    return load_settings(environ={})


@pytest.fixture(scope="session")
def spark(tmp_path_factory, settings):
    """local[2], 2 shuffle partitions, UI off, UTC, temp warehouse and checkpoint dirs, interpreted plans."""
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
            **INTERPRETED,
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
