"""Ground truth: labels.json (SPEC §7) and topology.json (for tests), plus the events rows.

`affected_services` is measured, not assumed: the model is solved with and without the faults,
and a service counts as affected when its latency or error rate moves noticeably during the
fault window (the root always counts). The list is ordered by onset (root first).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from meltrca.generate.model import SystemModel
from meltrca.generate.plan import GenerationPlan, SystemPlan
from meltrca.timewindow import to_iso

AFFECTED_LATENCY_RATIO = 1.15
AFFECTED_ERROR_DELTA = 0.02
RECOVERY_MINUTES = 5


def affected_services(with_faults: SystemModel, without: SystemModel, sp: SystemPlan, fault_index: int) -> list[str]:
    f = sp.faults[fault_index]
    w = slice(f.start, min(with_faults.minutes, f.end + RECOVERY_MINUTES))
    lat = with_faults.state["lat"][:, w] / np.maximum(without.state["lat"][:, w], 1e-9)
    err = with_faults.state["err"][:, w] - without.state["err"][:, w]
    hit = (lat > AFFECTED_LATENCY_RATIO) | (err > AFFECTED_ERROR_DELTA)
    onset = {s: int(np.argmax(hit[s])) for s in range(hit.shape[0]) if hit[s].any()}
    onset.pop(f.root, None)
    names = [s.name for s in sp.topology.services]
    return [names[f.root]] + [names[s] for s in sorted(onset, key=lambda s: (onset[s], names[s]))]


def labels(plan: GenerationPlan) -> list[dict[str, Any]]:
    """One entry per injected fault: the keys of SPEC §7, times ISO-8601 UTC with Z."""
    out = []
    origin = plan.start_dt
    for sp in plan.systems:
        if not sp.faults:
            continue
        faulty, clean = SystemModel(plan, sp), SystemModel(plan, sp, with_faults=False)
        for i, f in enumerate(sp.faults):
            out.append({
                "fault_id": f.fault_id,
                "system": sp.name,
                "root_cause_service": sp.topology.services[f.root].name,
                "fault_type": f.fault_type,
                "start": to_iso(origin + timedelta(minutes=f.start)),
                "end": to_iso(origin + timedelta(minutes=f.end)),
                "affected_services": affected_services(faulty, clean, sp, i),
                "indicator": f.indicator,
            })
    return out


def topology_doc(plan: GenerationPlan) -> dict[str, Any]:
    """Ground-truth call graph and schedule per system (tests only; the pipeline never reads it)."""
    origin = plan.start_dt
    systems = []
    for sp in plan.systems:
        topo = sp.topology
        names = [s.name for s in topo.services]
        systems.append({
            "system": sp.name,
            "services": [
                {"name": s.name, "kind": s.kind, "layer": s.layer, "language": s.language,
                 "instances": [i.name for i in s.instances],
                 "operations": [topo.ops[o].name for o in s.ops]}
                for s in topo.services
            ],
            "edges": [list(e) for e in topo.edges()],
            "faults": [
                {"fault_id": f.fault_id, "fault_type": f.fault_type, "root_cause_service": names[f.root],
                 "mode": f.mode, "magnitude": f.magnitude, "indicator": f.indicator,
                 "instances": [topo.services[f.root].instances[k].name for k in f.instances],
                 "start": to_iso(origin + timedelta(minutes=f.start)), "end": to_iso(origin + timedelta(minutes=f.end))}
                for f in sp.faults
            ],
            "surges": [
                {"start": to_iso(origin + timedelta(minutes=s.start)), "end": to_iso(origin + timedelta(minutes=s.end)),
                 "factor": s.factor}
                for s in sp.surges
            ],
            "events": [
                {"ts": to_iso(origin + timedelta(seconds=e.at_s)), "service": names[e.service], "event_type": e.event_type,
                 "cause": e.cause}
                for e in sp.events
            ],
        })
    return {"start": plan.start, "minutes": plan.minutes, "seed": plan.seed, "systems": systems}


def event_rows(plan: GenerationPlan) -> list[tuple]:
    """Rows of the events table (a few per hour: built on the driver)."""
    origin = plan.start_dt
    rows = []
    for sp in plan.systems:
        for e in sp.events:
            ts = origin + timedelta(seconds=round(e.at_s, 3))
            svc = sp.topology.services[e.service]
            attrs = dict(e.attributes)
            if e.instance is not None:
                attrs.setdefault("instance", svc.instances[e.instance].name)
            rows.append((sp.name, ts, svc.name, e.event_type, e.message, attrs))
    return rows
