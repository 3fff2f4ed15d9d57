"""Windowed features from bronze: the silver ``features`` table (long format), native Spark only.

Tumbling windows of ``features.window`` (aligned to the epoch) per system, service and window;
instances are aggregated per service. Feature names (detectors, RCA and explanations key on
them; see the cross-team conventions):

- metric: ``<metric>_<agg>`` for agg in ``features.metric_aggregates`` (mean, max, p95, ...).
- log: ``<LEVEL>_count`` (ERROR, WARN, INFO, DEBUG), ``log_count``, ``error_ratio`` (ERROR /
  all), ``new_template_count`` (lines whose template was first seen in this window),
  ``rare_template_count`` (lines of templates seen fewer than ``templates.rare_count`` times up
  to the end of that window), ``template_<id>_count`` (WARN + ERROR lines of one template).
- trace: service-level stats over *entry* spans (no parent, a parent not in the data, or a parent
  of another service): ``request_count``, ``error_count``, ``error_ratio``, ``latency_p50_ms`` ...;
  per caller->callee edge on the caller (parent span's service != child's):
  ``edge:<callee>:call_count|error_ratio|latency_pNN_ms``, and, where the parent is the caller's
  client span of that call (kind ``client``, or kind unknown and the call its only child),
  ``edge:<callee>:network_gap_pNN_ms``: how much longer the caller waited than the callee worked
  (network, proxies, connection queues). A delay on the callee's network shows only there: its
  own server spans stay fast while every caller waits.
- event: ``<event_type>_count``.

Percentiles are ``percentile_approx`` (nearest rank; exact for small groups). With
``features.fill_zero_counts`` a count feature is 0, not missing, in a window where the system
sent that signal but the service did not (silence is a signal; unexported gaps are not zeros):
for every series in the run, and in a windowed run also for those seen in the
``features.fill_lookback_minutes`` before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from meltrca.indicators import PATTERN_PREFIX
from meltrca.timewindow import TimeWindow

FEATURE_COLUMNS = ("system", "service", "window_start", "window_end", "component", "feature", "value")
WINDOW_KEYS = ("system", "service", "window_start", "window_end")
LEVELS = ("ERROR", "WARN", "INFO", "DEBUG")
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
PERCENTILE_ACCURACY = 10000


def window_seconds(text: str) -> int:
    """'1 minute' / '30 seconds' / '2 hours' -> seconds (validated by the config constraints)."""
    n, unit = str(text).split()
    return int(n) * UNIT_SECONDS[unit.rstrip("s")]


def align_window(window: TimeWindow, seconds: int) -> TimeWindow:
    """The run window widened to whole feature windows (start floored, end ceiled)."""

    def floor(t: datetime) -> datetime:
        epoch = datetime(1970, 1, 1)
        return epoch + timedelta(seconds=int((t - epoch).total_seconds() // seconds) * seconds)

    start = floor(window.start) if window.start else None
    end = None
    if window.end:
        end = floor(window.end)
        if end < window.end:
            end += timedelta(seconds=seconds)
    return TimeWindow(start, end)


@dataclass(frozen=True)
class FeatureParams:
    """The ``features`` settings a transform needs (plain values)."""

    seconds: int = 60
    aggregates: tuple[str, ...] = ("mean", "max", "p95")
    percentiles: tuple[float, ...] = (50, 95, 99)
    rare_count: int = 3
    fill_zero_counts: bool = True
    fill_lookback_minutes: float = 60

    @classmethod
    def from_settings(cls, features: Mapping) -> FeatureParams:
        return cls(
            seconds=window_seconds(features["window"]),
            aggregates=tuple(str(a) for a in features["metric_aggregates"]),
            percentiles=tuple(float(p) for p in features["latency_percentiles"]),
            rare_count=int(features["templates"]["rare_count"]),
            fill_zero_counts=bool(features["fill_zero_counts"]),
            fill_lookback_minutes=float(features["fill_lookback_minutes"]),
        )


def window_start_of(ts: Column, seconds: int) -> Column:
    micros = F.unix_micros(ts)
    return F.timestamp_micros(micros - F.pmod(micros, F.lit(seconds * 1_000_000)))


def with_window(df: DataFrame, *, ts: str, params: FeatureParams) -> DataFrame:
    """Add the tumbling window (window_start, window_end) of a time column."""
    start = window_start_of(F.col(ts), params.seconds)
    end = F.timestamp_micros(F.unix_micros("window_start") + F.lit(params.seconds * 1_000_000))
    return df.withColumn("window_start", start).withColumn("window_end", end)


def stack_features(df: DataFrame, *, keys: Sequence[str], component: str, features: Sequence[tuple[Column, Column]]) -> DataFrame:
    """Wide per-window columns -> long rows (feature name, value); null values are left out."""
    cells = F.array(*[F.struct(name.alias("feature"), value.cast("double").alias("value")) for name, value in features])
    return (
        df.select(*keys, F.explode(cells).alias("_f"))
        .select(*keys, F.lit(component).alias("component"), "_f.feature", "_f.value")
        .where(F.col("value").isNotNull())
    )


SERIES = ("system", "service", "component", "feature")


def count_series(features: DataFrame) -> DataFrame:
    """The (system, service, component, feature) of log and trace count features in a features table."""
    is_count = (F.col("component").isin("log", "trace") & F.col("feature").endswith("_count")
                & ~F.col("feature").startswith(PATTERN_PREFIX))
    return features.where(is_count).select(*SERIES).distinct()


def fill_zero_counts(counts: DataFrame, observed: DataFrame, known: DataFrame | None = None) -> DataFrame:
    """Count features completed with 0 over the observed windows of their system.

    The series are those in ``counts`` plus ``known`` ones (seen just before a windowed run), so a
    service that falls silent at the start of a window still gets its zeros.
    """
    series = counts.select(*SERIES)
    if known is not None:
        series = series.unionByName(known.select(*SERIES))
    series = series.distinct()
    grid = series.join(observed, on="system")
    return (
        grid.join(counts, on=["system", "service", "component", "feature", "window_start", "window_end"], how="left")
        .withColumn("value", F.coalesce(F.col("value"), F.lit(0.0)))
        .select(*FEATURE_COLUMNS)
    )


def _aggregate(name: str, value: Column) -> Column:
    if name == "mean":
        return F.avg(value)
    if name == "stddev":
        return F.stddev_samp(value)
    if name in ("min", "max", "sum"):
        return getattr(F, name)(value)
    if name == "count":
        return F.count(value)
    return F.percentile_approx(value, int(name[1:]) / 100.0, PERCENTILE_ACCURACY)


# ---- metrics ----------------------------------------------------------------------------------


def metric_features(metrics: DataFrame, *, params: FeatureParams) -> DataFrame:
    """<metric>_<agg> per service and window (all instances together)."""
    windowed = with_window(metrics, ts="ts", params=params)
    aggs = [_aggregate(a, F.col("value")).alias(f"_a{i}") for i, a in enumerate(params.aggregates)]
    grouped = windowed.groupBy(*WINDOW_KEYS, "metric").agg(*aggs)
    names = [(F.concat(F.col("metric"), F.lit(f"_{a}")), F.col(f"_a{i}")) for i, a in enumerate(params.aggregates)]
    return stack_features(grouped, keys=WINDOW_KEYS, component="metric", features=names).select(*FEATURE_COLUMNS)


# ---- logs ---------------------------------------------------------------------------------------


def template_window_counts(tagged_logs: DataFrame, *, params: FeatureParams) -> DataFrame:
    """Log lines per (system, service, template, window) and level: the log_template_counts rows."""
    windowed = with_window(tagged_logs, ts="ts", params=params)
    return windowed.groupBy(*WINDOW_KEYS, "template_id").agg(
        F.count(F.lit(1)).alias("count"),
        *[F.count_if(F.col("level") == lvl).alias(f"{lvl.lower()}_count") for lvl in LEVELS],
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
    )


def template_summary(counts: DataFrame) -> DataFrame:
    """Per template over all its windows: total lines, first and last seen."""
    return counts.groupBy("system", "template_id").agg(
        F.sum("count").alias("count"), F.min("first_ts").alias("first_seen"), F.max("last_ts").alias("last_seen")
    )


def log_features(
    counts: DataFrame,
    summary: DataFrame,
    *,
    params: FeatureParams,
    known: DataFrame | None = None,
    history: DataFrame | None = None,
) -> DataFrame:
    """Level counts, error ratio, new/rare template lines and WARN/ERROR template counts.

    Causal, so increments and one run over their union agree: a template's lines are *rare* while
    it has been seen fewer than ``rare_count`` times up to the end of that window, and a
    ``template_<id>_count`` series is zero-filled only from the service's first WARN/ERROR line of
    it. ``history`` = the ``log_template_counts`` rows up to the end of ``counts`` (default:
    ``counts`` itself, i.e. a run over all data).
    """
    history = counts if history is None else history
    stats = summary.select(
        "system", "template_id", window_start_of(F.col("first_seen"), params.seconds).alias("_first")
    )
    so_far = Window.partitionBy("system", "template_id").orderBy("window_start").rowsBetween(
        Window.unboundedPreceding, Window.currentRow
    )
    seen = history.groupBy("system", "template_id", "window_start").agg(F.sum("count").alias("_n")).select(
        "system", "template_id", "window_start", F.sum("_n").over(so_far).alias("_seen")
    )
    joined = counts.join(F.broadcast(stats), on=["system", "template_id"], how="left").join(
        seen, on=["system", "template_id", "window_start"], how="left"
    )
    per_window = joined.groupBy(*WINDOW_KEYS).agg(
        *[F.sum(f"{lvl.lower()}_count").alias(lvl) for lvl in LEVELS],
        F.sum("count").alias("_all"),
        F.sum(F.when(F.col("_first") == F.col("window_start"), F.col("count")).otherwise(0)).alias("_new"),
        F.sum(F.when(F.col("_seen") < params.rare_count, F.col("count")).otherwise(0)).alias("_rare"),
    )
    counted = [(F.lit(f"{lvl}_count"), F.col(lvl)) for lvl in LEVELS] + [
        (F.lit("log_count"), F.col("_all")),
        (F.lit("new_template_count"), F.col("_new")),
        (F.lit("rare_template_count"), F.col("_rare")),
    ]
    level_counts = stack_features(per_window, keys=WINDOW_KEYS, component="log", features=counted)
    alerts = counts.where((F.col("error_count") + F.col("warn_count")) > 0)
    template_counts = stack_features(
        alerts,
        keys=WINDOW_KEYS,
        component="log",
        features=[(F.concat(F.lit("template_"), F.col("template_id"), F.lit("_count")), F.col("error_count") + F.col("warn_count"))],
    )
    counts_long = level_counts.unionByName(template_counts)
    if params.fill_zero_counts:
        observed = counts.select("system", "window_start", "window_end").distinct()
        counts_long = fill_zero_counts(counts_long, observed, known.where(F.col("component") == "log") if known is not None else None)
        # no zeros for a template before the service first logged it at WARN/ERROR
        firsts = (
            history.where((F.col("error_count") + F.col("warn_count")) > 0)
            .groupBy("system", "service", "template_id")
            .agg(F.min("window_start").alias("_since"))
            .select("system", "service", F.concat(F.lit("template_"), F.col("template_id"), F.lit("_count")).alias("feature"), "_since")
        )
        counts_long = (
            counts_long.join(firsts, on=["system", "service", "feature"], how="left")
            .where(F.col("_since").isNull() | (F.col("window_start") >= F.col("_since")))
            .drop("_since")
        )
    ratio = stack_features(
        per_window, keys=WINDOW_KEYS, component="log", features=[(F.lit("error_ratio"), F.try_divide("ERROR", "_all"))]
    )
    return counts_long.select(*FEATURE_COLUMNS).unionByName(ratio.select(*FEATURE_COLUMNS))


# ---- traces ------------------------------------------------------------------------------------


def _latency_stats(df: DataFrame, keys: Sequence[str], params: FeatureParams) -> DataFrame:
    fractions = [p / 100.0 for p in params.percentiles]
    return df.groupBy(*keys).agg(
        F.count(F.lit(1)).alias("_calls"),
        F.count_if(F.col("status") == "error").alias("_errors"),
        F.percentile_approx("duration_ms", fractions, PERCENTILE_ACCURACY).alias("_pct"),
    )


def _pct_name(p: float) -> str:
    return f"{int(p)}" if float(p).is_integer() else f"{p:g}".replace(".", "_")


def trace_features(spans: DataFrame, *, params: FeatureParams, known: DataFrame | None = None) -> DataFrame:
    """Service-level stats over entry spans and per-edge stats on the caller."""
    children = spans.where(F.col("parent_span_id").isNotNull()).groupBy(
        "system", "trace_id", F.col("parent_span_id").alias("span_id")
    ).agg(F.count(F.lit(1)).alias("_children"))
    parents = spans.select(
        "system", "trace_id", "span_id", F.col("service").alias("parent_service"),
        F.col("duration_ms").alias("_parent_ms"), F.lower(F.col("kind")).alias("_parent_kind"),
    ).join(children, on=["system", "trace_id", "span_id"], how="left").withColumnRenamed("span_id", "parent_span_id")
    linked = with_window(
        spans.select("system", "trace_id", "parent_span_id", "service", "start_ts", "duration_ms", "status"),
        ts="start_ts",
        params=params,
    ).join(parents, on=["system", "trace_id", "parent_span_id"], how="left")
    entry = F.col("parent_service").isNull() | (F.col("parent_service") != F.col("service"))
    service_stats = _latency_stats(linked.where(entry), WINDOW_KEYS, params)
    pcts = [(F.lit(f"latency_p{_pct_name(p)}_ms"), F.col("_pct")[i]) for i, p in enumerate(params.percentiles)]
    service_counts = stack_features(
        service_stats,
        keys=WINDOW_KEYS,
        component="trace",
        features=[(F.lit("request_count"), F.col("_calls")), (F.lit("error_count"), F.col("_errors"))],
    )
    service_rest = stack_features(
        service_stats,
        keys=WINDOW_KEYS,
        component="trace",
        features=[(F.lit("error_ratio"), F.try_divide("_errors", "_calls")), *pcts],
    )
    edges = linked.where(F.col("parent_service").isNotNull() & (F.col("parent_service") != F.col("service"))).select(
        "system", F.col("parent_service").alias("service"), F.col("service").alias("callee"),
        "window_start", "window_end", "duration_ms", "status", "_parent_ms", "_parent_kind", "_children",
    )
    edge_stats = _latency_stats(edges, [*WINDOW_KEYS, "callee"], params)
    client_span = (F.col("_parent_kind") == "client") | (F.col("_parent_kind").isNull() & (F.col("_children") == 1))
    gaps = edges.where(client_span).select(
        *WINDOW_KEYS, "callee", F.greatest(F.col("_parent_ms") - F.col("duration_ms"), F.lit(0.0)).alias("_gap_ms")
    ).groupBy(*WINDOW_KEYS, "callee").agg(
        F.percentile_approx("_gap_ms", [p / 100.0 for p in params.percentiles], PERCENTILE_ACCURACY).alias("_gap")
    )

    def edge(stat: str) -> Column:
        return F.concat(F.lit("edge:"), F.col("callee"), F.lit(f":{stat}"))

    edge_counts = stack_features(edge_stats, keys=WINDOW_KEYS, component="trace", features=[(edge("call_count"), F.col("_calls"))])
    edge_rest = stack_features(
        edge_stats,
        keys=WINDOW_KEYS,
        component="trace",
        features=[
            (edge("error_ratio"), F.try_divide("_errors", "_calls")),
            *[(edge(f"latency_p{_pct_name(p)}_ms"), F.col("_pct")[i]) for i, p in enumerate(params.percentiles)],
        ],
    )
    edge_gaps = stack_features(
        gaps,
        keys=WINDOW_KEYS,
        component="trace",
        features=[(edge(f"network_gap_p{_pct_name(p)}_ms"), F.col("_gap")[i]) for i, p in enumerate(params.percentiles)],
    )
    counts = service_counts.unionByName(edge_counts)
    if params.fill_zero_counts:
        observed = linked.select("system", "window_start", "window_end").distinct()
        counts = fill_zero_counts(counts, observed, known.where(F.col("component") == "trace") if known is not None else None)
    return (
        counts.select(*FEATURE_COLUMNS)
        .unionByName(service_rest.select(*FEATURE_COLUMNS))
        .unionByName(edge_rest.select(*FEATURE_COLUMNS))
        .unionByName(edge_gaps.select(*FEATURE_COLUMNS))
    )


# ---- events ------------------------------------------------------------------------------------


def event_features(events: DataFrame, *, params: FeatureParams) -> DataFrame:
    """<event_type>_count per service and window (only windows with events)."""
    grouped = with_window(events, ts="ts", params=params).groupBy(*WINDOW_KEYS, "event_type").count()
    return stack_features(
        grouped,
        keys=WINDOW_KEYS,
        component="event",
        features=[(F.concat(F.col("event_type"), F.lit("_count")), F.col("count"))],
    ).select(*FEATURE_COLUMNS)
