"""Field specs of a source mapping: where a bronze field comes from and how it is cleaned.

A spec is a column name, or a mapping with these keys, applied in this order:

``column`` (CSV header, JSON path, OTLP field) or ``value`` (a constant) -> ``json`` (a JSON path
inside the column's text: JSON-in-a-column payloads) -> ``regex`` (+ ``group``, default 1) ->
``null_if`` (values meaning "absent", e.g. ``root``) -> ``map`` (value translation; others pass)
-> ``lower``/``upper`` -> ``default`` (when still absent). Then, by the target field's type:
``scale`` (numbers) or ``format``/``timezone`` (times: ``auto``, ``epoch_s|ms|us|ns``, ``iso`` or a
Spark datetime pattern such as ``yyyy-MM-dd HH:mm:ss``).

The same spec compiles to a Spark Column (bronze rows) and evaluates in plain Python (the few
label records of a mapping), so one mapping file describes both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from meltrca.errors import ConfigError

SPEC_KEYS = frozenset(
    {"column", "value", "json", "regex", "group", "null_if", "map", "lower", "upper", "default", "scale", "format", "timezone"}
)
EPOCH_FORMATS = {"epoch_s": 1_000_000.0, "epoch_ms": 1_000.0, "epoch_us": 1.0, "epoch_ns": 0.001}
TIME_FORMATS = (*EPOCH_FORMATS, "auto", "iso")
# An ISO/pattern time string that carries its own offset: the mapping's time zone does not apply.
OFFSET_RE = r"(Z|z|[+-]\d{2}(:?\d{2})?)$"
_ZONE_LETTERS = re.compile(r"[XxZzOV]")

Resolver = Callable[[str], Column]


@dataclass(frozen=True)
class FieldSpec:
    """How one target field is read from a source record (see the module doc)."""

    column: str | None = None
    value: str | None = None
    json: str | None = None
    regex: str | None = None
    group: int | str = 1
    null_if: tuple[str, ...] = ()
    map: tuple[tuple[str, str], ...] = ()
    lower: bool = False
    upper: bool = False
    default: str | None = None
    scale: float | None = None
    format: str | None = None
    timezone: str | None = None
    where: str = field(default="", compare=False)

    @classmethod
    def parse(cls, raw: Any, where: str) -> FieldSpec:
        """A spec from YAML (a column name or a mapping); errors name the mapping key."""
        if isinstance(raw, str):
            return cls(column=raw, where=where)
        if isinstance(raw, int | float):  # numbers and booleans: a constant
            return cls(value=str(raw), where=where)
        if not isinstance(raw, Mapping):
            raise ConfigError(f"source mapping {where}: expected a column name or a mapping, got {raw!r}")
        unknown = sorted(set(raw) - SPEC_KEYS)
        if unknown:
            raise ConfigError(f"source mapping {where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(SPEC_KEYS))})")
        if ("column" in raw) == ("value" in raw):
            raise ConfigError(f"source mapping {where}: give exactly one of 'column' or 'value'")
        regex = raw.get("regex")
        if regex is not None:
            try:
                compiled = re.compile(str(regex))
            except re.error as exc:
                raise ConfigError(f"source mapping {where}.regex: invalid regular expression ({exc})") from None
            group = raw.get("group", 1)
            if isinstance(group, int) and group > compiled.groups:
                raise ConfigError(f"source mapping {where}.regex has no group {group}")
            if isinstance(group, str) and group not in compiled.groupindex:
                raise ConfigError(f"source mapping {where}.regex has no group named {group!r}")
        fmt = raw.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise ConfigError(f"source mapping {where}.format must be a string")
        tz = raw.get("timezone")
        if tz is not None:
            try:
                ZoneInfo(str(tz))
            except Exception:
                raise ConfigError(f"source mapping {where}.timezone: unknown time zone {tz!r}") from None
        mapping = raw.get("map") or {}
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"source mapping {where}.map must be a mapping of value -> value")
        null_if = raw.get("null_if") or ()
        if isinstance(null_if, str):
            null_if = (null_if,)
        scale = raw.get("scale")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float)):
            raise ConfigError(f"source mapping {where}.scale must be a number")
        return cls(
            column=None if raw.get("column") is None else str(raw["column"]),
            value=None if raw.get("value") is None else str(raw["value"]),
            json=None if raw.get("json") is None else str(raw["json"]),
            regex=None if regex is None else str(regex),
            group=raw.get("group", 1),
            null_if=tuple(str(x) for x in null_if),
            map=tuple((str(k), str(v)) for k, v in mapping.items()),
            lower=bool(raw.get("lower", False)),
            upper=bool(raw.get("upper", False)),
            default=None if raw.get("default") is None else str(raw["default"]),
            scale=None if scale is None else float(scale),
            format=fmt,
            timezone=None if tz is None else str(tz),
            where=where,
        )

    @property
    def json_path(self) -> str | None:
        if self.json is None:
            return None
        return self.json if self.json.startswith("$") else f"$.{self.json}"

    # ---- Spark --------------------------------------------------------------------------

    # Three steps, each its own projection (see ``compile_texts``): a step may use its input
    # twice, so that input must be a column reference, never a copy of a longer expression.

    def extract(self, resolve: Resolver) -> Column:
        """Step 1: the source value, JSON path and regex group, trimmed (each input used once)."""
        col = F.lit(self.value) if self.value is not None else resolve(self.column or "")
        if self.json_path is not None:
            col = F.get_json_object(col, self.json_path)
        if self.regex is not None:
            col = F.regexp_extract(col, _java_regex(self.regex), self._group_index())
        return F.regexp_replace(col, r"^\s+|\s+$", "")  # all whitespace (F.trim strips spaces only)

    def absent_to_null(self, col: Column) -> Column:
        """Step 2: '' (also a regex that did not match) and the null_if values become null."""
        absent = col == F.lit("")
        if self.null_if:
            absent = absent | col.isin(*self.null_if)
        return F.when(~absent, col)

    def translate(self, col: Column) -> Column:
        """Step 3: value map, case, default."""
        if self.map:
            lookup = F.create_map(*[F.lit(x) for kv in self.map for x in kv])
            col = F.coalesce(F.try_element_at(lookup, col), col)
        if self.lower:
            col = F.lower(col)
        if self.upper:
            col = F.upper(col)
        if self.default is not None:
            col = F.coalesce(col, F.lit(self.default))
        return col

    def _group_index(self) -> int:
        if isinstance(self.group, int):
            return self.group
        return re.compile(self.regex or "").groupindex[self.group]

    def number(self, text: Column) -> Column:
        """The value as a double (null when not a number), times ``scale``."""
        num = text.try_cast("double")
        return num * F.lit(self.scale) if self.scale is not None else num

    def timestamp(self, text: Column) -> Column:
        """The value as a UTC timestamp (null when unparsable)."""
        return parse_time(text, self.format or "auto", self.timezone)

    # ---- Python (label records) -----------------------------------------------------------

    def evaluate(self, record: Mapping[str, Any]) -> str | None:
        """The cleaned string value of one plain record (same steps as ``text``)."""
        if self.value is not None:
            val: Any = self.value
        else:
            val = _dig(record, self.column or "")
        if val is not None and self.json_path is not None:
            import json

            try:
                val = _dig(json.loads(val) if isinstance(val, str) else val, self.json_path.lstrip("$."))
            except ValueError:
                val = None
        if val is not None and not isinstance(val, str):
            val = str(val)
        if val is not None and self.regex is not None:
            m = re.search(self.regex, val)
            val = m.group(self.group) if m else None
        if val is not None:
            val = val.strip() or None
        if val is not None and val in self.null_if:
            val = None
        if val is not None and self.map:
            val = dict(self.map).get(val, val)
        if val is not None and self.lower:
            val = val.lower()
        if val is not None and self.upper:
            val = val.upper()
        return self.default if val is None else val

    def evaluate_time(self, record: Mapping[str, Any]) -> datetime | None:
        text = self.evaluate(record)
        return None if text is None else parse_time_py(text, self.format or "auto", self.timezone)


def compile_texts(df: DataFrame, specs: Mapping[str, FieldSpec], resolve: Resolver) -> DataFrame:
    """``df`` plus one cleaned string column per spec (named by its key), built step by step."""
    if not specs:
        return df
    out = df.select("*", *[spec.extract(resolve).alias(name) for name, spec in specs.items()])
    out = out.withColumns({name: spec.absent_to_null(F.col(name)) for name, spec in specs.items()})
    return out.withColumns({name: spec.translate(F.col(name)) for name, spec in specs.items()})


def _java_regex(pattern: str) -> str:
    """Python named groups (?P<n>...) -> Java (?<n>...)."""
    return pattern.replace("(?P<", "(?<")


def _dig(record: Any, path: str) -> Any:
    """record['a']['b'] for 'a.b' (a key holding the full dotted name wins)."""
    if isinstance(record, Mapping) and path in record:
        return record[path]
    node = record
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def has_zone(pattern: str) -> bool:
    """Whether a datetime pattern parses an offset/zone itself (quoted literals ignored)."""
    return bool(_ZONE_LETTERS.search(re.sub(r"'[^']*'", "", pattern)))


def parse_time(text: Column, fmt: str, timezone: str | None = None) -> Column:
    """A string column -> UTC timestamp per ``fmt`` (auto, epoch_*, iso or a Spark pattern)."""
    if fmt in EPOCH_FORMATS:
        return _epoch_micros(text, EPOCH_FORMATS[fmt])
    if fmt == "auto":
        num = text.try_cast("double")
        magnitude = F.abs(num)
        factor = (
            F.when(magnitude < 1e11, F.lit(1_000_000.0))
            .when(magnitude < 1e14, F.lit(1_000.0))
            .when(magnitude < 1e17, F.lit(1.0))
            .otherwise(F.lit(0.001))
        )
        return F.when(num.isNotNull(), _epoch_micros(text, factor)).otherwise(parse_time(text, "iso", timezone))
    if fmt == "iso":
        ts = F.try_to_timestamp(text)
        zoned = text.rlike(OFFSET_RE)
    else:
        ts = F.try_to_timestamp(text, F.lit(fmt))
        zoned = F.lit(has_zone(fmt))
    if timezone and timezone.upper() not in ("UTC", "Z", "ETC/UTC"):
        ts = F.when(zoned, ts).otherwise(F.to_utc_timestamp(ts, timezone))
    return ts


def _epoch_micros(text: Column, factor: float | Column) -> Column:
    """Epoch number (string) -> timestamp: exact long arithmetic for integers, double otherwise."""
    f = F.lit(factor) if isinstance(factor, float) else factor
    as_long = text.try_cast("bigint")
    from_long = F.when(f >= 1.0, F.try_multiply(as_long, f.cast("bigint"))).otherwise(
        F.floor(as_long.cast("decimal(20,0)") / F.lit(1000)).cast("bigint")
    )
    from_double = F.round(text.try_cast("double") * f).try_cast("bigint")
    micros = F.coalesce(from_long, from_double)
    bounded = F.when(F.abs(micros) < F.lit(253402300799000000), micros)  # before year 10000
    return F.timestamp_micros(bounded)


# ---- Python time parsing (labels) -----------------------------------------------------------

_JAVA_TO_STRPTIME = [
    ("yyyy", "%Y"), ("yy", "%y"), ("MMM", "%b"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"),
    ("hh", "%I"), ("mm", "%M"), ("ss", "%S"), ("SSSSSS", "%f"), ("SSS", "%f"), ("a", "%p"),
    ("XXX", "%z"), ("Z", "%z"), ("xx", "%z"),
]


def java_to_strptime(pattern: str) -> str:
    """The common subset of Spark datetime patterns as a strptime format."""
    out, i = "", 0
    while i < len(pattern):
        if pattern[i] == "'":
            j = pattern.index("'", i + 1)
            out += pattern[i + 1 : j].replace("%", "%%")
            i = j + 1
            continue
        for java, py in _JAVA_TO_STRPTIME:
            if pattern.startswith(java, i):
                out += py
                i += len(java)
                break
        else:
            out += pattern[i]
            i += 1
    return out


def parse_time_py(text: str, fmt: str, timezone: str | None = None) -> datetime | None:
    """Python twin of ``parse_time`` for label records: naive UTC datetime or None."""
    raw = text.strip()
    factor = EPOCH_FORMATS.get(fmt)
    if fmt == "auto":
        try:
            num = float(raw)
        except ValueError:
            return parse_time_py(raw, "iso", timezone)
        mag = abs(num)
        factor = 1_000_000.0 if mag < 1e11 else 1_000.0 if mag < 1e14 else 1.0 if mag < 1e17 else 0.001
    if factor is not None:
        try:
            if raw.lstrip("+-").isdigit():  # integers exactly, like the Spark side
                micros = int(raw) * int(factor) if factor >= 1 else int(raw) // 1000
            else:
                micros = round(float(raw) * factor)
            return datetime(1970, 1, 1) + timedelta(microseconds=micros)
        except (ValueError, OverflowError):
            return None
    try:
        if fmt == "iso":
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        else:
            dt = datetime.strptime(raw, java_to_strptime(fmt))
    except ValueError:
        return None
    if dt.tzinfo is None and timezone:
        dt = dt.replace(tzinfo=ZoneInfo(timezone))
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt
