"""Readers: input files -> raw records (one row per record, with its source and raw text).

Every reader returns a ``RawFrame``: a DataFrame with ``_source`` (``<signal>:<file URI>``),
``_record`` (the raw text as read), ``_error`` (a reader-level reason such as a malformed line,
else null) and the source columns the mapping reads, plus a resolver from source column name to
Column. Text formats are read line by line (``spark.read.text``) so the raw text of every record
is kept for the quarantine; blank lines are not records. CSV records are single lines.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from meltrca.errors import InputError
from meltrca.ingest.fields import FieldSpec
from meltrca.ingest.files import canonical_uri_column, first_line
from meltrca.ingest.mapping import InputSpec, ValueColumn
from meltrca.logs import get_logger

log = get_logger("ingest")

BOM = "\ufeff"


@dataclass
class RawFrame:
    """Raw records of one input and how to reach their source columns."""

    df: DataFrame
    resolve: Callable[[str], Column]
    default_fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    default_maps: Mapping[str, Column] = field(default_factory=dict)
    melted: bool = False


def text_lines(spark: SparkSession, files: list[str], signal: str) -> DataFrame:
    """Non-blank lines of text files with their source label (BOM stripped)."""
    df = spark.read.text(files).select(
        F.regexp_replace("value", f"^{BOM}", "").alias("_record"),
        F.concat(F.lit(f"{signal}:"), canonical_uri_column(F.col("_metadata.file_path"))).alias("_source"),
    )
    return df.where(F.trim("_record") != "")


# ---- CSV (long, semi-wide and wide) -----------------------------------------------------------


def _parse_header(line: str, spec: InputSpec) -> list[str]:
    opts = spec.csv
    row = next(csv.reader([line], delimiter=opts.delimiter, quotechar=opts.quote), [])
    return [c.strip() for c in row]


def header_groups(spark: SparkSession, spec: InputSpec, files: list[str]) -> dict[tuple[str, tuple[str, ...]], list[str]]:
    """Files grouped by their header line (header, columns) -> files, in first-seen order."""
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for f in files:
        if spec.csv.header:
            line = first_line(spark, f)
            key = (line, tuple(_parse_header(line, spec)))
        else:
            key = ("", spec.csv.columns)
        groups.setdefault(key, []).append(f)
    return groups


def check_columns(spec: InputSpec, header: tuple[str, ...], files: list[str]) -> None:
    """Schema drift: a missing required column is an error naming it and the file; the rest is logged."""
    have = set(header)
    missing_required = sorted(spec.required_columns() - have)
    if missing_required:
        raise InputError(f"{spec.signal} file {files[0]}: missing required column(s) {', '.join(missing_required)}")
    missing = sorted(spec.referenced_columns() - have)
    if missing:
        log.warning("%s: %d file(s) lack optional column(s) %s (read as null), e.g. %s",
                    spec.source_label, len(files), ", ".join(missing), files[0])
    if spec.values is None:
        extra = sorted(have - spec.referenced_columns())
        if extra:
            log.info("%s: column(s) %s not mapped (ignored) in %d file(s)", spec.source_label, ", ".join(extra), len(files))


def _value_columns(spec: InputSpec, header: tuple[str, ...]) -> list[tuple[str, ValueColumn, str | None]]:
    """Columns to melt: (column, metric, service from a wide split or None)."""
    assert spec.values is not None
    out: list[tuple[str, ValueColumn, str | None]] = []
    for col, target in spec.values.value_columns(list(header), spec.referenced_columns()):
        service = None
        if spec.values.split is not None:
            parts = spec.values.split.split(target.metric)
            if parts is None:
                log.warning("%s: column %r does not split into service and metric (ignored)", spec.source_label, col)
                continue
            service, metric = parts
            target = ValueColumn(metric, target.scale)
        out.append((col, target, service))
    return out


MELT_COLUMNS = ("_series", "_metric", "_series_service", "_scale", "_value_text")


def _melt_nulls() -> list[Column]:
    return [F.lit(None).cast("double" if c == "_scale" else "string").alias(c) for c in MELT_COLUMNS]


def melt_values(df: DataFrame, columns: list[tuple[str, ValueColumn, str | None]], index: Mapping[str, int]) -> DataFrame:
    """One row per (record, value column): _series, _metric, _series_service, _scale, _value_text.

    A line that does not parse (``_error``) stays one record, not one per column.
    """
    items = [
        F.struct(
            F.lit(col).alias("_series"),
            F.lit(target.metric).alias("_metric"),
            F.lit(service).cast("string").alias("_series_service"),
            F.lit(target.scale).cast("double").alias("_scale"),
            F.col("_parsed")[f"c{index[col]}"].alias("_value_text"),
        )
        for col, target, service in columns
    ]
    unparsed = F.array(F.struct(*_melt_nulls()))
    cells = F.when(F.col("_error").isNull(), F.array(*items)).otherwise(unparsed) if items else unparsed
    exploded = df.withColumn("_cell", F.explode(cells))
    if not items:  # no value column in this header: only its unparsable lines are records
        exploded = exploded.where(F.col("_error").isNotNull())
    return exploded.select("*", "_cell.*").drop("_cell")


def _headerless(spark: SparkSession, spec: InputSpec, files: list[str], aliases: list[str]) -> DataFrame:
    """Lines of CSV files without a header line: no column can be named, so each line is a record
    for quarantine (a zero-byte file has none, and adds nothing)."""
    extra = _melt_nulls() if spec.values is not None else []
    return text_lines(spark, files, spec.signal).select(
        "_source", "_record", F.lit("missing_header: the file has no header line").alias("_error"),
        *[F.lit(None).cast("string").alias(a) for a in aliases], *extra,
    )


def read_csv(spark: SparkSession, spec: InputSpec, files: list[str]) -> RawFrame:
    """CSV / wide CSV files; files with different headers are read per header and aligned by name."""
    needed = sorted(spec.referenced_columns())
    names = {name: f"_c_{i}" for i, name in enumerate(needed)}
    frames: list[DataFrame] = []
    for (line, header), group in header_groups(spark, spec, files).items():
        if spec.csv.header and not header:  # zero-byte files, or a blank first line: no layout to read by
            log.info("%s: %d file(s) without a header line, e.g. %s", spec.source_label, len(group), group[0])
            frames.append(_headerless(spark, spec, group, list(names.values())))
            continue
        check_columns(spec, header, group)
        index = {c: i for i, c in enumerate(header)}
        ddl = ", ".join(f"c{i} STRING" for i in range(len(header))) + ", _corrupt STRING"
        opts = {**spec.csv.spark_options(), "mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
        lines = text_lines(spark, group, spec.signal)
        if spec.csv.header:
            lines = lines.where(F.col("_record") != F.lit(line.lstrip(BOM)))
        parsed = lines.withColumn("_parsed", F.from_csv(F.col("_record"), ddl, opts))
        parsed = parsed.withColumn(
            "_error",
            F.when(
                F.col("_parsed._corrupt").isNotNull(),
                F.lit(f"malformed_line: expected {len(header)} fields"),
            ),
        )
        cols = [
            (F.col("_parsed")[f"c{index[name]}"] if name in index else F.lit(None).cast("string")).alias(alias)
            for name, alias in names.items()
        ]
        if spec.values is not None:
            parsed = melt_values(parsed, _value_columns(spec, header), index)
            extra = list(MELT_COLUMNS)
        else:
            extra = []
        frames.append(parsed.select("_source", "_record", "_error", *cols, *extra))
    df = frames[0]
    for other in frames[1:]:
        df = df.unionByName(other)

    def resolve(name: str) -> Column:
        if name in names:
            return F.col(names[name])
        return F.lit(None).cast("string")

    return RawFrame(df, resolve, melted=spec.values is not None)


# ---- JSON lines ------------------------------------------------------------------------------


def json_path(name: str) -> str:
    """A field name as a JSON path: dotted names walk objects; '$...' is used as given."""
    if name.startswith("$"):
        return name
    if all(part.replace("_", "a").replace("-", "a").isalnum() for part in name.split(".")):
        return "$." + name
    return "$['" + name.replace("'", "\\'") + "']"


def read_jsonl(spark: SparkSession, spec: InputSpec, files: list[str]) -> RawFrame:
    """One JSON object per line; a line that is not a JSON object is a malformed record."""
    needed = sorted(spec.referenced_columns())
    names = {name: f"_c_{i}" for i, name in enumerate(needed)}
    lines = text_lines(spark, files, spec.signal)
    is_object = F.trim("_record").startswith("{") & F.get_json_object("_record", "$").isNotNull()
    df = lines.select(
        "_source",
        "_record",
        F.when(~is_object, F.lit("malformed_json: not a JSON object")).alias("_error"),
        *[F.get_json_object("_record", json_path(n)).alias(a) for n, a in names.items()],
    )
    if spec.values is not None:
        raise InputError(f"source mapping {spec.source_label}: values (melt) is for CSV inputs; map metric and value fields")

    def resolve(name: str) -> Column:
        return F.col(names[name]) if name in names else F.lit(None).cast("string")

    return RawFrame(df, resolve)
