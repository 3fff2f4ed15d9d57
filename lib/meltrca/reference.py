"""Reference baselines: time ranges a person (or a source mapping) vouches for as fault-free.

Rule (README "Reference baselines"). A system's reference is, first match wins:
1. ``--baseline START/END`` (repeatable) on ``detect`` / ``run``, else ``detection.baseline`` in config;
2. what ingest recorded from the source mapping's ``reference:`` (a folder's files: the span of
   their accepted rows; or explicit ranges) in the lake table ``baselines``;
3. none: each series' first ``detection.baseline_fraction`` is its fitting baseline and sparse
   series are judged against all their other windows (peer windows).
With a reference, a series is fitted on its windows that overlap it when it holds at least
``detection.min_history`` of them (else on its first baseline_fraction, with a note), and a
sparse log/trace series or a request pattern is judged against its windows that overlap the reference
when it holds at least five of them (else against all its other windows, as without one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from meltrca.errors import ConfigError
from meltrca.timewindow import parse_utc, to_iso

if TYPE_CHECKING:
    from meltrca.config import Settings
    from meltrca.io import Lake

Range = tuple[datetime, datetime]
ALL = "*"  # key of ranges configured for every system (--baseline, detection.baseline)
MAPPING = "mapping"  # origin of a range recorded from a source mapping's reference


def parse_range(text: str, *, flag: str = "--baseline") -> Range:
    """'2024-09-26T00:00Z/2024-09-26T06:00Z' -> (start, end), naive UTC, end after start."""
    parts = str(text).split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"{flag} {text!r} is not START/END (e.g. 2024-09-26T00:00:00Z/2024-09-26T06:00:00Z)")
    start, end = (parse_utc(p, flag=flag) for p in parts)
    if end <= start:
        raise ConfigError(f"{flag} {text!r}: the end must be after the start")
    return start, end


def parse_ranges(texts: Iterable[str] | None, *, flag: str = "--baseline") -> list[Range]:
    return [parse_range(t, flag=flag) for t in (texts or [])]


def format_range(r: Range) -> str:
    return f"{to_iso(r[0])}/{to_iso(r[1])}"


def reference_mask(index: pd.DatetimeIndex, ranges: Sequence[Range], window_seconds: int) -> np.ndarray:
    """Windows (by start, `window_seconds` wide) that overlap any of the ranges."""
    mask = np.zeros(len(index), dtype=bool)
    width = pd.Timedelta(seconds=int(window_seconds))
    for start, end in ranges:
        mask |= np.asarray((index + width > pd.Timestamp(start)) & (index < pd.Timestamp(end)))
    return mask


def ranges_for(by_system: Mapping[str, Sequence[Range]], system: str) -> list[Range]:
    """A system's ranges: its own, else the ones configured for every system (key ALL)."""
    return list(by_system.get(system) or by_system.get(ALL) or [])


def in_reference(by_system: Mapping[str, Sequence[Range]]) -> Column | None:
    """True for feature rows (system, window_start, window_end) whose window overlaps one of that
    system's reference ranges; None when no system has a reference (the rule's case 3)."""
    if not by_system:
        return None
    cond = F.lit(False)
    for system, ranges in by_system.items():
        for start, end in ranges:
            inside = (F.col("window_end") > F.lit(start)) & (F.col("window_start") < F.lit(end))
            cond = cond | (inside if system == ALL else (F.col("system") == F.lit(system)) & inside)
    return cond


def references_by_system(configured: Sequence[Range], recorded: Iterable[Mapping[str, object]]) -> dict[str, list[Range]]:
    """The configured ranges (flag/config) for every system (key ALL), else each system's ranges
    recorded in the lake (rows with system/start/end); systems without one are left out."""
    if configured:
        return {ALL: sorted(configured)}
    out: dict[str, list[Range]] = {}
    for r in recorded:
        out.setdefault(str(r["system"]), []).append((r["start"], r["end"]))  # type: ignore[arg-type]
    return {s: sorted(v) for s, v in out.items()}


def system_references(lake: Lake, systems: Sequence[str] | None, settings: Settings) -> dict[str, list[Range]]:
    """The reference ranges by the rule above (configured, else recorded at ingest), by system."""
    configured = parse_ranges(settings.detection.baseline, flag="detection.baseline")
    recorded = [] if configured else lake.read("baselines", systems=list(systems) if systems else None).collect()
    return references_by_system(configured, recorded)

