"""Settings: conf/default.yaml overlaid by --config, environment and CLI flags (SPEC §6).

default.yaml is the schema: a key it does not hold is an error, and each value must have the
type of its default (or the type named in ``NULLABLE``). ``CONSTRAINTS`` adds ranges and
choices. The result is a read-only tree with attribute access (``s.detection.threshold``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from meltrca.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_CONF_DIR = PACKAGE_DIR.parent.parent / "conf"
PACKAGED_CONF_DIR = PACKAGE_DIR / "conf"


def conf_dir() -> Path:
    """Where default.yaml and friends live: $MELTRCA_CONF_DIR, the checkout, or the wheel."""
    env = os.environ.get("MELTRCA_CONF_DIR")
    if env:
        return Path(env)
    if (REPO_CONF_DIR / "default.yaml").is_file():
        return REPO_CONF_DIR
    return PACKAGED_CONF_DIR


def resolve_conf_path(path: str | os.PathLike[str]) -> Path:
    """A path as given, else relative to the conf folder's parent (``conf/x.yaml`` works anywhere)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    alt = conf_dir().parent / p
    return alt if alt.exists() else p


class Secret:
    """A string that never shows itself in repr, str, logs or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


# Keys whose default is null: the type a non-null value must have.
NULLABLE: dict[str, type] = {
    "spark.jars_dir": str,
    "spark.checkpoint_dir": str,
    "explain.llm.base_url": str,
    "explain.llm.model": str,
    "explain.llm.api_key": Secret,
}

# Mappings whose keys are free-form (not checked against default.yaml).
FREEFORM = {"spark.conf", "detection.ensemble.weights", "rca.indicator_kinds"}

ENV_VARS: dict[str, str] = {
    "ANOMALY_THRESHOLD": "detection.threshold",
    "BATCH_SIZE": "processing.batch_size",
    "LOG_LEVEL": "logging.level",
    "LLM_BASE_URL": "explain.llm.base_url",
    "LLM_MODEL": "explain.llm.model",
    "LLM_API_KEY": "explain.llm.api_key",
}

DETECTORS = ("zscore", "isolation_forest", "lstm")


def _between(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = (lo < v if lo_open else lo <= v) and v <= hi
        return None if ok else f"must be in {'(' if lo_open else '['}{lo}, {hi}]"

    return check


def _at_least(lo: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= lo else f"must be >= {lo}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _subset_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        bad = [x for x in v if x not in choices]
        if bad or not v:
            return f"must be a non-empty list drawn from {', '.join(choices)}"
        return None

    return check


def _duration(v: Any) -> str | None:
    parts = str(v).split()
    units = {"second", "minute", "hour", "day"}
    if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) > 0 and parts[1].rstrip("s") in units:
        return None
    return "must look like '1 minute', '30 seconds', '5 minutes' or '1 hour'"


def _baseline_ranges(v: Any) -> str | None:
    from meltrca.reference import parse_ranges

    if not isinstance(v, list | tuple):
        return "must be a list of START/END ranges"
    try:
        parse_ranges([str(x) for x in v], flag="range")
    except ConfigError as e:
        return str(e)
    return None


def _positive_ints(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
    return None if ok else "must be a list of integers >= 1"


def _regex(v: Any) -> str | None:
    import re

    try:
        re.compile(str(v))
    except re.error as exc:
        return f"must be a valid regular expression ({exc})"
    return None


def _aggregate_ok(name: Any) -> bool:
    """features.metric_aggregates entries: mean, min, max, sum, count, stddev or pNN (0 < NN < 100)."""
    text = str(name)
    if text in ("mean", "min", "max", "sum", "count", "stddev"):
        return True
    return text[:1] == "p" and text[1:].isdigit() and 0 < int(text[1:]) < 100


CONSTRAINTS: dict[str, Callable[[Any], str | None]] = {
    "spark.graph_engine": _one_of("auto", "graphframes", "native"),
    "spark.shuffle_partitions": _at_least(1),
    "logging.level": _one_of("DEBUG", "INFO", "WARNING", "ERROR"),
    "processing.batch_size": _at_least(1),
    "processing.parallel_workers": _at_least(1),
    "generate.services": _at_least(1),
    "generate.duration": _between(0, 24 * 365, lo_open=True),
    "generate.interval": _at_least(1),
    "generate.faults": _at_least(0),
    "generate.systems": _at_least(1),
    "generate.format": _one_of("parquet", "delta"),
    "generate.instances_min": _at_least(1),
    "generate.instances_max": _at_least(1),
    "generate.requests_per_minute": _at_least(1),
    "generate.log_sample_rate": _between(0, 1, lo_open=True),
    "generate.peak_rps": _between(0, 1e7, lo_open=True),
    "generate.distractors_per_day": _at_least(0),
    "generate.surges_per_day": _at_least(0),
    "generate.traces_per_unit": _at_least(100),
    "generate.signals": _subset_of("metrics", "logs", "traces", "events"),
    "ingest.future_tolerance_hours": _at_least(0),
    "features.window": _duration,
    "ingest.min_year": _between(1970, 9999),
    "ingest.max_message_length": _at_least(1),
    "ingest.trace_id_pattern": _regex,
    "ingest.span_id_pattern": _regex,
    "features.metric_aggregates": lambda v: None if v and all(_aggregate_ok(a) for a in v) else (
        "must be a non-empty list of mean, min, max, sum, count, stddev or pNN"
    ),
    "features.latency_percentiles": lambda v: None if v and all(isinstance(p, int | float) and 0 < p < 100 for p in v) else (
        "must be a non-empty list of percentiles in (0, 100)"
    ),
    "features.templates.rare_count": _at_least(1),
    "features.fill_lookback_minutes": _at_least(0),
    "features.templates.similarity": _between(0, 1, lo_open=True),
    "detection.threshold": _between(0, 1, lo_open=True),
    "detection.enabled": _subset_of(*DETECTORS),
    "detection.baseline_fraction": _between(0, 1, lo_open=True),
    "detection.baseline": _baseline_ranges,
    "detection.min_history": _at_least(2),
    "detection.models.zscore.threshold": _between(0, 1000, lo_open=True),
    "detection.models.zscore.rolling_window": _at_least(3),
    "detection.models.isolation_forest.contamination": _between(0, 0.5, lo_open=True),
    "detection.models.isolation_forest.n_estimators": _at_least(1),
    "detection.models.lstm.sequence_length": _at_least(2),
    "detection.models.lstm.epochs": _at_least(1),
    "detection.models.lstm.batch_size": _at_least(1),
    "detection.models.lstm.patience": _at_least(1),
    "detection.models.lstm.units": _at_least(1),
    "detection.models.lstm.threads": _at_least(1),
    "detection.calibration_windows": _at_least(1),
    "detection.patterns.min_shift": _between(0, 1, lo_open=True),
    "detection.patterns.min_requests": _at_least(1),
    "detection.patterns.max_p": _between(0, 1, lo_open=True),
    "detection.level_shift_windows": _at_least(2),
    "detection.min_duration_windows": _at_least(1),
    "detection.severity_blast_radius": _positive_ints,
    "rca.time_tolerance_minutes": _at_least(0),
    "rca.incident_gap_minutes": _at_least(0),
    "rca.change_lookback_minutes": _at_least(0),
    "rca.top_k": _at_least(1),
    "rca.min_anomalies": _at_least(1),
    "rca.min_peak_score": _between(0, 1),
    "rca.corroboration_minutes": _at_least(0),
    "rca.surge_service_share": _between(0, 1),
    "rca.surge_max_error_share": _between(0, 1),
    "rca.precedence_minutes": _between(0, 1440, lo_open=True),
    "explain.writer": _one_of("template", "llm"),
    "explain.llm.timeout_seconds": _between(0, 600, lo_open=True),
    "explain.llm.max_retries": _at_least(0),
    "explain.llm.concurrency": _at_least(1),
    "explain.max_log_chars": _at_least(20),
    "explain.max_log_lines": _at_least(0),
    "explain.max_signals": _at_least(1),
    "explain.max_events": _at_least(0),
    "explain.max_onsets": _at_least(1),
    "explain.max_correlated": _at_least(0),
    "explain.max_peer_series": _at_least(1),
    "explain.max_suggested_causes": _at_least(1),
    "explain.correlation_context_minutes": _at_least(0),
    "explain.baseline_minutes": _at_least(1),
    "explain.max_explanation_chars": _at_least(200),
    "explain.llm.backoff_seconds": _between(0, 60),
    "explain.llm.max_tokens": _at_least(16),
    "explain.llm.temperature": _between(0, 2),
    "explain.llm.max_response_chars": _at_least(100),
    "explain.llm.circuit_breaker": _at_least(0),
    "alerts.max_attempts": _at_least(1),
    "alerts.backoff_seconds": _between(0, 60),
    "alerts.timeout_seconds": _between(0, 600, lo_open=True),
    "alerts.resolve_after_minutes": _at_least(0),
    "alerts.commit_every": _at_least(1),
    "output.format": _one_of("json"),
}


class Settings(Mapping[str, Any]):
    """Read-only settings tree: attribute or item access, dotted ``get``."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self._data = dict(data)
        self._path = path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no setting {self._path}{name}") from None

    def __getitem__(self, key: str) -> Any:
        v = self._data[key]
        return Settings(v, f"{self._path}{key}.") if isinstance(v, dict) else v

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get_path(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = node[part]
        return node

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """Plain dict; secrets become '***' (or their value when redact=False, for HTTP calls only)."""

        def conv(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, Secret):
                return "***" if redact else v.reveal()
            if isinstance(v, list):
                return [conv(x) for x in v]
            return v

        return conv(self._data)

    def with_overrides(self, overrides: Mapping[str, Any], origin: str = "override") -> Settings:
        """A copy with dotted keys replaced, validated like any other layer."""
        data = copy.deepcopy(self._data)
        defaults = _load_yaml(conf_dir() / "default.yaml")
        for key, value in overrides.items():
            _set_path(data, key, _coerce(key, value, defaults, origin))
        _check_constraints(data)
        return Settings(data)

    def __repr__(self) -> str:
        return f"Settings({self.to_dict()!r})"


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return data


def _default_at(defaults: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = defaults
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _is_freeform_child(dotted: str) -> bool:
    return any(dotted.startswith(f + ".") for f in FREEFORM)


def _coerce(key: str, value: Any, defaults: dict[str, Any], origin: str) -> Any:
    """Check one leaf against its default's type; strings from env/CLI are parsed."""
    if _is_freeform_child(key):
        return value
    found, default = _default_at(defaults, key)
    if not found:
        raise ConfigError(f"unknown config key '{key}' ({origin})")
    want: type | None = NULLABLE.get(key)
    if want is None and default is not None:
        want = type(default)
    if value is None:
        if key in NULLABLE or default is None:
            return None
        raise ConfigError(f"config key '{key}' ({origin}) must not be null")
    if want is Secret:
        return value if isinstance(value, Secret) else Secret(str(value))
    if want is None:
        return value
    if want is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' ({origin}) must be a mapping")
        if key in FREEFORM:
            return dict(value)
        out = copy.deepcopy(default)
        for k, v in value.items():
            out[k] = _coerce(f"{key}.{k}", v, defaults, origin)
        return out
    if isinstance(value, str) and want is not str:
        value = _parse_str(key, value, want, origin)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(
            f"config key '{key}' ({origin}) must be {want.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _parse_str(key: str, raw: str, want: type, origin: str) -> Any:
    try:
        if want is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if want is int:
            return int(raw)
        if want is float:
            return float(raw)
        if want is list:
            return [x.strip() for x in raw.split(",") if x.strip()]
    except ValueError:
        pass
    raise ConfigError(f"config key '{key}' ({origin}) must be {want.__name__}, got {raw!r}")


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _merge_layer(data: dict[str, Any], layer: dict[str, Any], defaults: dict[str, Any], origin: str, prefix: str = "") -> None:
    for k, v in layer.items():
        if not isinstance(k, str):
            raise ConfigError(f"config key {k!r} under '{prefix or '<top>'}' ({origin}) must be a string")
        dotted = f"{prefix}{k}"
        found, default = _default_at(defaults, dotted)
        if isinstance(v, dict) and found and isinstance(default, dict) and dotted not in FREEFORM:
            _merge_layer(data, v, defaults, origin, dotted + ".")
        else:
            _set_path(data, dotted, _coerce(dotted, v, defaults, origin))


def _check_constraints(data: dict[str, Any]) -> None:
    for key, check in CONSTRAINTS.items():
        found, value = _default_at(data, key)
        if found and value is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"config key '{key}' {problem} (got {value!r})")
    gen = data.get("generate", {})
    if gen.get("instances_max", 1) < gen.get("instances_min", 1):
        raise ConfigError("config key 'generate.instances_max' must be >= generate.instances_min")


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings: default.yaml < config file < environment < CLI overrides (dotted keys)."""
    defaults = _load_yaml(conf_dir() / "default.yaml")
    data = copy.deepcopy(defaults)
    if config_path is not None:
        path = resolve_conf_path(config_path)
        _merge_layer(data, _load_yaml(path), defaults, str(config_path))
    env = os.environ if environ is None else environ
    for var, key in ENV_VARS.items():
        raw = env.get(var)
        if raw is not None and raw != "":
            value: Any = raw.upper() if var == "LOG_LEVEL" else raw
            _set_path(data, key, _coerce(key, value, defaults, f"environment {var}"))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, key, _coerce(key, value, defaults, "command line"))
    # A key given in a YAML file must not slip through as plain text.
    api_key = data["explain"]["llm"].get("api_key")
    if api_key is not None and not isinstance(api_key, Secret):
        data["explain"]["llm"]["api_key"] = Secret(str(api_key))
    _check_constraints(data)
    return Settings(data)


def secret_values(settings: Settings) -> list[str]:
    """Raw secret strings, for the log redaction filter."""
    key = settings.explain.llm.api_key
    return [key.reveal()] if isinstance(key, Secret) and key.reveal() else []
