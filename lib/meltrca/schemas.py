"""Schemas of every lake table (SPEC §3), in one place, plus how each table is keyed in time.

Every table has ``system``; time-series tables carry ``date`` (UTC day of their time column)
and are partitioned by it. ``TABLES`` tells the io module which column a run window applies to.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _f(name: str, dtype, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)


STR = StringType()
TS = TimestampType()
DBL = DoubleType()
LONG = LongType()
ATTRS = MapType(StringType(), StringType())

# ---- bronze -------------------------------------------------------------------------------
METRICS = StructType([
    _f("system", STR, False), _f("ts", TS, False), _f("service", STR, False), _f("instance", STR),
    _f("metric", STR, False), _f("value", DBL, False), _f("labels", ATTRS), _f("date", DateType(), False),
])

LOGS = StructType([
    _f("system", STR, False), _f("ts", TS, False), _f("service", STR, False), _f("instance", STR),
    _f("level", STR, False), _f("message", STR, False), _f("trace_id", STR), _f("span_id", STR),
    _f("attributes", ATTRS), _f("date", DateType(), False),
])

SPANS = StructType([
    _f("system", STR, False), _f("trace_id", STR, False), _f("span_id", STR, False),
    _f("parent_span_id", STR), _f("service", STR, False), _f("operation", STR),
    _f("start_ts", TS, False), _f("end_ts", TS, False), _f("duration_ms", DBL, False),
    _f("status", STR, False), _f("kind", STR), _f("attributes", ATTRS), _f("date", DateType(), False),
])

EVENTS = StructType([
    _f("system", STR, False), _f("ts", TS, False), _f("service", STR, False),
    _f("event_type", STR, False), _f("message", STR), _f("attributes", ATTRS),
    _f("date", DateType(), False),
])

QUARANTINE = StructType([
    _f("system", STR), _f("source", STR, False), _f("record", STR), _f("reason", STR, False),
    _f("ingested_at", TS, False), _f("run_id", STR),
])

# ---- silver -------------------------------------------------------------------------------
FEATURES = StructType([
    _f("system", STR, False), _f("service", STR, False), _f("window_start", TS, False),
    _f("window_end", TS, False), _f("component", STR, False), _f("feature", STR, False),
    _f("value", DBL), _f("date", DateType(), False),
])

LOG_TEMPLATES = StructType([
    _f("system", STR, False), _f("template_id", STR, False), _f("template", STR, False),
    _f("example", STR), _f("count", LONG), _f("first_seen", TS), _f("last_seen", TS),
])

# features: log lines per (service, template, window) and level. The log features are computed
# from it, and log_templates' counts and first/last seen summed from it, so a rerun of a window
# replaces rather than adds.
LOG_TEMPLATE_COUNTS = StructType([
    _f("system", STR, False), _f("service", STR, False), _f("template_id", STR, False),
    _f("window_start", TS, False), _f("window_end", TS, False), _f("count", LONG, False),
    _f("error_count", LONG, False), _f("warn_count", LONG, False), _f("info_count", LONG, False),
    _f("debug_count", LONG, False), _f("first_ts", TS), _f("last_ts", TS), _f("date", DateType(), False),
])

# ---- gold ---------------------------------------------------------------------------------
SERVICE_GRAPH = StructType([
    _f("system", STR, False), _f("src", STR, False), _f("dst", STR, False), _f("calls", LONG),
    _f("error_ratio", DBL), _f("p50_ms", DBL), _f("p95_ms", DBL),
    _f("window_start", TS), _f("window_end", TS), _f("run_id", STR),
])

ANOMALIES = StructType([
    _f("anomaly_id", STR, False), _f("system", STR, False), _f("service", STR, False),
    _f("component", STR, False), _f("feature", STR, False), _f("window_start", TS, False),
    _f("window_end", TS, False), _f("value", DBL), _f("expected_low", DBL), _f("expected_high", DBL),
    _f("detector_scores", MapType(StringType(), DoubleType())), _f("ensemble_score", DBL),
    _f("anomaly_type", STR), _f("severity", STR), _f("confidence", DBL),
    _f("cold_start", BooleanType()), _f("run_id", STR), _f("date", DateType(), False),
])

ROOT_CAUSE = StructType([
    _f("service", STR), _f("score", DBL), _f("rank", IntegerType()), _f("indicator", STR),
    _f("evidence", STR),
])

CHAIN_LINK = StructType([
    _f("service", STR), _f("onset", TS), _f("lag_seconds", DBL),
])

INCIDENTS = StructType([
    _f("system", STR, False), _f("incident_id", STR, False), _f("start", TS, False), _f("end", TS),
    _f("services", ArrayType(STR)), _f("anomaly_ids", ArrayType(STR)),
    _f("root_causes", ArrayType(ROOT_CAUSE)), _f("causal_chain", ArrayType(CHAIN_LINK)),
    _f("severity", STR), _f("explanation", STR), _f("explanation_writer", STR),
    _f("run_id", STR), _f("date", DateType(), False),
])

METADATA = StructType([
    _f("anomaly_id", STR, False), _f("system", STR, False), _f("service", STR, False),
    _f("component", STR), _f("feature", STR), _f("timestamp", TS, False), _f("incident_id", STR),
    _f("severity", STR), _f("document", STR, False), _f("explanation_writer", STR),
    _f("run_id", STR), _f("date", DateType(), False),
])

ALERTS = StructType([
    _f("alert_id", STR, False), _f("dedup_key", STR, False), _f("system", STR, False),
    _f("incident_id", STR, False), _f("event", STR, False), _f("payload", STR, False),
    _f("created_at", TS, False), _f("status", STR, False), _f("attempts", IntegerType()),
    _f("last_attempt_at", TS), _f("delivered_at", TS), _f("last_error", STR), _f("sink", STR),
])

RUNS = StructType([
    _f("run_id", STR, False), _f("job", STR, False), _f("systems", ArrayType(STR)),
    _f("parameters", STR), _f("input_start", TS), _f("input_end", TS),
    _f("row_counts", MapType(StringType(), LongType())), _f("status", STR, False),
    _f("started_at", TS, False), _f("ended_at", TS), _f("timings", MapType(StringType(), DoubleType())),
    _f("error", STR),
    # what a person should know of a run that succeeded: a series too short to model, ...
    _f("notes", ArrayType(STR)),
])

MODELS = StructType([
    _f("system", STR, False), _f("service", STR, False), _f("detector", STR, False),
    _f("series", STR), _f("version", STR, False), _f("path", STR, False), _f("format", STR),
    _f("fitted_at", TS), _f("baseline_start", TS), _f("baseline_end", TS), _f("run_id", STR),
    # detection: baseline windows the model learned from; True when too few (z-score only)
    _f("baseline_windows", LONG), _f("cold_start", BooleanType()),
])

# reference baselines recorded at ingest from a source mapping's `reference:` (meltrca.reference)
BASELINES = StructType([
    _f("system", STR, False), _f("start", TS, False), _f("end", TS, False), _f("origin", STR, False),
    _f("run_id", STR),
])

# explain: LLM explanations cached by incident signature (prompt version, model, knowledge base, facts)
EXPLAIN_CACHE = StructType([
    _f("system", STR, False), _f("signature", STR, False), _f("model", STR), _f("explanation", STR, False),
    _f("created_at", TS), _f("run_id", STR),
])


@dataclass(frozen=True)
class TableSpec:
    """How a table is stored: its schema, the column a time window applies to, its partitions."""

    name: str
    schema: StructType
    time_column: str | None
    partition_by: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in [
        TableSpec("metrics", METRICS, "ts", ("date",)),
        TableSpec("logs", LOGS, "ts", ("date",)),
        TableSpec("spans", SPANS, "start_ts", ("date",)),
        TableSpec("events", EVENTS, "ts", ("date",)),
        TableSpec("quarantine", QUARANTINE, "ingested_at"),
        TableSpec("features", FEATURES, "window_start", ("date",)),
        TableSpec("log_templates", LOG_TEMPLATES, None, (), ("system", "template_id")),
        TableSpec("log_template_counts", LOG_TEMPLATE_COUNTS, "window_start", ("date",)),
        TableSpec("service_graph", SERVICE_GRAPH, None, (), ("system", "src", "dst")),
        TableSpec("anomalies", ANOMALIES, "window_start", ("date",), ("anomaly_id",)),
        TableSpec("incidents", INCIDENTS, "start", ("date",), ("incident_id",)),
        TableSpec("metadata", METADATA, "timestamp", ("date",), ("anomaly_id",)),
        TableSpec("alerts", ALERTS, None, (), ("alert_id",)),
        TableSpec("runs", RUNS, None, (), ("run_id",)),
        TableSpec("models", MODELS, None, (), ("system", "service", "detector", "version")),
        TableSpec("explain_cache", EXPLAIN_CACHE, None, (), ("signature",)),
        TableSpec("baselines", BASELINES, None, (), ("system", "start", "end")),
    ]
}

BRONZE = ("metrics", "logs", "spans", "events")
COMPONENTS = ("metric", "log", "trace", "event")
