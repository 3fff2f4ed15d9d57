"""Spark side of detection: per-service fit and score through applyInPandas, model store, anomaly rows.

Work is grouped by (system, service): one pandas group holds one service's whole feature history,
so the multivariate detectors (Isolation Forest, LSTM) see its window x feature matrix and the
z-score sees every feature; there is never a group per window. The UDFs capture only plain
values (the detection plan dict, folder and version strings, a path index) and call the pure
code in meltrca.detectors.

Models are files under ``<lake>/model_store/<system>/<service>/<detector>/<version>/`` (JSON,
skops, .keras — see detectors/store.py), written by the executor that fitted them, and indexed
in the ``models`` table (version = run id). They sit beside the Delta tables, not inside one,
so table maintenance (VACUUM) never touches them.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DoubleType, StringType, StructField, StructType, TimestampType

from meltrca.config import Settings
from meltrca.detectors.classify import severity_labels
from meltrca.detectors.service import (
    DETECTOR_ORDER,
    FittedService,
    baseline_mask,
    fit_baseline_series,
    score_service,
    series_seed,
    to_matrix,
)
from meltrca.detectors.store import FORMATS, dump_detector, load_detector
from meltrca.features.patterns import REQUESTS, is_pattern, with_event_and_operation
from meltrca.io import list_artifacts, read_artifact, write_artifact
from meltrca.logs import get_logger
from meltrca.reference import Range, ranges_for, reference_mask
from meltrca.schemas import MODELS

log = get_logger("detection")

EVENT = "event"
MODEL_STORE = "model_store"

CANDIDATES = StructType([
    StructField("system", StringType(), False), StructField("service", StringType(), False),
    StructField("window_start", TimestampType(), False), StructField("component", StringType(), False),
    StructField("feature", StringType(), False), StructField("value", DoubleType()),
    StructField("expected_low", DoubleType()), StructField("expected_high", DoubleType()),
    *[StructField(d, DoubleType()) for d in DETECTOR_ORDER],
    StructField("ensemble_score", DoubleType()), StructField("anomaly_type", StringType()),
    StructField("confidence", DoubleType()), StructField("cold_start", BooleanType()),
])


def detection_plan(settings: Settings, *, window_seconds: int) -> dict[str, Any]:
    """The plain-dict plan the executors run (nothing unpicklable, no secrets)."""
    d = settings.detection
    m = d.models
    return {
        "enabled": list(d.enabled),
        "threshold": float(d.threshold),
        "block": int(d.calibration_windows),
        "min_history": int(d.min_history),
        "baseline_fraction": float(d.baseline_fraction),
        "level_shift_windows": int(d.level_shift_windows),
        "min_duration_windows": int(d.min_duration_windows),
        "weights": {k: float(v) for k, v in d.ensemble.weights.items()},
        "window_seconds": int(window_seconds),
        "zscore": {"threshold": float(m.zscore.threshold), "rolling_window": int(m.zscore.rolling_window)},
        "isolation_forest": {
            "contamination": float(m.isolation_forest.contamination),
            "n_estimators": int(m.isolation_forest.n_estimators),
        },
        "lstm": {k: int(m.lstm[k]) for k in ("sequence_length", "epochs", "batch_size", "patience", "units", "threads")},
        "patterns": {"min_shift": float(d.patterns.min_shift), "min_requests": int(d.patterns.min_requests),
                     "max_p": float(d.patterns.max_p)},
    }


def model_dir(store_root: str, system: str, service: str, detector: str, version: str) -> str:
    """Folder of one saved model; names are URL-quoted so any service name is a safe path part."""
    parts = [quote(p, safe="-_.") for p in (system, service, detector, version)]
    return "/".join([store_root.rstrip("/"), *parts])


def store_root_of(lake_root: str) -> str:
    root = lake_root if "://" in lake_root else os.path.abspath(lake_root)
    return f"{root.rstrip('/')}/{MODEL_STORE}"


def signal_rows(features: DataFrame) -> DataFrame:
    """The feature rows detectors learn from, reduced to what the UDFs need: not change events
    (passed through) nor request-pattern shares (pattern_anomalies judges those)."""
    return features.where((F.col("component") != EVENT) & ~is_pattern()).select(
        "system", "service", "window_start", "component", "feature", "value"
    )


def by_service(rows: DataFrame) -> DataFrame:
    """Rows hash-partitioned by (system, service) into a fixed number of partitions.

    Feature rows are small (a few MB for dozens of services), so after a plain groupBy adaptive
    execution coalesced the shuffle into ONE partition: every service's fit and score ran in a
    single task and local[2] (or a cluster) detected on one core. A repartition with an explicit
    count is never coalesced, and the groupBy below reuses it (no second shuffle)."""
    spark = rows.sparkSession
    n = max(int(spark.conf.get("spark.sql.shuffle.partitions") or 1), 2 * spark.sparkContext.defaultParallelism)
    return rows.repartition(n, "system", "service")


# ---- fit ----------------------------------------------------------------------------------------


def fit_mask(index: pd.DatetimeIndex, *, fraction: float | None, ranges: Sequence[Range] | None,
             min_history: int, window_seconds: int) -> np.ndarray | None:
    """The windows a series is fitted on: its windows in the reference ranges when it has at least
    min_history of them (meltrca.reference), else its first `fraction` (None: all of it)."""
    if ranges:
        inside = reference_mask(index, ranges, window_seconds)
        if int(inside.sum()) >= int(min_history):
            return inside
        log.warning("fewer than min_history (%d) windows in the reference baseline (%d): fitted on %s", min_history,
                    int(inside.sum()), "the first baseline_fraction" if fraction is not None else "the whole window")
    return baseline_mask(index, fraction) if fraction is not None else None


def _fit_group(pdf: pd.DataFrame, *, plan: Mapping[str, Any], store_root: str, version: str,
               fitted_at: datetime, fraction: float | None,
               references: Mapping[str, Sequence[Range]]) -> pd.DataFrame:
    system, service = str(pdf["system"].iloc[0]), str(pdf["service"].iloc[0])
    X = to_matrix(pdf, int(plan["window_seconds"]))
    ranges = ranges_for(references, system)
    mask = fit_mask(X.index, fraction=fraction, ranges=ranges, min_history=int(plan["min_history"]),
                    window_seconds=int(plan["window_seconds"]))
    fitted: FittedService = fit_baseline_series(pdf, X, plan, series_seed(system, service), mask)
    if fitted.note:  # executor log; the models row says cold_start / baseline_windows (see fit_notes)
        log.warning("%s/%s: %s", system, service, fitted.note)
    rows = []
    for name, det in fitted.detectors.items():
        folder = model_dir(store_root, system, service, name, version)
        for file_name, data in dump_detector(det).items():
            write_artifact(f"{folder}/{file_name}", data)
        rows.append({
            "system": system, "service": service, "detector": name, "series": "service",
            "version": version, "path": folder, "format": FORMATS[name], "fitted_at": fitted_at,
            "baseline_start": fitted.baseline_start, "baseline_end": fitted.baseline_end, "run_id": version,
            "baseline_windows": fitted.baseline_windows, "cold_start": fitted.cold_start,
        })
    return pd.DataFrame(rows, columns=MODELS.fieldNames())


def fit_models(features: DataFrame, *, plan: Mapping[str, Any], store_root: str, version: str,
               fitted_at: datetime, fraction: float | None,
               references: Mapping[str, Sequence[Range]] | None = None) -> DataFrame:
    """Fit every service's detectors (baseline = its windows overlapping its system's reference ranges,
    else the first `fraction` of its history, or all of it) and save them; one MODELS row per
    (system, service, detector)."""
    fn = functools.partial(
        _fit_group, plan=dict(plan), store_root=store_root, version=version, fitted_at=fitted_at, fraction=fraction,
        references={k: [tuple(r) for r in v] for k, v in (references or {}).items()},
    )
    return by_service(signal_rows(features)).groupBy("system", "service").applyInPandas(fn, schema=MODELS)


def fit_notes(models: Sequence[Any], min_history: int) -> list[str]:
    """One line per series fitted cold start (too short to model), from collected MODELS rows:
    what a run summary shows so a short series is neither a crash nor silence."""
    seen = {(r["system"], r["service"]): int(r["baseline_windows"] or 0) for r in models if r["cold_start"]}
    return [
        f"{system}/{service}: too short to model ({n} baseline window{'' if n == 1 else 's'}, fewer than "
        f"min_history {int(min_history)}): cold start, z-score only"
        for (system, service), n in sorted(seen.items())
    ]


def model_index(models: DataFrame, detectors: Sequence[str]) -> dict[str, dict[str, Any]]:
    """'system|service' -> {detector: path, 'cold_start': bool}: the newest model of each detector."""
    newest = Window.partitionBy("system", "service", "detector").orderBy(F.col("fitted_at").desc(), F.col("version").desc())
    rows = (
        models.where(F.col("detector").isin(list(detectors)))
        .withColumn("_rank", F.row_number().over(newest))
        .where("_rank = 1")
        .select("system", "service", "detector", "path", "cold_start")
        .collect()
    )
    index: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = index.setdefault(f"{r['system']}|{r['service']}", {"paths": {}, "cold_start": False})
        entry["paths"][r["detector"]] = r["path"]
        entry["cold_start"] = entry["cold_start"] or bool(r["cold_start"])
    return index


def load_models(paths: Mapping[str, str], threads: int) -> dict[str, Any]:
    """Detectors from their model folders (safe loaders only)."""
    out = {}
    for name, folder in paths.items():
        files = {f: read_artifact(f"{folder}/{f}") for f in list_artifacts(folder)}
        out[name] = load_detector(files, threads=threads)
    return out


# ---- score --------------------------------------------------------------------------------------


def _score_group(pdf: pd.DataFrame, *, plan: Mapping[str, Any], index: Mapping[str, Any],
                 emit_from: datetime | None, emit_to: datetime | None) -> pd.DataFrame:
    system, service = str(pdf["system"].iloc[0]), str(pdf["service"].iloc[0])
    X = to_matrix(pdf, int(plan["window_seconds"]))
    entry = index.get(f"{system}|{service}")
    if entry is not None:
        detectors = load_models(entry["paths"], int(plan["lstm"]["threads"]))
        cold = bool(entry["cold_start"])
    else:  # a service no saved model knows: cold start on its own first windows
        fitted = fit_baseline_series(pdf, X, {**plan, "min_history": 10**9}, series_seed(system, service),
                                     baseline_mask(X.index, float(plan["baseline_fraction"])))
        detectors, cold = fitted.detectors, True
    emit = np.ones(len(X), dtype=bool)
    if emit_from is not None:
        emit &= np.asarray(X.index >= pd.Timestamp(emit_from))
    if emit_to is not None:
        emit &= np.asarray(X.index < pd.Timestamp(emit_to))
    rows = score_service(X, detectors, plan, emit=emit, cold_start=cold)
    rows.insert(0, "service", service)
    rows.insert(0, "system", system)
    return rows[CANDIDATES.fieldNames()]


def score_features(features: DataFrame, *, plan: Mapping[str, Any], index: Mapping[str, Any],
                   emit_from: datetime | None = None, emit_to: datetime | None = None) -> DataFrame:
    """Anomalous (system, service, window, feature) candidates (schema CANDIDATES), scored with
    the saved models in `index`; windows outside [emit_from, emit_to) serve as context only."""
    fn = functools.partial(_score_group, plan=dict(plan), index=dict(index), emit_from=emit_from, emit_to=emit_to)
    return by_service(signal_rows(features)).groupBy("system", "service").applyInPandas(fn, schema=CANDIDATES)


# ---- anomaly rows -------------------------------------------------------------------------------


def with_severity(candidates: DataFrame, *, threshold: float, blast_steps: Sequence[int]) -> DataFrame:
    """Blast radius (services of the system anomalous in the same window) and severity."""
    same_window = Window.partitionBy("system", "window_start")
    steps = [int(s) for s in blast_steps]

    @F.pandas_udf(StringType())
    def severity(score: pd.Series, blast: pd.Series) -> pd.Series:
        return pd.Series(severity_labels(score.to_numpy(), blast.to_numpy(), threshold, steps))

    blast = F.size(F.collect_set("service").over(same_window))
    return candidates.withColumn("blast_radius", blast).withColumn(
        "severity", severity(F.col("ensemble_score"), F.col("blast_radius"))
    )


def change_events(features: DataFrame) -> DataFrame:
    """Change events (deploy, config_change, restart, scale, ...) passed through as anomalies."""
    return features.where((F.col("component") == EVENT) & (F.col("value") > 0)).select(
        "system", "service", "window_start", "window_end", "component", "feature", "value",
        F.lit(None).cast("double").alias("expected_low"), F.lit(None).cast("double").alias("expected_high"),
        F.create_map().cast("map<string,double>").alias("detector_scores"),
        F.lit(1.0).alias("ensemble_score"), F.lit("change_event").alias("anomaly_type"),
        F.lit("low").alias("severity"), F.lit(1.0).alias("confidence"), F.lit(False).alias("cold_start"),
    )


# ---- peer windows: sparse series ----------------------------------------------------------------

PEER_COMPONENTS = ("log", "trace")
PEER_MIN_WINDOWS = 5
MAD_TO_SIGMA = 1.4826


def peer_windows(rows: DataFrame, keys: Sequence[str], *, judged: Column | None,
                 reference: Column | None) -> DataFrame:
    """The rows a series' windows are judged against: its windows not `judged`, and of those only
    the ones inside the reference baseline when the series has PEER_MIN_WINDOWS of them there."""
    peers = rows if judged is None else rows.where(~judged)
    if reference is None:
        return peers
    inside = reference.cast("int")
    return (peers.withColumn("_in_ref", inside)
            .withColumn("_n_ref", F.sum("_in_ref").over(Window.partitionBy(*keys)))
            .where((F.col("_in_ref") == 1) | (F.col("_n_ref") < PEER_MIN_WINDOWS))
            .drop("_in_ref", "_n_ref"))


def peer_deviations(features: DataFrame, *, min_z: float, judged: Column | None = None,
                    reference: Column | None = None) -> DataFrame:
    """Log/trace feature rows at least min_z robust sigmas above the peer windows of their series.

    Peers are the series' windows not `judged` (with judged=None every window is judged against
    all of them: the median/MAD shrug off the few a fault holds). Scale: 1.4826 x MAD, at least one
    event for a count — a log count is compared as a share of the service's lines in that window (a
    busier minute writes more of every line, a fault changes the mix), its floor one line of that
    window or of the peers' median volume, whichever is fewer — and 5% of the median otherwise; a
    series needs PEER_MIN_WINDOWS peers. Columns: system, service, component, feature,
    window_start, window_end, value (in the feature's unit), expected_low/high (median ± min_z
    scale, in that unit), z, ensemble_score (0.95 at min_z, about 0.99 three sigmas further).

    An error ratio (errors of a window's requests, calls or lines) is a count too: its window must
    also hold more errors than the series' pooled peer rate makes as likely as a min_z-sigma normal
    deviation (binomial upper tail, +0.5 / +1 pseudo-counts). Its median and MAD are 0 wherever
    errors are rare, so one stray error in 80 requests would otherwise be "infinitely" many sigmas;
    two errors in five requests of a service that never fails still are trouble."""
    keys = ["system", "service", "component", "feature"]
    f = features.where(F.col("component").isin(*PEER_COMPONENTS) & ~is_pattern() & F.col("value").isNotNull()
                       & ~F.isnan("value"))
    volume = f.where((F.col("component") == "log") & (F.col("feature") == "log_count")).select(
        "system", "service", "window_start", F.col("value").alias("lines"))
    shared = (F.col("component") == "log") & F.col("feature").endswith("_count") & (F.col("feature") != "log_count")
    ratio = F.col("feature").endswith("error_ratio")
    denominator = (F.when(F.col("feature") != "error_ratio", F.regexp_replace("feature", "error_ratio$", "call_count"))
                   .when(F.col("component") == "log", F.lit("log_count")).otherwise(F.lit("request_count")))
    totals = features.where(F.col("component").isin(*PEER_COMPONENTS) & (
        F.col("feature").isin("log_count", "request_count") | F.col("feature").endswith(":call_count"))).select(
        "system", "service", "component", "window_start", F.col("feature").alias("_denominator"),
        F.col("value").alias("_n"))
    f = (
        f.withColumn("_denominator", F.when(ratio, denominator))
        .join(totals, ["system", "service", "component", "window_start", "_denominator"], "left")
        .withColumn("_events", F.round(F.col("value") * F.col("_n")))
        .join(volume, ["system", "service", "window_start"], "left")
        .withColumn("raw", F.col("value"))
        .withColumn("value", F.when(shared, F.try_divide(F.col("value"), F.col("lines"))).otherwise(F.col("value")))
        .where(F.col("value").isNotNull())
        .withColumn("judged", F.lit(True) if judged is None else judged)
    )
    peers = peer_windows(f, keys, judged=None if judged is None else F.col("judged"), reference=reference)
    centre = peers.groupBy(*keys).agg(F.percentile_approx("value", 0.5, 10000).alias("median"),
                                      F.percentile_approx("lines", 0.5, 10000).alias("median_lines"),
                                      F.count(F.lit(1)).alias("peers"),
                                      ((F.sum("_events") + 0.5) / (F.sum("_n") + 1.0)).alias("rate"))
    spread = peers.join(centre, keys).groupBy(*keys).agg(
        F.percentile_approx(F.abs(F.col("value") - F.col("median")), 0.5, 10000).alias("mad"))
    floor = F.when(shared, F.lit(1.0) / F.greatest(F.least(F.col("median_lines"), F.col("lines")), F.lit(1.0))).when(
        F.col("feature").endswith("_count"), F.lit(1.0)).otherwise(F.greatest(F.abs(F.col("median")) * 0.05, F.lit(1e-6)))
    stats = centre.join(spread, keys).where(F.col("peers") >= PEER_MIN_WINDOWS)
    unit = F.when(shared, F.coalesce(F.col("lines"), F.lit(1.0))).otherwise(F.lit(1.0))

    @F.pandas_udf(DoubleType())
    def upper_tail(k: pd.Series, n: pd.Series, p: pd.Series) -> pd.Series:
        return pd.Series(binomial_tail(k.to_numpy(float), n.to_numpy(float), p.to_numpy(float),
                                       np.zeros(len(k), dtype=bool)))

    counted = F.col("_n").isNotNull() & F.col("rate").isNotNull()
    return (
        f.where(F.col("judged")).join(stats, keys)
        .withColumn("scale", F.greatest(F.col("mad") * MAD_TO_SIGMA, floor))
        .withColumn("z", (F.col("value") - F.col("median")) / F.col("scale"))
        .where(F.col("z") >= min_z)
        .withColumn("_p", F.when(counted, upper_tail(F.col("_events"), F.col("_n"), F.col("rate"))).otherwise(F.lit(0.0)))
        .where(F.col("_p") <= 0.5 * math.erfc(min_z / math.sqrt(2.0)))
        .select(*keys, "window_start", "window_end", F.col("raw").alias("value"),
                ((F.col("median") - min_z * F.col("scale")) * unit).alias("expected_low"),
                ((F.col("median") + min_z * F.col("scale")) * unit).alias("expected_high"),
                "z", (1.0 - 0.05 * F.exp(-(F.col("z") - min_z) / 2.0)).alias("ensemble_score"),
                F.lit("peer_deviation").alias("anomaly_type"), F.lit("medium").alias("severity"))
    )


SPARSE_SHARE = 0.5  # a service's log/trace data present in fewer than this share of its windows is sparse


def sparse_signals(features: DataFrame) -> DataFrame:
    """(system, service, component) of sparse signals: a service's logs (or traces) present in
    fewer than SPARSE_SHARE of the service's windows (exported only around incidents)."""
    per_service = features.groupBy("system", "service").agg(F.countDistinct("window_start").alias("service_windows"))
    return (
        features.where(F.col("component").isin(*PEER_COMPONENTS)).groupBy("system", "service", "component")
        .agg(F.countDistinct("window_start").alias("windows"))
        .join(per_service, ["system", "service"])
        .where(F.col("windows") < F.col("service_windows") * SPARSE_SHARE)
        .select("system", "service", "component")
    )


def sparse_peer_anomalies(features: DataFrame, scored: DataFrame, *, min_z: float, reference: Column | None = None,
                          emit_from: datetime | None = None, emit_to: datetime | None = None) -> DataFrame:
    """Anomaly rows (the columns of change_events) of *sparse* signals (sparse_signals): a service
    whose logs (or traces) exist only around incidents has too little history for a detector to
    calibrate on, so each window of those series is compared with the other windows of the same
    series (peer_deviations). Rows the detectors already flagged are left to them; a signal present
    all along is never peer-compared."""
    keys = ["system", "service", "component", "feature"]
    sparse = sparse_signals(features)
    rows = peer_deviations(features.join(sparse, ["system", "service", "component"], "left_semi"), min_z=min_z,
                           reference=reference).join(
        scored.select(*keys, "window_start"), [*keys, "window_start"], "left_anti")
    if emit_from is not None:
        rows = rows.where(F.col("window_start") >= F.lit(emit_from))
    if emit_to is not None:
        rows = rows.where(F.col("window_start") < F.lit(emit_to))
    return rows.select(
        *keys[:2], "window_start", "window_end", *keys[2:], "value", "expected_low", "expected_high",
        F.create_map(F.lit("peer"), F.col("ensemble_score")).alias("detector_scores"),
        "ensemble_score", "anomaly_type", "severity", F.lit(0.5).alias("confidence"), F.lit(False).alias("cold_start"),
    )


# ---- request patterns ---------------------------------------------------------------------------


def binomial_tail(k: np.ndarray, n: np.ndarray, p: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """P(K <= k) where lower, else P(K >= k), for K ~ Binomial(n, p)."""
    from scipy.stats import binom

    return np.where(lower, binom.cdf(k, n, p), binom.sf(k - 1, n, p))


def pattern_anomalies(features: DataFrame, *, min_shift: float, min_requests: int, max_p: float,
                      judged: Column | None = None, reference: Column | None = None,
                      emit_from: datetime | None = None, emit_to: datetime | None = None) -> DataFrame:
    """Anomaly rows (the columns of change_events) of request patterns (meltrca.features.patterns).

    Each share (requests of a service's operation in a window that wrote a log template, called a
    service, ended in error) is compared with the median share of the other windows of the same
    series (peer windows, at least PEER_MIN_WINDOWS; with judged=None every window is judged against
    all of them: a fault holds few of them). A window is anomalous when the share moved by at least
    min_shift, it had at least min_requests requests, and so many (or so few) of them showing the
    event is at most max_p likely under the series' pooled rate (binomial tail over the peer windows'
    requests, +0.5 / +1 pseudo-counts: events every request shows, or none, stay near 1 or 0; a
    DEBUG line sampled at 30% wanders by half a share in a small window and is no anomaly).
    Qualifying rows are: a template written by every request that
    is now missing (a skipped code path: ``drop``), a new error template or error spans
    (``new_error_pattern``), a call added (``unusual_frequency``) or skipped (``drop``). Score: the
    shift times sqrt(requests) — a whole endpoint changing behaviour outweighs a few requests —
    mapped to 0.95 at the least qualifying shift, towards 1 above it. The expected range is the
    median share itself (patterns.describe words it: "now missing in 92% of requests to POST /pay")."""
    keys = ["system", "service", "component", "feature"]
    p = with_event_and_operation(features).where(F.col("value").isNotNull())
    requests = p.where(F.col("event") == REQUESTS).select(
        "system", "service", "window_start", "window_end", "operation", F.col("value").alias("requests"))
    # features are causal (no share before an event was first seen); here every window with requests
    # to the operation is a peer, at 0 before the event existed: a new template is judged too
    series = p.where(F.col("event") != REQUESTS).select(*keys, "event", "operation").distinct()
    shares = (
        requests.join(series, ["system", "service", "operation"])
        .join(p.select(*keys, "window_start", "value"), [*keys, "window_start"], "left")
        .withColumn("value", F.coalesce(F.col("value"), F.lit(0.0)))
        .withColumn("judged", F.lit(True) if judged is None else judged)
    )
    peers = peer_windows(shares, keys, judged=None if judged is None else F.col("judged"), reference=reference)
    centre = peers.groupBy(*keys).agg(
        F.percentile_approx("value", 0.5, 10000).alias("median"), F.count(F.lit(1)).alias("peers"),
        ((F.sum(F.col("value") * F.col("requests")) + 0.5) / (F.sum("requests") + 1.0)).alias("rate"),
    ).where(F.col("peers") >= PEER_MIN_WINDOWS)
    shift = F.col("value") - F.col("median")

    @F.pandas_udf(DoubleType())
    def tail(k: pd.Series, n: pd.Series, p: pd.Series, lower: pd.Series) -> pd.Series:
        return pd.Series(binomial_tail(k.to_numpy(float), n.to_numpy(float), p.to_numpy(float), lower.to_numpy(bool)))

    z0 = float(min_shift) * float(min_requests) ** 0.5
    rows = (
        shares.where(F.col("judged")).join(centre, keys)
        .withColumn("shift", shift)
        .where((F.abs(F.col("shift")) >= float(min_shift)) & (F.col("requests") >= float(min_requests)))
        .withColumn("p", tail(F.round(F.col("value") * F.col("requests")), F.col("requests"), F.col("rate"),
                              F.col("shift") < 0))
        .where(F.col("p") <= float(max_p))
        .withColumn("z", F.abs(F.col("shift")) * F.sqrt("requests"))
    )
    if emit_from is not None:
        rows = rows.where(F.col("window_start") >= F.lit(emit_from))
    if emit_to is not None:
        rows = rows.where(F.col("window_start") < F.lit(emit_to))
    kind = (F.when(F.col("shift") < 0, F.lit("drop"))
            .when(F.col("event").startswith("call:"), F.lit("unusual_frequency"))
            .otherwise(F.lit("new_error_pattern")))
    score = 1.0 - 0.05 * F.exp(-(F.col("z") - z0) / 2.0)
    return rows.select(
        "system", "service", "window_start", "window_end", *keys[2:], "value",
        F.col("median").alias("expected_low"), F.col("median").alias("expected_high"),
        F.create_map(F.lit("pattern"), score).alias("detector_scores"), score.alias("ensemble_score"),
        kind.alias("anomaly_type"), F.lit("medium").alias("severity"), F.lit(0.5).alias("confidence"),
        F.lit(False).alias("cold_start"),
    )


def anomaly_id() -> F.Column:
    """First 16 hex of sha1(system|service|component|feature|window_start ISO): stable across reruns."""
    iso = F.date_format(F.col("window_start"), "yyyy-MM-dd'T'HH:mm:ss'Z'")
    return F.substring(F.sha1(F.concat_ws("|", "system", "service", "component", "feature", iso)), 1, 16)


def anomaly_rows(scored: DataFrame, events: DataFrame, *, window_seconds: int, run_id: str) -> DataFrame:
    """Scored candidates + change events -> rows shaped like the ANOMALIES table."""
    scores = F.map_filter(
        F.create_map(*[x for d in DETECTOR_ORDER for x in (F.lit(d), F.col(d))]), lambda k, v: v.isNotNull()
    )
    signals = scored.select(
        "system", "service", "window_start",
        (F.col("window_start") + F.make_dt_interval(secs=F.lit(window_seconds))).alias("window_end"),
        "component", "feature", "value", "expected_low", "expected_high", scores.alias("detector_scores"),
        "ensemble_score", "anomaly_type", "severity", "confidence", "cold_start",
    )
    return (
        signals.unionByName(events)
        .withColumn("anomaly_id", anomaly_id())
        .withColumn("run_id", F.lit(run_id))
    )
