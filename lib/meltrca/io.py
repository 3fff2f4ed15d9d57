"""All Spark I/O: the Delta lake tables of SPEC §3, input folders, and JSON-lines exports.

Writes are window-scoped: ``replace_window`` overwrites exactly the rows of the given systems
inside [start, end) (Delta ``replaceWhere``), so a rerun of the same window replaces rather
than duplicates, and a run killed half-way leaves the previous committed version intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from meltrca.errors import InputError
from meltrca.logs import get_logger
from meltrca.schemas import TABLES, TableSpec
from meltrca.timewindow import TimeWindow

log = get_logger("io")


def sql_str(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def sql_ts(value: datetime) -> str:
    return f"TIMESTAMP'{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def window_predicate(spec: TableSpec, systems: Sequence[str] | None, window: TimeWindow | None) -> str:
    """The replaceWhere / filter predicate for systems and a time window on one table."""
    parts: list[str] = []
    if systems is not None:
        if not systems:
            return "false"
        parts.append(f"system IN ({', '.join(sql_str(s) for s in sorted(set(systems)))})")
    if window is not None and spec.time_column is not None:
        col = f"`{spec.time_column}`"
        if window.start is not None:
            parts.append(f"{col} >= {sql_ts(window.start)}")
            if "date" in spec.partition_by:  # lets Delta prune partitions
                parts.append(f"date >= DATE'{window.start.date().isoformat()}'")
        if window.end is not None:
            parts.append(f"{col} < {sql_ts(window.end)}")
            if "date" in spec.partition_by:
                parts.append(f"date <= DATE'{window.end.date().isoformat()}'")
    return " AND ".join(parts) if parts else "true"


def conform(df: DataFrame, schema: StructType, *, table: str = "", time_column: str | None = None) -> DataFrame:
    """Select the schema's columns in order, cast, derive ``date``; a missing column is an error."""
    cols = set(df.columns)
    if "date" in schema.fieldNames() and "date" not in cols and time_column in cols:
        df = df.withColumn("date", F.to_date(F.col(time_column)))
        cols.add("date")
    missing = [f.name for f in schema.fields if f.name not in cols and not f.nullable]
    if missing:
        raise InputError(f"table {table or '?'}: missing required column(s) {', '.join(missing)}")
    return df.select(
        [
            (F.col(f"`{f.name}`") if f.name in cols else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in schema.fields
        ]
    )


def local_path(root: str) -> Path | None:
    """The local path of a lake/input root (plain path or file://), None for cluster URIs (s3a://, hdfs://)."""
    if "://" in root and not root.startswith("file://"):
        return None
    return Path(root.removeprefix("file://"))


def missing_table(root: str, table: str) -> InputError:
    """The one error for a lake table a stage needs and nobody wrote yet."""
    return InputError(f"lake table '{table}' not found at {root.rstrip('/')}/{table} (run the stage that writes it first)")


class Lake:
    """The embedded lake: one Delta table per SPEC §3 table under a root folder (or URI)."""

    def __init__(self, spark: SparkSession, root: str | os.PathLike[str]) -> None:
        self.spark = spark
        self.root = str(root)

    def path(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def spec(self, table: str) -> TableSpec:
        try:
            return TABLES[table]
        except KeyError:
            raise InputError(f"unknown lake table {table!r}") from None

    def exists(self, table: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.path(table))

    def empty(self, table: str) -> DataFrame:
        return self.spark.createDataFrame([], self.spec(table).schema)

    def read(
        self,
        table: str,
        *,
        systems: Sequence[str] | None = None,
        window: TimeWindow | None = None,
        required: bool = False,
    ) -> DataFrame:
        """Rows of a table for systems and a window; an absent table reads as empty unless required."""
        spec = self.spec(table)
        if not self.exists(table):
            if required:
                raise missing_table(self.root, table)
            return self.empty(table)
        df = self.spark.read.format("delta").load(self.path(table))
        pred = window_predicate(spec, systems, window)
        return df if pred == "true" else df.where(pred)

    def replace_window(
        self,
        table: str,
        df: DataFrame,
        *,
        systems: Sequence[str] | None,
        window: TimeWindow | None,
    ) -> None:
        """Overwrite the rows of `systems` in `window` with `df` (rows outside are an error)."""
        spec = self.spec(table)
        out = conform(df, spec.schema, table=table, time_column=spec.time_column)
        writer = out.write.format("delta").option("mergeSchema", "false")
        if not self.exists(table):
            if spec.partition_by:
                writer = writer.partitionBy(*spec.partition_by)
            writer.mode("overwrite").save(self.path(table))
            return
        pred = window_predicate(spec, systems, window)
        if pred == "true":
            writer.mode("overwrite").save(self.path(table))
        else:
            writer.mode("overwrite").option("replaceWhere", pred).save(self.path(table))
        log.debug("replaced %s where %s", table, pred)

    def overwrite(self, table: str, df: DataFrame, *, systems: Sequence[str] | None = None) -> None:
        """Replace every row of `systems` (all rows when None)."""
        self.replace_window(table, df, systems=systems, window=None)

    def append(self, table: str, df: DataFrame) -> None:
        spec = self.spec(table)
        out = conform(df, spec.schema, table=table, time_column=spec.time_column)
        writer = out.write.format("delta").mode("append")
        if not self.exists(table) and spec.partition_by:
            writer = writer.partitionBy(*spec.partition_by)
        writer.save(self.path(table))

    def merge(self, table: str, df: DataFrame, *, keys: Sequence[str] | None = None) -> None:
        """Upsert rows by key columns (idempotent for redelivered or retried writes)."""
        from delta.tables import DeltaTable

        spec = self.spec(table)
        keys = list(keys or spec.keys)
        out = conform(df, spec.schema, table=table, time_column=spec.time_column)
        if not self.exists(table):
            self.append(table, out)
            return
        cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        (
            DeltaTable.forPath(self.spark, self.path(table))
            .alias("t")
            .merge(out.alias("s"), cond)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .withSchemaEvolution()  # a column the contract added since the table was made (runs.notes)
            .execute()
        )

    def insert_new(self, table: str, df: DataFrame, *, keys: Sequence[str] | None = None) -> None:
        """Insert only rows whose keys are not in the table yet (an outbox: existing rows keep their state)."""
        from delta.tables import DeltaTable

        spec = self.spec(table)
        keys = list(keys or spec.keys)
        out = conform(df, spec.schema, table=table, time_column=spec.time_column).dropDuplicates(keys)
        if not self.exists(table):
            self.append(table, out)
            return
        cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        DeltaTable.forPath(self.spark, self.path(table)).alias("t").merge(
            out.alias("s"), cond
        ).whenNotMatchedInsertAll().execute()

    def delete(self, table: str, predicate: str) -> None:
        from delta.tables import DeltaTable

        if self.exists(table):
            DeltaTable.forPath(self.spark, self.path(table)).delete(predicate)

    def replace_where(self, table: str, df: DataFrame, predicate: str) -> None:
        """Atomically overwrite the rows matching any SQL predicate (e.g. by quarantine source) with `df`."""
        if not self.exists(table):
            self.append(table, df)
            return
        spec = self.spec(table)
        out = conform(df, spec.schema, table=table, time_column=spec.time_column)
        out.write.format("delta").mode("overwrite").option("replaceWhere", predicate).save(self.path(table))


# ---- input folders ----------------------------------------------------------------------------


def detect_format(path: str | os.PathLike[str]) -> str:
    """'delta' when the folder holds a _delta_log, else 'parquet'."""
    return "delta" if Path(path, "_delta_log").is_dir() else "parquet"


def read_table_dir(spark: SparkSession, path: str | os.PathLike[str], fmt: str | None = None) -> DataFrame:
    """A bronze-shaped folder written by `meltrca generate` (Delta or Parquet)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input folder not found: {p}")
    return spark.read.format(fmt or detect_format(p)).load(str(p))


def write_table_dir(df: DataFrame, path: str | os.PathLike[str], fmt: str, partition_by: Iterable[str] = ()) -> None:
    writer = df.write.format(fmt).mode("overwrite")
    cols = list(partition_by)
    if cols:
        writer = writer.partitionBy(*cols)
    writer.save(str(path))


# ---- JSON lines ---------------------------------------------------------------------------


def write_jsonl(lines: Iterable[str], path: str | os.PathLike[str]) -> int:
    """Write JSON documents one per line, atomically (temp file + rename). Returns the count."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line.rstrip("\n") + "\n")
            n += 1
    os.replace(tmp, target)
    return n


def iter_column(df: DataFrame, column: str) -> Iterator[Any]:
    """Stream one column to the driver a partition at a time (never collect a big table)."""
    for row in df.select(column).toLocalIterator():
        yield row[0]


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ---- model artifacts (files beside the tables; written by executors) --------------------------


def _artifact_fs(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for a local path or a URI pyarrow understands (hdfs://, s3://, gs://)."""
    from pyarrow import fs

    if "://" not in uri or uri.startswith("file://"):
        return fs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://"))
    return fs.FileSystem.from_uri(uri.replace("s3a://", "s3://", 1))


def write_artifact(uri: str, data: bytes) -> None:
    """Write one file atomically (temp name + move), creating folders: reruns just replace it."""
    filesystem, path = _artifact_fs(uri)
    parent = path.rsplit("/", 1)[0]
    filesystem.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.tmp-{os.getpid()}"
    with filesystem.open_output_stream(tmp) as fh:
        fh.write(data)
    filesystem.move(tmp, path)


def read_artifact(uri: str) -> bytes:
    filesystem, path = _artifact_fs(uri)
    try:
        with filesystem.open_input_stream(path) as fh:
            return fh.read()
    except FileNotFoundError:
        raise InputError(f"model file not found: {uri}") from None


def list_artifacts(uri: str) -> list[str]:
    """Names of the files directly inside a folder (empty when it does not exist)."""
    from pyarrow import fs

    filesystem, path = _artifact_fs(uri)
    infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == fs.FileType.File and not i.base_name.startswith("."))


# ---- scratch tables for iterative jobs ---------------------------------------------------------


class Scratch:
    """Intermediate DataFrames of an iterative algorithm, written as Parquet and read back.

    Why not ``localCheckpoint``: a checkpointed plan keeps the statistics of the plan it came from,
    and the size estimate of an iterated self-join multiplies each round as an uncapped BigInt
    (SPARK-52163): the driver spends minutes multiplying and then overflows or runs out of heap.
    Data read back from files starts with fresh statistics (file sizes). The folder lives under
    ``base`` (jobs pass a folder of the lake: storage every executor and the driver share) or else
    Spark's checkpoint dir, and is deleted by ``close``.
    """

    def __init__(self, spark: SparkSession, name: str, base: str | None = None) -> None:
        import uuid

        base = base or spark.sparkContext.getCheckpointDir() or spark.conf.get(
            "spark.checkpoint.dir", os.path.join(os.environ.get("TMPDIR", "/tmp"), "meltrca-checkpoints")
        )
        self.spark = spark
        self.root = f"{base.rstrip('/')}/meltrca-scratch/{name}-{uuid.uuid4().hex[:12]}"
        self._n = 0

    def reread(self, df: DataFrame) -> DataFrame:
        """``df`` computed once, stored, and returned as a plain file scan."""
        path = f"{self.root}/{self._n:04d}"
        self._n += 1
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.parquet(path)

    def keep(self, df: DataFrame) -> DataFrame:
        """A result that must outlive ``close``: cached on the executors (its plan is a file scan,
        so the local checkpoint inherits sane statistics)."""
        return df.localCheckpoint()

    def close(self) -> None:
        """Delete this run's folder, then its parents (meltrca-scratch/, the base) if nothing else is in them."""
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(self.root)
        fs = path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        fs.delete(path, True)
        for parent in (path.getParent(), path.getParent().getParent()):
            try:
                if fs.exists(parent) and len(fs.listStatus(parent)) == 0:
                    fs.delete(parent, False)
            except Exception:  # another run's files arrived meanwhile: leave the folder
                return

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
