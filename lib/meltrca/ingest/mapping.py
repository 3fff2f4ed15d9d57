"""Source mapping files (conf/sources/*.yaml): which files hold which signal, and how to read them.

Top-level keys starting with ``x-`` are ignored (a place for YAML anchors). A mapping names the
monitored ``system``, an optional ``root`` folder (relative to the mapping
file; ``--path`` overrides it), one section per signal (``metrics``, ``logs``, ``spans`` (alias
``traces``), ``events``) holding one input or a list of inputs, and optionally ``labels``. An input:

```yaml
files: ["fault/metric/*_metric.csv"]      # globs under the root
format: csv                               # bronze | csv | jsonl | wide_csv | otlp_json
csv: {delimiter: ",", header: true}       # csv/wide_csv options (columns: [...] when header: false)
fields:                                   # bronze field -> field spec (see meltrca.ingest.fields)
  ts: {column: TimeStamp, format: epoch_s}
  service: {column: PodName, regex: '^(.+)-[^-]+-[^-]+$'}
  attributes: {node: Node}                # map fields: key -> field spec
values:                                   # metrics only: one metric per column ("melt")
  columns: {"CpuUsageRate(%)": cpu_usage, "LatencyP95(s)": {name: latency_p95_ms, scale: 1000}}
  others: ignore                          # ignore | keep | snake: the remaining columns
  exclude: [Time]
  split: {separator: "_", at: first}      # wide_csv: service and metric from the column name
validate: {trace_id_pattern: "...", span_id_pattern: "..."}
```
``system`` is a name, or where each record's system comes from when one ingest loads many
systems: ``{column: Site}`` (any field spec) or ``{path: "{system}/metrics.csv"}`` (the folder or
file-name part of each file's path, under the root, that ``{system}`` stands for; ``*`` and ``**``
as in the globs). A record whose system is missing is quarantined (``missing_field: system``).
``reference`` marks fault-free data (meltrca.reference): ``files`` (globs under the root, e.g. a
fault-free folder: the span of their accepted rows) and/or ``ranges`` (START/END, ISO-8601 UTC);
ingest records it per system in the lake table ``baselines``.
Everything dataset-specific lives in the file; nothing here knows any dataset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from meltrca.config import resolve_conf_path
from meltrca.errors import ConfigError
from meltrca.ingest.fields import TIME_FORMATS, FieldSpec
from meltrca.reference import parse_ranges
from meltrca.schemas import EVENTS, LOGS, METRICS, SPANS

SIGNAL_ALIASES = {"metrics": "metrics", "logs": "logs", "spans": "spans", "traces": "spans", "events": "events"}
SIGNAL_SCHEMAS = {"metrics": METRICS, "logs": LOGS, "spans": SPANS, "events": EVENTS}
FORMATS = ("bronze", "csv", "jsonl", "wide_csv", "otlp_json")
MAP_FIELDS = frozenset({"labels", "attributes"})
TIME_FIELDS = frozenset({"ts", "start_ts", "end_ts"})
NUMBER_FIELDS = frozenset({"value", "duration_ms"})
TOP_KEYS = frozenset({"system", "root", "description", "labels", "reference", *SIGNAL_ALIASES})
REFERENCE_KEYS = frozenset({"files", "ranges"})
INPUT_KEYS = frozenset({"name", "files", "format", "csv", "fields", "values", "validate"})
CSV_KEYS = frozenset({"delimiter", "quote", "escape", "header", "columns"})
VALUES_KEYS = frozenset({"columns", "others", "exclude", "split"})
VALIDATE_KEYS = frozenset({"trace_id_pattern", "span_id_pattern"})
LABEL_KEYS = frozenset({"files", "records", "fields", "duration_minutes"})
LABEL_FIELDS = ("fault_id", "start", "end", "root_cause_service", "fault_type", "indicator", "affected_services")


def target_fields(signal: str) -> tuple[str, ...]:
    """Bronze fields a mapping may fill for a signal (system and date are set by ingest)."""
    return tuple(f.name for f in SIGNAL_SCHEMAS[signal].fields if f.name not in ("system", "date"))


def required_fields(signal: str) -> tuple[str, ...]:
    return tuple(f.name for f in SIGNAL_SCHEMAS[signal].fields if not f.nullable and f.name not in ("system", "date"))


def snake_case(name: str) -> str:
    """'CpuUsageRate(%)' -> 'cpu_usage_rate_pct', 'PodWorkload(Ops)' -> 'pod_workload_ops'."""
    s = name.replace("%", "pct")
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"[^A-Za-z0-9]+", "_", s)
    return s.strip("_").lower()


@dataclass(frozen=True)
class CsvOptions:
    delimiter: str = ","
    quote: str = '"'
    escape: str = '"'
    header: bool = True
    columns: tuple[str, ...] = ()

    def spark_options(self) -> dict[str, str]:
        return {"sep": self.delimiter, "quote": self.quote, "escape": self.escape}


@dataclass(frozen=True)
class ValueColumn:
    """One melted column: its metric name and factor."""

    metric: str
    scale: float | None = None


@dataclass(frozen=True)
class SplitSpec:
    """How a wide column name splits into service and metric."""

    separator: str = "_"
    at: str = "first"
    regex: str | None = None

    def split(self, column: str) -> tuple[str, str] | None:
        if self.regex is not None:
            m = re.match(self.regex, column)
            return (m.group("service"), m.group("metric")) if m else None
        if self.separator not in column:
            return None
        left, _, right = (column.partition if self.at == "first" else column.rpartition)(self.separator)
        return (left, right) if left and right else None


@dataclass(frozen=True)
class ValuesSpec:
    """Metrics held as one column per metric (or per service×metric in wide CSVs)."""

    columns: tuple[tuple[str, ValueColumn], ...] = ()
    others: str = "keep"
    exclude: tuple[str, ...] = ()
    split: SplitSpec | None = None

    def value_columns(self, header: list[str], used: set[str]) -> list[tuple[str, ValueColumn]]:
        """The columns of one file header to melt, with their metric names (file order)."""
        explicit = dict(self.columns)
        out: list[tuple[str, ValueColumn]] = []
        for col in header:
            if col in explicit:
                out.append((col, explicit[col]))
            elif col in used or col in self.exclude or self.others == "ignore":
                continue
            else:
                out.append((col, ValueColumn(snake_case(col) if self.others == "snake" else col)))
        return out


@dataclass(frozen=True)
class InputSpec:
    """One group of files of one signal in one format."""

    signal: str
    name: str
    files: tuple[str, ...]
    format: str
    fields: Mapping[str, FieldSpec | Mapping[str, FieldSpec]]
    csv: CsvOptions = field(default_factory=CsvOptions)
    values: ValuesSpec | None = None
    validate: Mapping[str, str] = field(default_factory=dict)

    @property
    def source_label(self) -> str:
        return f"{self.signal}/{self.name}"

    def referenced_columns(self) -> set[str]:
        """Source columns the field specs read."""
        out: set[str] = set()
        for spec in self.fields.values():
            specs = spec.values() if isinstance(spec, Mapping) else [spec]
            out.update(s.column for s in specs if s.column is not None)
        return out

    def required_columns(self) -> set[str]:
        """Columns without which no row can be mapped (required field, no default)."""
        req = set(required_fields(self.signal))
        if self.values is not None:
            req -= {"metric", "value"}
        if self.signal == "spans":
            req -= {"end_ts", "duration_ms"}  # either one derives the other
        out: set[str] = set()
        for name in req:
            spec = self.fields.get(name)
            if isinstance(spec, FieldSpec) and spec.column is not None and spec.default is None:
                out.add(spec.column)
        return out


@dataclass(frozen=True)
class LabelsSpec:
    """Where a dataset keeps its fault list and how its records become SPEC §7 labels."""

    files: tuple[str, ...]
    records: str
    fields: Mapping[str, FieldSpec]
    duration_minutes: float


@dataclass(frozen=True)
class ReferenceSpec:
    """Fault-free reference of a mapping (meltrca.reference): files whose rows span it (a folder
    such as a fault-free export) and/or explicit START/END ranges; ingest records it per system."""

    files: tuple[str, ...] = ()
    ranges: tuple[tuple[datetime, datetime], ...] = ()


def _parse_reference(raw: Any) -> ReferenceSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("source mapping reference must be a mapping with files and/or ranges")
    _check_keys(raw, REFERENCE_KEYS, "reference")
    files = tuple(str(f) for f in _as_list(raw["files"], "reference.files")) if "files" in raw else ()
    ranges = tuple(parse_ranges([str(r) for r in _as_list(raw["ranges"], "reference.ranges")],
                                flag="reference.ranges")) if "ranges" in raw else ()
    if not files and not ranges:
        raise ConfigError("source mapping reference needs files or ranges")
    return ReferenceSpec(files=files, ranges=ranges)


SYSTEM_KEYS = frozenset({"path"})


@dataclass(frozen=True)
class SystemSource:
    """Where each record's system comes from when one mapping loads many systems: a field of the
    record, or the part of its file's path that ``{system}`` stands for in `path`."""

    field: FieldSpec | None = None
    path: str | None = None

    @property
    def path_regex(self) -> str | None:
        """`path` as a regex over a file URI whose group 1 is the system."""
        if self.path is None:
            return None
        head, tail = self.path.split("{system}", 1)
        return "(?:^|/)" + _glob_regex(head.lstrip("/")) + "([^/]+)" + _glob_regex(tail) + "$"


def _glob_regex(glob: str) -> str:
    out = []
    for part in re.split(r"(\*\*/?|\*|\?)", glob):
        out.append({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)))
    return "".join(out)


def _parse_system(raw: Any) -> tuple[str | None, SystemSource | None]:
    """A mapping's `system`: a name, or a SystemSource (module doc)."""
    if raw is None:
        return None, None
    if not isinstance(raw, Mapping):
        return str(raw), None
    if "path" in raw:
        _check_keys(raw, SYSTEM_KEYS, "system")
        path = str(raw["path"])
        if path.count("{system}") != 1:
            raise ConfigError(f"source mapping system.path must hold {{system}} once, got {path!r}")
        return None, SystemSource(path=path)
    return None, SystemSource(field=FieldSpec.parse(raw, "system"))


@dataclass(frozen=True)
class SourceMapping:
    path: Path
    system: str | None
    root: Path | None
    inputs: tuple[InputSpec, ...]
    labels: LabelsSpec | None
    reference: ReferenceSpec | None = None
    system_from: SystemSource | None = None  # per-record systems (many systems in one ingest)

    def signals(self) -> list[str]:
        return sorted({i.signal for i in self.inputs})

    def inputs_for(self, signal: str) -> list[InputSpec]:
        return [i for i in self.inputs if i.signal == signal]

    def resolve_root(self, override: str | None) -> str:
        if override:
            return str(override)
        if self.root is None:
            raise ConfigError(f"source mapping {self.path} has no 'root': give the data folder with --path")
        return str(self.root)


def _check_keys(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ConfigError(f"source mapping {where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _as_list(raw: Any, where: str) -> list[Any]:
    if isinstance(raw, list | tuple):
        return list(raw)
    if raw is None:
        raise ConfigError(f"source mapping {where} is empty")
    return [raw]


def _parse_fields(signal: str, raw: Any, where: str) -> dict[str, FieldSpec | dict[str, FieldSpec]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"source mapping {where} must map bronze fields to field specs")
    allowed = set(target_fields(signal))
    out: dict[str, FieldSpec | dict[str, FieldSpec]] = {}
    for name, spec in raw.items():
        if name not in allowed:
            raise ConfigError(f"source mapping {where}.{name}: not a field of {signal} (one of: {', '.join(sorted(allowed))})")
        if name in MAP_FIELDS:
            if not isinstance(spec, Mapping):
                raise ConfigError(f"source mapping {where}.{name} must map keys to field specs")
            out[name] = {str(k): FieldSpec.parse(v, f"{where}.{name}.{k}") for k, v in spec.items()}
            continue
        parsed = FieldSpec.parse(spec, f"{where}.{name}")
        if name in TIME_FIELDS and parsed.format is not None and parsed.format not in TIME_FORMATS and not re.search(r"[yMdHhmsS]", parsed.format):
            raise ConfigError(
                f"source mapping {where}.{name}.format {parsed.format!r}: use {', '.join(TIME_FORMATS)} or a datetime pattern"
            )
        out[name] = parsed
    return out


def _parse_values(raw: Any, fmt: str, where: str) -> ValuesSpec | None:
    if raw is None:
        return ValuesSpec(others="keep", split=SplitSpec()) if fmt == "wide_csv" else None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"source mapping {where} must be a mapping")
    _check_keys(raw, VALUES_KEYS, where)
    cols: list[tuple[str, ValueColumn]] = []
    for col, target in (raw.get("columns") or {}).items():
        if isinstance(target, str):
            cols.append((str(col), ValueColumn(target)))
        elif isinstance(target, Mapping) and "name" in target:
            _check_keys(target, frozenset({"name", "scale"}), f"{where}.columns.{col}")
            scale = target.get("scale")
            cols.append((str(col), ValueColumn(str(target["name"]), None if scale is None else float(scale))))
        else:
            raise ConfigError(f"source mapping {where}.columns.{col}: give a metric name or {{name, scale}}")
    others = str(raw.get("others", "ignore" if cols else "keep"))
    if others not in ("ignore", "keep", "snake"):
        raise ConfigError(f"source mapping {where}.others must be one of ignore, keep, snake")
    split = None
    split_raw = raw.get("split", {} if fmt == "wide_csv" else None)
    if split_raw is not None:
        if not isinstance(split_raw, Mapping):
            raise ConfigError(f"source mapping {where}.split must be a mapping")
        _check_keys(split_raw, frozenset({"separator", "at", "regex"}), f"{where}.split")
        at = str(split_raw.get("at", "first"))
        if at not in ("first", "last"):
            raise ConfigError(f"source mapping {where}.split.at must be first or last")
        regex = split_raw.get("regex")
        if regex is not None:
            try:
                groups = re.compile(str(regex)).groupindex
            except re.error as exc:
                raise ConfigError(f"source mapping {where}.split.regex: invalid regular expression ({exc})") from None
            if not {"service", "metric"} <= set(groups):
                raise ConfigError(f"source mapping {where}.split.regex needs named groups (?P<service>...) and (?P<metric>...)")
        split = SplitSpec(str(split_raw.get("separator", "_")), at, None if regex is None else str(regex))
    return ValuesSpec(tuple(cols), others, tuple(str(x) for x in raw.get("exclude") or ()), split)


def _parse_csv(raw: Any, where: str) -> CsvOptions:
    if raw is None:
        return CsvOptions()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"source mapping {where} must be a mapping")
    _check_keys(raw, CSV_KEYS, where)
    opts = CsvOptions(
        delimiter=str(raw.get("delimiter", ",")),
        quote=str(raw.get("quote", '"')),
        escape=str(raw.get("escape", '"')),
        header=bool(raw.get("header", True)),
        columns=tuple(str(c) for c in raw.get("columns") or ()),
    )
    if not opts.header and not opts.columns:
        raise ConfigError(f"source mapping {where}: header: false needs columns: [...]")
    return opts


def _parse_input(signal: str, raw: Any, index: int, section: str) -> InputSpec:
    where = f"{section}[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"source mapping {where} must be a mapping with files and format")
    _check_keys(raw, INPUT_KEYS, where)
    fmt = str(raw.get("format", ""))
    if fmt not in FORMATS:
        raise ConfigError(f"source mapping {where}.format must be one of {', '.join(FORMATS)} (got {fmt or 'nothing'})")
    files = tuple(str(f) for f in _as_list(raw.get("files"), f"{where}.files"))
    fields = _parse_fields(signal, raw.get("fields"), f"{where}.fields")
    values = _parse_values(raw.get("values"), fmt, f"{where}.values") if signal == "metrics" else None
    if raw.get("values") is not None and signal != "metrics":
        raise ConfigError(f"source mapping {where}.values is for metrics only")
    if fmt in ("bronze", "otlp_json") and raw.get("csv") is not None:
        raise ConfigError(f"source mapping {where}.csv does not apply to format {fmt}")
    validate = raw.get("validate") or {}
    if not isinstance(validate, Mapping):
        raise ConfigError(f"source mapping {where}.validate must be a mapping")
    _check_keys(validate, VALIDATE_KEYS, f"{where}.validate")
    for k, v in validate.items():
        try:
            re.compile(str(v))
        except re.error as exc:
            raise ConfigError(f"source mapping {where}.validate.{k}: invalid regular expression ({exc})") from None
    spec = InputSpec(
        signal=signal,
        name=str(raw.get("name", index)),
        files=files,
        format=fmt,
        fields=fields,
        csv=_parse_csv(raw.get("csv"), f"{where}.csv"),
        values=values,
        validate={str(k): str(v) for k, v in validate.items()},
    )
    if fmt in ("csv", "jsonl", "wide_csv"):
        _check_complete(spec, where)
    return spec


def _check_complete(spec: InputSpec, where: str) -> None:
    """Every required bronze field has a spec (or comes from the melt)."""
    provided = set(spec.fields)
    if spec.values is not None:
        provided |= {"metric", "value"}
        if spec.values.split is not None:
            provided.add("service")
    if spec.signal == "spans" and ({"end_ts", "duration_ms"} & provided):
        provided |= {"end_ts", "duration_ms"}
    missing = [f for f in required_fields(spec.signal) if f not in provided]
    if missing:
        raise ConfigError(f"source mapping {where}.fields: no spec for required field(s) {', '.join(missing)}")


def _parse_labels(raw: Any) -> LabelsSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("source mapping labels must be a mapping")
    _check_keys(raw, LABEL_KEYS, "labels")
    fields_raw = raw.get("fields") or {}
    if not isinstance(fields_raw, Mapping):
        raise ConfigError("source mapping labels.fields must be a mapping")
    fields: dict[str, FieldSpec] = {}
    for name, spec in fields_raw.items():
        if name not in LABEL_FIELDS:
            raise ConfigError(f"source mapping labels.fields.{name}: not a label field (one of: {', '.join(LABEL_FIELDS)})")
        fields[str(name)] = FieldSpec.parse(spec, f"labels.fields.{name}")
    for need in ("start", "root_cause_service"):
        if need not in fields:
            raise ConfigError(f"source mapping labels.fields: no spec for {need}")
    duration = raw.get("duration_minutes", 5)
    if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
        raise ConfigError("source mapping labels.duration_minutes must be a positive number")
    return LabelsSpec(
        files=tuple(str(f) for f in _as_list(raw.get("files"), "labels.files")),
        records=str(raw.get("records", "*")),
        fields=fields,
        duration_minutes=float(duration),
    )


def load_mapping(path: str | Path) -> SourceMapping:
    """Read and check a mapping file; every problem is a ConfigError naming the key."""
    p = resolve_conf_path(path)
    if not p.is_file():
        raise ConfigError(f"source mapping not found: {path}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"source mapping {p}{where} is not valid YAML") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"source mapping {p} must hold a mapping at top level")
    try:
        _check_keys({k: v for k, v in raw.items() if not str(k).startswith("x-")}, TOP_KEYS, str(p))
        inputs: list[InputSpec] = []
        for section, signal in SIGNAL_ALIASES.items():
            if section in raw:
                for i, item in enumerate(_as_list(raw[section], section)):
                    inputs.append(_parse_input(signal, item, i, section))
        labels = _parse_labels(raw.get("labels"))
        reference = _parse_reference(raw.get("reference"))
        system, system_from = _parse_system(raw.get("system"))
        if system_from is not None and system_from.field is not None:  # readers read the column it names
            inputs = [replace(i, fields={**i.fields, "system": system_from.field}) for i in inputs]
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({p})") from None
    if not inputs:
        raise ConfigError(f"source mapping {p} declares no signal (metrics, logs, spans, events)")
    root = raw.get("root")
    return SourceMapping(
        path=p,
        system=system,
        system_from=system_from,
        root=None if root is None else (p.parent / str(root)).resolve(),
        inputs=tuple(inputs),
        labels=labels,
        reference=reference,
    )


def bronze_mapping(path: str | Path) -> SourceMapping:
    """The built-in mapping of a generated bronze folder: <path>/<table> in our own schema."""
    inputs = tuple(InputSpec(signal=t, name=t, files=(t,), format="bronze", fields={}) for t in SIGNAL_SCHEMAS)
    return SourceMapping(path=Path(path), system=None, root=Path(path), inputs=inputs, labels=None)
