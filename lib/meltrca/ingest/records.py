"""Raw records -> bronze-shaped rows (typed fields plus the raw text each was read from).

The raw text of every parsed field travels along (``_raw_<field>``) so a rejected row can say
which value was wrong; validation then decides, and the pipeline drops the helpers.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from meltrca.ingest.fields import FieldSpec, compile_texts
from meltrca.ingest.mapping import (
    MAP_FIELDS,
    NUMBER_FIELDS,
    SIGNAL_SCHEMAS,
    TIME_FIELDS,
    InputSpec,
    SystemSource,
    target_fields,
)
from meltrca.ingest.readers import RawFrame

HELPERS = ("_source", "_record", "_error", "_series")


def raw_name(field: str) -> str:
    return f"_raw_{field}"


def map_records(raw: RawFrame, spec: InputSpec, system: str, system_from: SystemSource | None = None) -> DataFrame:
    """Typed bronze fields (+ ``_raw_*`` texts) for every record of one input.

    Built in layers (texts, then types, then derived span times) so that no expression is
    copied into another: each value is parsed once per row. `system_from`: each record's system
    from a field or its file's path instead of the one `system` (empty = missing: quarantined).
    """
    signal = spec.signal
    specs: dict[str, object] = {**raw.default_fields, **spec.fields}
    melt_split = raw.melted and spec.values is not None and spec.values.split is not None
    text_specs: dict[str, FieldSpec] = {}
    direct: dict[str, Column] = {}
    map_keys: dict[str, list[tuple[str, str]]] = {}
    for name in target_fields(signal):
        spec_ = specs.get(name)
        if name in MAP_FIELDS:
            if isinstance(spec_, Mapping):
                map_keys[name] = []
                for i, (key, sub) in enumerate(spec_.items()):
                    text_specs[f"_m_{name}_{i}"] = sub
                    map_keys[name].append((key, f"_m_{name}_{i}"))
        elif raw.melted and name == "metric":
            direct[raw_name(name)] = F.col("_metric")
        elif raw.melted and name == "value":
            direct[raw_name(name)] = F.nullif(F.trim(F.col("_value_text")), F.lit(""))
        elif melt_split and name == "service":
            direct[raw_name(name)] = F.col("_series_service")
        elif isinstance(spec_, FieldSpec):
            text_specs[raw_name(name)] = spec_
        else:
            direct[raw_name(name)] = F.lit(None).cast("string")
    if system_from is not None and system_from.field is not None:
        text_specs["_raw_system"] = system_from.field
    texts = compile_texts(raw.df, text_specs, raw.resolve)
    if direct:
        texts = texts.withColumns(direct)
    typed: dict[str, Column] = {}
    for name in target_fields(signal):
        spec_ = specs.get(name)
        field_spec = spec_ if isinstance(spec_, FieldSpec) else FieldSpec()
        if name in MAP_FIELDS:
            if name in map_keys:
                typed[name] = string_map(map_keys[name])
            else:
                typed[name] = raw.default_maps.get(name, F.lit(None).cast("map<string,string>"))
            continue
        text = F.col(raw_name(name))
        if name in TIME_FIELDS:
            typed[name] = field_spec.timestamp(text)
        elif raw.melted and name == "value":
            typed[name] = text.try_cast("double") * F.coalesce(F.col("_scale"), F.lit(1.0))
        elif name in NUMBER_FIELDS:
            typed[name] = field_spec.number(text)
        else:
            typed[name] = text
    raw_cols = [raw_name(n) for n in target_fields(signal) if n not in MAP_FIELDS]
    if system_from is None:
        system_col = F.lit(system)
    elif system_from.field is not None:
        system_col = F.nullif(F.col("_raw_system"), F.lit(""))
    else:
        system_col = F.nullif(F.regexp_extract(F.col("_source"), system_from.path_regex or "", 1), F.lit(""))
    df = texts.select(
        system_col.alias("system"),
        *[typed[n].alias(n) for n in target_fields(signal)],
        *raw_cols,
        "_source",
        "_record",
        "_error",
        (F.col("_series") if raw.melted else F.lit(None).cast("string")).alias("_series"),
    )
    if signal == "spans":
        df = derive_span_times(df, has_end="end_ts" in specs, has_duration="duration_ms" in specs)
    return df


def string_map(keys: list[tuple[str, str]]) -> Column:
    """map<string,string> from (key, text column) pairs; absent values left out, an empty map is null."""
    built = F.map_filter(
        F.create_map(*[x for key, col in keys for x in (F.lit(key), F.col(col))]),
        lambda _k, v: v.isNotNull(),
    )
    return F.when(F.size(built) > 0, built)


def derive_span_times(df: DataFrame, *, has_end: bool, has_duration: bool) -> DataFrame:
    """end_ts from start + duration, or duration from end - start, when the input lacks one."""
    if has_end and has_duration:
        return df
    if not has_end:
        end = F.timestamp_micros(F.unix_micros("start_ts") + F.round(F.col("duration_ms") * 1000).cast("bigint"))
        return df.withColumns({"end_ts": end, raw_name("end_ts"): F.col(raw_name("duration_ms"))})
    duration = (F.unix_micros("end_ts") - F.unix_micros("start_ts")) / F.lit(1000.0)
    return df.withColumns({"duration_ms": duration, raw_name("duration_ms"): F.col(raw_name("end_ts"))})


def bronze_records(df: DataFrame, signal: str, source: str, system: str | None) -> DataFrame:
    """Rows of a bronze-schema table (ours): cast to the schema, raw texts for the reasons.

    ``_record`` stays null here: turning every row into JSON would cost more than the rest of
    the validation, so the pipeline writes it for rejected rows only.
    """
    schema = SIGNAL_SCHEMAS[signal]
    cols = set(df.columns)
    out: list[Column] = []
    if "system" in cols:
        system_col = F.col("system").cast("string")
        out.append((F.coalesce(system_col, F.lit(system)) if system else system_col).alias("system"))
    else:
        out.append(F.lit(system).cast("string").alias("system"))
    texts: list[Column] = []
    for f in schema.fields:
        if f.name in ("system", "date"):
            continue
        if f.name not in cols:
            out.append(F.lit(None).cast(f.dataType).alias(f.name))
            continue
        src = F.col(f"`{f.name}`")
        if df.schema[f.name].dataType == f.dataType:
            out.append(src.alias(f.name))
        else:  # another type: cast, and keep the text to name a value that does not convert
            out.append(src.try_cast(f.dataType).alias(f.name))
            if f.name not in MAP_FIELDS:
                texts.append(src.cast("string").alias(raw_name(f.name)))
    return df.select(
        *out,
        *texts,
        F.lit(f"{signal}:{source}").alias("_source"),
        # null: the pipeline writes the row as JSON for rejected rows only (see ingest_signal)
        F.lit(None).cast("string").alias("_record"),
        F.lit(None).cast("string").alias("_error"),
        F.lit(None).cast("string").alias("_series"),
    )
