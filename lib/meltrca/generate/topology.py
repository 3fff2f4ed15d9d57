"""Service dependency topology of one synthetic system: a layered DAG of operations.

A front door (gateway) routes requests to mid-tier services, which call deeper services,
databases and caches. Calls are between *operations* (endpoints), so a trace follows one route
through the graph and fan-out varies per route. Every number that shapes the telemetry
(self time, timeouts, retries, pool sizes, memory) is drawn here once per system.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from meltrca.generate import names

KINDS = ("gateway", "app", "database", "cache")
APP_LANGUAGES = ("java", "java", "python", "go")


@dataclass(frozen=True)
class Call:
    """One downstream call an operation makes (in order, unless the operation is parallel)."""

    callee: int  # service index
    op: int  # operation index (global within the system)
    probability: float  # share of the operation's requests that make this call
    count_min: int  # calls per request (N+1 style loops when > 1)
    count_max: int
    timeout_ms: float
    retries: int
    backoff_ms: float
    propagate: float  # probability that a failed call fails the caller (low for caches: fallback)
    net_ms: float  # network hop before the callee starts


@dataclass(frozen=True)
class Operation:
    index: int
    service: int
    name: str
    pre_ms: float  # median self time before the calls
    post_ms: float  # median self time after the calls
    parallel: bool  # calls run concurrently (fan-out) instead of one after another
    calls: tuple[Call, ...] = ()


@dataclass(frozen=True)
class Instance:
    name: str
    node: str
    active_from: int = 0  # minute (inclusive)
    active_to: int | None = None  # minute (exclusive); None = until the end


@dataclass(frozen=True)
class Service:
    index: int
    name: str
    kind: str
    layer: int
    language: str
    ops: tuple[int, ...]
    instances: tuple[Instance, ...]
    version: str
    base_error: float  # background share of requests failing on their own
    rho_peak: float  # utilisation at peak traffic (sets per-instance capacity)
    threads: int  # request-handling pool per instance
    conn_pool: int  # client connection pool per instance (or max connections for stores)
    pool_idle: float  # share of the pool held while idle
    pool_timeout_ms: float
    memory_mib: float
    memory_limit_mib: float
    cpu_idle: float  # percent
    cpu_per_load: float  # percent at full utilisation
    gc_ms: float  # GC pause per minute at normal load
    threads_base: int
    routes_weight: tuple[float, ...] = ()  # gateway only: traffic share per route (= ops order)


@dataclass(frozen=True)
class Topology:
    services: tuple[Service, ...]
    ops: tuple[Operation, ...]
    root_timeout_ms: float = 10_000.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gateway(self) -> Service:
        return self.services[0]

    def callees(self, service: int) -> list[int]:
        """Distinct services a service calls."""
        out: list[int] = []
        for o in self.services[service].ops:
            for c in self.ops[o].calls:
                if c.callee not in out:
                    out.append(c.callee)
        return out

    def callers(self, service: int) -> list[int]:
        return [s.index for s in self.services if service in self.callees(s.index)]

    def edges(self) -> list[tuple[str, str]]:
        return sorted({(s.name, self.services[c].name) for s in self.services for c in self.callees(s.index)})

    def upstream(self, service: int) -> list[int]:
        """Every service whose requests can reach `service` (transitive callers)."""
        seen: set[int] = set()
        todo = [service]
        while todo:
            for c in self.callers(todo.pop()):
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        return sorted(seen)

    def with_instances(self, service: int, instances: tuple[Instance, ...]) -> Topology:
        svcs = list(self.services)
        svcs[service] = replace(svcs[service], instances=instances)
        return replace(self, services=tuple(svcs))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Topology:
        ops = tuple(
            Operation(**{**o, "calls": tuple(Call(**c) for c in o["calls"])}) for o in d["ops"]
        )
        services = tuple(
            Service(
                **{
                    **s,
                    "ops": tuple(s["ops"]),
                    "instances": tuple(Instance(**i) for i in s["instances"]),
                    "routes_weight": tuple(s["routes_weight"]),
                }
            )
            for s in d["services"]
        )
        return cls(services=services, ops=ops, root_timeout_ms=d["root_timeout_ms"], extra=dict(d.get("extra", {})))


def _kinds_for(n: int) -> list[str]:
    """How many gateways / apps / databases / caches a system of n services has."""
    if n == 1:
        return ["gateway"]
    if n == 2:
        return ["gateway", "app"]
    if n == 3:
        return ["gateway", "app", "database"]
    stores = max(2, round(n * 0.25)) if n >= 5 else 1
    caches = max(1, stores // 3) if n >= 5 else 0
    dbs = stores - caches
    return ["gateway"] + ["app"] * (n - 1 - stores) + ["database"] * dbs + ["cache"] * caches


def _layers(rng: np.random.Generator, n_apps: int) -> list[int]:
    """Layer (1 = called by the front door) of each mid-tier service."""
    if n_apps == 0:
        return []
    depth = 1 if n_apps <= 2 else 2 if n_apps <= 6 else 3 if n_apps <= 16 else 4
    first = max(1, min(n_apps - (depth - 1), round(n_apps * 0.4)))
    layers = [1] * first
    rest = n_apps - first
    for i in range(rest):
        layers.append(2 + (i * (depth - 1)) // max(rest, 1))
    return layers


def build_topology(rng: np.random.Generator, n_services: int, *, instances_min: int, instances_max: int) -> Topology:
    """A layered service DAG with operations, call parameters and resource profiles."""
    kinds = _kinds_for(n_services)
    n_apps = kinds.count("app")
    n_db, n_cache = kinds.count("database"), kinds.count("cache")
    svc_names = (
        [str(rng.choice(names.GATEWAYS)), *names.pick_names(rng, names.APPS, n_apps), *names.pick_names(rng, names.DATABASES, n_db), *names.pick_names(rng, names.CACHES, n_cache)]
    )
    app_layers = _layers(rng, n_apps)
    depth = max(app_layers, default=0)
    layer = [0, *app_layers] + [depth + 1] * (n_db + n_cache)

    # --- service-level edges -------------------------------------------------------------
    callees: dict[int, list[int]] = {i: [] for i in range(n_services)}
    apps = [i for i, k in enumerate(kinds) if k == "app"]
    by_layer: dict[int, list[int]] = {}
    for a in apps:
        by_layer.setdefault(layer[a], []).append(a)
    for a in by_layer.get(1, []):
        callees[0].append(a)
    for a in apps:
        lvl = layer[a]
        if lvl == 1:
            continue
        parent = int(rng.choice(by_layer[lvl - 1]))
        callees[parent].append(a)
        if rng.random() < 0.35:
            others = [p for p in apps if layer[p] < lvl and p != parent]
            if others:
                callees[int(rng.choice(others))].append(a)
    for a in apps:  # a few forward shortcuts make fan-out uneven
        deeper = [b for b in apps if layer[b] > layer[a] and b not in callees[a]]
        if deeper and rng.random() < 0.3 and len(callees[a]) < 3:
            callees[a].append(int(rng.choice(deeper)))
    owners = apps or [0]
    stores = [i for i, k in enumerate(kinds) if k in ("database", "cache")]
    # deeper apps own data more often than the ones right behind the front door
    weights = np.array([1.0 + layer[o] for o in owners])
    for st in stores:
        load = np.array([len(callees[o]) for o in owners], dtype=float)
        p = weights / (1.0 + load)
        p = p / p.sum()
        first = int(rng.choice(owners, p=p))
        callees[first].append(st)
        extra_p = 0.55 if kinds[st] == "cache" else 0.3
        for o in owners:
            if o != first and rng.random() < extra_p / max(1, len(owners) - 1) * 2 and len(callees[o]) < 4:
                callees[o].append(st)
    if not apps and n_services > 1:
        callees[0] = [i for i in range(1, n_services)]
    for k in callees:
        callees[k] = list(dict.fromkeys(callees[k]))

    # --- operations: names and callee services first, then which callee operation each call hits
    specs: list[tuple[int, str, float, float, bool, list[int]]] = []
    for s in range(n_services):
        for name, pre, post, parallel, chosen in _plan_ops(rng, s, kinds[s], svc_names, callees[s]):
            specs.append((s, name, pre, post, parallel, chosen))
    svc_ops: dict[int, list[int]] = {s: [i for i, sp in enumerate(specs) if sp[0] == s] for s in range(n_services)}
    called: set[int] = set()
    targets: list[list[int]] = []
    for _, _, _, _, _, chosen in specs:
        row = []
        for c in chosen:
            row.append(_pick_callee_op(rng, kinds[c], svc_ops[c], called))
            called.add(row[-1])
        targets.append(row)
    for o, sp in enumerate(specs):  # every operation is reachable: add a call from a caller
        if sp[0] == 0 or o in called:
            continue
        callers = [i for i, other in enumerate(specs) if sp[0] in other[5]]
        i = int(rng.choice(callers))
        specs[i][5].append(sp[0])
        targets[i].append(o)
        called.add(o)
    ops = [
        Operation(o, sp[0], sp[1], sp[2], sp[3], sp[4],
                  tuple(_make_call(rng, kinds[sp[0]], kinds[c], c, t) for c, t in zip(sp[5], targets[o], strict=True)))
        for o, sp in enumerate(specs)
    ]
    services: list[Service] = []
    nodes = [f"worker-{i + 1}" for i in range(max(3, n_services // 3))]
    for s in range(n_services):
        services.append(_make_service(rng, s, svc_names[s], kinds[s], layer[s], [o.index for o in ops if o.service == s],
                                      nodes, instances_min, instances_max))
    return Topology(services=tuple(services), ops=tuple(ops))


def _plan_ops(
    rng: np.random.Generator, s: int, kind: str, svc_names: list[str], callees: list[int]
) -> list[tuple[str, float, float, bool, list[int]]]:
    """(name, pre_ms, post_ms, parallel, callees) per operation of one service."""
    noun = names.noun(svc_names[s])
    if kind == "database":
        return [(f"SELECT {noun}", float(rng.uniform(0.6, 5)), 0.0, False, []),
                (f"UPDATE {noun}", float(rng.uniform(1.0, 8)), 0.0, False, [])]
    if kind == "cache":
        return [("GET", float(rng.uniform(0.1, 0.6)), 0.0, False, []),
                ("SET", float(rng.uniform(0.1, 0.8)), 0.0, False, [])]
    if kind == "gateway":
        n_ops = int(np.clip(len(callees) + 1, 2, 5)) if callees else 2
    else:
        n_ops = 1 + int(len(callees) >= 2) + int(rng.random() < 0.4)
    groups: list[list[int]] = [[] for _ in range(n_ops)]
    for c in callees:  # every callee is used by some operation
        groups[int(rng.integers(n_ops))].append(c)
    for g in groups:  # and operations share some callees
        for c in callees:
            if c not in g and rng.random() < 0.25 and len(g) < 3:
                g.append(c)
        if not g and callees:
            g.append(int(rng.choice(callees)))
        g.sort(key=callees.index)
    out = []
    used: set[str] = set()
    for g in groups:
        if kind == "gateway":
            target = names.noun(svc_names[g[0]]) if g else noun
            name = f"{rng.choice(names.HTTP_VERBS)} /api/{target}"
            pre, post = float(rng.uniform(1, 4)), float(rng.uniform(0.5, 2))
            parallel = len(g) >= 2 and rng.random() < 0.5
        else:
            name = f"{names.camel(noun)}Service/{rng.choice(names.APP_VERBS)}{names.camel(noun)}"
            pre, post = float(rng.lognormal(np.log(6), 0.6)), float(rng.uniform(0.5, 6))
            parallel = len(g) >= 2 and rng.random() < 0.2
        k = 2
        base = name
        while name in used:
            name = f"{base}{'/v' if kind == 'gateway' else 'V'}{k}"
            k += 1
        used.add(name)
        out.append((name, pre, post, bool(parallel), g))
    return out


def _pick_callee_op(rng: np.random.Generator, callee_kind: str, callee_ops: list[int], called: set[int]) -> int:
    """An operation nobody calls yet, else reads more often than writes for stores."""
    fresh = [o for o in callee_ops if o not in called]
    if fresh:
        return fresh[0]
    if callee_kind in ("database", "cache"):
        return callee_ops[0] if rng.random() < 0.75 else callee_ops[1]
    return int(rng.choice(callee_ops))


def _make_call(rng: np.random.Generator, caller_kind: str, callee_kind: str, callee: int, op: int) -> Call:
    if callee_kind == "database":
        cmax = int(rng.choice([1, 1, 2, 3]))
        return Call(callee, op, float(rng.uniform(0.85, 1.0)), 1, cmax, float(rng.uniform(500, 2000)),
                    int(rng.choice([0, 1])), float(rng.uniform(10, 50)), 0.95, float(rng.uniform(0.2, 0.8)))
    if callee_kind == "cache":
        cmax = int(rng.choice([1, 1, 2, 4]))
        return Call(callee, op, 1.0, 1, cmax, float(rng.uniform(50, 200)), 0, 0.0, 0.15, float(rng.uniform(0.1, 0.4)))
    timeout = float(rng.uniform(3000, 5000)) if caller_kind == "gateway" else float(rng.uniform(800, 2500))
    prob = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.5, 1.0))
    cmax = 2 if rng.random() < 0.15 else 1
    retries = int(rng.choice([0, 1, 1, 2]))
    return Call(callee, op, prob, 1, cmax, timeout, retries, float(rng.uniform(20, 100)),
                float(rng.uniform(0.9, 1.0)), float(rng.uniform(0.3, 1.5)))


def _make_service(
    rng: np.random.Generator, s: int, name: str, kind: str, layer: int, ops: list[int],
    nodes: list[str], instances_min: int, instances_max: int,
) -> Service:
    if kind in ("database", "cache"):
        n_inst = 1
        pods = names.statefulset_pods(name, n_inst)
    else:
        n_inst = int(rng.integers(instances_min, instances_max + 1))
        if kind == "gateway":
            n_inst = max(n_inst, min(2, instances_max))
        pods = names.deployment_pods(rng, name, n_inst)
    instances = tuple(Instance(p, str(rng.choice(nodes))) for p in pods)
    language = {"gateway": "go", "database": "postgres", "cache": "redis"}.get(kind) or str(rng.choice(APP_LANGUAGES))
    mem, limit_x, gc = {
        "java": (rng.uniform(600, 1500), rng.uniform(1.8, 2.5), rng.uniform(20, 80)),
        "python": (rng.uniform(150, 400), rng.uniform(2.0, 3.0), rng.uniform(1, 5)),
        "go": (rng.uniform(60, 200), rng.uniform(2.5, 4.0), rng.uniform(2, 10)),
        "postgres": (rng.uniform(2000, 6000), rng.uniform(1.4, 1.8), 0.0),
        "redis": (rng.uniform(200, 1000), rng.uniform(1.8, 2.5), 0.0),
    }[language]
    base_error = {
        "gateway": 0.001,
        "app": float(rng.uniform(0.0005, 0.006)),
        "database": 0.0002,
        "cache": 0.0005,
    }[kind]
    threads = {"gateway": int(rng.integers(200, 500)), "app": int(rng.integers(40, 160)),
               "database": int(rng.integers(100, 300)), "cache": 1000}[kind]
    conn_pool = {"gateway": 200, "app": int(rng.integers(10, 40)), "database": int(rng.integers(100, 300)),
                 "cache": 1000}[kind]
    threads_base = {"java": int(rng.integers(40, 80)), "go": int(rng.integers(10, 30)),
                    "python": int(rng.integers(4, 16)), "postgres": int(rng.integers(20, 40)), "redis": 6}[language]
    routes_weight: tuple[float, ...] = ()
    if kind == "gateway":
        w = rng.dirichlet(np.full(len(ops), 2.0))
        routes_weight = tuple(float(x) for x in w)
    return Service(
        index=s, name=name, kind=kind, layer=layer, language=language, ops=tuple(ops), instances=instances,
        version=names.version(rng), base_error=base_error, rho_peak=float(rng.uniform(0.3, 0.5)),
        threads=threads, conn_pool=conn_pool, pool_idle=float(rng.uniform(0.1, 0.25)),
        pool_timeout_ms=float(rng.uniform(1000, 3000)), memory_mib=float(mem), memory_limit_mib=float(mem * limit_x),
        cpu_idle=float(rng.uniform(2, 8)), cpu_per_load=float(rng.uniform(40, 70)), gc_ms=float(gc),
        threads_base=threads_base, routes_weight=routes_weight,
    )
