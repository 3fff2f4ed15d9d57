"""The service dependency graph, built from spans: caller -> callee with calls, errors, latency."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def call_edges(spans: DataFrame) -> DataFrame:
    """One row per cross-service call: a span whose parent span belongs to another service."""
    child = spans.select(
        "system", "trace_id", "parent_span_id", F.col("service").alias("dst"), "duration_ms", "status", "start_ts"
    ).where(F.col("parent_span_id").isNotNull())
    parent = spans.select("system", "trace_id", F.col("span_id").alias("parent_span_id"), F.col("service").alias("src"))
    return child.join(parent, ["system", "trace_id", "parent_span_id"]).where(F.col("src") != F.col("dst"))


def build_service_graph(spans: DataFrame, *, run_id: str) -> DataFrame:
    """service_graph rows (SPEC §3) per system for the spans given (one run window)."""
    return (
        call_edges(spans)
        .groupBy("system", "src", "dst")
        .agg(
            F.count(F.lit(1)).alias("calls"),
            F.avg(F.when(F.col("status") == "error", 1.0).otherwise(0.0)).alias("error_ratio"),
            F.percentile_approx("duration_ms", 0.5, 1000).cast("double").alias("p50_ms"),
            F.percentile_approx("duration_ms", 0.95, 1000).cast("double").alias("p95_ms"),
            F.min("start_ts").alias("window_start"),
            F.max("start_ts").alias("window_end"),
        )
        .withColumn("run_id", F.lit(run_id))
    )


def graph_from_edge_features(features: DataFrame) -> DataFrame:
    """(system, src, dst) edges implied by `edge:<callee>:...` trace features, for systems whose
    spans are not in the lake window (the features stage already saw them)."""
    callee = F.regexp_extract("feature", r"^edge:(.+):[^:]+$", 1)
    return (
        features.where(F.col("component") == "trace")
        .where(F.col("feature").startswith("edge:"))
        .select("system", F.col("service").alias("src"), callee.alias("dst"))
        .where(F.col("dst") != "")
        .distinct()
    )
