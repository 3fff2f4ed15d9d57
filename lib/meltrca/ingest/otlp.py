"""OpenTelemetry OTLP JSON (collector file exporter: one export request per line).

Traces (resourceSpans/scopeSpans/spans), logs (resourceLogs/scopeLogs/logRecords) and metrics
(resourceMetrics/scopeMetrics/metrics with gauge, sum or histogram data points) are parsed with
explicit schemas and exploded natively. Ids are hex strings; 64-bit integers may be JSON strings
or numbers (both read as text, so no precision is lost). A record is one span, log record or
metric point; its raw text is that element's JSON. A line that is not valid JSON, or holds none of
the three payloads, is one malformed record. Field specs address ``resource.<attr>``,
``attributes.<attr>``, ``scope.name`` and the element's own fields (``traceId``, ``name``, ...).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from meltrca.ingest.fields import FieldSpec
from meltrca.ingest.mapping import InputSpec
from meltrca.ingest.readers import RawFrame, text_lines

ANY = (
    "struct<stringValue:string,boolValue:string,intValue:string,doubleValue:string,"
    "bytesValue:string,arrayValue:string,kvlistValue:string>"
)
KV = f"array<struct<key:string,value:{ANY}>>"
RESOURCE = f"struct<attributes:{KV}>"
SCOPE = "struct<name:string,version:string>"
SPAN = (
    f"struct<traceId:string,spanId:string,parentSpanId:string,name:string,kind:string,"
    f"startTimeUnixNano:string,endTimeUnixNano:string,attributes:{KV},status:struct<code:string,message:string>>"
)
LOG_RECORD = (
    f"struct<timeUnixNano:string,observedTimeUnixNano:string,severityNumber:string,severityText:string,"
    f"body:{ANY},attributes:{KV},traceId:string,spanId:string>"
)
NUMBER_POINT = f"struct<attributes:{KV},timeUnixNano:string,asDouble:string,asInt:string>"
HISTOGRAM_POINT = f"struct<attributes:{KV},timeUnixNano:string,count:string,sum:string,min:string,max:string>"
METRIC = (
    f"struct<name:string,unit:string,gauge:struct<dataPoints:array<{NUMBER_POINT}>>,"
    f"sum:struct<dataPoints:array<{NUMBER_POINT}>>,histogram:struct<dataPoints:array<{HISTOGRAM_POINT}>>>"
)
PAYLOAD_KEYS = {"spans": "resourceSpans", "logs": "resourceLogs", "metrics": "resourceMetrics"}
SCOPE_KEYS = {"spans": ("scopeSpans", "spans"), "logs": ("scopeLogs", "logRecords"), "metrics": ("scopeMetrics", "metrics")}
LEAF_SCHEMA = {"spans": SPAN, "logs": LOG_RECORD, "metrics": METRIC}

SPAN_KINDS = {
    "0": "unspecified", "1": "internal", "2": "server", "3": "client", "4": "producer", "5": "consumer",
    "SPAN_KIND_UNSPECIFIED": "unspecified", "SPAN_KIND_INTERNAL": "internal", "SPAN_KIND_SERVER": "server",
    "SPAN_KIND_CLIENT": "client", "SPAN_KIND_PRODUCER": "producer", "SPAN_KIND_CONSUMER": "consumer",
}
STATUS_CODES = {
    "0": "ok", "1": "ok", "2": "error", "STATUS_CODE_UNSET": "ok", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error",
}
# severityNumber ranges of the OTel log data model -> level.
SEVERITY_BUCKETS = ((4, "TRACE"), (8, "DEBUG"), (12, "INFO"), (16, "WARN"), (20, "ERROR"), (24, "FATAL"))

_RESOURCE_FIELDS = {
    "service": FieldSpec(column="resource.service.name"),
    "instance": FieldSpec(column="resource.service.instance.id"),
}
DEFAULT_FIELDS: dict[str, dict[str, FieldSpec]] = {
    "spans": {
        **_RESOURCE_FIELDS,
        "trace_id": FieldSpec(column="traceId"),
        "span_id": FieldSpec(column="spanId"),
        "parent_span_id": FieldSpec(column="parentSpanId"),
        "operation": FieldSpec(column="name"),
        "start_ts": FieldSpec(column="startTimeUnixNano", format="epoch_ns"),
        "end_ts": FieldSpec(column="endTimeUnixNano", format="epoch_ns"),
        "status": FieldSpec(column="status.code", map=tuple(STATUS_CODES.items()), default="ok"),
        "kind": FieldSpec(column="kind", map=tuple(SPAN_KINDS.items())),
    },
    "logs": {
        **_RESOURCE_FIELDS,
        "ts": FieldSpec(column="time", format="epoch_ns"),
        "level": FieldSpec(column="severity"),
        "message": FieldSpec(column="body"),
        "trace_id": FieldSpec(column="traceId"),
        "span_id": FieldSpec(column="spanId"),
    },
    "metrics": {
        **_RESOURCE_FIELDS,
        "ts": FieldSpec(column="timeUnixNano", format="epoch_ns"),
        "metric": FieldSpec(column="name"),
        "value": FieldSpec(column="value"),
    },
}


def any_value(v: Column) -> Column:
    """An OTLP AnyValue as text (arrays and key-value lists as their JSON)."""
    return F.coalesce(
        v["stringValue"], v["boolValue"], v["intValue"], v["doubleValue"], v["arrayValue"], v["kvlistValue"], v["bytesValue"]
    )


def attributes_map(attrs: Column) -> Column:
    """OTLP attribute list -> map<string,string> (null keys dropped, a repeated key keeps its last value, empty -> null)."""
    entries = F.transform(
        F.filter(F.coalesce(attrs, F.array()), lambda a: a["key"].isNotNull()),
        lambda a: F.struct(a["key"].alias("key"), any_value(a["value"]).alias("value")),
    )
    built = F.map_from_entries(entries)
    return F.when(F.size(built) > 0, built)


def severity_level(number: Column) -> Column:
    n = number.try_cast("int")
    expr = F.when(n.isNull() | (n <= 0), F.lit(None).cast("string"))
    for upper, level in SEVERITY_BUCKETS:
        expr = expr.when(n <= upper, F.lit(level))
    return expr


def _leaf_columns(signal: str, leaf: Column) -> dict[str, Column]:
    """Source columns of one element, addressable by name in field specs."""
    if signal == "spans":
        names = ["traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano"]
        cols = {n: leaf[n] for n in names}
        cols["status.code"] = leaf["status"]["code"]
        cols["status.message"] = leaf["status"]["message"]
        return cols
    if signal == "logs":
        cols = {n: leaf[n] for n in ["timeUnixNano", "observedTimeUnixNano", "severityNumber", "severityText", "traceId", "spanId"]}
        cols["time"] = F.coalesce(F.nullif(leaf["timeUnixNano"], F.lit("0")), leaf["observedTimeUnixNano"])
        cols["severity"] = F.coalesce(F.nullif(F.trim(leaf["severityText"]), F.lit("")), severity_level(leaf["severityNumber"]))
        cols["body"] = any_value(leaf["body"])
        return cols
    return {n: leaf[n] for n in ["name", "unit", "timeUnixNano", "value"]}


def _metric_points(metrics: DataFrame) -> DataFrame:
    """One row per metric point; histograms give <name>_count, _sum, _min, _max."""
    m = F.col("_leaf")

    def numbers(kind: str) -> Column:
        return F.transform(
            F.coalesce(m[kind]["dataPoints"], F.array()),
            lambda p: F.struct(
                m["name"].alias("name"), m["unit"].alias("unit"), p["attributes"].alias("attributes"),
                p["timeUnixNano"].alias("timeUnixNano"), F.coalesce(p["asDouble"], p["asInt"]).alias("value"),
                F.to_json(F.struct(m["name"].alias("metric"), p.alias("point"))).alias("raw"),
            ),
        )

    def histogram_stats(p: Column) -> Column:
        stats = [
            F.struct(
                F.concat(m["name"], F.lit(f"_{stat}")).alias("name"), m["unit"].alias("unit"),
                p["attributes"].alias("attributes"), p["timeUnixNano"].alias("timeUnixNano"), p[stat].alias("value"),
                F.to_json(F.struct(m["name"].alias("metric"), p.alias("point"))).alias("raw"),
            )
            for stat in ("count", "sum", "min", "max")
        ]
        return F.filter(F.array(*stats), lambda s: s["value"].isNotNull() | s["name"].endswith("_count"))

    histos = F.flatten(F.transform(F.coalesce(m["histogram"]["dataPoints"], F.array()), histogram_stats))
    points = F.concat(numbers("gauge"), numbers("sum"), histos)
    return metrics.select("_source", "_resource", "_scope", F.explode(points).alias("_leaf"))


def read_otlp(spark: SparkSession, spec: InputSpec, files: list[str]) -> RawFrame:
    """OTLP JSON lines for one signal of the input."""
    signal = spec.signal
    top, (scope_key, leaf_key) = PAYLOAD_KEYS.get(signal), SCOPE_KEYS.get(signal, (None, None))
    if top is None:
        from meltrca.errors import ConfigError

        raise ConfigError(f"source mapping {spec.source_label}: otlp_json carries spans, logs or metrics, not {signal}")
    schema = (
        f"{top} array<struct<resource:{RESOURCE},{scope_key}:array<struct<scope:{SCOPE},"
        f"{leaf_key}:array<{LEAF_SCHEMA[signal]}>>>>>, _corrupt string"
    )
    lines = text_lines(spark, files, signal).withColumn(
        "_p", F.from_json("_record", schema, {"columnNameOfCorruptRecord": "_corrupt"})
    )
    any_payload = F.lit(False)
    for key in PAYLOAD_KEYS.values():
        any_payload = any_payload | F.get_json_object("_record", f"$.{key}").isNotNull()
    error = (
        F.when(F.col("_p").isNull() | F.col("_p._corrupt").isNotNull(), F.lit("malformed_json: not an OTLP JSON object"))
        .when(~any_payload, F.lit("malformed_otlp: no resourceSpans, resourceLogs or resourceMetrics"))
    )
    lines = lines.withColumn("_error", error)
    bad = lines.where(F.col("_error").isNotNull())
    good = (
        lines.where(F.col("_error").isNull())
        .select("_source", F.explode(f"_p.{top}").alias("_r"))
        .select("_source", attributes_map(F.col("_r.resource.attributes")).alias("_resource"), F.explode(f"_r.{scope_key}").alias("_s"))
        .select("_source", "_resource", F.col("_s.scope.name").alias("_scope"), F.explode(f"_s.{leaf_key}").alias("_leaf"))
    )
    leaf = F.col("_leaf")
    if signal == "metrics":
        good = _metric_points(good)
        record = leaf["raw"]
    else:
        record = F.to_json(leaf)
    leaf_cols = _leaf_columns(signal, leaf)
    aliases = {name: f"_o_{i}" for i, name in enumerate(leaf_cols)}
    good = good.select(
        "_source",
        record.alias("_record"),
        F.lit(None).cast("string").alias("_error"),
        "_resource",
        "_scope",
        attributes_map(leaf["attributes"]).alias("_attrs"),
        *[col.cast("string").alias(aliases[name]) for name, col in leaf_cols.items()],
    )
    nulls = [F.lit(None).cast(t).alias(c) for c, t in good.dtypes if c not in ("_source", "_record", "_error")]
    df = good.unionByName(bad.select("_source", "_record", "_error", *nulls))

    def resolve(name: str) -> Column:
        if name in aliases:
            return F.col(aliases[name])
        if name == "scope.name":
            return F.col("_scope")
        for prefix, col in (("resource.", "_resource"), ("attributes.", "_attrs")):
            if name.startswith(prefix):
                return F.try_element_at(F.col(col), F.lit(name[len(prefix) :]))
        return F.lit(None).cast("string")

    default_maps = {"labels" if signal == "metrics" else "attributes": F.col("_attrs")}
    return RawFrame(df, resolve, default_fields=DEFAULT_FIELDS[signal], default_maps=default_maps)
