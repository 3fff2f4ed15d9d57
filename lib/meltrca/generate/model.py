"""Per-minute physics of one system: load, latency, errors and resources of every service.

Load flows down the call graph from the front door (daily seasonality, surges); utilisation
drives CPU and queueing; faults change one root service; their effects reach callers through
the call structure (a caller waits for its callee, retries it, fails with it) and, with a lag
of a few minutes, through saturation (in-flight requests pile up in the caller's thread pool
until it queues and rejects). Metrics are read from these curves; sampled traces draw from
the same per-minute parameters, so both signals tell one story.

Everything here is a numpy array over the whole timeline ([services or instances, minutes]),
computed from the plan alone, so any worker can rebuild it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtr

from meltrca.generate.plan import GenerationPlan, SystemPlan, plan_from_json
from meltrca.generate.schedule import Fault, pool_shrink
from meltrca.generate.topology import Topology

SELF_SIGMA = 0.45  # spread (lognormal sigma) of one span's own processing time
TOTAL_SIGMA = 0.55  # spread of a whole request's latency (for metric percentiles)
SELF_MEAN = math.exp(SELF_SIGMA**2 / 2)
TOTAL_MEAN = math.exp(TOTAL_SIGMA**2 / 2)
Z95, Z99 = 1.6449, 2.3263
SATURATION_LAG = np.array([0.1, 0.4, 0.3, 0.2])  # weights of minutes t-1..t-4: callers react late
HANG_MS = 60_000.0

# Why a span failed (span attribute error.type, log templates).
OK, EXCEPTION, TIMEOUT, UPSTREAM, REFUSED, POOL_TIMEOUT, RESET, DEPLOY_BUG, INVALID_RESPONSE, REJECTED = range(10)
ERROR_TYPES = (
    "", "exception", "timeout", "upstream_error", "connection_refused", "pool_timeout", "connection_reset",
    "exception", "invalid_response", "rejected",
)


def traffic_profile(plan: GenerationPlan, sp: SystemPlan, rng: np.random.Generator) -> np.ndarray:
    """Relative front-door traffic per minute (1.0 = weekday daily peak): daily curve with a
    lunch bump, quieter weekends, slow waves, per-minute noise and benign surges."""
    start = plan.start_dt
    t = np.arange(plan.minutes, dtype=float)
    hours = start.hour + start.minute / 60 + t / 60 + sp.phase_hours
    h = np.mod(hours, 24)
    daily = 0.35 + 0.65 * ((1 - np.cos(2 * np.pi * (h - 3) / 24)) / 2) ** 1.6
    daily += 0.06 * np.exp(-((h - 12.5) ** 2) / (2 * 0.7**2))
    weekday = (start.weekday() + np.floor((start.hour + start.minute / 60 + t / 60) / 24)) % 7
    daily *= np.where(weekday >= 5, 0.8, 1.0)
    for period, phase, amp in sp.wobble:
        daily *= 1 + amp * np.sin(2 * np.pi * t / period + phase)
    daily *= 1 + 0.02 * rng.standard_normal(plan.minutes)
    for s in sp.surges:
        up = np.clip((t - s.start + 1) / s.ramp, 0, 1)
        down = np.clip((s.end - t) / s.ramp, 0, 1)
        daily *= 1 + (s.factor - 1) * np.minimum(up, down)
    return np.maximum(daily, 0.05)


def static_visits(topo: Topology) -> np.ndarray:
    """Expected calls of each operation per front-door request (no retries)."""
    v = np.zeros(len(topo.ops))
    for pos, o in enumerate(topo.gateway.ops):
        v[o] += topo.gateway.routes_weight[pos]
    for o in _top_down(topo):
        for c in topo.ops[o].calls:
            v[c.op] += v[o] * c.probability * (c.count_min + c.count_max) / 2
    return v


def _top_down(topo: Topology) -> list[int]:
    layer = [topo.services[o.service].layer for o in topo.ops]
    return sorted(range(len(topo.ops)), key=lambda o: (layer[o], o))


@dataclass
class FaultEffects:
    """How the injected faults change each instance / service, minute by minute."""

    cpu_add: np.ndarray  # [I, M] percent
    leak: np.ndarray  # [I, M] share of memory headroom taken by a leak
    lat_mult: np.ndarray  # [I, M] own-latency factor
    err: np.ndarray  # [I, M] probability a request fails for the fault's reason
    err_kind: np.ndarray  # [I, M] int8 reason code
    extra_ms: np.ndarray  # [S, M] added own time (network delay, retransmits, hangs)
    wrong: np.ndarray  # [S, M] share of successful responses that are wrong (bad deploy)
    skip: np.ndarray  # [S, M] share of requests taking a wrong branch: no calls out, no completion line
    pool_add: np.ndarray  # [S, M] leaked connections as a share of the pool
    pool_shrink: np.ndarray  # [S, M] pool size divisor (misconfiguration)
    pool_err: np.ndarray  # [S, M] pool-timeout share when the pool is fully saturated
    warm: np.ndarray  # [I, M] memory warm-up after restarts/deploys (1 = warm)


class SystemModel:
    """All per-minute curves of one system (with or without its faults)."""

    def __init__(self, plan: GenerationPlan, sp: SystemPlan, *, with_faults: bool = True) -> None:
        from meltrca.generate.randomness import rng_for

        self.plan, self.sp, self.topo = plan, sp, sp.topology
        topo = self.topo
        M = plan.minutes
        S, n_ops = len(topo.services), len(topo.ops)
        self.minutes = M
        self.profile = traffic_profile(plan, sp, rng_for(plan.seed, "profile", sp.index))
        self.traffic = sp.peak_rps * self.profile
        # instances: flat index over services
        self.inst_service = np.array([s.index for s in topo.services for _ in s.instances], dtype=np.int64)
        self.inst_pos = np.array([k for s in topo.services for k in range(len(s.instances))], dtype=np.int64)
        self.inst_names = [i.name for s in topo.services for i in s.instances]
        self.inst_nodes = [i.node for s in topo.services for i in s.instances]
        self.first_inst = np.array([0, *np.cumsum([len(s.instances) for s in topo.services])[:-1]], dtype=np.int64)
        t = np.arange(M)
        self.active = np.array(
            [(t >= i.active_from) & (t < (M if i.active_to is None else i.active_to))
             for s in topo.services for i in s.instances]
        )
        self.n_active = self._per_service(self.active.astype(float))
        base_inst = np.array([sum(1 for i in s.instances if i.active_from == 0) for s in topo.services], dtype=float)
        self.visits = static_visits(topo)
        self.svc_visits = np.array([self.visits[list(s.ops)].sum() for s in topo.services])
        self.load = self.traffic[None, :] * self.svc_visits[:, None]  # [S, M] requests/s
        capacity = sp.peak_rps * self.svc_visits / (np.maximum(base_inst, 1) * np.array([s.rho_peak for s in topo.services]))
        self.rho_svc = self.load / np.maximum(self.n_active, 1) / np.maximum(capacity, 1e-9)[:, None]
        self.rho = self.rho_svc[self.inst_service] * self.active  # [I, M]
        self.max_wait = np.full(n_ops, sp.topology.root_timeout_ms)
        for op in topo.ops:
            for c in op.calls:
                self.max_wait[c.op] = c.timeout_ms if self.max_wait[c.op] == topo.root_timeout_ms else max(self.max_wait[c.op], c.timeout_ms)
        self.op_weight = self.visits / np.maximum(self.svc_visits[[o.service for o in topo.ops]], 1e-12)

        # ---- the no-fault baseline sets pool and thread sizes (capacity planning) ----------
        neutral = self._neutral_effects()
        base = self._solve(neutral, passes=1)
        inflight_peak = np.max(self.load / np.maximum(self.n_active, 1) * base["lat"] / 1000, axis=1)
        busy_peak = np.max(base["busy"], axis=1)
        util = np.array([0.12 + 0.1 * (s.index % 3) / 2 for s in topo.services])  # 12-22 % busy at peak
        self.thread_capacity = np.maximum(inflight_peak / util, 4.0)
        self.pool_capacity = np.maximum(busy_peak / 0.3, 1e-3)
        self.base_lat_peak = np.array([float(np.percentile(base["lat"][s], 95)) for s in range(S)])
        self.effects = self._fault_effects(sp.faults) if with_faults else neutral
        self.state = self._solve(self.effects, passes=4)
        self.err_svc = self._svc_mean(self.effects.err)

    # ------------------------------------------------------------------------------------------
    def _per_service(self, inst_values: np.ndarray) -> np.ndarray:
        out = np.zeros((len(self.topo.services), inst_values.shape[1]))
        np.add.at(out, self.inst_service, inst_values)
        return out

    def _svc_mean(self, inst_values: np.ndarray) -> np.ndarray:
        """Mean over a service's active instances (traffic is spread evenly)."""
        return self._per_service(inst_values * self.active) / np.maximum(self.n_active, 1)

    def _neutral_effects(self) -> FaultEffects:
        n, S, M = len(self.inst_service), len(self.topo.services), self.minutes
        return FaultEffects(
            cpu_add=np.zeros((n, M)), leak=np.zeros((n, M)), lat_mult=np.ones((n, M)), err=np.zeros((n, M)),
            err_kind=np.zeros((n, M), dtype=np.int8), extra_ms=np.zeros((S, M)), wrong=np.zeros((S, M)),
            skip=np.zeros((S, M)),
            pool_add=np.zeros((S, M)), pool_shrink=np.ones((S, M)), pool_err=np.zeros((S, M)),
            warm=self._warmup(),
        )

    def _warmup(self) -> np.ndarray:
        """Memory drops after a restart (deploys restart every pod, one after another) and
        climbs back over ~20 minutes: a benign, visible consequence of change events."""
        M = self.minutes
        warm = np.ones((len(self.inst_service), M))
        t = np.arange(M, dtype=float)
        for e in self.sp.events:
            first = self.first_inst[e.service]
            n = len(self.topo.services[e.service].instances)
            if e.event_type == "deploy":
                targets = [(first + k, e.at_s / 60 + k * 0.7) for k in range(n)]
            elif e.event_type == "restart" and e.instance is not None:
                targets = [(first + e.instance, e.at_s / 60)]
            else:
                continue
            for i, at in targets:
                after = t >= at
                warm[i] = np.where(after, 1 - 0.15 * np.exp(-(t - at) / 20), warm[i])
        return warm

    def _fault_effects(self, faults: tuple[Fault, ...]) -> FaultEffects:
        fx = self._neutral_effects()
        M = self.minutes
        t = np.arange(M, dtype=float)
        for f in faults:
            svc = self.topo.services[f.root]
            win = (t >= f.start) & (t < f.end)
            span = max(f.end - f.start, 1)
            insts = [self.first_inst[f.root] + k for k in f.instances]
            all_insts = [self.first_inst[f.root] + k for k in range(len(svc.instances))]
            mag = f.magnitude
            if f.fault_type == "cpu_hog":
                for i in insts:
                    fx.cpu_add[i] += win * (20 + 60 * mag) * np.clip(t - f.start + 1, 0, 1)
            elif f.fault_type == "memory_leak":
                frac = np.clip((t - f.start) / span, 0, 1) ** (1 + (1 - mag))
                for i in insts:
                    fx.leak[i] = np.where(win, 0.97 * frac, fx.leak[i])
                    restart = t == f.end - 1  # OOM kill and restart in the last minute
                    fx.err[i] = np.where(restart, 0.5, fx.err[i])
                    fx.err_kind[i] = np.where(restart, REFUSED, fx.err_kind[i])
                    after = t >= f.end - 0.5
                    fx.warm[i] = np.where(after, np.minimum(fx.warm[i], 1 - 0.3 * np.exp(-(t - f.end + 0.5) / 20)), fx.warm[i])
            elif f.fault_type == "network_delay":
                jitter = 1 + 0.1 * np.sin(t / 3.0)
                fx.extra_ms[f.root] += win * (0.5 + 4.0 * mag**1.5) * self.base_lat_peak[f.root] * jitter
            elif f.fault_type == "packet_loss":
                loss = 0.02 + 0.18 * mag
                for i in all_insts:
                    fx.err[i] = np.where(win, loss * 0.6, fx.err[i])
                    fx.err_kind[i] = np.where(win, RESET, fx.err_kind[i])
                fx.extra_ms[f.root] += win * loss * 250
            elif f.fault_type == "db_connection_pool_exhaustion":
                ramp = 2 + round(4 * (1 - mag))
                fx.pool_add[f.root] += win * np.clip((t - f.start + 1) / ramp, 0, 1) * (0.75 + 0.8 * mag)
                fx.pool_err[f.root] = np.where(win, 0.1 + 0.6 * mag, fx.pool_err[f.root])
            elif f.fault_type == "misconfiguration":
                fx.pool_shrink[f.root] = np.where(win, pool_shrink(mag), fx.pool_shrink[f.root])
                fx.pool_err[f.root] = np.where(win, 0.1 + 0.6 * mag, fx.pool_err[f.root])
            elif f.fault_type == "bad_deploy":
                for k, i in enumerate(all_insts):  # rolling update: one pod per minute
                    on = (t >= f.start + k) & win
                    if f.mode == "wrong_result":
                        fx.wrong[f.root] += on * (0.05 + 0.4 * mag) / len(all_insts)
                    else:
                        fx.err[i] = np.where(on, 0.05 + 0.45 * mag, fx.err[i])
                        fx.err_kind[i] = np.where(on, DEPLOY_BUG, fx.err_kind[i])
                        fx.lat_mult[i] = np.where(on, 1.1, fx.lat_mult[i])
            elif f.fault_type == "exception":  # a latent bug: a new exception on every instance
                for i in all_insts:
                    fx.err[i] = np.where(win, 0.1 + 0.5 * mag, fx.err[i])
                    fx.err_kind[i] = np.where(win, DEPLOY_BUG, fx.err_kind[i])
            elif f.fault_type == "wrong_return":  # a wrong branch returns early: calls skipped, nothing logged
                fx.skip[f.root] = np.where(win, 0.3 + 0.6 * mag, fx.skip[f.root])
            elif f.fault_type == "dependency_outage":
                for i in all_insts:
                    if f.mode == "hang":
                        fx.err[i] = np.where(win, 0.02, fx.err[i])
                        fx.err_kind[i] = np.where(win, REFUSED, fx.err_kind[i])
                    else:
                        fx.err[i] = np.where(win, 0.5 + 0.5 * mag, fx.err[i])
                        fx.err_kind[i] = np.where(win, REFUSED, fx.err_kind[i])
                        fx.lat_mult[i] = np.where(win, 0.3, fx.lat_mult[i])
                if f.mode == "hang":
                    fx.extra_ms[f.root] += win * HANG_MS * (0.5 + 0.5 * mag)
        return fx

    # ------------------------------------------------------------------------------------------
    def _resources(self, fx: FaultEffects) -> dict[str, np.ndarray]:
        """CPU, memory and GC per instance, and the own-latency factor they cause."""
        svc = [self.topo.services[s] for s in self.inst_service]
        cpu_idle = np.array([s.cpu_idle for s in svc])[:, None]
        cpu_load = np.array([s.cpu_per_load for s in svc])[:, None]
        cpu = np.clip(cpu_idle + cpu_load * self.rho + fx.cpu_add, 0, 100)
        base = np.array([s.memory_mib for s in svc])[:, None]
        limit = np.array([s.memory_limit_mib for s in svc])[:, None]
        mem = base * fx.warm * (1 + 0.05 * self.rho) + fx.leak * (limit - base * fx.warm)
        ratio = mem / limit
        pressure = np.clip((ratio - 0.75) / 0.25, 0, 1)
        gc = np.array([s.gc_ms for s in svc])[:, None] * (0.5 + self.rho) * (1 + 30 * pressure**2)
        f_cpu = 1 + 3 * np.clip((cpu - 70) / 30, 0, 1) ** 2
        f_gc = 1 + 5 * np.clip((ratio - 0.8) / 0.2, 0, 1) ** 2
        f_queue = 1 + 0.8 * self.rho**3
        return {"cpu": cpu, "mem": mem, "gc": gc, "mult": f_queue * f_cpu * f_gc * fx.lat_mult}

    def _ops(self, mult_svc, extra, e_self, wrong):
        """Expected duration and failure probability of every operation, bottom-up."""
        topo = self.topo
        n_ops, M = len(topo.ops), self.minutes
        T, F, own = np.zeros((n_ops, M)), np.zeros((n_ops, M)), np.zeros((n_ops, M))
        attempts: dict[tuple[int, int], np.ndarray] = {}
        for o in reversed(_top_down(topo)):
            op = topo.ops[o]
            s = op.service
            own[o] = (op.pre_ms + op.post_ms) * mult_svc[s] * SELF_MEAN + extra[s]
            e = e_self[s]
            branches = []
            keep = np.ones(M)
            for k, c in enumerate(op.calls):
                Tc, Fc = T[c.op], F[c.op]
                med = np.maximum(Tc / TOTAL_MEAN, 1e-6)
                p_to = 1 - ndtr((np.log(c.timeout_ms) - np.log(med)) / TOTAL_SIGMA)
                q = 1 - (1 - Fc) * (1 - p_to)
                att = sum(q**r for r in range(c.retries + 1))
                attempts[(o, k)] = att
                one = c.net_ms + Tc * (1 - p_to) + c.timeout_ms * p_to
                n_calls = (c.count_min + c.count_max) / 2
                branches.append(c.probability * n_calls * (att * one + (att - 1) * c.backoff_ms))
                q_final = q ** (c.retries + 1)
                f_call = q_final + (1 - q_final) * wrong[c.callee]
                keep *= 1 - c.probability * (1 - (1 - f_call * c.propagate) ** n_calls)
            calls = (np.max(branches, axis=0) if op.parallel else np.sum(branches, axis=0)) if branches else 0.0
            # callers cancel at their timeout: nothing is observed beyond it
            T[o] = np.minimum(own[o] + (1 - e) * calls, self.max_wait[o])
            F[o] = 1 - (1 - e) * keep
        return T, F, own, attempts

    def _solve(self, fx: FaultEffects, passes: int) -> dict[str, np.ndarray]:
        """Fixed-point passes: latency -> saturation and pool pressure -> latency and errors.

        The first pass (no saturation, no pool pressure) is the capacity-planning baseline."""
        topo = self.topo
        S, M = len(topo.services), self.minutes
        res = self._resources(fx)
        mult_svc = self._svc_mean(res["mult"])
        err_svc = self._svc_mean(fx.err)
        base_err = np.array([s.base_error for s in topo.services])[:, None]
        per_inst = self.load / np.maximum(self.n_active, 1)
        op_svc = np.array([o.service for o in topo.ops])
        store = np.array([s.kind in ("database", "cache") for s in topo.services])[:, None]
        timeout = np.array([s.pool_timeout_ms for s in topo.services])[:, None]
        idle = np.array([s.pool_idle for s in topo.services])[:, None]
        sat_wait, sat_err = np.zeros((S, M)), np.zeros((S, M))
        pool_wait, pool_err = np.zeros((S, M)), np.zeros((S, M))
        for k in range(passes):
            extra = fx.extra_ms + pool_wait + sat_wait
            e_self = np.clip(base_err + err_svc + pool_err + sat_err, 0, 1)
            T, F, own, attempts = self._ops(mult_svc, extra, e_self, fx.wrong)
            w = self.op_weight[:, None]
            lat, err, ds = np.zeros((S, M)), np.zeros((S, M)), np.zeros((S, M))
            np.add.at(lat, op_svc, w * T)
            np.add.at(err, op_svc, w * F)
            np.add.at(ds, op_svc, w * (T - own))
            # connections are held while waiting downstream (stores: while serving the query)
            busy = per_inst * np.where(store, lat, ds) / 1000
            if k == 0 and passes == 1:
                break
            demand = (idle + (1 - idle) * 0.5 * busy / self.pool_capacity[:, None]) * fx.pool_shrink + fx.pool_add
            if k == passes - 1:
                break
            # saturation: in-flight requests vs the thread pool, felt a few minutes late
            util = per_inst * lat / 1000 / self.thread_capacity[:, None]
            lagged = np.zeros_like(util)
            for j, wgt in enumerate(SATURATION_LAG, start=1):
                lagged += wgt * util[:, np.maximum(np.arange(M) - j, 0)]
            proc = np.zeros((S, M))  # own processing time, without waits
            np.add.at(proc, op_svc, w * (own - extra[op_svc]))
            sat_wait = np.minimum(proc * 4 * np.clip((lagged - 0.7) / 0.3, 0, 2), 2000.0)
            sat_err = np.clip((lagged - 1.0) * 0.8, 0, 0.5)
            # an over-subscribed database pool (leak, shrunk by config) makes requests wait, then time out
            pressure = np.clip((demand - 1.0) / 0.25, 0, 1) * (fx.pool_err > 0)
            pool_wait = timeout * fx.pool_err * 0.6 * pressure
            pool_err = fx.pool_err * pressure
        # requests actually received, retries included (top-down)
        vd = np.zeros((len(topo.ops), M))
        for pos, o in enumerate(topo.gateway.ops):
            vd[o] += topo.gateway.routes_weight[pos]
        for o in _top_down(topo):
            s = topo.ops[o].service
            for j, c in enumerate(topo.ops[o].calls):
                vd[c.op] += vd[o] * (1 - e_self[s]) * c.probability * (c.count_min + c.count_max) / 2 * attempts[(o, j)]
        received = np.zeros((S, M))
        np.add.at(received, op_svc, vd)
        out = {
            "lat": lat, "err": err, "ds": ds, "busy": busy, "T": T, "F": F, "own": own, "extra": extra,
            "e_self": e_self, "sat_err": sat_err, "pool_err": pool_err, "mult_svc": mult_svc,
            "rps": self.traffic[None, :] * received, **res,
        }
        if passes > 1:
            out["pool_usage"] = np.minimum(demand, 1.0)
        return out

    # ---- read-outs ------------------------------------------------------------------------------
    def instance_curves(self, i: int) -> dict[str, np.ndarray]:
        """Noise-free metric curves of one instance over the whole timeline."""
        st = self.state
        s = int(self.inst_service[i])
        n = np.maximum(self.n_active[s], 1)
        own = st["lat"][s] - st["ds"][s]
        rel = st["mult"][i] / np.maximum(st["mult_svc"][s], 1e-9)
        lat = st["lat"][s] + own * (rel - 1)
        p50 = lat / TOTAL_MEAN
        err = np.clip(st["err"][s] + self.effects.err[i] - self.err_svc[s], 0, 1)
        inflight = st["rps"][s] / n * lat / 1000
        svc = self.topo.services[s]
        return {
            "request_rate": st["rps"][s] / n,
            "error_rate": err,
            "latency_p50_ms": p50,
            "latency_p95_ms": p50 * math.exp(Z95 * TOTAL_SIGMA),
            "latency_p99_ms": p50 * math.exp(Z99 * TOTAL_SIGMA),
            "cpu_usage": st["cpu"][i],
            "memory_usage": st["mem"][i],
            "conn_pool_usage": 100 * st["pool_usage"][s],
            "gc_pause_ms": st["gc"][i],
            "thread_count": svc.threads_base + np.minimum(inflight, self.thread_capacity[s] * 1.2),
        }


@lru_cache(maxsize=2)
def model_for(plan_json: str, system: int) -> SystemModel:
    """One model per (plan, system) per Python worker: units of the same system share it."""
    plan = plan_from_json(plan_json)
    return SystemModel(plan, plan.system(system))
