"""Validation of mapped rows: normalise levels/status/ids, then one machine-usable reason per bad row.

Reasons (first failing rule wins, in this order) look like ``code: detail``:
``malformed_line`` / ``malformed_json`` / ``malformed_otlp`` (from the reader), ``missing_field``,
``unparsable_timestamp``, ``invalid_number``, ``nan_value``, ``negative_duration``, ``invalid_id``,
``invalid_level``, ``invalid_status``, ``future_timestamp``, ``timestamp_too_old``. Melted metric
cells add `` (column 'X')``. Messages longer than ``ingest.max_message_length`` are truncated
(attribute ``meltrca.truncated``), not rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from meltrca.ingest.mapping import MAP_FIELDS, NUMBER_FIELDS, SIGNAL_SCHEMAS, TIME_FIELDS, required_fields
from meltrca.ingest.records import raw_name
from meltrca.timewindow import utcnow

LEVEL_ALIASES = {
    "WARNING": "WARN", "W": "WARN", "ERR": "ERROR", "E": "ERROR", "FATAL": "ERROR", "CRITICAL": "ERROR",
    "CRIT": "ERROR", "SEVERE": "ERROR", "EMERG": "ERROR", "EMERGENCY": "ERROR", "ALERT": "ERROR",
    "PANIC": "ERROR", "TRACE": "DEBUG", "FINE": "DEBUG", "FINER": "DEBUG", "FINEST": "DEBUG", "D": "DEBUG",
    "NOTICE": "INFO", "INFORMATION": "INFO", "I": "INFO",
}
LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")
STATUS_ALIASES = {
    "ok": "ok", "unset": "ok", "success": "ok", "succeeded": "ok", "0": "ok", "1": "ok",
    "status_code_ok": "ok", "status_code_unset": "ok",
    "error": "error", "err": "error", "fail": "error", "failed": "error", "failure": "error", "2": "error",
    "status_code_error": "error",
}
ID_FIELDS = ("trace_id", "span_id", "parent_span_id")
DETAIL_CHARS = 80


@dataclass(frozen=True)
class ValidationParams:
    """Limits from the ``ingest`` settings (and an input's ``validate`` overrides)."""

    now: datetime
    future_tolerance_hours: float = 24
    min_year: int = 2000
    max_message_length: int = 8192
    trace_id_pattern: str = "^([0-9a-f]{16}|[0-9a-f]{32})$"
    span_id_pattern: str = "^[0-9a-f]{16}$"

    @classmethod
    def from_settings(cls, ingest, overrides: dict[str, str] | None = None) -> ValidationParams:
        o = overrides or {}
        return cls(
            now=utcnow(),
            future_tolerance_hours=float(ingest.future_tolerance_hours),
            min_year=int(ingest.min_year),
            max_message_length=int(ingest.max_message_length),
            trace_id_pattern=o.get("trace_id_pattern", ingest.trace_id_pattern),
            span_id_pattern=o.get("span_id_pattern", ingest.span_id_pattern),
        )

    def id_pattern(self, field: str) -> str:
        return self.trace_id_pattern if field == "trace_id" else self.span_id_pattern


def _lookup(table: dict[str, str], col: Column) -> Column:
    m = F.create_map(*[F.lit(x) for kv in table.items() for x in kv])
    return F.coalesce(F.try_element_at(m, col), col)


def normalise(df: DataFrame, *, signal: str, params: ValidationParams) -> DataFrame:
    """Canonical levels, status, kinds and lower-case hex ids; over-long messages truncated."""
    cols = set(df.columns)
    out = df
    if "level" in cols:
        out = out.withColumn("level", _lookup(LEVEL_ALIASES, F.upper(F.trim("level"))))
    if "status" in cols:
        out = out.withColumn("status", _lookup(STATUS_ALIASES, F.lower(F.trim("status"))))
    if "kind" in cols:
        out = out.withColumn("kind", F.lower(F.trim("kind")))
    for f in ID_FIELDS:
        if f in cols:
            out = out.withColumn(f, F.lower(F.trim(f)))
    if "message" in cols:
        limit = params.max_message_length
        too_long = F.length("message") > limit
        attrs = F.coalesce(F.col("attributes"), F.create_map().cast("map<string,string>"))
        out = out.withColumns(
            {
                "attributes": F.when(
                    too_long, F.map_concat(attrs, F.create_map(F.lit("meltrca.truncated"), F.length("message").cast("string")))
                ).otherwise(F.col("attributes")),
                "message": F.when(too_long, F.substring("message", 1, limit)).otherwise(F.col("message")),
            }
        )
    return out


def _has_raw(df: DataFrame, field: str) -> bool:
    return raw_name(field) in df.columns


def _raw(df: DataFrame, field: str) -> Column:
    """The text a field was read from (for bronze input of the right type: the value as text)."""
    return F.col(raw_name(field)) if _has_raw(df, field) else F.col(field).cast("string")


def _present(df: DataFrame, field: str) -> Column:
    return F.col(raw_name(field) if _has_raw(df, field) else field).isNotNull()


def _quoted(col: Column) -> Column:
    return F.concat(F.lit("'"), F.substring(col, 1, DETAIL_CHARS), F.lit("'"))


def reason_column(df: DataFrame, *, signal: str, params: ValidationParams) -> Column:
    """The first failing rule's reason for each row (null for a good row).

    Raw texts are only formatted for rows that fail (inside ``when``), so clean rows pay no
    string conversions.
    """
    schema = SIGNAL_SCHEMAS[signal]
    fields = [f.name for f in schema.fields if f.name not in ("date",) and f.name not in MAP_FIELDS]
    rules: list[tuple[Column, Column]] = []
    required = ["system", *required_fields(signal)]
    for f in required:
        rules.append((~_present(df, f) if f != "system" else F.col("system").isNull(), F.lit(f"missing_field: {f}")))
    for f in fields:
        if f in TIME_FIELDS and _has_raw(df, f):
            rules.append((F.col(f).isNull() & _present(df, f), F.concat(F.lit(f"unparsable_timestamp: {f} "), _quoted(_raw(df, f)))))
    for f in fields:
        if f in NUMBER_FIELDS:
            if _has_raw(df, f):
                rules.append((F.col(f).isNull() & _present(df, f), F.concat(F.lit(f"invalid_number: {f} "), _quoted(_raw(df, f)))))
            rules.append((F.isnan(f) | (F.abs(f) == float("inf")), F.concat(F.lit(f"nan_value: {f} "), _quoted(_raw(df, f)))))
    if signal == "spans":
        negative = (F.col("duration_ms") < 0) | (F.col("end_ts") < F.col("start_ts"))
        rules.append((negative, F.format_string("negative_duration: %s ms", F.col("duration_ms").cast("string"))))
    for f in ID_FIELDS:
        if f in fields:
            bad = F.col(f).isNotNull() & (~F.col(f).rlike(params.id_pattern(f)) | F.col(f).rlike("^0+$"))
            rules.append((bad, F.concat(F.lit(f"invalid_id: {f} "), _quoted(_raw(df, f)))))
    if signal == "logs":
        rules.append((~F.col("level").isin(*LEVELS), F.concat(F.lit("invalid_level: "), _quoted(_raw(df, "level")))))
    if signal == "spans":
        rules.append((~F.col("status").isin("ok", "error"), F.concat(F.lit("invalid_status: "), _quoted(_raw(df, "status")))))
    latest = params.now + timedelta(hours=params.future_tolerance_hours)
    earliest = datetime(params.min_year, 1, 1)
    for f in fields:
        if f in TIME_FIELDS:
            iso = F.date_format(f, "yyyy-MM-dd'T'HH:mm:ss'Z'")
            rules.append((F.col(f) > F.lit(latest), F.concat(F.lit(f"future_timestamp: {f} "), iso)))
            rules.append((F.col(f) < F.lit(earliest), F.concat(F.lit(f"timestamp_too_old: {f} "), iso)))
    return F.coalesce(F.col("_error"), *[F.when(cond, msg) for cond, msg in rules])


def with_reason(df: DataFrame, *, signal: str, params: ValidationParams) -> DataFrame:
    """Normalised rows with ``_reason`` (null = accepted)."""
    normal = normalise(df, signal=signal, params=params)
    checked = normal.withColumn("_reason", reason_column(normal, signal=signal, params=params))
    in_column = F.col("_series").isNotNull() & F.col("_reason").isNotNull() & F.col("_error").isNull()
    return checked.withColumn(
        "_reason",
        F.when(in_column, F.concat(F.col("_reason"), F.lit(" (column '"), F.col("_series"), F.lit("')"))).otherwise(
            F.col("_reason")
        ),
    )
