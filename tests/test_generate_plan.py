"""The generator's plan (no Spark): topology shape, fault schedule rules, change events, labels."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta

import pytest

from meltrca.config import load_settings
from meltrca.errors import ConfigError
from meltrca.generate.labels import labels, topology_doc
from meltrca.generate.plan import GenerationPlan, build_plan
from meltrca.generate.randomness import rng_for
from meltrca.generate.schedule import (
    DISTRACTOR_CLEARANCE_MINUTES,
    FAULT_TYPES,
    indicator_for,
    max_faults,
    schedule_windows,
)
from meltrca.generate.topology import build_topology

LABEL_KEYS = {"fault_id", "system", "root_cause_service", "fault_type", "start", "end", "affected_services", "indicator"}


def gen_settings(**kw):
    return load_settings(environ={}, overrides={f"generate.{k}": v for k, v in kw.items()}).generate


def reachable(topo, start=0):
    seen, todo = {start}, [start]
    while todo:
        for c in topo.callees(todo.pop()):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12, 30])
def test_topology_is_a_layered_dag_from_one_front_door(n):
    topo = build_topology(rng_for(7, "t", n), n, instances_min=1, instances_max=3)
    assert len(topo.services) == n
    assert len({s.name for s in topo.services}) == n
    kinds = [s.kind for s in topo.services]
    assert kinds[0] == "gateway" and kinds.count("gateway") == 1
    assert reachable(topo) == set(range(n))  # every service takes traffic from the front door
    for op in topo.ops:  # calls only go to deeper layers: no cycles
        for c in op.calls:
            assert topo.services[c.callee].layer > topo.services[op.service].layer
    for s in topo.services:
        if s.kind in ("database", "cache"):
            assert topo.callees(s.index) == []
            assert len(s.instances) == 1
        else:
            assert 1 <= len(s.instances) <= 3
    # every operation is called by someone (the front door's routes are the entry points)
    called = {c.op for op in topo.ops for c in op.calls}
    assert called | set(topo.gateway.ops) == set(range(len(topo.ops)))
    if n >= 12:
        assert "database" in kinds and "cache" in kinds
        fan_out = {len(topo.callees(s.index)) for s in topo.services if s.kind == "app"}
        assert len(fan_out) >= 2  # fan-out varies


def test_schedule_keeps_baseline_duration_and_gap_rules():
    for minutes, n in [(720, 3), (2880, 10), (1440, 8), (600, max_faults(600))]:
        wins = schedule_windows(rng_for(1, minutes, n), minutes, n)
        assert len(wins) == n
        assert wins[0][0] >= math.ceil(0.25 * minutes)
        for (s, e) in wins:
            assert 10 <= e - s <= 40
            assert e <= minutes - 15
        for (_, e), (s2, _) in itertools.pairwise(wins):
            assert s2 - e >= 30


def test_too_many_faults_is_a_config_error_naming_the_limit():
    with pytest.raises(ConfigError, match=r"--faults 30 does not fit in 12 h: at most 13 faults fit"):
        build_plan(gen_settings(duration=12.0, faults=30))
    assert max_faults(720) == 13  # (720 - 180 baseline - 15 tail + 30) // 40


def test_unknown_fault_type_is_a_config_error():
    with pytest.raises(ConfigError, match="generate.fault_types.*meteor_strike"):
        build_plan(gen_settings(fault_types=["cpu_hog", "meteor_strike"]))


def test_plan_is_deterministic_and_seed_dependent():
    a = build_plan(gen_settings(services=8, duration=24.0, faults=4, seed=11))
    b = build_plan(gen_settings(services=8, duration=24.0, faults=4, seed=11))
    c = build_plan(gen_settings(services=8, duration=24.0, faults=4, seed=12))
    assert a.to_json() == b.to_json()
    assert a.to_json() != c.to_json()
    assert GenerationPlan.from_json(a.to_json()) == a


def test_each_fault_type_has_its_change_events_and_indicator():
    plan = build_plan(gen_settings(services=12, duration=48.0, faults=8, seed=3))
    sp = plan.systems[0]
    # 8 faults cover the 8 default types (exception and wrong_return are opt-in)
    assert {f.fault_type for f in sp.faults} == {n for n, t in FAULT_TYPES.items() if not t.opt_in}
    assert len({f.fault_type for f in sp.faults}) == 8
    for f in sp.faults:
        assert f.indicator == indicator_for(f.fault_type, f.mode)
        own = [e for e in sp.events if e.cause == f"fault:{f.fault_id}"]
        assert all(e.service == f.root for e in own)
        if f.fault_type == "bad_deploy":
            assert [(e.event_type, e.at_s) for e in own] == [("deploy", f.start * 60.0), ("deploy", f.end * 60.0 - 20)]
            assert own[1].attributes["version"] == own[0].attributes["previous_version"]  # the rollback
        elif f.fault_type == "misconfiguration":
            assert [e.event_type for e in own] == ["config_change", "config_change"]
            assert own[0].at_s == f.start * 60.0 and own[0].attributes["key"] == "db.pool.max_size"
        elif f.fault_type == "memory_leak":
            assert [e.event_type for e in own] == ["restart"] * len(f.instances)
            assert all(f.start * 60 < e.at_s < f.end * 60 and e.attributes["reason"] == "OOMKilled" for e in own)
        else:
            assert own == []


def test_distractors_exist_and_stay_clear_of_every_fault():
    plan = build_plan(gen_settings(services=10, duration=48.0, faults=10, seed=5))
    sp = plan.systems[0]
    benign = [e for e in sp.events if not e.cause.startswith("fault:")]
    assert {e.event_type for e in benign} >= {"deploy", "config_change", "scale"}
    assert sp.surges
    for e in benign:
        t = e.at_s / 60
        for f in sp.faults:
            assert t < f.start - DISTRACTOR_CLEARANCE_MINUTES or t > f.end + DISTRACTOR_CLEARANCE_MINUTES
    for s in sp.surges:
        for f in sp.faults:
            assert s.end + DISTRACTOR_CLEARANCE_MINUTES <= f.start or s.start - DISTRACTOR_CLEARANCE_MINUTES >= f.end


def test_versions_follow_deploys_in_time_order():
    sp = build_plan(gen_settings(services=10, duration=48.0, faults=10, seed=5)).systems[0]
    current = {s.index: v for s, v in zip(sp.topology.services, sp.initial_versions, strict=True)}
    for e in sp.events:
        if e.event_type == "deploy":
            assert e.attributes["previous_version"] == current[e.service]
            current[e.service] = e.attributes["version"]


def test_labels_match_the_injected_faults():
    plan = build_plan(gen_settings(services=12, duration=48.0, faults=10, seed=3, systems=2))
    out = labels(plan)
    faults = [(sp, f) for sp in plan.systems for f in sp.faults]
    assert len(out) == len(faults) == 20
    start = datetime(2024, 9, 26)
    for lab, (sp, f) in zip(out, faults, strict=True):
        assert set(lab) == LABEL_KEYS
        topo = sp.topology
        root = topo.services[f.root].name
        assert lab["fault_id"] == f.fault_id and lab["system"] == sp.name
        assert lab["root_cause_service"] == root and lab["fault_type"] == f.fault_type
        assert lab["indicator"] == f.indicator
        assert lab["start"] == (start + timedelta(minutes=f.start)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert lab["end"] == (start + timedelta(minutes=f.end)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert lab["affected_services"][0] == root
        # effects travel to callers only: every other affected service calls the root, transitively
        callers = {topo.services[i].name for i in topo.upstream(f.root)}
        assert set(lab["affected_services"][1:]) <= callers
    assert {lab["system"] for lab in out} == {"shop-1", "shop-2"}
    # each system has its own topology
    assert plan.systems[0].topology.edges() != plan.systems[1].topology.edges()
    doc = topology_doc(plan)
    assert [f["fault_id"] for s in doc["systems"] for f in s["faults"]] == [lab["fault_id"] for lab in out]


def test_propagating_faults_reach_callers():
    """Faults that slow or break a busy service show on at least one caller in most cases."""
    plan = build_plan(gen_settings(services=12, duration=48.0, faults=10, seed=3))
    out = labels(plan)
    loud = [lab for lab in out if lab["fault_type"] in ("bad_deploy", "dependency_outage", "misconfiguration",
                                                          "db_connection_pool_exhaustion")]
    assert loud
    assert sum(len(lab["affected_services"]) > 1 for lab in loud) >= len(loud) - 1


def test_start_flag_moves_the_timeline():
    import argparse

    from meltrca.stages.generate import config_overrides

    args = argparse.Namespace(services=4, duration=6.0, interval=None, faults=1, seed=2, systems=None, format=None,
                              start="2025-03-01T06:30:00Z")
    settings = load_settings(environ={}, overrides=config_overrides(args))
    plan = build_plan(settings.generate)
    assert plan.start == "2025-03-01T06:30:00Z"
    (lab,) = labels(plan)
    assert lab["start"] >= "2025-03-01T08:00:00Z" and lab["end"] <= "2025-03-01T12:15:00Z"
