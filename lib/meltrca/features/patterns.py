"""Per-request event patterns: the signal code faults leave (native Spark over spans ⋈ logs).

A code fault (an exception, a wrong return value, a skipped branch) changes *what a request does*
more than how long it takes: a log statement on the normal path is no longer written, a new
ERROR line appears, a call to a downstream service is skipped or added, spans end in error.
Resource metrics do not move. So, per request to a service, we record which events happened and
follow the share of requests that show each event.

- A *request* to a service is one (trace, service): its entry span (no parent, a parent not in
  the data, or a parent of another service; the earliest when a trace enters the service more
  than once) gives the operation and the window.
- Its *events*: ``log:<template_id>`` for each log template the service wrote in that trace,
  ``call:<callee>`` for each other service its spans called, ``error`` when one of its spans in
  that trace has status error.
- Features (component ``trace``), per (system, service, window) and operation ``op``:
  ``pattern:requests@<op>`` (requests in the window) and ``pattern:<event>@<op>``: the share of
  those requests showing the event. Every event ever seen on (service, op) in the run is 0, not
  missing, in a window where (service, op) had requests without it: an absent log line is the
  signal of a skipped code path.

`detection.pattern_anomalies` judges these shares against the other windows of the same series.
"""

from __future__ import annotations

import math
import re

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from meltrca.features import FeatureParams, window_start_of, with_window
from meltrca.indicators import PATTERN_PREFIX

REQUESTS = "requests"
UNKNOWN_OPERATION = "unknown"
# 'pattern:<event>@<operation>' (the event holds no '@'); one grammar for Spark and Python
NAME = r"^pattern:([^@]*)@(.*)$"
_NAME = re.compile(NAME, re.S)


def describe(service: str, feature: str, share: float | None, normal: float | None, text: str | None = None) -> str | None:
    """A person's reading of one pattern anomaly, e.g. "ts-pay-service: log 'Start charge card' now
    missing in 92% of requests to POST /pay (normally in 100%)"; None for other features."""
    m = _NAME.match(feature or "")
    if not m or m.group(1) == REQUESTS or share is None or normal is None or not (math.isfinite(share) and math.isfinite(normal)):
        return None
    event, op = m.groups()
    if event.startswith("log:"):
        what = f"log '{text}'" if text else f"log template {event[4:]}"
    elif event.startswith("call:"):
        what = f"the call to {event[5:]}"
    else:
        what = "an error status" if event == "error" else event
    if share < normal:
        return f"{service}: {what} now missing in {1 - share:.0%} of requests to {op} (normally in {normal:.0%})"
    return f"{service}: {what} now in {share:.0%} of requests to {op} (normally in {normal:.0%})"


def is_pattern(feature: F.Column | str = "feature") -> F.Column:
    """Whether a feature name is a request pattern (judged by detection.pattern_anomalies only)."""
    return (F.col(feature) if isinstance(feature, str) else feature).startswith(PATTERN_PREFIX)


def feature_name(event: F.Column, operation: F.Column) -> F.Column:
    """'pattern:<event>@<operation>'."""
    return F.concat(F.lit(PATTERN_PREFIX), event, F.lit("@"), operation)


def with_parent_service(spans: DataFrame) -> DataFrame:
    """Spans with the service of their parent span (null: no parent in the data)."""
    parents = spans.select("system", "trace_id", F.col("span_id").alias("parent_span_id"),
                           F.col("service").alias("parent_service"))
    return spans.join(parents, ["system", "trace_id", "parent_span_id"], "left")


def request_units(linked: DataFrame) -> DataFrame:
    """(system, trace_id, service, operation, ts): one row per request to a service."""
    entry = linked.where(F.col("parent_service").isNull() | (F.col("parent_service") != F.col("service")))
    first = F.min_by(F.struct(F.coalesce(F.col("operation"), F.lit(UNKNOWN_OPERATION)).alias("operation"),
                              F.col("start_ts").alias("ts")), F.col("start_ts"))
    return entry.groupBy("system", "trace_id", "service").agg(first.alias("_e")).select(
        "system", "trace_id", "service", "_e.operation", "_e.ts")


def request_events(linked: DataFrame, request_templates: DataFrame | None, *, params: FeatureParams) -> DataFrame:
    """(system, trace_id, service, window_start, event), distinct: what each request to a service
    did, by the window it happened in (a request counts only what happened in its own window)."""
    start = window_start_of(F.col("start_ts"), params.seconds).alias("window_start")
    calls = linked.where(F.col("parent_service").isNotNull() & (F.col("parent_service") != F.col("service"))).select(
        "system", "trace_id", F.col("parent_service").alias("service"), start,
        F.concat(F.lit("call:"), "service").alias("event"))
    errors = linked.where(F.lower("status") == "error").select(
        "system", "trace_id", "service", start, F.lit("error").alias("event"))
    events = calls.unionByName(errors)
    if request_templates is not None:
        events = events.unionByName(request_templates.select(
            "system", "trace_id", "service", "window_start", F.concat(F.lit("log:"), "template_id").alias("event")))
    return events.distinct()


def with_event_and_operation(features: DataFrame) -> DataFrame:
    """The pattern rows of a features table with their name parsed into event and operation."""
    return (features.where((F.col("component") == "trace") & is_pattern())
            .withColumn("event", F.regexp_extract("feature", NAME, 1))
            .withColumn("operation", F.regexp_extract("feature", NAME, 2)))


def known_patterns(features: DataFrame) -> DataFrame:
    """(system, service, operation, event) of the pattern shares in a features table: a windowed
    run fills zeros for the events seen before its start, as count features do."""
    return (with_event_and_operation(features).where(F.col("event") != REQUESTS)
            .select("system", "service", "operation", "event").distinct())


def pattern_features(spans: DataFrame, request_templates: DataFrame | None, *, params: FeatureParams,
                     known: DataFrame | None = None) -> DataFrame:
    """Long feature rows (FEATURE_COLUMNS, component 'trace') of per-request event shares.

    request_templates: (system, trace_id, service, template_id, window_start) of the logs that carry
    a trace id (None: no logs, so calls and errors only). known: known_patterns of the windows before
    a windowed run.

    Causal and incremental-stable: a request counts the events of its own window only (a line
    written just after the window closed belongs to no request: a run split there sees the same), and
    an event's share is 0, not missing, from the first window it was seen on (service, operation)
    onwards (or from the run's start when `known` names it), never before."""
    linked = with_parent_service(spans)
    units = request_units(linked).transform(with_window, ts="ts", params=params)
    keys = ["system", "service", "operation", "window_start", "window_end"]
    requests = units.groupBy(*keys).agg(F.count(F.lit(1)).alias("requests"))
    hits = (
        units.join(request_events(linked, request_templates, params=params), ["system", "trace_id", "service", "window_start"])
        .groupBy(*keys, "event").agg(F.count(F.lit(1)).alias("hits"))
    )
    catalog = hits.select("system", "service", "operation", "event", "window_start")
    if known is not None:
        catalog = catalog.unionByName(known.withColumn("window_start", F.lit(None).cast("timestamp")))
    # known before the run: zeros from its start (first_seen null)
    catalog = catalog.groupBy("system", "service", "operation", "event").agg(
        F.when(F.bool_or(F.col("window_start").isNull()), F.lit(None)).otherwise(F.min("window_start")).alias("first_seen"))
    shares = (
        requests.join(catalog, ["system", "service", "operation"])
        .where(F.col("first_seen").isNull() | (F.col("window_start") >= F.col("first_seen")))
        .join(hits, [*keys, "event"], "left")
        .select(*keys, feature_name(F.col("event"), F.col("operation")).alias("feature"),
                F.try_divide(F.coalesce(F.col("hits"), F.lit(0)).cast("double"), F.col("requests")).alias("value"))
    )
    counts = requests.select(*keys, feature_name(F.lit(REQUESTS), F.col("operation")).alias("feature"),
                             F.col("requests").cast("double").alias("value"))
    return shares.unionByName(counts).select(
        "system", "service", "window_start", "window_end", F.lit("trace").alias("component"), "feature", "value")
