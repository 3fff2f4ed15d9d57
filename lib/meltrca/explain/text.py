"""Formatting numbers and times for people, and sanitising telemetry text before it is shown.

Telemetry text (log lines, event messages, even service names) is untrusted: it may hold
control characters, terminal escapes, bidi overrides or prompt-injection attempts. Every string
that reaches an explanation or a prompt goes through ``sanitize_text`` first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meltrca.timewindow import to_iso

# C0/C1 controls (newlines and tabs included: a fact is one line), DEL, zero-width and bidi controls.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]+")
_SPACES = re.compile(r"\s{2,}")
_FENCE = re.compile(r"`{3,}")
ELLIPSIS = "…"


def sanitize_text(text: Any, max_chars: int) -> str:
    """One printable line of at most max_chars characters (control characters become spaces)."""
    if text is None:
        return ""
    clean = _UNSAFE.sub(" ", str(text))
    clean = _FENCE.sub("'''", clean)
    clean = _SPACES.sub(" ", clean).strip()
    if len(clean) > max_chars:
        clean = clean[: max(0, max_chars - 1)].rstrip() + ELLIPSIS
    return clean


def sanitize_tree(value: Any, max_chars: int) -> Any:
    """sanitize_text applied to every string (keys too) inside nested dicts and lists."""
    if isinstance(value, str):
        return sanitize_text(value, max_chars)
    if isinstance(value, Mapping):
        return {sanitize_text(k, max_chars): sanitize_tree(v, max_chars) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize_tree(v, max_chars) for v in value]
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def finite_or_none(value: Any) -> float | None:
    """A JSON-safe float: NaN, infinities and non-numbers become None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_num(value: Any) -> str:
    """A short human number without exponent: 97.2, 0.034, 1250, -3.5."""
    v = finite_or_none(value)
    if v is None:
        return "n/a"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    a = abs(v)
    decimals = 1 if a >= 100 else 2 if a >= 1 else 3 if a >= 0.01 else 5
    text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def expected_range(low: Any, high: Any) -> str:
    """'5-15' from the baseline bounds; 'unknown' when the baseline is missing."""
    lo, hi = finite_or_none(low), finite_or_none(high)
    if lo is None or hi is None:
        return "unknown"
    return f"{fmt_num(lo)}-{fmt_num(hi)}"


def deviation_phrase(value: Any, low: Any, high: Any) -> str:
    """How far a value sits outside [low, high]: '3.3x the upper bound of ...' and the like."""
    v, lo, hi = finite_or_none(value), finite_or_none(low), finite_or_none(high)
    if v is None or lo is None or hi is None:
        return "with no baseline to compare against"
    rng = expected_range(lo, hi)
    if v > hi:
        if hi > 0 and v / hi >= 1.05:
            return f"{v / hi:.1f}x the upper bound of its normal range {rng}"
        return f"above its normal range {rng}"
    if v < lo:
        if v > 0 and lo / v >= 1.05:
            return f"{lo / v:.1f}x below the lower bound of its normal range {rng}"
        return f"below its normal range {rng}"
    return f"inside its normal range {rng} but unusual in pattern"


def iso(value: Any) -> str | None:
    """'2024-09-26T10:30:00Z' for a datetime/Timestamp; None for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        return None
    try:
        return to_iso(value)
    except ValueError:  # pandas NaT
        return None


def clock(value: Any) -> str:
    """'10:30Z' from an ISO string or datetime (the date is in the incident window line)."""
    text = iso(value)
    return f"{text[11:16]}Z" if text and len(text) >= 16 else "an unknown time"


def duration_phrase(seconds: Any) -> str:
    """'45 s', '3 min', '2.5 h'."""
    s = finite_or_none(seconds)
    if s is None:
        return "an unknown time"
    s = abs(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
