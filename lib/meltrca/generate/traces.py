"""Sampled request traces, expanded operation by operation for a whole batch at once.

A trace starts at a front-door route and follows the topology. Each span's own time is drawn
from the per-minute model; calls run one after another (or concurrently for fan-out
operations), each within the caller's remaining deadline; failed calls are retried with
backoff; a final failure fails the caller with the call's `propagate` probability. Durations
therefore add up along the call path and every child lies inside its parent.

The expansion is vectorised: one numpy step per (operation, call, repeat, attempt) for all
traces of the batch, never a Python loop per span.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meltrca.generate.model import (
    EXCEPTION,
    INVALID_RESPONSE,
    OK,
    POOL_TIMEOUT,
    REFUSED,
    REJECTED,
    SELF_SIGMA,
    TIMEOUT,
    UPSTREAM,
    SystemModel,
)

FAST_FAIL = (REFUSED, REJECTED)  # fail before doing any work


@dataclass
class Spans:
    """One row per span (struct of arrays); `parent` indexes rows, -1 for the root."""

    trace: np.ndarray
    parent: np.ndarray
    service: np.ndarray
    op: np.ndarray
    instance: np.ndarray  # global instance index
    minute: np.ndarray
    start_ms: np.ndarray  # since the timeline start
    dur_ms: np.ndarray
    failed: np.ndarray
    kind: np.ndarray  # why it failed (model error codes), OK when it did not
    peer: np.ndarray  # service whose failure this span inherited (-1: its own)
    attempt: np.ndarray  # 0 = first try, 1.. = retries
    retried: np.ndarray  # this failed attempt was retried by the caller
    fallback: np.ndarray  # answered with a default/wrong value (bad deploy, wrong_result)
    detected_wrong: np.ndarray  # the caller rejected this span's response as invalid
    wrong_path: np.ndarray  # took a wrong branch (wrong_return): returned early, no completion line

    def __len__(self) -> int:
        return len(self.trace)



class TraceSampler:
    """Expands traces of one system for a batch of (minute, offset) start points."""

    def __init__(self, model: SystemModel, rng: np.random.Generator) -> None:
        self.m = model
        self.topo = model.topo
        self.rng = rng
        st = model.state
        self.mult = st["mult"]  # [I, M]
        self.extra = st["extra"]  # [S, M]
        self.base_err = np.array([s.base_error for s in self.topo.services])
        self.sat_err = st["sat_err"]
        self.pool_err = st["pool_err"]
        self.fault_err = model.effects.err
        self.fault_kind = model.effects.err_kind
        self.wrong = model.effects.wrong
        self.skip = model.effects.skip
        self.pool_timeout = np.array([s.pool_timeout_ms for s in self.topo.services])
        self.n_inst = np.array([len(s.instances) for s in self.topo.services])

    def sample(self, minutes: np.ndarray, offset_ms: np.ndarray) -> Spans:
        """Traces starting at minute[k] + offset_ms[k]; returns their spans in parent-first order."""
        self._groups: list[dict[str, np.ndarray]] = []
        self._retried: list[tuple[np.ndarray, np.ndarray]] = []
        self._rows = 0
        n = len(minutes)
        gw = self.topo.gateway
        route = self.rng.choice(len(gw.ops), size=n, p=np.asarray(gw.routes_weight) / sum(gw.routes_weight))
        traces = np.arange(n, dtype=np.int64)
        for pos, op in enumerate(gw.ops):
            sel = np.nonzero(route == pos)[0]
            if len(sel):
                start = minutes[sel] * 60_000.0 + offset_ms[sel]
                budget = np.full(len(sel), self.topo.root_timeout_ms)
                self._expand(op, traces[sel], minutes[sel], np.full(len(sel), -1, dtype=np.int64), budget, start, 0)
        return self._assemble()

    # ------------------------------------------------------------------------------------------
    def _pick_instance(self, s: int, minute: np.ndarray) -> np.ndarray:
        k = int(self.n_inst[s])
        first = int(self.m.first_inst[s])
        pos = self.rng.integers(0, k, size=len(minute))
        inst = first + pos
        for _ in range(k):  # skip instances that are not running at that minute
            off = ~self.m.active[inst, minute]
            if not off.any():
                break
            pos = np.where(off, (pos + 1) % k, pos)
            inst = first + pos
        return inst

    def _expand(
        self,
        o: int,
        trace: np.ndarray,
        minute: np.ndarray,
        parent: np.ndarray,
        budget: np.ndarray,
        offset: np.ndarray,
        attempt: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Spans of operation `o` for each row; returns (duration, failed, fallback, kind)."""
        rng = self.rng
        op = self.topo.ops[o]
        s = op.service
        n = len(trace)
        rows = np.arange(self._rows, self._rows + n, dtype=np.int64)
        self._rows += n
        group: dict[str, np.ndarray] = {}
        self._groups.append(group)  # reserved now so parents precede children

        inst = self._pick_instance(s, minute)
        mult = self.mult[inst, minute]
        pre = op.pre_ms * mult * rng.lognormal(0.0, SELF_SIGMA, n)
        post = op.post_ms * mult * rng.lognormal(0.0, SELF_SIGMA, n)
        extra_mean = self.extra[s, minute]
        if extra_mean.any():
            pre = pre + extra_mean * rng.exponential(1.0, n)
        # does this span fail on its own, and why?
        u = rng.random(n)
        p_sat = self.sat_err[s, minute]
        p_fault = self.fault_err[inst, minute]
        p_pool = self.pool_err[s, minute]
        kind = np.zeros(n, dtype=np.int8)
        kind = np.where(u < p_sat, REJECTED, kind)
        c1 = p_sat + p_fault
        kind = np.where((u >= p_sat) & (u < c1), self.fault_kind[inst, minute], kind)
        c2 = c1 + p_pool
        kind = np.where((u >= c1) & (u < c2), POOL_TIMEOUT, kind)
        kind = np.where((u >= c2) & (u < c2 + self.base_err[s]), EXCEPTION, kind).astype(np.int8)
        failed = kind != OK
        fast = np.isin(kind, FAST_FAIL)
        pre = np.where(fast, rng.uniform(0.1, 2.0, n), pre)
        post = np.where(fast, 0.0, post)
        pre = np.where(kind == POOL_TIMEOUT, pre + self.pool_timeout[s] * rng.uniform(0.95, 1.0, n), pre)
        peer = np.full(n, -1, dtype=np.int64)
        # a wrong branch (wrong_return) returns early; drawn only when one is active, so the
        # random stream of every other fault stays as it was
        skip = self.skip[s, minute]
        wrong_path = rng.random(n) < skip if skip.any() else np.zeros(n, dtype=bool)

        end = pre.copy()  # running end of the calls, relative to this span's start
        for c in op.calls:
            branch = end if not op.parallel else pre.copy()
            make = rng.random(n) < c.probability
            count = rng.integers(c.count_min, c.count_max + 1, size=n)
            for r in range(c.count_max):
                # a span that has failed (on its own or through a call) makes no further calls
                sub = np.nonzero(make & (count > r) & ~failed & ~wrong_path)[0]
                tries = 0
                while len(sub):
                    start = branch[sub] + c.net_ms * rng.lognormal(0.0, 0.3, len(sub))
                    child_budget = np.minimum(c.timeout_ms, budget[sub] - start)
                    room = child_budget > 1.0
                    sub, start, child_budget = sub[room], start[room], child_budget[room]
                    if not len(sub):
                        break
                    cdur, cfail, cwrong, ckind = self._expand(
                        c.op, trace[sub], minute[sub], rows[sub], child_budget, start, tries
                    )
                    branch[sub] = start + cdur
                    child_rows = self._last_rows
                    retry = cfail & (tries < c.retries)
                    self._retried.append((child_rows, retry))
                    # a wrong answer is not retried: the caller notices it and gives up
                    detected = cwrong & ~cfail
                    if detected.any():
                        self._retried.append((child_rows[detected], np.full(int(detected.sum()), 2, dtype=np.int8)))
                    final = (cfail & ~retry) | detected
                    hit = final & (rng.random(len(sub)) < c.propagate)
                    idx = sub[hit]
                    failed[idx] = True
                    kind[idx] = np.where(
                        detected[hit], INVALID_RESPONSE, np.where(ckind[hit] == TIMEOUT, TIMEOUT, UPSTREAM)
                    )
                    peer[idx] = c.callee
                    branch[sub[retry]] += c.backoff_ms
                    sub = sub[retry]
                    tries += 1
            if op.parallel:
                end = np.maximum(end, branch)
        dur = end + post
        over = dur > budget
        dur = np.minimum(dur, budget)  # the caller gave up: cancelled at its deadline
        kind = np.where(over, TIMEOUT, kind).astype(np.int8)
        failed = failed | over
        fallback = ~failed & (rng.random(n) < self.wrong[s, minute])
        group.update(
            row=rows, trace=trace, parent=parent, service=np.full(n, s, dtype=np.int64),
            op=np.full(n, o, dtype=np.int64), instance=inst, minute=minute, offset=offset, dur_ms=dur,
            failed=failed, kind=kind, peer=peer, attempt=np.full(n, attempt, dtype=np.int16), fallback=fallback,
            wrong_path=wrong_path,
        )
        self._last_rows = rows
        return dur, failed, fallback, kind

    def _assemble(self) -> Spans:
        g = self._groups
        if not g:
            ints = np.zeros(0, dtype=np.int64)
            flags = np.zeros(0, dtype=bool)
            return Spans(trace=ints, parent=ints, service=ints, op=ints, instance=ints, minute=ints,
                         start_ms=np.zeros(0), dur_ms=np.zeros(0), failed=flags, kind=np.zeros(0, dtype=np.int8),
                         peer=ints, attempt=np.zeros(0, dtype=np.int16), retried=flags, fallback=flags,
                         detected_wrong=flags, wrong_path=flags)
        cat = {k: np.concatenate([x[k] for x in g]) for k in g[0] if k != "row"}
        n = self._rows
        start = cat.pop("offset").astype(float)
        parent = cat["parent"]
        # children were created after their parents: one pass in row order resolves start times
        for grp in g:
            rows = grp["row"]
            p = grp["parent"]
            if len(rows) and p[0] >= 0:
                start[rows] = start[p] + grp["offset"]
        flag = np.zeros(n, dtype=np.int8)
        for rows, mark in self._retried:
            if len(rows):
                flag[rows] = np.maximum(flag[rows], mark.astype(np.int8))
        return Spans(
            trace=cat["trace"], parent=parent, service=cat["service"], op=cat["op"], instance=cat["instance"],
            minute=cat["minute"], start_ms=start, dur_ms=cat["dur_ms"], failed=cat["failed"], kind=cat["kind"],
            peer=cat["peer"], attempt=cat["attempt"], retried=flag == 1, fallback=cat["fallback"],
            detected_wrong=flag == 2, wrong_path=cat["wrong_path"],
        )


def traces_in_minutes(counts: np.ndarray, shard: int, shards: int) -> np.ndarray:
    """How many of each minute's traces belong to one shard (trace i -> shard i % shards)."""
    return np.maximum(0, (counts - shard + shards - 1) // shards)
