"""Spark transforms that gather what an explanation needs, from the lake's own tables.

Per incident (``incident_facts``): the ranked root cause and its strongest signal with the
baseline range, when each service started to deviate, change events shortly before, the most
frequent ERROR/WARN log lines, mined log templates behind template anomalies, and the other
candidates. The facts are one JSON document per incident: the template writer and the LLM
writer both read only this document.

Per anomaly (``anomaly_context``): its incident, the incident's root cause and first service,
its own onset lag, change events on its service, a baseline range when detect left none, and the
template text behind a template feature.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from meltrca.explain.knowledge_base import Evidence, KnowledgeBase, Signal
from meltrca.explain.text import sanitize_tree

JSON_OPTIONS = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss'Z'", "ignoreNullFields": "false"}
SEVERITIES = ("low", "medium", "high", "critical")
# a log template's count, or the share of requests writing it (features.patterns)
TEMPLATE_FEATURE = r"^(?:template_(.+)_count|pattern:log:([^@]+)@.*)$"
FACTS_SCHEMA = StructType([
    StructField("system", StringType(), False),
    StructField("incident_id", StringType(), False),
    StructField("facts_json", StringType(), False),
])


def finite(col: Column | str) -> Column:
    """NaN -> null, so to_json never writes the invalid token NaN."""
    c = F.col(col) if isinstance(col, str) else col
    return F.when(F.isnan(c), F.lit(None).cast("double")).otherwise(c)


def epoch(col: Column | str) -> Column:
    """Seconds since the epoch (double) of a timestamp column."""
    return (F.col(col) if isinstance(col, str) else col).cast("double")


def sorted_structs(items: Column, *, drop: list[str], limit: int | None = None) -> Column:
    """array_sort of structs whose leading fields are sort keys, keys dropped, first `limit` kept."""
    arr = F.array_sort(items)
    arr = F.transform(arr, lambda s: s.dropFields(*drop))
    return F.slice(arr, 1, limit) if limit else arr


# ---- membership and onsets -----------------------------------------------------------------------


def incident_members(incidents: DataFrame, anomalies: DataFrame) -> DataFrame:
    """Anomaly rows with their incident_id; an anomaly listed by two incidents stays with the earlier."""
    listed = incidents.select(
        "system", "incident_id", F.col("start").alias("_start"), F.explode("anomaly_ids").alias("anomaly_id")
    )
    first = Window.partitionBy("system", "anomaly_id").orderBy("_start", "incident_id")
    listed = listed.withColumn("_rn", F.row_number().over(first)).where("_rn = 1").drop("_rn", "_start")
    return listed.join(anomalies, ["system", "anomaly_id"])


def service_onsets(members: DataFrame) -> DataFrame:
    """(system, incident_id, service, onset, lag_seconds, onset_rank): first non-event anomaly per service."""
    onsets = (
        members.where(F.col("component") != "event")
        .groupBy("system", "incident_id", "service")
        .agg(F.min("window_start").alias("onset"))
    )
    inc = Window.partitionBy("system", "incident_id")
    return onsets.withColumn("lag_seconds", epoch("onset") - F.min(epoch("onset")).over(inc)).withColumn(
        "onset_rank", F.row_number().over(inc.orderBy("onset", "service"))
    )


def changes_near(targets: DataFrame, events: DataFrame, *, lookback_minutes: float, key: str) -> DataFrame:
    """Change events on each target's service from `lookback` before its onset until its end.

    targets: (key, system, service, onset, until) -> (key, system, service, event_type, event_ts,
    minutes_before, message); minutes_before < 0 means the event came after the onset.
    """
    ev = events.select(
        "system", "service", F.col("ts").alias("event_ts"), F.lower("event_type").alias("event_type"), "message"
    )
    joined = targets.join(ev, ["system", "service"]).where(
        (epoch("event_ts") >= epoch("onset") - F.lit(lookback_minutes * 60.0)) & (F.col("event_ts") <= F.col("until"))
    )
    return joined.select(
        key, "system", "service", "event_type", "event_ts",
        ((epoch("onset") - epoch("event_ts")) / 60.0).alias("minutes_before"), "message",
    )


def template_texts(members: DataFrame, templates: DataFrame) -> DataFrame:
    """(anomaly_id, system, template_text) for anomalies on a mined log template feature."""
    tagged = members.select(
        "anomaly_id", "system", F.concat(F.regexp_extract("feature", TEMPLATE_FEATURE, 1),
                                         F.regexp_extract("feature", TEMPLATE_FEATURE, 2)).alias("template_id")
    ).where(F.col("template_id") != "")
    return tagged.join(templates.select("system", "template_id", F.col("template").alias("template_text")),
                       ["system", "template_id"]).drop("template_id")


# ---- per incident ---------------------------------------------------------------------------------


def _ranked_root_causes(incidents: DataFrame) -> DataFrame:
    keyed = F.transform(
        F.coalesce(F.col("root_causes"), F.array()),
        lambda r: F.struct(
            F.coalesce(r["rank"], F.lit(1 << 30)).alias("_rank"),
            (-F.coalesce(finite(r["score"]), F.lit(0.0))).alias("_neg"),
            r["service"].alias("service"),
            F.round(finite(r["score"]), 3).alias("score"),
            r["indicator"].alias("indicator"),
            r["evidence"].alias("evidence"),
        ),
    )
    return incidents.withColumn("_rc", sorted_structs(keyed, drop=["_rank", "_neg"]))


def _severity_rank(col: Column) -> Column:
    return F.coalesce(F.array_position(F.array(*[F.lit(s) for s in SEVERITIES]), F.lower(col)), F.lit(0))


def incident_facts(
    incidents: DataFrame,
    members: DataFrame,
    onsets: DataFrame,
    events: DataFrame,
    logs: DataFrame,
    templates: DataFrame,
    *,
    params: Mapping[str, Any],
) -> DataFrame:
    """(system, incident_id, facts_json): the structured facts of each incident (see module doc).

    params: lookback_minutes, max_log_lines, max_log_chars, max_signals, max_events, max_onsets.
    """
    base = _ranked_root_causes(incidents).select(
        "system", "incident_id", "start", F.coalesce("end", "start").alias("end"), "severity",
        F.array_sort(F.coalesce("services", F.array())).alias("services"),
        F.try_element_at("_rc", F.lit(1)).alias("root_cause"), F.slice("_rc", 2, 2).alias("other_candidates"),
    )
    root_service = base.select("system", "incident_id", F.col("root_cause.service").alias("root_service"),
                               F.col("root_cause.indicator").alias("root_indicator"))

    m = members.join(root_service, ["system", "incident_id"], "left")
    signal = F.struct(
        (-F.coalesce(finite("ensemble_score"), F.lit(0.0))).alias("_neg"),
        "service", "component", "feature", "anomaly_type",
        F.round(finite("ensemble_score"), 3).alias("peak_score"),
    )
    per_series = m.groupBy("system", "incident_id", "service", "component", "feature").agg(
        F.max_by("anomaly_type", "ensemble_score").alias("anomaly_type"),
        F.max("ensemble_score").alias("ensemble_score"),
        F.first("root_service").alias("root_service"),
    )
    signals = per_series.groupBy("system", "incident_id").agg(
        sorted_structs(F.collect_list(signal), drop=["_neg"], limit=params["max_signals"]).alias("signals"),
        sorted_structs(
            F.collect_list(F.when(F.col("service") == F.col("root_service"), signal)), drop=["_neg"],
            limit=params["max_signals"],
        ).alias("root_signals"),
    )
    counts = members.groupBy("system", "incident_id").agg(F.count("*").alias("anomaly_count"))

    # The root cause's strongest signal: its RCA indicator first, then the highest score.
    indicator_match = F.when(F.col("feature") == F.col("root_indicator"), 0).when(
        F.col("root_indicator").isNotNull()
        & (F.instr("feature", F.coalesce("root_indicator", F.lit("\u0000"))) > 0), 1
    ).otherwise(2)
    pick = Window.partitionBy("system", "incident_id").orderBy(
        indicator_match, F.desc_nulls_last("ensemble_score"), "window_start", "component", "feature"
    )
    root_signal = (
        m.where(F.col("service") == F.col("root_service"))
        .withColumn("_rn", F.row_number().over(pick))
        .where("_rn = 1")
        .select("system", "incident_id", F.struct(
            "service", "component", "feature", F.round(finite("value"), 4).alias("value"),
            F.round(finite("expected_low"), 4).alias("expected_low"),
            F.round(finite("expected_high"), 4).alias("expected_high"),
            F.col("window_start").alias("at"), "anomaly_type", "severity",
        ).alias("root_signal"))
    )

    onset_list = onsets.groupBy("system", "incident_id").agg(
        sorted_structs(
            F.collect_list(F.struct("onset_rank", "service", "onset", F.round("lag_seconds", 1).alias("lag_seconds"))),
            drop=["onset_rank"], limit=params["max_onsets"],
        ).alias("onsets")
    )

    services = base.select("system", "incident_id", F.explode("services").alias("service"), "start", "end")
    targets = services.select("incident_id", "system", "service", F.col("start").alias("onset"),
                              F.col("end").alias("until"))
    changes = changes_near(targets, events, lookback_minutes=params["lookback_minutes"], key="incident_id")
    change_list = changes.groupBy("system", "incident_id").agg(
        sorted_structs(
            F.collect_list(F.struct(
                F.col("event_ts").alias("_ts"), "service", "event_type", F.col("event_ts").alias("at"),
                F.round("minutes_before", 1).alias("minutes_before"),
                F.substring("message", 1, params["max_log_chars"] * 2).alias("message"),
            )),
            drop=["_ts"], limit=params["max_events"],
        ).alias("change_events")
    )

    log_list = _log_evidence(base, root_service, logs, params)

    patterns = template_texts(members, templates).join(
        members.select("anomaly_id", "system", "incident_id", "service", "feature", "ensemble_score"),
        ["anomaly_id", "system"],
    )
    pattern_list = patterns.groupBy("system", "incident_id", "service", "feature", "template_text").agg(
        F.max("ensemble_score").alias("score")
    ).groupBy("system", "incident_id").agg(
        sorted_structs(
            F.collect_list(F.struct(
                (-F.coalesce(finite("score"), F.lit(0.0))).alias("_neg"), "service", "feature",
                F.substring("template_text", 1, params["max_log_chars"] * 2).alias("template"),
            )),
            drop=["_neg"], limit=params["max_log_lines"],
        ).alias("log_patterns")
    )

    worst = members.groupBy("system", "incident_id").agg(F.max(_severity_rank(F.col("severity"))).alias("_sev"))
    empty = F.array()
    facts = (
        base.join(counts, ["system", "incident_id"], "left")
        .join(worst, ["system", "incident_id"], "left")
        .join(signals, ["system", "incident_id"], "left")
        .join(root_signal, ["system", "incident_id"], "left")
        .join(onset_list, ["system", "incident_id"], "left")
        .join(change_list, ["system", "incident_id"], "left")
        .join(log_list, ["system", "incident_id"], "left")
        .join(pattern_list, ["system", "incident_id"], "left")
    )
    severity = F.when(_severity_rank(F.col("severity")) > 0, F.lower("severity")).otherwise(
        F.element_at(
            F.array(*[F.lit(s) for s in SEVERITIES]),
            F.least(F.greatest(F.coalesce("_sev", F.lit(1)), F.lit(1)), F.lit(len(SEVERITIES))).cast("int"),
        )
    )
    doc = F.struct(
        "system", "incident_id", "start", "end", severity.alias("severity"), "services",
        F.coalesce("anomaly_count", F.lit(0)).alias("anomaly_count"),
        "root_cause", "root_signal", "other_candidates",
        F.coalesce("onsets", empty).alias("onsets"),
        F.coalesce("change_events", empty).alias("change_events"),
        F.coalesce("log_evidence", empty).alias("log_evidence"),
        F.coalesce("log_patterns", empty).alias("log_patterns"),
        F.coalesce("root_signals", empty).alias("root_signals"),
        F.coalesce("signals", empty).alias("signals"),
    )
    return facts.select("system", "incident_id", F.to_json(doc, JSON_OPTIONS).alias("facts_json"))


def _log_evidence(base: DataFrame, root_service: DataFrame, logs: DataFrame, params: Mapping[str, Any]) -> DataFrame:
    """Most frequent ERROR/WARN lines of the incident's services during it (root cause's first)."""
    spans = base.select("system", "incident_id", F.explode("services").alias("service"), "start", "end").join(
        root_service, ["system", "incident_id"], "left"
    )
    lines = logs.select(
        "system", "service", "ts", F.upper("level").alias("level"),
        F.substring("message", 1, params["max_log_chars"] * 2).alias("message"),
    ).where(F.col("level").isin("ERROR", "WARN", "FATAL", "CRITICAL"))
    hit = spans.join(lines, ["system", "service"]).where((F.col("ts") >= F.col("start")) & (F.col("ts") <= F.col("end")))
    # Lines that differ only in numbers (ids, durations) count as one; the earliest is the example.
    shape = F.regexp_replace("message", "[0-9]+([.,][0-9]+)*", "#")
    grouped = hit.groupBy("system", "incident_id", "service", "root_service", "level", shape.alias("_shape")).agg(
        F.count("*").alias("count"), F.min_by("message", F.struct("ts", "message")).alias("message")
    )
    item = F.struct(
        F.when(F.col("service") == F.col("root_service"), 0).otherwise(1).alias("_root"),
        F.when(F.col("level") == "WARN", 1).otherwise(0).alias("_warn"),
        (-F.col("count")).alias("_neg"),
        "service", "level", "count", "message",
    )
    return grouped.groupBy("system", "incident_id").agg(
        sorted_structs(F.collect_list(item), drop=["_root", "_warn", "_neg"], limit=params["max_log_lines"]).alias(
            "log_evidence"
        )
    )


# ---- finishing the facts in Python: sanitising and likely causes -----------------------------------


def facts_evidence(facts: Mapping[str, Any]) -> Evidence:
    """The knowledge-base evidence of an incident: its root cause's signals (indicator first)."""
    root = (facts.get("root_cause") or {}).get("service")
    primary = facts.get("root_signal")
    signals = [Signal(s["component"], s["feature"], s.get("anomaly_type")) for s in facts.get("root_signals") or []]
    if primary:
        first = Signal(primary["component"], primary["feature"], primary.get("anomaly_type"))
        signals = [first, *[s for s in signals if s != first]]
    incident = tuple(Signal(s["component"], s["feature"], s.get("anomaly_type")) for s in facts.get("signals") or [])
    changes = tuple(sorted({c["event_type"] for c in facts.get("change_events") or [] if c.get("service") == root}))
    return Evidence(tuple(signals), incident, changes)


def finish_facts(facts: Mapping[str, Any], kb: KnowledgeBase, *, max_causes: int, max_chars: int) -> dict[str, Any]:
    """Facts with every string sanitised and the knowledge base's likely causes added."""
    clean = sanitize_tree(dict(facts), max_chars)
    clean["suggested_causes"] = kb.suggest(facts_evidence(clean), max_causes)
    return clean


def finish_incident_facts(facts: DataFrame, *, kb_plain: Mapping[str, Any], max_causes: int, max_chars: int) -> DataFrame:
    """mapInPandas over incidents: finish_facts on each facts_json (closure holds plain values only)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        kb = KnowledgeBase.from_plain(kb_plain)
        for pdf in batches:
            done = [
                json.dumps(finish_facts(json.loads(text), kb, max_causes=max_causes, max_chars=max_chars),
                           ensure_ascii=False, separators=(",", ":"))
                for text in pdf["facts_json"]
            ]
            yield pd.DataFrame({"system": pdf["system"], "incident_id": pdf["incident_id"], "facts_json": done})

    return facts.select("system", "incident_id", "facts_json").mapInPandas(run, FACTS_SCHEMA)


# ---- per anomaly -----------------------------------------------------------------------------------


def baseline_ranges(anomalies: DataFrame, features: DataFrame, *, minutes: float) -> DataFrame:
    """(anomaly_id, system, base_low, base_high): p5-p95 of the series in the `minutes` before the anomaly,
    for anomalies whose detector left no expected range."""
    need = anomalies.where(F.col("expected_low").isNull() | F.col("expected_high").isNull()).select(
        "anomaly_id", "system", "service", "component", "feature", "window_start"
    )
    hist = features.select("system", "service", "component", "feature",
                           F.col("window_start").alias("_ws"), "value")
    joined = need.join(hist, ["system", "service", "component", "feature"]).where(
        (F.col("_ws") < F.col("window_start")) & (epoch("_ws") >= epoch("window_start") - F.lit(minutes * 60.0))
    )
    q = F.percentile_approx(finite("value"), F.array(F.lit(0.05), F.lit(0.95)))
    return joined.groupBy("anomaly_id", "system").agg(q.alias("_q")).select(
        "anomaly_id", "system", F.col("_q")[0].alias("base_low"), F.col("_q")[1].alias("base_high")
    )


def anomaly_context(
    anomalies: DataFrame,
    members: DataFrame,
    onsets: DataFrame,
    explained: DataFrame,
    facts: DataFrame,
    events: DataFrame,
    templates: DataFrame,
    baselines: DataFrame,
    correlated: DataFrame,
    *,
    lookback_minutes: float,
) -> DataFrame:
    """One row per anomaly with everything ``documents.metadata_document`` reads (JSON-string columns
    for nested values, so the pandas side sees plain strings)."""
    membership = members.select("system", "anomaly_id", "incident_id")
    first = onsets.where("onset_rank = 1").select(
        "system", "incident_id", F.col("service").alias("first_service"), F.col("onset").alias("first_onset")
    )
    own = onsets.select("system", "incident_id", "service", F.col("lag_seconds").alias("own_lag_seconds"))
    parsed = facts.select(
        "system", "incident_id",
        F.get_json_object("facts_json", "$.root_cause.service").alias("root_service"),
        F.get_json_object("facts_json", "$.root_cause.indicator").alias("root_indicator"),
        F.get_json_object("facts_json", "$.signals").alias("incident_signals_json"),
    )
    texts = explained.select("system", "incident_id", F.col("explanation").alias("incident_explanation"),
                             F.col("explanation_writer").alias("incident_writer"))
    targets = anomalies.select("anomaly_id", "system", "service", F.col("window_start").alias("onset"),
                               F.col("window_end").alias("until"))
    change_list = changes_near(targets, events, lookback_minutes=lookback_minutes, key="anomaly_id").groupBy(
        "anomaly_id", "system"
    ).agg(
        F.to_json(sorted_structs(
            F.collect_list(F.struct(
                F.col("event_ts").alias("_ts"), "event_type", F.col("event_ts").alias("at"),
                F.round("minutes_before", 1).alias("minutes_before"), F.substring("message", 1, 600).alias("message"),
            )),
            drop=["_ts"], limit=5,
        ), JSON_OPTIONS).alias("change_events_json")
    )
    return (
        anomalies.join(membership, ["system", "anomaly_id"], "left")
        .join(first, ["system", "incident_id"], "left")
        .join(own, ["system", "incident_id", "service"], "left")
        .join(parsed, ["system", "incident_id"], "left")
        .join(texts, ["system", "incident_id"], "left")
        .join(change_list, ["anomaly_id", "system"], "left")
        .join(template_texts(anomalies, templates), ["anomaly_id", "system"], "left")
        .join(baselines, ["anomaly_id", "system"], "left")
        .join(correlated, ["anomaly_id", "system"], "left")
    )
