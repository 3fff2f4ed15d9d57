"""Physics of the generated telemetry, checked on generated rows (no Spark needed: the same
unit functions the Spark job runs, called directly for the hours around each fault)."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from meltrca.config import load_settings
from meltrca.generate.labels import labels
from meltrca.generate.model import OK, REJECTED, SystemModel
from meltrca.generate.plan import GenerationPlan, build_plan
from meltrca.generate.randomness import rng_for
from meltrca.generate.traces import TraceSampler, traces_in_minutes
from meltrca.generate.units import Unit, nested_micros, plan_units, unit_batches

SETTINGS = {"services": 12, "duration": 10.0, "faults": 8, "seed": 3, "requests_per_minute": 300}


def make_plan(**kw) -> GenerationPlan:
    s = load_settings(environ={}, overrides={f"generate.{k}": v for k, v in {**SETTINGS, **kw}.items()})
    return build_plan(s.generate)


@lru_cache(maxsize=8)
def frames(plan_json: str, hours: tuple[int, ...]) -> dict[str, pd.DataFrame]:
    """metrics / spans / logs rows of the given hours, as pandas."""
    plan = GenerationPlan.from_json(plan_json)
    units = [u for u in plan_units(plan) if u.hour in hours]
    out = {}
    for table, kinds in (("metrics", ("instance",)), ("spans", ("traces",)), ("logs", ("instance", "traces"))):
        batches = [b for u in units if u.kind in kinds for b in unit_batches(plan_json, u, table) if b.num_rows]
        df = pa.Table.from_batches(batches).to_pandas()
        df["minute"] = ((df["ts" if "ts" in df else "start_ts"] - pd.Timestamp(plan.start)).dt.total_seconds() // 60).astype(int)
        out[table] = df
    sp = out["spans"]
    sp["error_type"] = sp.attributes.map(lambda kv: dict(kv).get("error.type", ""))
    return out


def fault_frames(plan: GenerationPlan, f) -> dict[str, pd.DataFrame]:
    hours = tuple(range(max(0, (f.start - 65) // 60), min(plan.hours, (f.end + 6) // 60 + 1)))
    return frames(plan.to_json(), hours)


def entry_spans(spans: pd.DataFrame, service: str) -> pd.DataFrame:
    """Spans of a service whose parent is missing or belongs to another service (conventions)."""
    parent = spans.set_index("span_id").service
    ps = spans.parent_span_id.map(parent)
    return spans[(spans.service == service) & (ps != service)]


def windows(f, plan: GenerationPlan | None = None):
    """(baseline minutes, fault window): the hour before the fault, minus other faults and their recovery."""
    base = set(range(f.start - 65, f.start - 5))
    for g in plan.systems[0].faults if plan is not None else ():
        base -= set(range(g.start, g.end + 15))
    return sorted(base), (f.start, f.end)


def in_window(df, w):
    if isinstance(w, list):
        return df[df.minute.isin(w)]
    return df[(df.minute >= w[0]) & (df.minute < w[1])]


def indicator_rises(plan, sp, f) -> tuple[float, float]:
    """(baseline, fault window) value of the label's indicator on the root service."""
    fr = fault_frames(plan, f)
    root = sp.topology.services[f.root].name
    base_w, fault_w = windows(f, plan)
    if f.indicator.endswith("_mean"):
        metric = f.indicator[: -len("_mean")]
        m = fr["metrics"]
        series = m[(m.service == root) & (m.metric == metric)].groupby("minute").value.mean()
        base, win = in_window(series.reset_index(), base_w).value, in_window(series.reset_index(), fault_w).value
        if metric == "memory_usage":  # a leak shows by the end of its window
            win = win.tail(5)
        if metric == "conn_pool_usage":
            return base.max(), win.max()
        return base.mean() + 3 * base.std(), win.mean()
    if f.indicator in ("ERROR_count", "WARN_count"):
        lg = fr["logs"]
        level = f.indicator.split("_")[0]
        per_min = lg[(lg.service == root) & (lg.level == level)].groupby("minute").size()
        full = per_min.reindex(range(f.start - 65, fault_w[1]), fill_value=0).reset_index(name="value")
        base, win = in_window(full, base_w).value, in_window(full, fault_w).value
        return base.mean() + 3 * np.sqrt(base.mean() + 1), win.mean()
    spans = entry_spans(fr["spans"], root)
    base, win = in_window(spans, base_w), in_window(spans, fault_w)
    if f.indicator == "latency_p95_ms":
        return 1.2 * base.duration_ms.quantile(0.95), win.duration_ms.quantile(0.95)
    assert f.indicator == "error_ratio"
    b = (base.status == "error").mean()
    return b + 3 * np.sqrt(b * (1 - b) / len(base)) + 0.003, (win.status == "error").mean()


def test_eight_faults_cover_every_type_and_each_raises_its_indicator_on_the_root():
    plan = make_plan()
    sp = plan.systems[0]
    assert len({f.fault_type for f in sp.faults}) == 8
    for f in sp.faults:
        limit, value = indicator_rises(plan, sp, f)
        assert value > limit, (f.fault_type, f.magnitude, f.indicator, limit, value)


def test_affected_callers_show_symptoms_and_unaffected_services_stay_quiet():
    """Labels say which callers a fault reaches (from the model); the generated spans agree:
    in the minutes the model marks, the caller's entry spans fail or slow down; services the
    label leaves out show nothing beyond noise over the whole window."""
    plan = make_plan()
    sp = plan.systems[0]
    truth = {lab["fault_id"]: lab for lab in labels(plan)}
    faulty, clean = SystemModel(plan, sp), SystemModel(plan, sp, with_faults=False)
    names = [s.name for s in sp.topology.services]
    checked = 0
    for f in sp.faults:
        fr = fault_frames(plan, f)
        base_w, fault_w = windows(f, plan)
        fault_w = (fault_w[0], fault_w[1] + 5)
        affected = truth[f.fault_id]["affected_services"]
        for s, svc in enumerate(names):
            spans = entry_spans(fr["spans"], svc)
            base = in_window(spans, base_w)
            if svc in affected[1:]:
                t = np.arange(*fault_w)
                moved = (faulty.state["lat"][s, t] / clean.state["lat"][s, t] > 1.15) | (
                    faulty.state["err"][s, t] - clean.state["err"][s, t] > 0.02)
                win = spans[spans.minute.isin(t[moved])]
                if len(win) < 30:
                    continue
                checked += 1
                err_jump = (win.status == "error").mean() - (base.status == "error").mean()
                lat_ratio = win.duration_ms.quantile(0.95) / base.duration_ms.quantile(0.95)
                assert err_jump > 0.01 or lat_ratio > 1.1, (f.fault_type, svc, err_jump, lat_ratio)
            elif svc not in affected:
                win = in_window(spans, fault_w)
                if len(base) < 200 or len(win) < 100:
                    continue
                err_jump = (win.status == "error").mean() - (base.status == "error").mean()
                lat_ratio = win.duration_ms.quantile(0.95) / base.duration_ms.quantile(0.95)
                # neither a caller nor the root: no fault signal beyond noise
                assert err_jump < 0.02 and lat_ratio < 1.3, (f.fault_type, svc, err_jump, lat_ratio)
    assert checked >= 5


def strong(plan: GenerationPlan, fault_type: str, **changes) -> tuple[GenerationPlan, object]:
    """The plan with its first fault of `fault_type` made strong (and moved to a busy root)."""
    sp = plan.systems[0]
    f = next(x for x in sp.faults if x.fault_type == fault_type)
    faults = tuple(replace(x, **changes) if x is f else x for x in sp.faults)
    plan = replace(plan, systems=(replace(sp, faults=faults),))
    return plan, plan.systems[0].faults[sp.faults.index(f)]


def test_saturation_reaches_callers_minutes_later_as_error_bursts():
    plan, f = strong(make_plan(), "misconfiguration", magnitude=1.0)
    sp = plan.systems[0]
    fr = fault_frames(plan, f)
    callers = {sp.topology.services[i].name for i in sp.topology.upstream(f.root)}
    root = sp.topology.services[f.root].name
    spans = fr["spans"]
    rejected = spans[(spans.error_type == "rejected") & spans.service.isin(callers)]
    in_fault = rejected[(rejected.minute >= f.start) & (rejected.minute < f.end)]
    assert len(in_fault) > 20  # callers' thread pools fill up and reject: an error burst upstream
    assert in_fault.minute.min() >= f.start + 1  # ... a few minutes after the root's own trouble
    m = fr["metrics"]
    pool = m[(m.service == root) & (m.metric == "conn_pool_usage")].groupby("minute").value.mean()
    assert pool.loc[f.start] > 90  # the root's indicator moves at once
    # the caller-side rejections are louder than the root's own failures
    root_err = (entry_spans(spans, root).pipe(in_window, (f.start, f.end)).status == "error").sum()
    caller_err = (spans[spans.service.isin(callers)].pipe(in_window, (f.start, f.end)).status == "error").sum()
    assert caller_err > root_err


def test_pool_exhaustion_shows_on_the_pool_before_latency():
    plan, f = strong(make_plan(), "db_connection_pool_exhaustion", magnitude=0.2)
    sp = plan.systems[0]
    fr = fault_frames(plan, f)
    root = sp.topology.services[f.root].name
    m = fr["metrics"]
    pool = m[(m.service == root) & (m.metric == "conn_pool_usage")].groupby("minute").value.mean()
    p95 = m[(m.service == root) & (m.metric == "latency_p95_ms")].groupby("minute").value.mean()
    base = p95.loc[windows(f, plan)[0]]
    pool_on = pool.loc[f.start:][pool.loc[f.start:] > 90].index.min()
    lat_on = p95.loc[f.start:][p95.loc[f.start:] > base.mean() * 1.5].index.min()
    assert f.start <= pool_on < lat_on <= f.end


def test_memory_leak_grows_then_ends_in_an_oom_restart():
    plan = make_plan()
    sp = plan.systems[0]
    f = next(x for x in sp.faults if x.fault_type == "memory_leak")
    fr = fault_frames(plan, f)
    svc = sp.topology.services[f.root]
    target = svc.instances[f.instances[0]].name
    m = fr["metrics"]
    mem = m[(m.instance == target) & (m.metric == "memory_usage")].set_index("minute").value
    assert mem.loc[f.end - 3: f.end - 1].mean() > 0.8 * svc.memory_limit_mib  # near the limit before the kill
    assert mem.loc[f.end + 1: f.end + 5].mean() < 0.7 * svc.memory_limit_mib  # restarted: memory back down
    lg = fr["logs"]
    oom = lg[(lg.instance == target) & lg.message.str.contains("out of memory|OutOfMemoryError|MemoryError", regex=True)]
    assert len(oom) == 1 and f.end - 2 <= oom.minute.iloc[0] < f.end


def test_spans_nest_and_durations_add_up():
    plan = make_plan(fault_types=["dependency_outage", "network_delay"], faults=3)
    model = SystemModel(plan, plan.systems[0])
    rng = rng_for(1, "physics")
    minutes = np.repeat(np.arange(plan.minutes), 3)
    spans = TraceSampler(model, rng).sample(minutes, rng.uniform(0, 60_000, len(minutes)))
    start, end = nested_micros(spans)
    child = np.nonzero(spans.parent >= 0)[0]
    par = spans.parent[child]
    assert np.all(par < child)  # parents come first
    assert np.all(spans.trace[par] == spans.trace[child])  # same trace
    assert np.all(start[child] >= start[par]) and np.all(end[child] <= end[par])  # nested
    # float durations: children of a sequential operation run one after another inside the parent
    df = pd.DataFrame({"p": par, "s": spans.start_ms[child], "e": spans.start_ms[child] + spans.dur_ms[child],
                       "d": spans.dur_ms[child]})
    parallel = np.array([model.topo.ops[o].parallel for o in spans.op])
    seq = df[~parallel[df.p]].sort_values(["p", "s"])
    gap = seq.s.values[1:] - seq.e.values[:-1]
    same = seq.p.values[1:] == seq.p.values[:-1]
    assert np.all(gap[same] >= -1e-6)  # no overlap between siblings
    total = seq.groupby("p").d.sum()
    assert np.all(total.values <= spans.dur_ms[total.index.values] + 1e-6)  # the parent's time covers them all
    # a timed-out span is cut at its caller's deadline, and the failure is visible as status
    timed_out = spans.kind == 2
    assert timed_out.any() and np.all(spans.failed[timed_out])
    assert np.all(spans.kind[~spans.failed] == OK)
    # retries come after the failed attempt they repeat
    retry = np.nonzero(spans.attempt > 0)[0]
    assert len(retry) > 0
    assert np.all(spans.kind[spans.retried] != OK)


def test_background_is_realistic_without_faults():
    """No faults: a small background error rate, daily traffic shape, no rejections."""
    plan = make_plan(faults=0, duration=24.0, requests_per_minute=30)
    model = SystemModel(plan, plan.systems[0])
    fr = frames(plan.to_json(), (3, 15))
    spans = fr["spans"]
    err = (spans.status == "error").mean()
    assert 0.0005 < err < 0.03
    assert not (spans.error_type == "rejected").any()
    night, day = spans[spans.minute < 240].trace_id.nunique(), spans[spans.minute >= 240].trace_id.nunique()
    assert day > 1.5 * night  # 15:00 UTC (plus phase) is busier than 03:00
    logs = fr["logs"]
    assert set(logs.level) == {"DEBUG", "INFO", "WARN", "ERROR"}
    assert (logs.level == "ERROR").mean() < 0.05
    assert model.state["sat_err"].max() == 0


@pytest.mark.parametrize("unit_hour", [4])
def test_units_are_independent_of_each_other(unit_hour):
    """A unit's rows depend on (plan, unit) only: computed alone or after others, they are equal."""
    plan = make_plan()
    pj = plan.to_json()
    units = [u for u in plan_units(plan) if u.hour == unit_hour]
    traces_unit = next(u for u in units if u.kind == "traces")
    alone = pa.Table.from_batches(list(unit_batches(pj, traces_unit, "spans")))
    for u in units[:5]:
        list(unit_batches(pj, u, "logs"))
    again = pa.Table.from_batches(list(unit_batches(pj, Unit(**vars(traces_unit)), "spans")))
    assert alone.equals(again)
    assert traces_unit.kind == "traces" and REJECTED != OK


def test_arrow_columns_build_ids_maps_and_text():
    from meltrca.generate import columns as col

    assert col.hex_ids(np.array([[1, 2]], dtype=np.uint64)).to_pylist() == ["0000000000000001" "0000000000000002"]
    assert col.hex_ids(np.array([255, 2**64 - 1], dtype=np.uint64)).to_pylist() == ["00000000000000ff", "f" * 16]
    assert col.hex_ids(np.zeros(0, dtype=np.uint64)).to_pylist() == []
    m = col.string_map([("a", pa.array(["x", "y", "z"]), None), ("b", pa.array(["1", "2", "3"]), np.array([True, False, True]))], 3)
    assert m.to_pylist() == [[("a", "x"), ("b", "1")], [("a", "y")], [("a", "z"), ("b", "3")]]
    assert col.join(["n=", col.number_text(np.array([1.4, 2.6])), "!"], 2).to_pylist() == ["n=1!", "n=3!"]


def test_a_quiet_unit_without_traces_gives_empty_batches():
    plan = make_plan(faults=0, requests_per_minute=1)
    pj = plan.to_json()
    model = SystemModel(plan, plan.systems[0])
    spans = TraceSampler(model, rng_for(1, "empty")).sample(np.zeros(0, dtype=np.int64), np.zeros(0))
    assert len(spans) == 0
    from meltrca.generate import columns as col
    from meltrca.generate.units import span_batch

    batch = span_batch(model, spans, col.hex_ids(np.zeros((0, 2), dtype=np.uint64)), col.hex_ids(np.zeros(0, dtype=np.uint64)), plan)
    assert batch.num_rows == 0 and batch.schema.names[:3] == ["system", "trace_id", "span_id"]
    # trace i of a minute belongs to shard i % shards: the shards of an hour split its traces exactly
    counts = rng_for(plan.seed, "trace-count", 0, 0).poisson(plan.requests_per_minute * model.profile[:60])
    per_shard = []
    for k in range(6):
        rows = pa.Table.from_batches(list(unit_batches(pj, Unit("traces", 0, 0, shard=k, shards=6), "spans")),
                                     schema=batch.schema)
        per_shard.append(len(set(rows.column("trace_id").to_pylist())))
    assert per_shard == [int(traces_in_minutes(counts, k, 6).sum()) for k in range(6)]
    assert sum(per_shard) == counts.sum()


def share_calling(spans: pd.DataFrame, root: str, reqs: pd.DataFrame) -> float:
    """Share of these requests' traces in which the root called another service."""
    own = spans[spans.trace_id.isin(reqs.trace_id) & (spans.service == root)]
    kids = spans[spans.parent_span_id.isin(own.span_id)]
    return kids[kids.service != root].trace_id.nunique() / max(reqs.trace_id.nunique(), 1)


def test_code_fault_types_are_opt_in_and_change_what_requests_do():
    """exception: a new ERROR with a stack trace, error spans on the root, callers see errors;
    wrong_return: the root's normal completion line and its calls out go missing, no error,
    no resource change. Neither is drawn unless generate.fault_types names it."""
    assert not {f.fault_type for f in make_plan(faults=12, duration=24.0).systems[0].faults} & {"exception", "wrong_return"}
    plan = make_plan(fault_types=["exception", "wrong_return"], faults=4)
    sp = plan.systems[0]
    assert sorted(f.fault_type for f in sp.faults) == ["exception", "exception", "wrong_return", "wrong_return"]
    assert {(f.fault_type, f.indicator) for f in sp.faults} == {("exception", "ERROR_count"), ("wrong_return", "INFO_count")}
    assert {(x["fault_type"], x["root_cause_service"]) for x in labels(plan)} == {
        (f.fault_type, sp.topology.services[f.root].name) for f in sp.faults}
    for f in sp.faults:
        fr = fault_frames(plan, f)
        root = sp.topology.services[f.root].name
        base_w, fault_w = windows(f, plan)
        spans, logs = fr["spans"], fr["logs"]
        entry = entry_spans(spans, root)
        base, win = in_window(entry, base_w), in_window(entry, fault_w)
        own = logs[logs.service == root]
        if f.fault_type == "exception":
            limit, value = indicator_rises(plan, sp, f)
            assert value > limit
            assert (win.status == "error").mean() > 0.05 > (base.status == "error").mean()
            errors = in_window(own[own.level == "ERROR"], fault_w)
            assert errors.message.str.contains("\n").mean() > 0.5  # with its stack trace
            # its callers see the errors: their calls to the root fail
            parent = spans.set_index("span_id").service
            calls = in_window(spans[(spans.service == root) & (spans.parent_span_id.map(parent) != root)], fault_w)
            assert (calls.status == "error").mean() > 0.05
        else:
            assert share_calling(spans, root, win) < share_calling(spans, root, base) - 0.2  # calls out skipped
            completed = own[own.level == "INFO"]
            per_req = [len(in_window(completed, w)) / max(len(in_window(entry, w)), 1) for w in (base_w, fault_w)]
            assert per_req[1] < 0.8 * per_req[0]  # the completion line goes missing
            assert (win.status == "error").mean() < 0.05  # nothing fails
            m = fr["metrics"]
            cpu = m[(m.service == root) & (m.metric == "cpu_usage")]
            assert abs(in_window(cpu, fault_w).value.mean() - in_window(cpu, base_w).value.mean()) < 10
