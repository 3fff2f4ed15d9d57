"""The Spark side of generation: a small DataFrame of work units, expanded to rows by
mapInArrow on the executors. The driver never holds generated rows."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from meltrca.generate.labels import event_rows
from meltrca.generate.plan import GenerationPlan
from meltrca.generate.units import TABLE_UNIT_KINDS, Unit, expected_rows, plan_units, unit_batches
from meltrca.io import conform
from meltrca.schemas import TABLES

UNIT_SCHEMA = StructType([
    StructField("kind", StringType(), False), StructField("system", IntegerType(), False),
    StructField("hour", IntegerType(), False), StructField("instance", IntegerType(), False),
    StructField("shard", IntegerType(), False), StructField("shards", IntegerType(), False),
    StructField("weight", DoubleType(), False),
])
ROWS_PER_TASK = 1_000_000  # big enough to amortise task and file overhead, small enough to spread


def units_frame(spark: SparkSession, plan: GenerationPlan, table: str) -> DataFrame:
    """The units that produce rows of `table`, sliced into tasks of about ROWS_PER_TASK rows
    (at least two tasks per core). Slicing changes which task runs a unit, never its rows."""
    units = [u for u in plan_units(plan) if u.kind in TABLE_UNIT_KINDS[table]]
    units.sort(key=lambda u: (u.system, u.hour, u.kind, u.instance, u.shard))
    rows = sum(expected_rows(u, table, plan.interval) for u in units)
    slices = max(1, min(len(units), max(spark.sparkContext.defaultParallelism * 2, math.ceil(rows / ROWS_PER_TASK))))
    rdd = spark.sparkContext.parallelize([u.row() for u in units], slices)
    return spark.createDataFrame(rdd, UNIT_SCHEMA)


def _raw_schema(table: str) -> StructType:
    """The bronze schema without `date` (conform derives it), every field nullable for Arrow."""
    return StructType([StructField(f.name, f.dataType, True) for f in TABLES[table].schema.fields if f.name != "date"])


def table_frame(spark: SparkSession, plan: GenerationPlan, plan_json: str, table: str) -> DataFrame:
    """Rows of one bronze table (metrics, spans or logs), generated on the executors."""

    def produce(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for row in batch.to_pylist():
                yield from unit_batches(plan_json, Unit(**row), table)

    spec = TABLES[table]
    raw = units_frame(spark, plan, table).mapInArrow(produce, _raw_schema(table))
    return conform(raw, spec.schema, table=table, time_column=spec.time_column)


def events_frame(spark: SparkSession, plan: GenerationPlan) -> DataFrame:
    spec = TABLES["events"]
    raw = spark.createDataFrame(event_rows(plan), _raw_schema("events"))
    return conform(raw, spec.schema, table="events", time_column=spec.time_column)
