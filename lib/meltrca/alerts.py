"""The alert outbox (gold `alerts`) and its delivery to a sink (`meltrca queue`).

Outbox: ``explain`` adds one row per incident *event*: ``opened`` the first time an incident is
seen, ``updated`` when its content version (severity, services, top-3 root causes, start, end)
changes, ``resolved`` once no anomaly has extended it for ``alerts.resolve_after_minutes`` of
data. ``dedup_key`` = sha1(system|incident_id|event|content_version): a rerun computes the same
keys and the insert-only merge adds nothing, so reruns never duplicate alerts.

Delivery: pending rows, oldest first, go to a JSON-lines file or an HTTP webhook (POST of the
payload JSON with ``Idempotency-Key: <dedup_key>``). Retries with exponential backoff on
429/5xx/timeouts/refused connections, up to ``alerts.max_attempts`` per alert per run; a row is
marked delivered only after a 2xx (or a flushed+fsynced line); ``attempts``, ``last_error`` and
``last_attempt_at`` record failures. When one alert exhausts its retries the sink is treated as
down: the rest stay pending untouched for the next run, and the run exits non-zero.

Guarantee: at-least-once. Each alert is delivered until one attempt is acknowledged, and
delivered rows are never sent again, so running the queue twice sends nothing twice. A
duplicate at the receiver is still possible when an acknowledgement is lost (the receiver
accepted the POST but the response timed out or the connection dropped, or the process died
between the acknowledgement and the status commit); receivers dedup on ``dedup_key``.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from meltrca.errors import ConfigError
from meltrca.explain.context import JSON_OPTIONS
from meltrca.explain.http import HTTPFailure, JsonPoster, RetryPolicy
from meltrca.io import Lake
from meltrca.logs import get_logger
from meltrca.schemas import ALERTS
from meltrca.timewindow import utcnow

log = get_logger("alerts")

EVENTS = ("opened", "updated", "resolved")
PENDING, DELIVERED = "pending", "delivered"


# ---- outbox --------------------------------------------------------------------------------------


def content_version(incidents: DataFrame) -> Column:
    """16 hex of what makes an incident alert-worthy again when it changes (not the explanation text)."""
    ranked = F.array_sort(F.transform(
        F.coalesce("root_causes", F.array()),
        lambda r: F.struct(F.coalesce(r["rank"], F.lit(1 << 30)).alias("rank"), r["service"].alias("service")),
    ))
    top = F.array_join(F.transform(F.slice(ranked, 1, 3), lambda r: r["service"]), ",")
    parts = [
        F.coalesce(F.lower("severity"), F.lit("")),
        F.array_join(F.array_sort(F.coalesce("services", F.array())), ","),
        top,
        F.date_format("start", "yyyy-MM-dd'T'HH:mm:ss"),
        F.coalesce(F.date_format("end", "yyyy-MM-dd'T'HH:mm:ss"), F.lit("")),
    ]
    return F.substring(F.sha1(F.concat_ws("|", *parts)), 1, 16)


def _event_rank(col: Column) -> Column:
    return F.array_position(F.array(*[F.lit(e) for e in EVENTS]), col)


def outbox_rows(
    incidents: DataFrame,
    previous: DataFrame,
    horizons: DataFrame,
    *,
    resolve_after_minutes: float,
    created_at: datetime,
) -> DataFrame:
    """New `alerts` rows (ALERTS columns) for the incidents' opened/updated/resolved events.

    incidents: incidents rows with explanation filled; previous: the existing `alerts` rows of
    those systems; horizons: (system, horizon) = the latest data time seen per system.
    """
    inc = incidents.withColumn("content_version", content_version(incidents))
    prev = previous.select(
        "system", "incident_id", "event", "created_at",
        F.get_json_object("payload", "$.content_version").alias("version"),
    )
    history = prev.groupBy("system", "incident_id").agg(
        F.max_by("version", F.struct("created_at", _event_rank(F.col("event")))).alias("last_version"),
        F.collect_set(F.when(F.col("event") == "resolved", F.col("version"))).alias("resolved_versions"),
    )
    joined = inc.join(history, ["system", "incident_id"], "left").join(horizons, "system", "left")
    is_new = F.col("last_version").isNull()
    ended = F.coalesce("end", "start").cast("double") + F.lit(resolve_after_minutes * 60.0) <= F.col(
        "horizon"
    ).cast("double")
    not_yet_resolved = ~F.coalesce(F.array_contains("resolved_versions", F.col("content_version")), F.lit(False))
    events = F.array_compact(F.array(
        F.when(is_new, F.lit("opened")),
        F.when(~is_new & (F.col("last_version") != F.col("content_version")), F.lit("updated")),
        F.when(F.coalesce(ended, F.lit(False)) & not_yet_resolved, F.lit("resolved")),
    ))
    rows = joined.withColumn("event", F.explode(events))
    key = F.sha1(F.concat_ws("|", "system", "incident_id", "event", "content_version"))
    ranked = F.array_sort(F.transform(
        F.coalesce("root_causes", F.array()),
        lambda r: F.struct(F.coalesce(r["rank"], F.lit(1 << 30)).alias("_rank"), r["service"].alias("service"),
                           r["score"].alias("score"), r["rank"].alias("rank"), r["indicator"].alias("indicator"),
                           r["evidence"].alias("evidence")),
    ))
    payload = F.struct(
        F.col("dedup_key"), "event", "content_version", "system", "incident_id", "start", "end", "severity",
        F.array_sort(F.coalesce("services", F.array())).alias("affected_services"),
        F.transform(F.slice(ranked, 1, 5), lambda r: r.dropFields("_rank")).alias("root_causes"),
        "explanation", "explanation_writer",
    )
    return rows.withColumn("dedup_key", key).select(
        F.substring("dedup_key", 1, 16).alias("alert_id"), "dedup_key", "system", "incident_id", "event",
        F.to_json(payload, JSON_OPTIONS).alias("payload"),
        F.lit(created_at).cast("timestamp").alias("created_at"), F.lit(PENDING).alias("status"),
        F.lit(0).alias("attempts"), F.lit(None).cast("timestamp").alias("last_attempt_at"),
        F.lit(None).cast("timestamp").alias("delivered_at"), F.lit(None).cast("string").alias("last_error"),
        F.lit(None).cast("string").alias("sink"),
    )


def data_horizons(*frames: tuple[DataFrame, str]) -> DataFrame:
    """(system, horizon): the latest time column value per system across (frame, column) pairs."""
    parts = [df.select("system", F.col(col).alias("t")) for df, col in frames]
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p)
    return union.groupBy("system").agg(F.max("t").alias("horizon"))


# ---- sinks ---------------------------------------------------------------------------------------


class SinkFailure(Exception):
    """An alert was not accepted. ``retryable`` False = the sink rejected this alert (4xx)."""

    def __init__(self, reason: str, attempts: int, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.retryable = retryable


class Sink(Protocol):
    description: str

    def send(self, payload: str, dedup_key: str, event: str) -> int:
        """Deliver one alert; return attempts made, or raise SinkFailure."""
        ...


class JsonlSink:
    """Appends one JSON line per alert; the line is flushed and fsynced before it counts."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.description = f"jsonl:{self.path}"

    def send(self, payload: str, dedup_key: str, event: str) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(payload.rstrip("\n") + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise SinkFailure(f"io-error: {exc.strerror or type(exc).__name__}", 1, retryable=True) from None
        return 1


class WebhookSink:
    """POSTs the payload JSON; 2xx = delivered. Retries per RetryPolicy (alerts.*)."""

    def __init__(self, url: str, policy: RetryPolicy) -> None:
        self.url = url
        self.poster = JsonPoster(policy)
        self.description = f"webhook:{redact_url(url)}"

    def send(self, payload: str, dedup_key: str, event: str) -> int:
        headers = {"Content-Type": "application/json", "Idempotency-Key": dedup_key, "X-Meltrca-Event": event}
        try:
            _, _, attempts = self.poster.post(self.url, payload.encode("utf-8"), headers)
        except HTTPFailure as exc:
            retryable = exc.status is None or exc.status in (408, 429) or exc.status >= 500
            raise SinkFailure(exc.reason, exc.attempts, retryable=retryable) from None
        return attempts


def redact_url(url: str) -> str:
    """scheme://host:port/path, without credentials or query (which may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_sink(spec: str, *, policy: RetryPolicy) -> Sink:
    """'jsonl:PATH' or 'webhook:URL' -> a sink; anything else is a one-line config error."""
    kind, sep, target = spec.partition(":")
    if sep and target:
        if kind == "jsonl":
            return JsonlSink(target)
        if kind == "webhook":
            if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
                raise ConfigError(f"--sink webhook:URL needs an http(s) URL (got {redact_url(target)!r})")
            return WebhookSink(target, policy)
    raise ConfigError(f"--sink must be jsonl:PATH or webhook:URL (got {spec.split(':', 1)[0]!r}...)")


# ---- delivery ------------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    delivered: int = 0
    pending: int = 0
    last_error: str | None = None


def pending_alerts(lake: Lake, systems: Sequence[str] | None) -> list[dict[str, Any]]:
    """Undelivered alerts, oldest first (opened before updated before resolved)."""
    rows = (
        lake.read("alerts", systems=systems, required=True)
        .where(F.col("status") != DELIVERED)
        .withColumn("_rank", _event_rank(F.col("event")))
        .orderBy("created_at", "_rank", "incident_id", "alert_id")
        .drop("_rank")
        .collect()
    )
    return [r.asDict() for r in rows]


def _commit(lake: Lake, rows: Iterable[dict[str, Any]]) -> None:
    batch = [tuple(r[f] for f in ALERTS.fieldNames()) for r in rows]
    if batch:
        lake.merge("alerts", lake.spark.createDataFrame(batch, ALERTS), keys=["alert_id"])


def deliver_pending(
    lake: Lake,
    sink: Sink,
    *,
    systems: Sequence[str] | None = None,
    commit_every: int = 50,
) -> DeliveryReport:
    """Send pending alerts in order; commit statuses every `commit_every` alerts and at the end."""
    alerts = pending_alerts(lake, systems)
    report = DeliveryReport(pending=len(alerts))
    changed: list[dict[str, Any]] = []
    try:
        for alert in alerts:
            now = utcnow()
            alert.update(last_attempt_at=now, sink=sink.description)
            try:
                n = sink.send(alert["payload"], alert["dedup_key"], alert["event"])
            except SinkFailure as exc:
                alert.update(attempts=(alert["attempts"] or 0) + exc.attempts, last_error=exc.reason)
                changed.append(alert)
                report.last_error = exc.reason
                log.warning("alert %s (%s %s) not delivered: %s", alert["alert_id"], alert["event"],
                            alert["incident_id"], exc.reason)
                if exc.retryable:
                    break  # the sink is down: keep the rest pending for the next run
                continue
            alert.update(attempts=(alert["attempts"] or 0) + n, status=DELIVERED, delivered_at=utcnow(),
                         last_error=None)
            changed.append(alert)
            report.delivered += 1
            report.pending -= 1
            if len(changed) >= commit_every:
                _commit(lake, changed)
                changed = []
    finally:
        _commit(lake, changed)
    return report
