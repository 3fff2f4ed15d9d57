"""What happens when: injected faults, benign changes (distractors) and traffic surges.

Rules the detectors are judged under: the first 25 % of the timeline is fault-free (a baseline),
faults of one system last 10-40 minutes and are at least 30 minutes apart, and distractor
changes and surges stay well away from every fault window, so they coincide with no label.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from meltrca.errors import ConfigError
from meltrca.generate import names
from meltrca.generate.topology import Instance, Topology

BASELINE_SHARE = 0.25
FAULT_MIN_MINUTES = 10
FAULT_MAX_MINUTES = 40
FAULT_GAP_MINUTES = 30
TAIL_MINUTES = 15  # recovery after the last fault stays in the data
DISTRACTOR_CLEARANCE_MINUTES = 35  # no benign change this close to a fault window


@dataclass(frozen=True)
class FaultType:
    name: str
    kinds: tuple[str, ...]  # service kinds it can hit
    needs_database: bool = False  # root must call a database (connection pool faults)
    needs_calls: bool = False  # root must call other services (a skipped branch skips calls)
    opt_in: bool = False  # drawn only when generate.fault_types names it (existing seeds keep their faults)


FAULT_TYPES: dict[str, FaultType] = {
    t.name: t
    for t in (
        FaultType("cpu_hog", ("app", "gateway")),
        FaultType("memory_leak", ("app", "gateway")),
        FaultType("network_delay", ("app", "database", "cache")),
        FaultType("packet_loss", ("app", "database", "cache")),
        FaultType("db_connection_pool_exhaustion", ("app",), needs_database=True),
        FaultType("bad_deploy", ("app", "gateway")),
        FaultType("dependency_outage", ("database", "cache", "app")),
        FaultType("misconfiguration", ("app",), needs_database=True),
        # code faults without a change event (a latent bug, a bad input): opt-in
        FaultType("exception", ("app",), opt_in=True),
        FaultType("wrong_return", ("app",), needs_calls=True, opt_in=True),
    )
}

MODES: dict[str, tuple[str, ...]] = {
    "bad_deploy": ("exception", "exception", "wrong_result"),
    "dependency_outage": ("refused", "hang"),
}


def indicator_for(fault_type: str, mode: str) -> str:
    """The root-cause feature (silver feature naming) that shows the fault on its root service."""
    if fault_type == "bad_deploy":
        return "WARN_count" if mode == "wrong_result" else "ERROR_count"
    if fault_type == "exception":
        return "ERROR_count"
    if fault_type == "wrong_return":
        return "INFO_count"  # the normal path's completion line goes missing
    return {
        "cpu_hog": "cpu_usage_mean",
        "memory_leak": "memory_usage_mean",
        "network_delay": "latency_p95_ms",
        "packet_loss": "error_ratio",
        "db_connection_pool_exhaustion": "conn_pool_usage_mean",
        "dependency_outage": "error_ratio",
        "misconfiguration": "conn_pool_usage_mean",
    }[fault_type]


@dataclass(frozen=True)
class Fault:
    fault_id: str
    fault_type: str
    root: int  # service index
    start: int  # minute
    end: int  # minute (exclusive)
    magnitude: float  # 0..1; below ~0.3 the symptoms are subtle (1.5-2x latency)
    mode: str
    instances: tuple[int, ...]  # targeted instance positions within the root service
    indicator: str


@dataclass(frozen=True)
class Surge:
    """A benign traffic surge at the front door (marketing push, crawler): not a fault."""

    start: int
    end: int
    factor: float
    ramp: int = 3


@dataclass(frozen=True)
class PlannedEvent:
    at_s: float  # seconds since the timeline start
    service: int
    event_type: str
    message: str
    attributes: dict[str, str] = field(default_factory=dict)
    instance: int | None = None  # position within the service, for restarts
    cause: str = "distractor"  # "fault:<id>", "distractor" or "surge"


def max_faults(minutes: int) -> int:
    avail = minutes - math.ceil(minutes * BASELINE_SHARE) - TAIL_MINUTES
    return max(0, (avail + FAULT_GAP_MINUTES) // (FAULT_MIN_MINUTES + FAULT_GAP_MINUTES))


def schedule_windows(rng: np.random.Generator, minutes: int, n: int) -> list[tuple[int, int]]:
    """Fault windows [start, end) after the baseline, 10-40 min long, >= 30 min apart."""
    if n == 0:
        return []
    if n > max_faults(minutes):
        hours = minutes / 60
        raise ConfigError(
            f"--faults {n} does not fit in {hours:g} h: at most {max_faults(minutes)} faults fit "
            f"(first {int(BASELINE_SHARE * 100)}% is a fault-free baseline, faults last "
            f"{FAULT_MIN_MINUTES}-{FAULT_MAX_MINUTES} min and are {FAULT_GAP_MINUTES} min apart)"
        )
    first = math.ceil(minutes * BASELINE_SHARE)
    avail = minutes - first - TAIL_MINUTES
    durations = rng.integers(FAULT_MIN_MINUTES, FAULT_MAX_MINUTES + 1, size=n).astype(float)
    room = avail - (n - 1) * FAULT_GAP_MINUTES
    if durations.sum() > room:  # shrink the variable part to fit
        extra = durations - FAULT_MIN_MINUTES
        durations = FAULT_MIN_MINUTES + np.floor(extra * (room - n * FAULT_MIN_MINUTES) / max(extra.sum(), 1))
    dur = durations.astype(int)
    slack = avail - (n - 1) * FAULT_GAP_MINUTES - int(dur.sum())
    gaps = np.floor(rng.dirichlet(np.ones(n + 1)) * slack).astype(int)
    out = []
    t = first + int(gaps[0])
    for i in range(n):
        out.append((t, t + int(dur[i])))
        t = t + int(dur[i]) + FAULT_GAP_MINUTES + int(gaps[i + 1])
    return out


def _eligible(topo: Topology, ft: FaultType) -> list[int]:
    out = []
    for s in topo.services:
        if s.kind not in ft.kinds:
            continue
        if ft.needs_database and not any(topo.services[c].kind == "database" for c in topo.callees(s.index)):
            continue
        if ft.needs_calls and not any(op.calls for op in topo.ops if op.service == s.index):
            continue
        out.append(s.index)
    return out


def check_fault_types(names: list[str]) -> None:
    unknown = [n for n in names if n not in FAULT_TYPES]
    if unknown:
        raise ConfigError(f"config key 'generate.fault_types' has unknown fault type(s) {', '.join(unknown)} "
                          f"(known: {', '.join(FAULT_TYPES)})")


def plan_faults(
    rng: np.random.Generator, topo: Topology, system: str, minutes: int, n: int, allowed: list[str] | None = None
) -> list[Fault]:
    """Faults of varied types on varied roots; about a third of them subtle.

    Types are drawn in shuffled rounds, so n >= the number of eligible types covers each one."""
    windows = schedule_windows(rng, minutes, n)
    types = [t for t in FAULT_TYPES.values() if _eligible(topo, t) and (t.name in allowed if allowed else not t.opt_in)]
    if n and not types:
        raise ConfigError(f"no service of {system} can host the fault types {', '.join(allowed or [])} "
                          f"(add services or widen generate.fault_types)")
    order: list[FaultType] = []
    while len(order) < n:
        order.extend(types[i] for i in rng.permutation(len(types)))
    used: dict[int, int] = {}
    faults = []
    for i, (start, end) in enumerate(windows):
        ft = order[i]
        cands = _eligible(topo, ft)
        least = min(used.get(c, 0) for c in cands)
        root = int(rng.choice([c for c in cands if used.get(c, 0) == least]))
        used[root] = used.get(root, 0) + 1
        mode = str(rng.choice(MODES.get(ft.name, ("default",))))
        subtle = rng.random() < 1 / 3
        magnitude = float(rng.uniform(0.0, 0.3) if subtle else rng.uniform(0.35, 1.0))
        n_inst = len(topo.services[root].instances)
        if ft.name in ("cpu_hog", "memory_leak") and n_inst > 1 and rng.random() < 0.5:
            targets: tuple[int, ...] = (int(rng.integers(n_inst)),)
        else:
            targets = tuple(range(n_inst))
        faults.append(
            Fault(f"{system}-f{i + 1:02d}", ft.name, root, start, end, round(magnitude, 3), mode, targets,
                  indicator_for(ft.name, mode))
        )
    return faults


def _clear_of(t0: float, t1: float, busy: list[tuple[float, float]], margin: float) -> bool:
    return all(t1 + margin <= a or t0 - margin >= b for a, b in busy)


def _free_slot(
    rng: np.random.Generator, minutes: int, length: float, busy: list[tuple[float, float]], margin: float
) -> float | None:
    for _ in range(200):
        t = float(rng.uniform(5, max(6.0, minutes - length - 5)))
        if _clear_of(t, t + length, busy, margin):
            return t
    return None


CONFIG_KEYS = (
    ("feature.recommendations.enabled", "true", "false"),
    ("log.level", "INFO", "DEBUG"),
    ("cache.ttl_seconds", "300", "600"),
    ("rate_limit.requests_per_second", "500", "800"),
    ("http.client.keepalive_seconds", "30", "60"),
    ("feature.new_checkout_flow.rollout_percent", "10", "25"),
)


def fault_events(rng: np.random.Generator, topo: Topology, faults: list[Fault]) -> list[PlannedEvent]:
    """Change events that are real evidence: the deploy/config change that starts a fault,
    its rollback or revert, and the OOM restart that ends a memory leak."""
    out: list[PlannedEvent] = []
    for f in faults:
        svc = topo.services[f.root]
        cause = f"fault:{f.fault_id}"
        change = f"CHG-{int(rng.integers(1000, 9999))}"
        if f.fault_type == "bad_deploy":
            out.append(PlannedEvent(f.start * 60.0, f.root, "deploy", "", {"change_id": change}, cause=cause))
            out.append(PlannedEvent(f.end * 60.0 - 20, f.root, "deploy", "", {"change_id": change, "rollback": "true"},
                                    cause=cause))
        elif f.fault_type == "misconfiguration":
            old_size = str(svc.conn_pool)
            new_size = str(max(2, round(svc.conn_pool / pool_shrink(f.magnitude))))
            key = "db.pool.max_size"
            out.append(PlannedEvent(f.start * 60.0, f.root, "config_change",
                                    f"Config change on {svc.name}: {key} {old_size} -> {new_size}",
                                    {"key": key, "old_value": old_size, "new_value": new_size, "change_id": change},
                                    cause=cause))
            out.append(PlannedEvent(f.end * 60.0 - 20, f.root, "config_change",
                                    f"Config change on {svc.name}: {key} {new_size} -> {old_size} (revert)",
                                    {"key": key, "old_value": new_size, "new_value": old_size, "change_id": change},
                                    cause=cause))
        elif f.fault_type == "memory_leak":
            for pos in f.instances:
                inst = svc.instances[pos].name
                out.append(PlannedEvent(f.end * 60.0 - 30, f.root, "restart",
                                        f"Container {inst} restarted (reason: OOMKilled, exit code 137)",
                                        {"instance": inst, "reason": "OOMKilled", "exit_code": "137"}, pos, cause))
    return out


def pool_shrink(magnitude: float) -> float:
    """How many times a misconfiguration shrinks the connection pool."""
    return 3.0 + 7.0 * magnitude


def assign_versions(rng: np.random.Generator, topo: Topology, events: list[PlannedEvent]) -> tuple[list[PlannedEvent], dict[int, str]]:
    """Fill deploy events in time order with version numbers (rollbacks return to the previous one).

    Returns the events and each service's version at the start of the timeline."""
    current = {s.index: s.version for s in topo.services}
    initial = dict(current)
    history: dict[int, list[str]] = {s.index: [] for s in topo.services}
    out = []
    for e in sorted(events, key=lambda e: (e.at_s, e.service, e.event_type)):
        if e.event_type == "deploy":
            svc = topo.services[e.service]
            old = current[e.service]
            if e.attributes.get("rollback") == "true" and history[e.service]:
                new = history[e.service].pop()
                msg = f"Rolled back {svc.name} to {new}"
            else:
                history[e.service].append(old)
                new = names.bump_version(old, rng)
                msg = f"Deployed {svc.name} {new} (rolling update, {len(svc.instances)} replicas)"
            current[e.service] = new
            e = replace(e, message=msg, attributes={**e.attributes, "version": new, "previous_version": old})
        out.append(e)
    return out, initial


def plan_benign(
    rng: np.random.Generator,
    topo: Topology,
    faults: list[Fault],
    minutes: int,
    *,
    distractors_per_day: float,
    surges_per_day: float,
) -> tuple[list[Surge], list[PlannedEvent], Topology]:
    """Traffic surges (with autoscaler scale events) and benign deploys / config changes /
    rolling restarts that cause nothing, all clear of the fault windows.

    Returns the topology with the extra instances the autoscaler adds during surges."""
    busy: list[tuple[float, float]] = [(float(f.start), float(f.end)) for f in faults]
    margin = float(DISTRACTOR_CLEARANCE_MINUTES)
    surges: list[Surge] = []
    events: list[PlannedEvent] = []
    gw = topo.gateway
    n_surges = round(surges_per_day * minutes / 1440)
    for _ in range(n_surges):
        length = float(rng.integers(10, 31))
        scale_down_delay = float(rng.integers(5, 11))
        t = _free_slot(rng, minutes, length + scale_down_delay, busy, margin)
        if t is None:
            continue
        start = int(t)
        end = start + int(length)
        surges.append(Surge(start, end, round(float(rng.uniform(1.3, 1.8)), 3)))
        busy.append((float(start), end + scale_down_delay))
        up = start + int(rng.integers(3, 6))
        down = end + int(scale_down_delay)
        n_before = sum(1 for i in gw.instances if i.active_from == 0 and i.active_to is None)
        new_pod = names.deployment_pods(rng, gw.name, 1)[0]
        node = gw.instances[0].node
        topo = topo.with_instances(gw.index, (*gw.instances, Instance(new_pod, node, up, down)))
        gw = topo.gateway
        events.append(PlannedEvent(up * 60.0, gw.index, "scale",
                                   f"Scaled {gw.name} from {n_before} to {n_before + 1} replicas (HPA: cpu above target 70%)",
                                   {"from": str(n_before), "to": str(n_before + 1), "trigger": "hpa"}, cause="surge"))
        events.append(PlannedEvent(down * 60.0, gw.index, "scale",
                                   f"Scaled {gw.name} from {n_before + 1} to {n_before} replicas (HPA: load back to normal)",
                                   {"from": str(n_before + 1), "to": str(n_before), "trigger": "hpa"}, cause="surge"))
    n_changes = max(1, round(distractors_per_day * minutes / 1440)) if minutes >= 120 else 0
    movable = [s.index for s in topo.services if s.kind in ("app", "gateway")]
    for k in range(n_changes):
        t = _free_slot(rng, minutes, 1.0, busy, margin)
        if t is None:
            continue
        busy.append((t, t + 1.0))
        s = int(rng.choice(movable))
        svc = topo.services[s]
        change = f"CHG-{int(rng.integers(1000, 9999))}"
        kind = ("deploy", "config_change", "deploy", "restart")[k % 4]
        if kind == "deploy":
            events.append(PlannedEvent(t * 60.0, s, "deploy", "", {"change_id": change}))
        elif kind == "config_change":
            key, old, new = CONFIG_KEYS[int(rng.integers(len(CONFIG_KEYS)))]
            events.append(PlannedEvent(t * 60.0, s, "config_change", f"Config change on {svc.name}: {key} {old} -> {new}",
                                       {"key": key, "old_value": old, "new_value": new, "change_id": change}))
        else:
            pos = int(rng.integers(len(svc.instances)))
            inst = svc.instances[pos].name
            events.append(PlannedEvent(t * 60.0, s, "restart", f"Container {inst} restarted (reason: rolling restart)",
                                       {"instance": inst, "reason": "RollingRestart", "exit_code": "0"}, pos))
    events.sort(key=lambda e: e.at_s)
    return surges, events, topo


def to_dict(obj: Any) -> dict[str, Any]:
    return asdict(obj)
