"""Work units and the Arrow batches each one produces (runs inside Spark tasks).

A unit is (system, hour, instance) for metrics and instance logs, or (system, hour, shard) for
traces and request logs. Every random draw of a unit comes from a generator keyed by
(seed, unit), so a unit's rows are the same whichever task, partition or run computes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from meltrca.generate import columns as col
from meltrca.generate.loglines import STATUS, catalog_for, empty_logs, instance_logs, span_logs
from meltrca.generate.metrics import metric_batch
from meltrca.generate.model import ERROR_TYPES, SystemModel, model_for, static_visits, traffic_profile
from meltrca.generate.plan import GenerationPlan, plan_from_json
from meltrca.generate.randomness import rng_for
from meltrca.generate.traces import Spans, TraceSampler, traces_in_minutes

SPAN_FIELDS = ("system", "trace_id", "span_id", "parent_span_id", "service", "operation", "start_ts", "end_ts",
               "duration_ms", "status", "kind", "attributes")
TABLE_UNIT_KINDS = {"metrics": ("instance",), "spans": ("traces",), "logs": ("instance", "traces")}


@dataclass(frozen=True)
class Unit:
    kind: str  # "instance" | "traces"
    system: int
    hour: int
    instance: int = -1  # global instance index (instance units)
    shard: int = 0
    shards: int = 1
    weight: float = 0.0  # expected spans (trace units) or sample minutes (instance units)

    def row(self) -> tuple:
        return tuple(asdict(self).values())


def expected_rows(unit: Unit, table: str, interval: int) -> float:
    """Rough row count of a unit in a table (to size Spark tasks, not a promise)."""
    if unit.kind == "traces":
        return {"spans": 1.0, "logs": 0.9}.get(table, 0.0) * unit.weight
    return {"metrics": 10.0 / interval, "logs": 1.6}.get(table, 0.0) * unit.weight


def plan_units(plan: GenerationPlan) -> list[Unit]:
    """Every unit of the plan, hour by hour (trace shards sized by the expected trace count)."""
    units: list[Unit] = []
    for sp in plan.systems:
        profile = traffic_profile(plan, sp, rng_for(plan.seed, "profile", sp.index))
        spans = float(static_visits(sp.topology).sum())  # spans per trace, before retries
        model_active = _active_hours(plan, sp)
        for h in range(plan.hours):
            m0, m1 = h * 60, min(plan.minutes, h * 60 + 60)
            expected = plan.requests_per_minute * float(profile[m0:m1].sum())
            shards = max(1, math.ceil(expected * 1.15 / plan.traces_per_unit))
            units.extend(Unit("traces", sp.index, h, shard=k, shards=shards, weight=expected * spans / shards)
                         for k in range(shards))
            units.extend(Unit("instance", sp.index, h, instance=i, weight=float(m1 - m0)) for i in model_active[h])
    return units


def _active_hours(plan: GenerationPlan, sp) -> list[list[int]]:
    """Per hour, the global indices of instances running at some minute of it."""
    out: list[list[int]] = [[] for _ in range(plan.hours)]
    i = 0
    for s in sp.topology.services:
        for inst in s.instances:
            end = plan.minutes if inst.active_to is None else inst.active_to
            for h in range(inst.active_from // 60, min(plan.hours, math.ceil(end / 60))):
                out[h].append(i)
            i += 1
    return out


def unit_batches(plan_json: str, unit: Unit, table: str) -> Iterator[pa.RecordBatch]:
    """The rows of one table that one unit produces."""
    plan = plan_from_json(plan_json)
    model = model_for(plan_json, unit.system)
    m0, m1 = unit.hour * 60, min(plan.minutes, unit.hour * 60 + 60)
    if unit.kind == "traces":
        spans, trace_ids, span_ids = _sample_traces(plan, model, unit, m0, m1)
        if table == "spans":
            yield span_batch(model, spans, trace_ids, span_ids, plan)
        elif table == "logs":
            rng = rng_for(plan.seed, "span-logs", unit.system, unit.hour, unit.shard)
            logs = span_logs(plan_json, unit.system, spans, rng, sample_rate=plan.log_sample_rate)
            yield logs.batch(model, catalog_for(plan_json, unit.system), plan.start_dt, spans=spans,
                             trace_ids=trace_ids, span_ids=span_ids)
        return
    minutes = np.arange(m0, m1)
    minutes = minutes[model.active[unit.instance, minutes]]
    if not len(minutes):
        return
    curves = model.instance_curves(unit.instance)
    if table == "metrics":
        sampled = minutes[minutes % plan.interval == 0]
        if len(sampled):
            rng = rng_for(plan.seed, "metrics", unit.system, unit.instance, unit.hour)
            yield metric_batch(model, unit.instance, sampled, curves, plan.start_dt, plan.interval, rng)
    elif table == "logs":
        rng = rng_for(plan.seed, "instance-logs", unit.system, unit.instance, unit.hour)
        logs = instance_logs(plan_json, unit.system, unit.instance, minutes, curves, rng, sample_rate=plan.log_sample_rate)
        yield logs.batch(model, catalog_for(plan_json, unit.system), plan.start_dt) if len(logs) else empty_logs()


def _sample_traces(plan: GenerationPlan, model: SystemModel, unit: Unit, m0: int, m1: int) -> tuple[Spans, pa.Array, pa.Array]:
    counts = rng_for(plan.seed, "trace-count", unit.system, unit.hour).poisson(plan.requests_per_minute * model.profile[m0:m1])
    mine = traces_in_minutes(counts, unit.shard, unit.shards)
    minute = np.repeat(np.arange(m0, m1), mine)
    rng = rng_for(plan.seed, "traces", unit.system, unit.hour, unit.shard)
    offsets = rng.uniform(0, 60_000, len(minute))
    spans = TraceSampler(model, rng).sample(minute, offsets)
    trace_ids = col.hex_ids(rng.integers(0, np.iinfo(np.uint64).max, size=(len(minute), 2), dtype=np.uint64, endpoint=True))
    span_ids = col.hex_ids(rng.integers(1, np.iinfo(np.uint64).max, size=len(spans), dtype=np.uint64, endpoint=True))
    return spans, trace_ids, span_ids


def span_batch(model: SystemModel, spans: Spans, trace_ids: pa.Array, span_ids: pa.Array, plan: GenerationPlan) -> pa.RecordBatch:
    n = len(spans)
    topo = model.topo
    root = spans.parent < 0
    parent_ids = span_ids.take(pa.array(np.where(root, 0, spans.parent), mask=root))
    failed = spans.failed.astype(bool)
    code = np.array([STATUS.get(k, "500") for k in range(10)])[spans.kind]
    code = np.where(failed, code, "200")
    attrs = col.string_map(
        [
            ("instance", col.take(model.inst_names, spans.instance), None),
            ("http.status_code", pa.array(code), None),
            ("error.type", col.take(list(ERROR_TYPES), spans.kind), failed),
            ("retry.attempt", col.number_text(spans.attempt), spans.attempt > 0),
        ],
        n,
    )
    start_us, end_us = nested_micros(spans)
    return pa.RecordBatch.from_arrays(
        [
            col.constant(model.sp.name, n), trace_ids.take(pa.array(spans.trace)), span_ids, parent_ids,
            col.take([s.name for s in topo.services], spans.service), col.take([o.name for o in topo.ops], spans.op),
            col.micros(plan.start_dt, start_us), col.micros(plan.start_dt, end_us),
            pa.array((end_us - start_us) / 1000.0), col.take(["ok", "error"], failed.astype(int)),
            col.constant("server", n), attrs,
        ],
        names=list(SPAN_FIELDS),
    )


def nested_micros(spans: Spans) -> tuple[np.ndarray, np.ndarray]:
    """Start/end in whole microseconds, with rounding never pushing a child outside its parent."""
    start = np.rint(spans.start_ms * 1000).astype(np.int64)
    end = np.maximum(np.rint((spans.start_ms + spans.dur_ms) * 1000).astype(np.int64), start)
    child = np.nonzero(spans.parent >= 0)[0]
    par = spans.parent[child]
    for _ in range(32):  # depth of the deepest trace at most
        s2 = np.maximum(start[child], start[par])
        e2 = np.maximum(np.minimum(end[child], end[par]), s2)
        if np.array_equal(s2, start[child]) and np.array_equal(e2, end[child]):
            break
        start[child], end[child] = s2, e2
    return start, end
