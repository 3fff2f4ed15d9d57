"""Input windows ([start, end) in UTC) and parsing of the --start/--end flags."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meltrca.errors import ConfigError


def parse_utc(text: str, *, flag: str = "time") -> datetime:
    """ISO-8601 (date, 'YYYY-MM-DD HH:MM[:SS]', trailing Z or offset) -> naive UTC datetime."""
    raw = text.strip()
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not an ISO-8601 time (e.g. 2024-09-26T10:00:00Z)") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


DURATION_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_duration(text: str, *, flag: str = "duration") -> timedelta:
    """'5m', '90s', '1h', '5 minutes', '30 seconds' -> timedelta (positive)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*", str(text).lower())
    if not m or m.group(2) not in DURATION_UNITS or float(m.group(1)) <= 0:
        raise ConfigError(f"{flag} {text!r} is not a duration (e.g. 5m, 90s, 1h, '5 minutes')")
    return timedelta(seconds=float(m.group(1)) * DURATION_UNITS[m.group(2)])


def to_iso(dt: datetime | None) -> str | None:
    """Naive-UTC datetime -> '2024-09-26T10:30:00Z'."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class TimeWindow:
    """A half-open UTC interval [start, end); either side may be open (None)."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ConfigError(f"--end ({to_iso(self.end)}) must be after --start ({to_iso(self.start)})")

    @classmethod
    def from_flags(cls, start: str | None, end: str | None) -> TimeWindow:
        return cls(
            parse_utc(start, flag="--start") if start else None,
            parse_utc(end, flag="--end") if end else None,
        )

    @property
    def bounded(self) -> bool:
        return self.start is not None and self.end is not None

    def widened(self, before: timedelta) -> TimeWindow:
        """The same window reaching back `before` earlier (look-back for detectors)."""
        return TimeWindow(self.start - before if self.start else None, self.end)

    def __str__(self) -> str:
        return f"[{to_iso(self.start) or '-inf'}, {to_iso(self.end) or '+inf'})"
