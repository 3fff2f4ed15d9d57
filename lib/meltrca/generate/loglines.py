"""Log lines: templated messages per service language, tied to spans or to the instance.

Request logs follow the spans (DEBUG on arrival, INFO on completion, WARN/ERROR on failures,
retries, slow queries, stack traces for code faults), so log evidence moves with the traces.
Instance logs come from the per-minute model (health checks, GC, memory, CPU, pool warnings,
rare background errors, shutdown/start around deploys and restarts, OOM before an OOM kill).
DEBUG/INFO lines are sampled with log_sample_rate; WARN/ERROR lines are always kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meltrca.generate import columns as col
from meltrca.generate import names
from meltrca.generate.model import (
    DEPLOY_BUG,
    EXCEPTION,
    INVALID_RESPONSE,
    POOL_TIMEOUT,
    REFUSED,
    REJECTED,
    RESET,
    TIMEOUT,
    UPSTREAM,
    SystemModel,
    model_for,
)
from meltrca.generate.plan import plan_from_json
from meltrca.generate.randomness import rng_for
from meltrca.generate.traces import Spans

LOG_FIELDS = ("system", "ts", "service", "instance", "level", "message", "trace_id", "span_id", "attributes")


def _java_frames(noun: str, cls: str, rng: np.random.Generator, k: int) -> str:
    methods = ("handle", "process", "apply", "load", "validate", "execute", "map", "resolve")
    layers = ("Controller", "Service", "Repository", "Mapper", "Client", "Validator")
    frames = []
    for _ in range(k):
        layer = str(rng.choice(layers))
        frames.append(f"\tat com.shop.{noun.replace('-', '')}.{cls}{layer}.{rng.choice(methods)}({cls}{layer}.java:{int(rng.integers(40, 400))})")
    frames.append(f"\t... {int(rng.integers(20, 90))} more")
    return "\n".join(frames)


def _exception(lang: str, noun: str, rng: np.random.Generator, kind: str) -> str:
    """One exception message with a stack trace; '{id}' marks the variable part."""
    cls = names.camel(noun)
    if lang == "java":
        text = {
            "bug": str(rng.choice([
                f'java.lang.NullPointerException: Cannot invoke "com.shop.model.{cls}.getId()" because "item" is null',
                f"java.lang.ClassCastException: class java.lang.String cannot be cast to class java.math.BigDecimal ({cls} {{id}})",
                f"java.lang.IndexOutOfBoundsException: Index 3 out of bounds for length 3 ({noun} {{id}})",
            ])),
            "background": str(rng.choice([
                f"java.lang.IllegalStateException: {cls} {{id}} is locked by another transaction",
                f"org.springframework.dao.OptimisticLockingFailureException: {cls} {{id}} was updated concurrently",
                f"java.lang.IllegalArgumentException: invalid {noun} reference {{id}}",
            ])),
        }[kind]
        return f"Unhandled exception in request: {text}\n{_java_frames(noun, cls, rng, int(rng.integers(3, 7)))}"
    if lang == "python":
        func = str(rng.choice(["get_item", "apply_rules", "build_response", "load_record", "update_state"]))
        exc = {
            "bug": str(rng.choice(["KeyError: 'price'", "AttributeError: 'NoneType' object has no attribute 'id'",
                                   "TypeError: unsupported operand type(s) for +: 'NoneType' and 'float'"])),
            "background": str(rng.choice([f"ValueError: invalid {noun} id {{id}}", f"LookupError: {noun} {{id}} not found",
                                          "TimeoutError: lock wait exceeded for key {id}"])),
        }[kind]
        return (f"Exception on request\nTraceback (most recent call last):\n  File \"/app/{noun}/handlers.py\", line "
                f"{int(rng.integers(20, 300))}, in {func}\n    result = self._{func}(payload)\n  File \"/app/{noun}/service.py\", "
                f"line {int(rng.integers(20, 300))}, in _{func}\n    return record[field]\n{exc}")
    msg = {
        "bug": "panic: runtime error: invalid memory address or nil pointer dereference",
        "background": str(rng.choice([f"error: {noun} {{id}} not found", "error: context canceled while reading row {id}"])),
    }[kind]
    return (f"{msg}\n[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x{int(rng.integers(1 << 20, 1 << 24)):x}]\n\n"
            f"goroutine {{id}} [running]:\nmain.(*{cls}Handler).Serve(...)\n\t/src/{noun}/handler.go:"
            f"{int(rng.integers(20, 300))} +0x{int(rng.integers(16, 4096)):x}") if kind == "bug" else msg


@dataclass
class Catalog:
    """Per-service log vocabulary of one system (fixed per seed, so templates are stable)."""

    logger: list[str]
    background: list[list[tuple[str, str]]]  # per service: (before, after) around the variable id
    bug: list[tuple[str, str]]  # the exception a bad deploy introduces
    pool_timeout: list[str]
    background_errors: list[list[str]]
    fields: list[str] = field(default_factory=list)


def _split(text: str) -> tuple[str, str]:
    a, _, b = text.partition("{id}")
    return a, b


@lru_cache(maxsize=2)
def catalog_for(plan_json: str, system: int) -> Catalog:
    plan = plan_from_json(plan_json)
    topo = plan.system(system).topology
    rng = rng_for(plan.seed, "log-catalog", system)
    loggers, bgs, bugs, pools, bg_err, fields = [], [], [], [], [], []
    for s in topo.services:
        noun = names.noun(s.name)
        cls = names.camel(noun)
        lang = s.language
        loggers.append({
            "java": f"com.shop.{noun.replace('-', '')}.{cls}Controller", "python": f"{noun.replace('-', '_')}.handlers",
            "go": f"{noun}/server", "postgres": "postgres", "redis": "redis",
        }[lang] if s.kind != "gateway" else "access")
        bgs.append([_split(_exception(lang, noun, rng, "background")) for _ in range(3)])
        bugs.append(_split(_exception(lang, noun, rng, "bug")))
        pools.append({
            "java": "HikariPool-1 - Connection is not available, request timed out after ",
            "python": "sqlalchemy.exc.TimeoutError: QueuePool limit reached, connection timed out after ",
            "go": "pgxpool: failed to acquire connection: context deadline exceeded after ",
        }.get(lang, "connection pool timeout after "))
        bg_err.append([
            "Failed to refresh feature flags from config-server: connect timed out",
            f"Scheduled job {noun}-reconcile failed: lock not acquired",
            "Failed to publish metrics batch to collector: connection reset",
        ])
        fields.append(str(rng.choice(["price", "currency", "quantity", "status", "total", "owner_id"])))
    return Catalog(loggers, bgs, bugs, pools, bg_err, fields)


class LogBuilder:
    """Collects blocks of log lines (vectorised per template) and emits one Arrow batch."""

    def __init__(self) -> None:
        self.parts: list[dict[str, object]] = []

    def add(self, level: str, service: np.ndarray, instance: np.ndarray, ts_ms: np.ndarray, message: pa.Array,
            span_row: np.ndarray | None = None) -> None:
        if len(ts_ms):
            self.parts.append({"level": level, "service": service, "instance": instance, "ts": ts_ms,
                               "message": message, "span": span_row})

    def __len__(self) -> int:
        return sum(len(p["ts"]) for p in self.parts)  # type: ignore[arg-type]

    def batch(self, model: SystemModel, catalog: Catalog, origin: datetime, *, spans: Spans | None = None,
              trace_ids: pa.Array | None = None, span_ids: pa.Array | None = None) -> pa.RecordBatch:
        n = len(self)
        if n == 0:
            return empty_logs()
        svc = np.concatenate([p["service"] for p in self.parts])  # type: ignore[misc]
        inst = np.concatenate([p["instance"] for p in self.parts])  # type: ignore[misc]
        ts = np.concatenate([p["ts"] for p in self.parts])  # type: ignore[misc]
        levels = col.take(["DEBUG", "INFO", "WARN", "ERROR"],
                          np.concatenate([np.full(len(p["ts"]), ("DEBUG", "INFO", "WARN", "ERROR").index(p["level"]))  # type: ignore[arg-type]
                                          for p in self.parts]))
        message = pa.concat_arrays([p["message"] for p in self.parts])  # type: ignore[misc]
        if spans is not None and trace_ids is not None and span_ids is not None:
            rows = np.concatenate([p["span"] if p["span"] is not None else np.full(len(p["ts"]), -1)  # type: ignore[arg-type]
                                   for p in self.parts]).astype(np.int64)
            missing = rows < 0
            safe = np.where(missing, 0, rows)
            tid = trace_ids.take(pa.array(spans.trace[safe], mask=missing))
            sid = span_ids.take(pa.array(safe, mask=missing))
        else:
            tid = pa.nulls(n, pa.string())
            sid = pa.nulls(n, pa.string())
        svc_names = [s.name for s in model.topo.services]
        attrs = col.string_map([("logger", col.take(catalog.logger, svc), None)], n)
        return pa.RecordBatch.from_arrays(
            [col.constant(model.sp.name, n), col.timestamps(origin, ts), col.take(svc_names, svc),
             col.take(model.inst_names, inst), levels, message, tid, sid, attrs],
            names=list(LOG_FIELDS),
        )


def empty_logs() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([], pa.string()), pa.array([], col.TS_TYPE), *[pa.array([], pa.string()) for _ in range(6)],
         pa.MapArray.from_arrays(pa.array([0], pa.int32()), pa.array([], pa.string()), pa.array([], pa.string()))],
        names=list(LOG_FIELDS),
    )


STATUS = {TIMEOUT: "504", UPSTREAM: "502", INVALID_RESPONSE: "502", REJECTED: "503", POOL_TIMEOUT: "503",
          EXCEPTION: "500", DEPLOY_BUG: "500", REFUSED: "503", RESET: "200"}
REASON = {TIMEOUT: "timed out", REFUSED: "connection refused", RESET: "connection reset by peer",
          REJECTED: "503 Service Unavailable", POOL_TIMEOUT: "503 Service Unavailable",
          EXCEPTION: "500 Internal Server Error", DEPLOY_BUG: "500 Internal Server Error",
          UPSTREAM: "502 Bad Gateway", INVALID_RESPONSE: "502 Bad Gateway"}


def span_logs(plan_json: str, system: int, spans: Spans, rng: np.random.Generator, *, sample_rate: float) -> LogBuilder:
    """Log lines written while serving the sampled requests."""
    model = model_for(plan_json, system)
    cat = catalog_for(plan_json, system)
    topo = model.topo
    out = LogBuilder()
    n = len(spans)
    if n == 0:
        return out
    kinds = np.array([s.kind for s in topo.services])
    langs = np.array([s.language for s in topo.services])
    op_names = [o.name for o in topo.ops]
    svc_names = [s.name for s in topo.services]
    skind = kinds[spans.service]
    lang = langs[spans.service]
    app = np.isin(skind, ("app", "gateway"))
    end = spans.start_ms + spans.dur_ms
    dur_txt = col.number_text(spans.dur_ms, 1)
    ops_txt = col.take(op_names, spans.op)
    kind = spans.kind
    # arrival (DEBUG) and completion (INFO) of app requests
    sel = np.nonzero(app & (skind != "gateway") & (rng.random(n) < 0.3 * sample_rate))[0]
    if len(sel):
        msg = _by_language(lang[sel], {
            "java": ["Received request ", ops_txt.take(sel)],
            "python": ["handling ", ops_txt.take(sel)],
            "go": ["request started op=", ops_txt.take(sel)],
        }, len(sel))
        out.add("DEBUG", spans.service[sel], spans.instance[sel], spans.start_ms[sel] + 0.05, msg, sel)
    ok_or_reset = (~spans.failed | (kind == RESET)) & ~spans.wrong_path
    sel = np.nonzero(app & (skind != "gateway") & ok_or_reset & (rng.random(n) < sample_rate))[0]
    if len(sel):
        d = dur_txt.take(sel)
        msg = _by_language(lang[sel], {
            "java": ["Completed ", ops_txt.take(sel), " in ", d, " ms (status 200)"],
            "python": [ops_txt.take(sel), " finished in ", d, "ms status=200"],
            "go": ["request completed op=", ops_txt.take(sel), " status=200 duration=", d, "ms"],
        }, len(sel))
        out.add("INFO", spans.service[sel], spans.instance[sel], end[sel], msg, sel)
    # front door access log: every request, its status code and duration
    gw = skind == "gateway"
    sel = np.nonzero(gw & (spans.failed | (rng.random(n) < sample_rate)))[0]
    if len(sel):
        codes = np.array([STATUS.get(int(k), "200") if f else "200" for k, f in zip(kind[sel], spans.failed[sel], strict=True)])
        ip = rng.integers(0, 256, size=(len(sel), 2))
        msg = col.join(["10.4.", col.number_text(ip[:, 0]), ".", col.number_text(ip[:, 1]), ' - "', ops_txt.take(sel),
                        ' HTTP/1.1" ', pa.array(codes), " ", col.number_text(rng.integers(200, 40_000, len(sel))), " ",
                        dur_txt.take(sel), "ms"], len(sel))
        level = np.where(spans.failed[sel], 1, 0)
        for lv, name in ((0, "INFO"), (1, "WARN")):
            m = level == lv
            out.add(name, spans.service[sel][m], spans.instance[sel][m], end[sel][m], msg.filter(pa.array(m)), sel[m])
    # own failures
    _own_failures(out, spans, cat, rng, app, lang, ops_txt, dur_txt, end, svc_names)
    # calls that failed, seen from the caller (retries, final errors, cache fallbacks, invalid answers)
    child = np.nonzero(spans.parent >= 0)[0]
    failed_call = child[spans.failed[child] | spans.detected_wrong[child]]
    if len(failed_call):
        p = spans.parent[failed_call]
        k = len(failed_call)
        callee_txt = col.take(svc_names, spans.service[failed_call])
        callee_op = ops_txt.take(failed_call)
        is_timeout = pa.array(kind[failed_call] == TIMEOUT)
        waited = col.join([" after ", dur_txt.take(failed_call), " ms"], k)
        reason = col.join([col.take([REASON.get(c, "error") for c in range(10)], kind[failed_call]),
                           pc.if_else(is_timeout, waited, col.constant("", k))], k)
        attempt_txt = col.number_text(spans.attempt[failed_call] + 1)
        wrong = spans.detected_wrong[failed_call]
        cache = kinds[spans.service[failed_call]] == "cache"
        retried = spans.retried[failed_call]
        field_txt = col.take(cat.fields, spans.service[failed_call])
        ts = end[failed_call]
        groups = (
            ("WARN", retried & ~cache, ["Call to ", callee_txt, " ", callee_op, " failed (", reason, "); retrying (attempt ",
                                        attempt_txt, ")"]),
            ("ERROR", ~retried & ~cache & ~wrong, ["Call to ", callee_txt, " ", callee_op, " failed after ", attempt_txt,
                                                   " attempt(s): ", reason]),
            ("WARN", cache & ~wrong, ["Cache ", callee_txt, " unavailable (", reason, "); falling back to database"]),
            ("ERROR", wrong, ["Invalid response from ", callee_txt, " ", callee_op, ": field '", field_txt,
                              "' failed validation"]),
        )
        for level, m, parts in groups:
            idx = np.nonzero(m)[0]
            if len(idx):
                msg = col.join([x if isinstance(x, str) else x.take(pa.array(idx)) for x in parts], len(idx))
                out.add(level, spans.service[p[idx]], spans.instance[p[idx]], ts[idx], msg, p[idx])
    # answered with a default value after a bad deploy: the root's only clue
    sel = np.nonzero(spans.fallback)[0]
    if len(sel):
        msg = col.join(["Missing ", col.take(cat.fields, spans.service[sel]), " for ", col.take([names.noun(x) for x in svc_names], spans.service[sel]),
                        " id=", col.number_text(rng.integers(1000, 999_999, len(sel))), "; using default value"], len(sel))
        out.add("WARN", spans.service[sel], spans.instance[sel], end[sel] - 0.1, msg, sel)
    # databases: slow statements and statement timeouts
    db = skind == "database"
    slow = np.nonzero(db & ~spans.failed & (spans.dur_ms > 100))[0]
    if len(slow):
        msg = col.join(["duration: ", dur_txt.take(slow), " ms  statement: ", ops_txt.take(slow), " WHERE id = $1"], len(slow))
        out.add("WARN", spans.service[slow], spans.instance[slow], end[slow], msg, slow)
    cancelled = np.nonzero(db & (kind == TIMEOUT))[0]
    if len(cancelled):
        msg = col.constant("ERROR:  canceling statement due to statement timeout", len(cancelled))
        out.add("ERROR", spans.service[cancelled], spans.instance[cancelled], end[cancelled], msg, cancelled)
    return out


def _by_language(lang: np.ndarray, variants: dict[str, list], n: int) -> pa.Array:
    """Pick the message form of each row's language (variants hold full-length arrays)."""
    out = None
    for name, parts in variants.items():
        m = lang == name
        if not m.any():
            continue
        idx = pa.array(np.nonzero(m)[0])
        piece = col.join([p if isinstance(p, str) else p.take(idx) for p in parts], int(m.sum()))
        out = (piece, np.nonzero(m)[0]) if out is None else (pa.concat_arrays([out[0], piece]), np.concatenate([out[1], np.nonzero(m)[0]]))
    if out is None:
        return col.constant("", n)
    text, order = out
    return text.take(pa.array(np.argsort(order, kind="stable")))


def _own_failures(out: LogBuilder, spans: Spans, cat: Catalog, rng: np.random.Generator, app: np.ndarray,
                  lang: np.ndarray, ops_txt: pa.Array, dur_txt: pa.Array, end: np.ndarray, svc_names: list[str]) -> None:
    kind = spans.kind
    svc = spans.service
    # code faults: the exception with its stack trace
    for code, variants in ((EXCEPTION, "background"), (DEPLOY_BUG, "bug")):
        sel = np.nonzero(app & (kind == code) & spans.failed)[0]
        if not len(sel):
            continue
        if variants == "bug":
            before = col.take([b for b, _ in cat.bug], svc[sel])
            after = col.take([a for _, a in cat.bug], svc[sel])
        else:
            pick = svc[sel] * 3 + rng.integers(0, 3, len(sel))
            flat = [x for per in cat.background for x in per]
            before = col.take([b for b, _ in flat], pick)
            after = col.take([a for _, a in flat], pick)
        msg = col.join([before, col.number_text(rng.integers(10_000, 999_999, len(sel))), after], len(sel))
        out.add("ERROR", svc[sel], spans.instance[sel], end[sel] - 0.2, msg, sel)
    sel = np.nonzero(app & (kind == POOL_TIMEOUT))[0]
    if len(sel):
        msg = col.join([col.take(cat.pool_timeout, svc[sel]), dur_txt.take(sel), "ms"], len(sel))
        out.add("ERROR", svc[sel], spans.instance[sel], end[sel], msg, sel)
    sel = np.nonzero(app & (kind == REJECTED))[0]
    if len(sel):
        msg = col.join(["Rejected request ", ops_txt.take(sel), ": thread pool exhausted (queue full)"], len(sel))
        out.add("ERROR", svc[sel], spans.instance[sel], end[sel], msg, sel)
    sel = np.nonzero(app & (kind == TIMEOUT))[0]
    if len(sel):
        msg = col.join(["Request ", ops_txt.take(sel), " cancelled after ", dur_txt.take(sel), " ms: deadline exceeded"], len(sel))
        out.add("WARN", svc[sel], spans.instance[sel], end[sel], msg, sel)
    for code, text in ((UPSTREAM, " returned an error"), (INVALID_RESPONSE, " returned an invalid response")):
        sel = np.nonzero(app & (kind == code) & (spans.peer >= 0))[0]
        if len(sel):
            msg = col.join(["Request ", ops_txt.take(sel), " failed: dependency ", col.take(svc_names, spans.peer[sel]), text],
                           len(sel))
            out.add("ERROR", svc[sel], spans.instance[sel], end[sel], msg, sel)


def instance_logs(plan_json: str, system: int, inst: int, minutes: np.ndarray, curves: dict[str, np.ndarray],
                  rng: np.random.Generator, *, sample_rate: float) -> LogBuilder:
    """Log lines an instance writes on its own, minute by minute (not tied to a request)."""
    model = model_for(plan_json, system)
    cat = catalog_for(plan_json, system)
    s = int(model.inst_service[inst])
    svc = model.topo.services[s]
    out = LogBuilder()
    n = len(minutes)
    if n == 0:
        return out
    at = minutes * 60_000.0

    def add(level: str, mask: np.ndarray, parts: list, offset_ms: np.ndarray | float = 0.0) -> None:
        idx = np.nonzero(mask)[0]
        if len(idx):
            msg = col.join([p if isinstance(p, str) else p.take(pa.array(idx)) for p in parts], len(idx))
            off = offset_ms[idx] if isinstance(offset_ms, np.ndarray) else offset_ms
            out.add(level, np.full(len(idx), s), np.full(len(idx), inst), at[idx] + off, msg)

    jitter = rng.uniform(0, 60_000, n)
    if svc.kind in ("app", "gateway"):
        add("INFO", rng.random(n) < sample_rate, ["GET /healthz 200 ", col.number_text(rng.uniform(0.3, 3, n), 1), "ms"], jitter)
        pool = curves["conn_pool_usage"][minutes]
        add("DEBUG", rng.random(n) < 0.2 * sample_rate,
            ["Connection pool stats: in use ", col.number_text(pool), "%, waiting=0"], rng.uniform(0, 60_000, n))
        add("WARN", pool > 90, ["Connection pool near capacity: ", col.number_text(pool), "% in use"], rng.uniform(0, 60_000, n))
    elif svc.kind == "database":
        add("INFO", minutes % 5 == 0, ["checkpoint complete: wrote ", col.number_text(rng.integers(50, 5000, n)),
                                        " buffers (", col.number_text(rng.uniform(0.1, 3, n), 1), "%)"], jitter)
        add("WARN", curves["conn_pool_usage"][minutes] > 95, ["FATAL:  sorry, too many clients already"], jitter)
    else:
        add("INFO", minutes % 15 == 0, ["Background saving started by pid ", col.number_text(rng.integers(100, 30_000, n))], jitter)
    gc = curves["gc_pause_ms"][minutes]
    if svc.language == "java":
        long_pauses = rng.poisson(np.maximum(gc - 300, 0) / 400)
        add("WARN", long_pauses > 0, ["GC pause ", col.number_text(np.maximum(gc / np.maximum(long_pauses, 1), 200)),
                                       "ms (G1 Evacuation Pause) exceeded 200ms target"], rng.uniform(0, 60_000, n))
    mem_pct = 100 * curves["memory_usage"][minutes] / svc.memory_limit_mib
    add("WARN", mem_pct > 85, ["Memory usage high: ", col.number_text(mem_pct), "% of ",
                               col.number_text(np.full(n, svc.memory_limit_mib)), " MiB limit"], rng.uniform(0, 60_000, n))
    cpu = curves["cpu_usage"][minutes]
    add("WARN", cpu > 90, ["CPU throttled in ", col.number_text(np.clip(cpu - 80, 1, 100)), "% of CFS periods"],
        rng.uniform(0, 60_000, n))
    rare = rng.random(n) < svc.base_error * 0.5
    pick = rng.integers(0, len(cat.background_errors[s]), n)
    add("ERROR", rare, [col.take(cat.background_errors[s], pick)], jitter)
    _lifecycle(out, model, s, inst, minutes)
    return out


OOM_TEXT = {"java": "java.lang.OutOfMemoryError: Java heap space", "python": "MemoryError: unable to allocate array",
            "go": "fatal error: runtime: out of memory"}


def _lifecycle(out: LogBuilder, model: SystemModel, s: int, inst: int, minutes: np.ndarray) -> None:
    """Shutdown and start lines around deploys and restarts (and the OOM error before an OOM kill)."""
    svc = model.topo.services[s]
    pos = int(model.inst_pos[inst])
    lo, hi = minutes.min() * 60.0, (minutes.max() + 1) * 60.0
    version = model.sp.initial_versions[s]
    for e in model.sp.events:
        if e.service != s:
            continue
        if e.event_type == "deploy":
            version = e.attributes.get("version", version)
            at = e.at_s + pos * 42.0
        elif e.event_type == "restart" and e.instance == pos:
            at = e.at_s
        else:
            continue
        if not lo <= at < hi:
            continue
        ms = np.array([at * 1000 - 5000, at * 1000, at * 1000 + 14_000])
        one = np.ones(1, dtype=np.int64)
        if e.attributes.get("reason") == "OOMKilled":
            out.add("ERROR", one * s, one * inst, ms[:1], pa.array([OOM_TEXT.get(svc.language, "out of memory")]))
        out.add("INFO", one * s, one * inst, ms[1:2], pa.array(["Received SIGTERM, shutting down gracefully"]))
        out.add("INFO", one * s, one * inst, ms[2:3], pa.array([f"Started {svc.name} {version} in 11.4 seconds"]))
