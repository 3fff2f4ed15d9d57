"""Metric samples of one instance: the model's curves plus measurement noise."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa

from meltrca.generate import columns as col
from meltrca.generate.model import SystemModel

METRICS = (
    ("request_rate", "req/s"), ("error_rate", "ratio"), ("latency_p50_ms", "ms"), ("latency_p95_ms", "ms"),
    ("latency_p99_ms", "ms"), ("cpu_usage", "percent"), ("memory_usage", "MiB"), ("conn_pool_usage", "percent"),
    ("gc_pause_ms", "ms"), ("thread_count", "count"),
)
METRIC_FIELDS = ("system", "ts", "service", "instance", "metric", "value", "labels")


def noisy_values(curves: dict[str, np.ndarray], minutes: np.ndarray, interval: int, memory_mib: float,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """What a scrape would read: sampling noise on rates and ratios, jitter on gauges."""
    n = len(minutes)
    c = {k: v[minutes] for k, v in curves.items()}
    rate = np.maximum(c["request_rate"] * (1 + 0.04 * rng.standard_normal(n)), 0)
    requests = rate * 60 * interval
    errors = rng.poisson(c["error_rate"] * requests)
    z = rng.standard_normal((3, n))
    p50 = c["latency_p50_ms"] * np.exp(0.06 * z[0])
    p95 = np.maximum(p50, c["latency_p95_ms"] * np.exp(0.06 * z[0] + 0.08 * z[1]))
    p99 = np.maximum(p95, c["latency_p99_ms"] * np.exp(0.06 * z[0] + 0.08 * z[1] + 0.12 * z[2]))
    saw = (minutes % 17) / 17.0 - 0.5  # heap grows between collections, drops after
    return {
        "request_rate": rate,
        "error_rate": np.where(requests > 0, errors / np.maximum(requests, 1), 0.0),
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
        "cpu_usage": np.clip(c["cpu_usage"] + 1.5 * rng.standard_normal(n), 0, 100),
        "memory_usage": np.maximum(c["memory_usage"] + memory_mib * (0.03 * saw + 0.004 * rng.standard_normal(n)), 1),
        "conn_pool_usage": np.clip(c["conn_pool_usage"] * (1 + 0.05 * rng.standard_normal(n)), 0, 100),
        "gc_pause_ms": c["gc_pause_ms"] * rng.lognormal(0, 0.3, n),
        "thread_count": np.rint(np.maximum(c["thread_count"] + rng.standard_normal(n), 1)),
    }


def metric_batch(model: SystemModel, inst: int, minutes: np.ndarray, curves: dict[str, np.ndarray],
                 origin: datetime, interval: int, rng: np.random.Generator) -> pa.RecordBatch:
    """Ten metric rows per sample minute of one instance."""
    s = int(model.inst_service[inst])
    svc = model.topo.services[s]
    values = noisy_values(curves, minutes, interval, svc.memory_mib, rng)
    n, k = len(minutes), len(METRICS)
    total = n * k
    ts_ms = np.repeat(minutes * 60_000.0, k)
    metric_idx = np.tile(np.arange(k), n)
    value = np.stack([values[name] for name, _ in METRICS], axis=1).reshape(-1)
    labels = col.string_map(
        [("unit", col.take([u for _, u in METRICS], metric_idx), None), ("node", col.constant(model.inst_nodes[inst], total), None)],
        total,
    )
    return pa.RecordBatch.from_arrays(
        [col.constant(model.sp.name, total), col.timestamps(origin, ts_ms), col.constant(svc.name, total),
         col.constant(model.inst_names[inst], total), col.take([m for m, _ in METRICS], metric_idx), pa.array(value), labels],
        names=list(METRIC_FIELDS),
    )
