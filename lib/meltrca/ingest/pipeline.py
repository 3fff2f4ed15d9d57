"""Ingest orchestration: inputs -> mapped, validated, de-duplicated bronze rows + quarantine.

Per signal, rows in = accepted + quarantined + deduplicated (+ outside the --start/--end window
when one is given), exactly: every record read is counted once, in one bucket. Bronze writes
replace, per system written, the run's window (the given window, or the extent of that system's
accepted rows); quarantine rows are replaced by source, so a rerun of the same input duplicates
nothing. Two different inputs for the same system, table and time range belong in one mapping
(a list of inputs under the signal): a second ingest of that range replaces the first.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from meltrca.errors import InputError
from meltrca.ingest.files import join_root, path_exists, resolve_inputs, unreadable_files
from meltrca.ingest.mapping import (
    MAP_FIELDS,
    SIGNAL_SCHEMAS,
    InputSpec,
    SourceMapping,
    SystemSource,
    bronze_mapping,
    target_fields,
)
from meltrca.ingest.otlp import read_otlp
from meltrca.ingest.readers import RawFrame, read_csv, read_jsonl
from meltrca.ingest.records import bronze_records, map_records
from meltrca.ingest.validation import ValidationParams, with_reason
from meltrca.io import read_table_dir, sql_str, window_predicate
from meltrca.logs import get_logger
from meltrca.reference import MAPPING, format_range
from meltrca.schemas import BASELINES, TABLES
from meltrca.timewindow import TimeWindow, to_iso, utcnow

if TYPE_CHECKING:
    from meltrca.jobrunner import JobContext

log = get_logger("ingest")

READERS: dict[str, Callable[[SparkSession, InputSpec, list[str]], RawFrame]] = {
    "csv": read_csv,
    "wide_csv": read_csv,
    "jsonl": read_jsonl,
    "otlp_json": read_otlp,
}
# Rows that are the same record: same series + timestamp, same span id, or identical rows.
DEDUP_KEYS: dict[str, tuple[str, ...]] = {
    "metrics": ("system", "service", "instance", "metric", "labels", "ts"),
    "spans": ("system", "trace_id", "span_id"),
    "logs": ("system", *target_fields("logs")),
    "events": ("system", *target_fields("events")),
}


@dataclass
class SignalCounts:
    """The reconciliation of one signal: where every record read went."""

    signal: str
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    deduplicated: int = 0
    outside_window: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    # system -> (first, last) time of the accepted rows read from the mapping's reference files
    reference_spans: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    # system (None: records whose system is missing) -> its own reconciliation
    per_system: dict[str | None, SignalCounts] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        total = self.rows_in == self.accepted + self.quarantined + self.deduplicated + self.outside_window
        return total and all(c.reconciles for c in self.per_system.values())

    def as_counts(self) -> dict[str, int]:
        out = {
            f"{self.signal}.in": self.rows_in,
            f"{self.signal}.accepted": self.accepted,
            f"{self.signal}.quarantined": self.quarantined,
            f"{self.signal}.deduplicated": self.deduplicated,
        }
        if self.outside_window:
            out[f"{self.signal}.outside_window"] = self.outside_window
        return out


@dataclass
class IngestReport:
    systems: list[str]
    signals: dict[str, SignalCounts]

    def table(self) -> str:
        """The printed reconciliation (one line per signal, then the reasons)."""
        head = f"{'signal':<8} {'in':>12} {'accepted':>12} {'quarantined':>12} {'deduplicated':>13}"
        window = any(c.outside_window for c in self.signals.values())
        if window:
            head += f" {'outside_window':>15}"
        lines = [head]
        for c in self.signals.values():
            line = f"{c.signal:<8} {c.rows_in:>12,} {c.accepted:>12,} {c.quarantined:>12,} {c.deduplicated:>13,}"
            if window:
                line += f" {c.outside_window:>15,}"
            line += "  ok" if c.reconciles else "  MISMATCH"
            lines.append(line)
            if len(c.per_system) > 1:  # many systems in one ingest: each reconciles on its own
                for name, p in sorted(c.per_system.items(), key=lambda kv: (kv[0] is None, kv[0] or "")):
                    line = (f"  {name or '(no system)'}: in {p.rows_in:,} = accepted {p.accepted:,} + quarantined "
                            f"{p.quarantined:,} + deduplicated {p.deduplicated:,}")
                    line += (f" + outside window {p.outside_window:,}" if p.outside_window else "")
                    lines.append(line + ("" if p.reconciles else "  MISMATCH"))
        for c in self.signals.values():
            for reason, n in sorted(c.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  quarantined {c.signal}: {reason} x {n:,}")
        return "\n".join(lines)


# ---- reading ----------------------------------------------------------------------------------


def checked_rows(
    spark: SparkSession, spec: InputSpec, root: str, system: str | None, params: ValidationParams,
    system_from: SystemSource | None = None,
) -> tuple[DataFrame, list[str]] | None:
    """One input's rows with ``_reason``, and its source labels; None when no file matches."""
    corrupt: dict[str, str] = {}  # text files that do not read to their end: quarantined whole
    if spec.format == "bronze":
        path = join_root(root, spec.files[0])
        if not path_exists(spark, path):
            return None
        df = read_table_dir(spark, path)
        check_bronze_columns(df, spec.signal, path, system_given=system is not None)
        mapped = bronze_records(df, spec.signal, path, system)
        sources = [f"{spec.signal}:{path}"]
    else:
        files = resolve_inputs(spark, root, spec.files, spec.source_label, must_match=False)
        if not files:
            log.warning("%s: no file matches %s under %s", spec.source_label, ", ".join(spec.files), root)
            return None
        sources = [f"{spec.signal}:{f}" for f in files]
        corrupt = unreadable_files(spark, files)
        if corrupt:
            log.warning("%s: %d unreadable file(s) quarantined whole, e.g. %s", spec.source_label, len(corrupt), next(iter(corrupt)))
        readable = [f for f in files if f not in corrupt]
        if not readable:
            return _whole_files(spark, spec.signal, system, corrupt), sources
        mapped = map_records(READERS[spec.format](spark, spec, readable), spec, system or "", system_from)
    checked = with_reason(mapped, signal=spec.signal, params=params)
    if corrupt:
        checked = checked.unionByName(_whole_files(spark, spec.signal, system, corrupt), allowMissingColumns=True)
    return checked, sources


def _whole_files(spark: SparkSession, signal: str, system: str | None, reasons: dict[str, str]) -> DataFrame:
    """One quarantine record per unreadable file (its path as the record): it never vanishes."""
    df = spark.createDataFrame(
        [(system, f"{signal}:{uri}", uri, reason) for uri, reason in reasons.items()],
        "system string, _source string, _record string, _reason string",
    )
    return df.select(*df.columns, *[F.lit(None).cast(f.dataType).alias(f.name)
                                    for f in TABLES[signal].schema.fields if f.name not in df.columns])


def check_bronze_columns(df: DataFrame, signal: str, path: str, *, system_given: bool) -> None:
    """Drift in a bronze folder: missing required columns fail, the rest is logged."""
    schema = SIGNAL_SCHEMAS[signal]
    have = set(df.columns)
    skip = ("date", "system") if system_given else ("date",)
    required = [f.name for f in schema.fields if not f.nullable and f.name not in skip]
    missing = [c for c in required if c not in have]
    if missing:
        raise InputError(f"{signal} table {path}: missing required column(s) {', '.join(missing)}")
    optional = [f.name for f in schema.fields if f.nullable and f.name not in have]
    if optional:
        log.warning("%s table %s: optional column(s) %s missing (read as null)", signal, path, ", ".join(optional))
    extra = sorted(have - set(schema.fieldNames()))
    if extra:
        log.info("%s table %s: extra column(s) %s ignored", signal, path, ", ".join(extra))


# ---- de-duplication ---------------------------------------------------------------------------


def deduplicate(df: DataFrame, *, keys: tuple[str, ...]) -> DataFrame:
    """One row per key; the kept row is the least by the non-key columns (then the sorted map entries).

    The rows are shuffled by key first, so the window (and the group limit Spark plans for
    ``row_number() == 1``) sorts small shuffled partitions: a map-side sort of whole input splits
    (``min_by`` over a struct, or a partial window group limit) ran out of execution memory on
    24M spans with a 4g driver.
    """
    def comparable(c: str) -> Column:  # maps can be neither grouped nor ordered; their sorted entries can
        return F.array_sort(F.map_entries(c)) if c in MAP_FIELDS else F.col(c)

    key_cols = [comparable(k) for k in keys]
    order = [comparable(c) for c in df.columns if c not in keys]
    by_key = Window.partitionBy(*key_cols).orderBy(*(order or [F.lit(0)]))
    shuffled = df.repartition(*key_cols)
    return shuffled.withColumn("_pick", F.row_number().over(by_key)).where(F.col("_pick") == 1).drop("_pick")


# ---- writing ----------------------------------------------------------------------------------


def _time_filter(col: Column, window: TimeWindow) -> Column:
    cond = F.lit(True)
    if window.start is not None:
        cond = cond & (col >= F.lit(window.start))
    if window.end is not None:
        cond = cond & (col < F.lit(window.end))
    return cond


def ingest_signal(
    ctx: JobContext,
    signal: str,
    checked: DataFrame,
    sources: list[str],
    *,
    source_system: str | None,
    ingested_at: datetime,
    reference_sources: Sequence[str] = (),
) -> SignalCounts:
    """Write one signal's accepted rows and its quarantine; return the reconciliation."""
    lake = ctx.lake
    spec = TABLES[signal]
    time_col = F.col(spec.time_column)
    window = ctx.window
    bronze_cols = [f.name for f in spec.schema.fields if f.name != "date"]
    accepted_now = F.col("_reason").isNull()
    inside = _time_filter(time_col, window) if (window.start or window.end) else F.lit(True)
    rows = checked.select(
        *bronze_cols,
        "_source",
        # the raw text read, or (bronze tables) the row as JSON: for rejected rows only
        F.when(~accepted_now, F.coalesce(F.col("_record"), F.to_json(F.struct(*bronze_cols)))).alias("_record"),
        "_reason",
        (accepted_now & ~inside).alias("_outside"),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    t0 = time.perf_counter()
    try:
        good = accepted_now & ~F.col("_outside")
        per_system = rows.groupBy("system").agg(
            F.count(F.lit(1)).alias("rows_in"),
            F.count_if(~accepted_now).alias("quarantined"),
            F.count_if(F.col("_outside")).alias("outside"),
            F.count_if(good).alias("valid"),
            F.min(F.when(good, time_col)).alias("t0"),
            F.max(F.when(good, time_col)).alias("t1"),
            *_reference_span(good & (F.col("_source").isin(list(reference_sources)) if reference_sources
                                     else F.lit(False)), time_col),
        ).collect()
        counts = SignalCounts(
            signal,
            rows_in=sum(r["rows_in"] for r in per_system),
            quarantined=sum(r["quarantined"] for r in per_system),
            outside_window=sum(r["outside"] for r in per_system),
            reference_spans={r["system"]: (r["ref0"], r["ref1"]) for r in per_system if r["ref0"] is not None},
        )
        log.debug("%s: read and checked %s rows in %.1fs", signal, counts.rows_in, time.perf_counter() - t0)
        # Each system's rows replace that system's rows in the run window (or in their own extent).
        extents = {
            r["system"]: TimeWindow(window.start or r["t0"], window.end or (r["t1"] + timedelta(microseconds=1)))
            for r in per_system
            if r["valid"]
        }
        systems = sorted(extents)
        if counts.quarantined:
            code = F.substring_index(F.col("_reason"), ":", 1)
            counts.reasons = {r[0]: r[1] for r in rows.where(~accepted_now).groupBy(code).count().collect()}
        if extents:
            obs = Observation(f"ingest-{signal}")
            deduped = deduplicate(rows.where(good).select(*bronze_cols), keys=DEDUP_KEYS[signal])
            deduped = deduped.observe(obs, F.count(F.lit(1)).alias("rows"),
                                      *[F.count_if(F.col("system") == name).alias(f"system_{i}")
                                        for i, name in enumerate(systems)])
            predicate = " OR ".join(f"({window_predicate(spec, [name], w)})" for name, w in extents.items())
            lake.replace_where(signal, deduped, predicate)
            observed = obs.get
            counts.accepted = int(observed.get("rows") or 0)
            counts.deduplicated = sum(r["valid"] for r in per_system) - counts.accepted
            accepted_by = {name: int(observed.get(f"system_{i}") or 0) for i, name in enumerate(systems)}
        else:
            accepted_by = {}
        counts.per_system = {
            r["system"]: SignalCounts(
                signal, rows_in=r["rows_in"], accepted=accepted_by.get(r["system"], 0), quarantined=r["quarantined"],
                deduplicated=r["valid"] - accepted_by.get(r["system"], 0), outside_window=r["outside"])
            for r in per_system
        }
        log.debug("%s: written at %.1fs", signal, time.perf_counter() - t0)
        quarantine = rows.where(~accepted_now).select(
            F.col("system"),
            F.col("_source").alias("source"),
            F.col("_record").alias("record"),
            F.col("_reason").alias("reason"),
            F.lit(ingested_at).alias("ingested_at"),
            F.lit(ctx.run_id).alias("run_id"),
        )
        lake.replace_where("quarantine", quarantine, quarantine_predicate(sources, source_system))
        log.debug("%s: quarantine written at %.1fs", signal, time.perf_counter() - t0)
    finally:
        rows.unpersist()
    ctx.systems = sorted(set(ctx.systems) | set(systems))
    return counts


def _reference_span(inside: Column, time_col: Column) -> list[Column]:
    return [F.min(F.when(inside, time_col)).alias("ref0"), F.max(F.when(inside, time_col)).alias("ref1")]


def record_reference(ctx: JobContext, mapping: SourceMapping, signals: Mapping[str, SignalCounts]) -> None:
    """Write the mapping's reference (meltrca.reference) per ingested system to `baselines`: the span
    of the reference files' accepted rows (all signals together) and the explicit ranges; a rerun
    replaces what the mapping recorded before for those systems."""
    if mapping.reference is None or not ctx.systems:
        return
    spans: dict[str, tuple[datetime, datetime]] = {}
    for counts in signals.values():
        for system, (t0, t1) in counts.reference_spans.items():
            a, b = spans.get(system, (t0, t1))
            spans[system] = (min(a, t0), max(b, t1))
    rows = sorted({(system, t0, t1 + timedelta(microseconds=1)) for system, (t0, t1) in spans.items()}
                  | {(system, a, b) for system in ctx.systems for a, b in mapping.reference.ranges})
    if mapping.reference.files and not spans:
        ctx.note(f"reference: no accepted row in {', '.join(mapping.reference.files)}: no reference recorded from files")
    df = ctx.spark.createDataFrame(
        [(system, a, b, MAPPING, ctx.run_id) for system, a, b in rows], BASELINES)
    names = ", ".join(sql_str(s) for s in ctx.systems)
    ctx.lake.replace_where("baselines", df, f"system IN ({names}) AND origin = {sql_str(MAPPING)}")
    for system, a, b in rows:
        log.info("reference baseline of %s: %s", system, format_range((a, b)))


def quarantine_predicate(sources: list[str], system: str | None) -> str:
    """The quarantine rows a rerun of these sources replaces."""
    pred = f"source IN ({', '.join(sql_str(s) for s in sorted(set(sources)))})"
    return f"system <=> {sql_str(system)} AND {pred}" if system is not None else pred


def run_ingest(ctx: JobContext, mapping: SourceMapping, *, root: str | None = None, system: str | None = None) -> IngestReport:
    """Ingest every signal of a mapping into the lake; print and record the reconciliation."""
    spark = ctx.spark
    spark.conf.set("spark.sql.mapKeyDedupPolicy", "LAST_WIN")  # repeated OTLP attribute keys: last wins
    base = mapping.resolve_root(root)
    if "://" not in base:
        base = os.path.abspath(base)
    is_bronze = all(i.format == "bronze" for i in mapping.inputs)
    per_record = mapping.system_from if system is None else None  # --system names one system for all
    name = system or mapping.system or (None if is_bronze or per_record else ctx.settings.system)
    ingested_at = utcnow()
    signals: dict[str, SignalCounts] = {}
    reference_files = set(resolve_inputs(spark, base, mapping.reference.files, "reference", must_match=False)
                          if mapping.reference and mapping.reference.files else [])
    for signal in mapping.signals():
        parts = []
        for spec in mapping.inputs_for(signal):
            params = ValidationParams.from_settings(ctx.settings.ingest, dict(spec.validate))
            found = checked_rows(spark, spec, base, name, params, per_record)
            if found is not None:
                parts.append(found)
        if not parts:
            continue
        checked = parts[0][0]
        for other, _ in parts[1:]:
            checked = checked.unionByName(other)
        sources = [s for _, srcs in parts for s in srcs]
        with ctx.stage(f"ingest {signal}") as info:
            counts = ingest_signal(
                ctx, signal, checked, sources, source_system=None if is_bronze or per_record else name,
                ingested_at=ingested_at,
                reference_sources=[f"{signal}:{f}" for f in sorted(reference_files)],
            )
            info["rows"] = counts.accepted
            info["extra"] = (
                f"in {counts.rows_in:,} = accepted {counts.accepted:,} + quarantined {counts.quarantined:,}"
                f" + deduplicated {counts.deduplicated:,}"
                + (f" + outside window {counts.outside_window:,}" if counts.outside_window else "")
            )
        for k, v in counts.as_counts().items():
            ctx.count(k, v)
        signals[signal] = counts
    if not signals:
        raise InputError(f"no input file found for source mapping {mapping.path} under {base}")
    record_reference(ctx, mapping, signals)
    report = IngestReport(sorted(ctx.systems), signals)
    print(report.table(), file=sys.stdout, flush=True)
    bad = [c.signal for c in signals.values() if not c.reconciles]
    if bad:  # a bug, never expected: fail loudly rather than lose rows silently
        raise InputError(f"ingest counts do not reconcile for {', '.join(bad)}")
    if ctx.window.start or ctx.window.end:
        log.info("ingest window %s .. %s", to_iso(ctx.window.start), to_iso(ctx.window.end))
    return report


def ingest_bronze_dir(ctx: JobContext, path: str, *, system: str | None = None) -> IngestReport:
    """Ingest a generated bronze folder (<path>/metrics, logs, spans, events; Delta or Parquet)."""
    return run_ingest(ctx, bronze_mapping(path), root=str(path), system=system)
