"""Correlated anomalies: Pearson correlation of two anomalous series over the incident, in Spark.

For an anomaly inside an incident, its peers are the incident's other anomalous series (the
strongest ``max_peers`` by peak ensemble score); the correlation window is the incident
[start, end] widened by ``context_minutes`` on both sides. For an anomaly outside any incident,
its peers are the system's other unincidented anomalies within ``tolerance_minutes``, over the
anomaly's own window widened the same way. The score is ``corr(value_a, value_b)`` over the
feature windows both series cover; count-like features (``*_count`` and event features), which
the features table may leave out when zero, count as 0 in windows where only the other series
has a value. Pairs with fewer than ``min_points`` shared windows or a constant series get no
score (nothing is invented).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from meltrca.explain.context import JSON_OPTIONS, epoch, finite, sorted_structs

SERIES = ("service", "component", "feature")
PAIR_KEY = ["corr_key", "system", *[f"a_{c}" for c in SERIES], *[f"b_{c}" for c in SERIES]]


def _renamed(prefix: str) -> list[Column]:
    return [F.col(c).alias(f"{prefix}_{c}") for c in SERIES]


def _different_series() -> Column:
    return ~((F.col("a_service") == F.col("b_service")) & (F.col("a_component") == F.col("b_component"))
             & (F.col("a_feature") == F.col("b_feature")))


def peer_pairs(
    anomalies: DataFrame,
    membership: DataFrame,
    incidents: DataFrame,
    *,
    context_minutes: float,
    tolerance_minutes: float,
    max_peers: int,
) -> DataFrame:
    """Series pairs to correlate: PAIR_KEY columns plus the window [lo_s, hi_s) in epoch seconds."""
    ctx = float(context_minutes) * 60.0
    rows = anomalies.join(membership, ["system", "anomaly_id"], "left")
    bounds = incidents.select("system", "incident_id", epoch("start").alias("_start"),
                              epoch(F.coalesce("end", "start")).alias("_end"))
    series = (
        rows.where(F.col("incident_id").isNotNull())
        .join(bounds, ["system", "incident_id"])
        .groupBy("system", "incident_id", *SERIES)
        .agg(F.max("ensemble_score").alias("_peak"), F.first("_start").alias("_start"), F.first("_end").alias("_end"))
    )
    strongest = Window.partitionBy("system", "incident_id").orderBy(F.desc_nulls_last("_peak"), *SERIES)
    peers = series.withColumn("_rn", F.row_number().over(strongest)).where(F.col("_rn") <= max_peers)
    in_incident = series.select(
        F.col("incident_id").alias("corr_key"), "system", *_renamed("a"),
        (F.col("_start") - ctx).alias("lo_s"), (F.col("_end") + ctx).alias("hi_s"),
    ).join(peers.select(F.col("incident_id").alias("corr_key"), "system", *_renamed("b")), ["corr_key", "system"])

    solo = rows.where(F.col("incident_id").isNull())
    left = solo.select(
        F.col("anomaly_id").alias("corr_key"), "system", *_renamed("a"), epoch("window_start").alias("_ws"),
        (epoch("window_start") - ctx).alias("lo_s"), (epoch("window_end") + ctx).alias("hi_s"),
    )
    right = solo.select("system", *_renamed("b"), epoch("window_start").alias("_bws"),
                        F.col("ensemble_score").alias("_bscore"))
    near = left.join(right, "system").where(F.abs(F.col("_bws") - F.col("_ws")) <= float(tolerance_minutes) * 60.0)
    best = near.groupBy(*PAIR_KEY, "lo_s", "hi_s").agg(F.max("_bscore").alias("_peak"))
    nearest = Window.partitionBy("corr_key", "system").orderBy(F.desc_nulls_last("_peak"), "b_service", "b_feature")
    outside = best.withColumn("_rn", F.row_number().over(nearest)).where(F.col("_rn") <= max_peers)

    cols = [*PAIR_KEY, "lo_s", "hi_s"]
    return in_incident.select(cols).unionByName(outside.select(cols)).where(_different_series())


def _count_like(prefix: str) -> Column:
    return (F.col(f"{prefix}_component") == "event") | F.col(f"{prefix}_feature").endswith("_count")


def pearson(pairs: DataFrame, features: DataFrame, *, min_points: int = 3) -> DataFrame:
    """PAIR_KEY + correlation_score (Pearson r over shared windows) + points, for pairs with a score."""
    sides = [
        pairs.select(*PAIR_KEY, "lo_s", "hi_s", F.lit(side).alias("_side"),
                     *[F.col(f"{side}_{c}").alias(c) for c in SERIES])
        for side in ("a", "b")
    ]
    values = features.select("system", *SERIES, "window_start", finite("value").alias("value"))
    joined = sides[0].unionByName(sides[1]).join(values, ["system", *SERIES]).where(
        (epoch("window_start") >= F.col("lo_s")) & (epoch("window_start") < F.col("hi_s"))
    )
    wide = joined.groupBy(*PAIR_KEY, "window_start").agg(
        F.max(F.when(F.col("_side") == "a", F.col("value"))).alias("va"),
        F.max(F.when(F.col("_side") == "b", F.col("value"))).alias("vb"),
    )
    wide = wide.withColumn("va", F.when(F.col("va").isNull() & _count_like("a"), 0.0).otherwise(F.col("va")))
    wide = wide.withColumn("vb", F.when(F.col("vb").isNull() & _count_like("b"), 0.0).otherwise(F.col("vb")))
    both = F.col("va").isNotNull() & F.col("vb").isNotNull()
    va, vb = F.when(both, F.col("va")), F.when(both, F.col("vb"))  # the windows both series cover
    scored = wide.groupBy(*PAIR_KEY).agg(
        # Pearson r = cov / (sd_a sd_b), not F.corr: under ANSI mode (Spark 4's default) corr divides
        # by zero and raises when a series is constant over the shared windows; try_divide makes it null.
        F.try_divide(F.covar_pop(va, vb), F.stddev_pop(va) * F.stddev_pop(vb)).alias("r"),
        F.count(F.when(both, 1)).alias("points"),
    )
    return scored.where(F.col("r").isNotNull() & ~F.isnan("r") & (F.col("points") >= min_points)).select(
        *PAIR_KEY, F.round(F.greatest(F.least("r", F.lit(1.0)), F.lit(-1.0)), 3).alias("correlation_score"), "points"
    )


def metric_base(feature: Column) -> Column:
    """The metric behind a feature without its aggregate/percentile suffix (latency_p95_ms_max -> latency)."""
    return F.regexp_replace(feature, r"(_p[0-9]{1,2})?(_ms)?(_(mean|max|min|sum|stddev|p[0-9]{1,2}))?$", "")


def correlated_anomalies(anomalies: DataFrame, membership: DataFrame, scores: DataFrame, *, limit: int) -> DataFrame:
    """(anomaly_id, system, correlated_json): the `limit` peers with the largest |r|, as SPEC §5 items.

    Aggregates of one metric (cpu_usage_mean/max/p95) are one signal: a peer that is another
    aggregate of the anomaly's own metric on its own service is left out, and of several
    aggregates of a peer's metric only the best-correlated one is listed.
    """
    own = anomalies.join(membership, ["system", "anomaly_id"], "left").select(
        "anomaly_id", "system", F.coalesce("incident_id", "anomaly_id").alias("corr_key"), *_renamed("a")
    )
    joined = own.join(scores, ["corr_key", "system", "a_service", "a_component", "a_feature"]).where(
        ~((F.col("a_service") == F.col("b_service"))
          & (metric_base(F.col("a_feature")) == metric_base(F.col("b_feature"))))
    )
    best = Window.partitionBy("anomaly_id", "system", "b_service", metric_base(F.col("b_feature"))).orderBy(
        F.desc(F.abs("correlation_score")), "b_feature"
    )
    joined = joined.withColumn("_rn", F.row_number().over(best)).where("_rn = 1")
    item = F.struct(
        (-F.abs("correlation_score")).alias("_neg"), F.col("b_service").alias("_s"), F.col("b_feature").alias("_f"),
        F.col("b_service").alias("service"), F.col("b_feature").alias("metric"), "correlation_score",
    )
    return joined.groupBy("anomaly_id", "system").agg(
        F.to_json(sorted_structs(F.collect_list(item), drop=["_neg", "_s", "_f"], limit=limit), JSON_OPTIONS).alias(
            "correlated_json"
        )
    )
