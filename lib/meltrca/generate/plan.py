"""The generation plan: everything decided before any row exists (small, driver-side).

Per system: topology, faults, benign changes, surges and traffic shape. The plan travels to
Spark workers as a JSON string; every worker rebuilds the same objects from it, so a work unit
depends only on (plan, unit key) and never on how Spark splits the work.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from meltrca.errors import ConfigError
from meltrca.generate.randomness import rng_for
from meltrca.generate.schedule import (
    Fault,
    PlannedEvent,
    Surge,
    assign_versions,
    check_fault_types,
    fault_events,
    plan_benign,
    plan_faults,
)
from meltrca.generate.topology import Topology, build_topology
from meltrca.timewindow import parse_utc, to_iso


@dataclass(frozen=True)
class SystemPlan:
    name: str
    index: int
    topology: Topology
    faults: tuple[Fault, ...]
    surges: tuple[Surge, ...]
    events: tuple[PlannedEvent, ...]
    initial_versions: tuple[str, ...]  # per service, at the start of the timeline
    peak_rps: float  # real requests per second at the front door at the daily peak
    phase_hours: float  # shifts the daily curve (users in another time zone)
    wobble: tuple[tuple[float, float, float], ...]  # slow traffic waves: (period min, phase, amplitude)


@dataclass(frozen=True)
class GenerationPlan:
    seed: int
    start: str  # ISO-8601 UTC
    minutes: int
    interval: int
    requests_per_minute: float  # sampled traces per minute at the front door at peak
    log_sample_rate: float
    traces_per_unit: int
    systems: tuple[SystemPlan, ...]

    @property
    def start_dt(self) -> datetime:
        return parse_utc(self.start)

    @property
    def hours(self) -> int:
        return math.ceil(self.minutes / 60)

    def system(self, index: int) -> SystemPlan:
        return self.systems[index]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GenerationPlan:
        d = json.loads(text)
        systems = tuple(_system_from_dict(s) for s in d.pop("systems"))
        return cls(**d, systems=systems)


def _system_from_dict(d: dict[str, Any]) -> SystemPlan:
    return SystemPlan(
        name=d["name"],
        index=d["index"],
        topology=Topology.from_dict(d["topology"]),
        faults=tuple(Fault(**{**f, "instances": tuple(f["instances"])}) for f in d["faults"]),
        surges=tuple(Surge(**s) for s in d["surges"]),
        events=tuple(PlannedEvent(**e) for e in d["events"]),
        initial_versions=tuple(d["initial_versions"]),
        peak_rps=d["peak_rps"],
        phase_hours=d["phase_hours"],
        wobble=tuple(tuple(w) for w in d["wobble"]),
    )


@lru_cache(maxsize=4)
def plan_from_json(text: str) -> GenerationPlan:
    """Parsed once per Python worker (Spark reuses workers across tasks)."""
    return GenerationPlan.from_json(text)


def system_names(prefix: str, k: int) -> list[str]:
    return [f"{prefix}-{i + 1}" for i in range(k)]


def build_plan(gen: Any) -> GenerationPlan:
    """Plan every system from the `generate:` settings; impossible requests fail here, before
    anything is written (ConfigError: one line, non-zero exit)."""
    minutes = max(1, round(float(gen.duration) * 60))
    if gen.interval > minutes:
        raise ConfigError(f"--interval {gen.interval} min is longer than --duration {gen.duration:g} h")
    start = parse_utc(str(gen.start), flag="generate.start")
    allowed = list(gen.fault_types)
    check_fault_types(allowed)
    systems = []
    for i, name in enumerate(system_names(gen.system_prefix, gen.systems)):
        rng = rng_for(gen.seed, "system", i)
        topo = build_topology(rng, gen.services, instances_min=gen.instances_min, instances_max=gen.instances_max)
        faults = plan_faults(rng_for(gen.seed, "faults", i), topo, name, minutes, gen.faults, allowed)
        b_rng = rng_for(gen.seed, "benign", i)
        surges, benign, topo = plan_benign(
            b_rng, topo, faults, minutes,
            distractors_per_day=gen.distractors_per_day, surges_per_day=gen.surges_per_day,
        )
        events, versions = assign_versions(b_rng, topo, [*fault_events(b_rng, topo, faults), *benign])
        t_rng = rng_for(gen.seed, "traffic", i)
        wobble = tuple(
            (float(t_rng.uniform(37, 181)), float(t_rng.uniform(0, 6.283)), float(t_rng.uniform(0.015, 0.035)))
            for _ in range(3)
        )
        systems.append(
            SystemPlan(
                name=name, index=i, topology=topo, faults=tuple(faults), surges=tuple(surges), events=tuple(events),
                initial_versions=tuple(versions[s.index] for s in topo.services),
                peak_rps=float(gen.peak_rps) * float(t_rng.uniform(0.8, 1.2)),
                phase_hours=float(t_rng.uniform(-3, 3)), wobble=wobble,
            )
        )
    return GenerationPlan(
        seed=int(gen.seed), start=to_iso(start) or "", minutes=minutes, interval=int(gen.interval),
        requests_per_minute=float(gen.requests_per_minute), log_sample_rate=float(gen.log_sample_rate),
        traces_per_unit=int(gen.traces_per_unit), systems=tuple(systems),
    )
