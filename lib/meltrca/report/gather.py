"""Reads what the report shows from the results lake, in a few bounded Spark jobs.

Only the incidents on the page (at most ``max_incidents``, most severe first) are expanded: their
anomalies are summarised per series in Spark, the plotted series' feature values are fetched by a
broadcast join of a small request table, and nothing else leaves the cluster. Timestamps travel as
epoch microseconds so the page shows UTC whatever the driver's local time zone is.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from meltrca.logs import get_logger
from meltrca.report.model import (
    SEVERITY_ORDER,
    ChangeMarker,
    Edge,
    IncidentView,
    ReportData,
    Series,
    SeriesStat,
    choose_series,
    sort_root_causes,
)
from meltrca.timewindow import TimeWindow, utcnow

if TYPE_CHECKING:
    from meltrca.io import Lake

log = get_logger("report")

SERIES_KEY = ["system", "service", "component", "feature"]
REQUEST_SCHEMA = StructType(
    [StructField("incident_id", StringType(), False)]
    + [StructField(c, StringType(), False) for c in SERIES_KEY]
    + [StructField("t0", LongType(), False), StructField("t1", LongType(), False)]
)


@dataclass(frozen=True)
class ReportParams:
    """How much the page shows."""

    max_incidents: int = 50
    series_per_incident: int = 3
    context_minutes: float = 30.0  # plotted before the start and after the end of an incident
    change_lookback_minutes: float = 30.0  # change events this long before an incident are marked


def micros(col: str | Column) -> Column:
    return F.unix_micros(F.col(col) if isinstance(col, str) else col)


def from_micros(value: int | None) -> datetime | None:
    """Epoch microseconds -> naive UTC datetime (the lake's convention)."""
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1e6, UTC).replace(tzinfo=None)


def to_micros(dt: datetime) -> int:
    return int(dt.replace(tzinfo=UTC).timestamp() * 1_000_000)


def severity_order(col: str = "severity") -> Column:
    """0 = critical ... 3 = low, 99 = unknown: sorts the worst incidents first."""
    arr = F.array(*[F.lit(s) for s in SEVERITY_ORDER])
    pos = F.array_position(arr, F.lower(F.col(col)))
    return F.when(pos > 0, pos - 1).otherwise(F.lit(99))


def read_evaluation(results: Path) -> tuple[dict[str, Any] | None, str | None]:
    """evaluation.json when present; an unreadable one is reported on the page, not fatal."""
    path = results / "evaluation.json"
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"evaluation.json could not be read ({type(exc).__name__}: {exc}); evaluation table left out"
    if not isinstance(data, dict):
        return None, "evaluation.json does not hold a JSON object; evaluation table left out"
    return data, None


def gather(
    lake: Lake,
    *,
    results: Path,
    systems: list[str] | None,
    window: TimeWindow,
    params: ReportParams,
) -> ReportData:
    """Everything the page needs, as plain values."""
    incidents = lake.read("incidents", systems=systems, window=window, required=True)
    severity_counts = {
        (r["severity"] or "unknown"): int(r["count"]) for r in incidents.groupBy("severity").count().collect()
    }
    total = sum(severity_counts.values())
    rows = (
        incidents.orderBy(severity_order(), "start", "incident_id")
        .limit(params.max_incidents)
        .select(
            "system", "incident_id", micros("start").alias("start_us"), micros(F.coalesce("end", "start")).alias("end_us"),
            "severity", "services", "anomaly_ids", "root_causes", "explanation", "explanation_writer",
            F.transform("causal_chain", lambda c: F.struct(
                c["service"].alias("service"), micros(c["onset"]).alias("onset_us"), c["lag_seconds"].alias("lag_seconds")
            )).alias("causal_chain"),
        )
        .collect()
    )
    views = [_incident_view(r.asDict(recursive=True)) for r in rows]
    anomalies = lake.read("anomalies", systems=systems, window=window)
    anomaly_counts = {r["component"]: int(r["count"]) for r in anomalies.groupBy("component").count().collect()}
    shown_systems = sorted({v.system for v in views})
    all_systems = systems or sorted(
        {r[0] for r in incidents.select("system").union(anomalies.select("system")).distinct().collect()}
    )
    if views:
        _fill_series_and_changes(lake, views, shown_systems, params)
    graphs = _service_graphs(lake, shown_systems)
    evaluation, note = read_evaluation(results)
    return ReportData(
        results=str(results),
        generated_at=utcnow(),
        window=str(window),
        systems=list(all_systems),
        incidents=views,
        total_incidents=total,
        severity_counts=severity_counts,
        anomaly_counts=anomaly_counts,
        graphs=graphs,
        evaluation=evaluation,
        notes=[note] if note else [],
    )


def _incident_view(d: dict[str, Any]) -> IncidentView:
    chain = [
        {"service": c["service"], "onset": from_micros(c["onset_us"]), "lag_seconds": c["lag_seconds"]}
        for c in d.get("causal_chain") or []
    ]
    return IncidentView(
        system=d["system"],
        incident_id=d["incident_id"],
        start=from_micros(d["start_us"]),  # type: ignore[arg-type]
        end=from_micros(d["end_us"]),  # type: ignore[arg-type]
        severity=(d.get("severity") or "unknown").lower(),
        services=list(d.get("services") or []),
        root_causes=sort_root_causes(d.get("root_causes")),
        causal_chain=chain,
        explanation=d.get("explanation"),
        explanation_writer=d.get("explanation_writer"),
        anomaly_count=len(d.get("anomaly_ids") or []),
    )


def _fill_series_and_changes(lake: Lake, views: list[IncidentView], systems: list[str], params: ReportParams) -> None:
    """Per incident: the series to plot (values, anomaly windows, expected range) and change markers."""
    spark = lake.spark
    context = timedelta(minutes=params.context_minutes)
    lookback = timedelta(minutes=params.change_lookback_minutes)
    span = TimeWindow(min(v.start for v in views) - max(context, lookback), max(v.end for v in views) + context)
    by_id = {v.incident_id: v for v in views}
    shown = lake.read("incidents", systems=systems, window=span).where(F.col("incident_id").isin(list(by_id)))
    around = lake.read("anomalies", systems=systems, window=span)

    members = shown.select("incident_id", F.explode("anomaly_ids").alias("anomaly_id")).join(around, "anomaly_id")
    stats: dict[str, list[SeriesStat]] = defaultdict(list)
    for r in (
        members.where(F.col("component") != "event")
        .groupBy("incident_id", "service", "component", "feature")
        .agg(F.max("ensemble_score").alias("peak"), F.count("*").alias("n"), F.min(micros("window_start")).alias("onset"))
        .collect()
    ):
        stats[r["incident_id"]].append(
            SeriesStat(r["service"], r["component"], r["feature"], float(r["peak"] or 0.0), int(r["n"]), from_micros(r["onset"]))  # type: ignore[arg-type]
        )

    _fill_changes(shown, around, by_id, lookback)

    requests: list[tuple[str, str, str, str, str, int, int]] = []
    for v in views:
        t0, t1 = to_micros(v.start - context), to_micros(v.end + context)
        for s in choose_series(stats.get(v.incident_id, []), v.root_causes, params.series_per_incident):
            v.series.append(Series(s.service, s.component, s.feature))
            requests.append((v.incident_id, v.system, s.service, s.component, s.feature, t0, t1))
    if not requests:
        return
    req = F.broadcast(spark.createDataFrame(requests, REQUEST_SCHEMA))
    in_range = (micros("window_start") >= F.col("t0")) & (micros("window_start") < F.col("t1"))
    series = {(v.incident_id, s.service, s.component, s.feature): s for v in views for s in v.series}

    features = lake.read("features", systems=systems, window=span)
    for r in (
        features.join(req, SERIES_KEY)
        .where(in_range)
        .select("incident_id", "service", "component", "feature", micros("window_start").alias("ws"), "value")
        .orderBy("incident_id", "service", "component", "feature", "ws")
        .collect()
    ):
        if r["value"] is not None:
            series[(r["incident_id"], r["service"], r["component"], r["feature"])].points.append(
                (from_micros(r["ws"]), float(r["value"]))  # type: ignore[arg-type]
            )

    lows: dict[tuple[str, ...], list[tuple[float, float]]] = defaultdict(list)
    fallback: dict[tuple[str, ...], list[tuple[datetime, float]]] = defaultdict(list)
    for r in (
        around.join(req, SERIES_KEY)
        .where(in_range)
        .select(
            "incident_id", "service", "component", "feature", micros("window_start").alias("ws"),
            micros("window_end").alias("we"), "value", "expected_low", "expected_high",
        )
        .orderBy("incident_id", "service", "component", "feature", "ws")
        .collect()
    ):
        key = (r["incident_id"], r["service"], r["component"], r["feature"])
        s = series[key]
        s.anomaly_windows.append((from_micros(r["ws"]), from_micros(r["we"])))  # type: ignore[arg-type]
        if r["expected_low"] is not None and r["expected_high"] is not None:
            lows[key].append((float(r["expected_low"]), float(r["expected_high"])))
        # Without feature rows (e.g. features compacted away) the anomalous values still show.
        if r["value"] is not None and not s.points:
            fallback[key].append((from_micros(r["ws"]), float(r["value"])))  # type: ignore[arg-type]
    for key, pts in fallback.items():
        series[key].points.extend(pts)
    for s in series.values():
        s.points.sort()
    for key, ranges in lows.items():
        series[key].expected = (median(lo for lo, _ in ranges), median(hi for _, hi in ranges))


def _fill_changes(shown: DataFrame, around: DataFrame, by_id: dict[str, IncidentView], lookback: timedelta) -> None:
    """Change events (component event) on an incident's services, from lookback before its start to its end."""
    services = shown.select(
        "incident_id", "system", micros("start").alias("s_us"), micros(F.coalesce("end", "start")).alias("e_us"),
        F.explode(F.array_union(F.coalesce("services", F.array()), F.transform(
            F.coalesce("root_causes", F.array()), lambda c: c["service"]
        ))).alias("service"),
    )
    events = around.where(F.col("component") == "event").select(
        "system", "service", "feature", micros("window_start").alias("ts")
    )
    lb = int(lookback.total_seconds() * 1_000_000)
    rows = (
        services.join(events, ["system", "service"])
        .where((F.col("ts") >= F.col("s_us") - F.lit(lb)) & (F.col("ts") <= F.col("e_us")))
        .select("incident_id", "service", "feature", "ts")
        .distinct()
        .orderBy("incident_id", "ts", "service")
        .collect()
    )
    for r in rows:
        kind = r["feature"][: -len("_count")] if r["feature"].endswith("_count") else r["feature"]
        by_id[r["incident_id"]].changes.append(ChangeMarker(from_micros(r["ts"]), r["service"], kind))  # type: ignore[arg-type]


def _service_graphs(lake: Lake, systems: list[str]) -> dict[str, list[Edge]]:
    """The call graph (caller -> callee) of each system on the page."""
    if not systems:
        return {}
    graphs: dict[str, list[Edge]] = defaultdict(list)
    g = lake.read("service_graph", systems=systems)
    agg = g.groupBy("system", "src", "dst").agg(
        F.sum("calls").alias("calls"), F.max("error_ratio").alias("error_ratio"), F.max("p95_ms").alias("p95_ms")
    )
    for r in agg.orderBy("system", "src", "dst").collect():
        graphs[r["system"]].append(
            Edge(r["src"], r["dst"], None if r["calls"] is None else int(r["calls"]), r["error_ratio"], r["p95_ms"])
        )
    return dict(graphs)

