"""Source mappings: loading and its errors, field specs (Spark and Python twins), time parsing, labels."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from meltrca.errors import ConfigError, InputError
from meltrca.ingest import labels_from_mapping, load_mapping
from meltrca.ingest.fields import FieldSpec, compile_texts, java_to_strptime, parse_time, parse_time_py
from meltrca.ingest.labels import walk_records
from meltrca.ingest.mapping import SplitSpec, snake_case


def write(tmp_path, text: str):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("system: x\n", "declares no signal"),
        ("system: x\nmetrix: {}\n", "unknown key(s) metrix"),
        ("metrics: {files: a, format: parquet}\n", "metrics[0].format must be one of bronze, csv, jsonl, wide_csv, otlp_json"),
        ("metrics: {files: a, format: csv, fields: {ts: t, service: s, metric: m}}\n",
         "metrics[0].fields: no spec for required field(s) value"),
        ("logs: {files: a, format: csv, fields: {ts: {column: t, regex: '(a'}}}\n", "logs[0].fields.ts.regex: invalid regular expression"),
        ("logs: {files: a, format: csv, fields: {ts: {column: t, colour: red}}}\n", "logs[0].fields.ts: unknown key(s) colour"),
        ("logs: {files: a, format: csv, fields: {ts: {column: t, value: x}}}\n", "give exactly one of 'column' or 'value'"),
        ("logs: {files: a, format: csv, fields: {ts: {column: t, timezone: Mars/Olympus}}}\n", "unknown time zone"),
        ("spans: {files: a, format: csv, values: {}}\n", "values is for metrics only"),
        ("metrics: {files: a, format: wide_csv, fields: {ts: t}, values: {split: {regex: '(.*)_(.*)'}}}\n",
         "needs named groups"),
        ("metrics: {format: csv}\n", "metrics[0].files is empty"),
        ("system: {path: 'cases/metrics.csv'}\nmetrics: {files: a, format: bronze}\n",
         "system.path must hold {system} once, got 'cases/metrics.csv'"),
        ("system: {path: '{system}/a.csv', column: x}\nmetrics: {files: a, format: bronze}\n", "system: unknown key(s) column"),
        ("system: {colum: site}\nmetrics: {files: a, format: bronze}\n", "system: unknown key(s) colum"),
    ],
)
def test_mapping_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_mapping(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path / "m.yaml") in str(err.value)


def test_missing_mapping_file_and_root():
    with pytest.raises(ConfigError, match="source mapping not found: nope.yaml"):
        load_mapping("nope.yaml")


def test_shipped_nezha_mapping_loads_and_has_no_dates():
    m = load_mapping("conf/sources/nezha-trainticket.yaml")
    assert m.system == "trainticket"
    assert m.signals() == ["logs", "metrics", "spans"]
    globs = [g for i in m.inputs for g in i.files] + list(m.labels.files)
    assert all("2023" not in g and "_30" not in g for g in globs)


@pytest.mark.parametrize(("pattern", "uri", "system"), [
    ("{system}/metrics.csv", "metrics:file:/data/case-07/metrics.csv", "case-07"),
    ("{system}/metrics.csv", "metrics:file:/data/case-07/logs.csv", None),
    ("sites/{system}/**/*.csv", "metrics:s3a://b/sites/eu-1/2024/09/m.csv", "eu-1"),
    ("sites/{system}/**/*.csv", "metrics:s3a://b/sites/eu-1/m.csv", "eu-1"),
    ("{system}.jsonl", "logs:file:/x/shop_a.b.jsonl", "shop_a.b"),
])
def test_system_path_pattern(pattern, uri, system):
    from meltrca.ingest.mapping import SystemSource

    found = re.search(SystemSource(path=pattern).path_regex, uri)
    assert (found.group(1) if found else None) == system


def test_snake_case_and_wide_split():
    assert snake_case("CpuUsageRate(%)") == "cpu_usage_rate_pct"
    assert snake_case("PodWorkload(Ops)") == "pod_workload_ops"
    assert SplitSpec().split("cart_latency-50") == ("cart", "latency-50")
    assert SplitSpec(at="last").split("ts-auth-service_cpu_usage") == ("ts-auth-service_cpu", "usage")
    assert SplitSpec(regex=r"(?P<service>.+)_(?P<metric>cpu|mem)$").split("a_b_cpu") == ("a_b", "cpu")
    assert SplitSpec().split("time") is None


def test_field_spec_steps_in_spark_and_python_agree(spark):
    specs = {
        "service": FieldSpec.parse({"column": "pod", "regex": r"^(.+)-[^-]+-[^-]+$"}, "t"),
        "level": FieldSpec.parse({"column": "payload", "json": "level", "map": {"warning": "WARN"}, "default": "INFO"}, "t"),
        "parent": FieldSpec.parse({"column": "parent", "null_if": ["root"]}, "t"),
        "kind": FieldSpec.parse({"value": "server", "upper": True}, "t"),
    }
    records = [
        {"pod": "ts-food-service-f5756978c-6sb8t", "payload": '{"level": "warning"}', "parent": "root"},
        {"pod": "nohash", "payload": "{}", "parent": " abc "},
    ]
    df = spark.createDataFrame([Row(**r) for r in records])
    named = {f"out_{k}": v for k, v in specs.items()}
    got = compile_texts(df, named, lambda name: df[name]).select(*[F.col(f"out_{k}").alias(k) for k in specs])
    expected = [Row(service="ts-food-service", level="WARN", parent=None, kind="SERVER"),
                Row(service=None, level="INFO", parent="abc", kind="SERVER")]
    assertDataFrameEqual(got, spark.createDataFrame(expected), checkRowOrder=False)
    assert [Row(**{k: s.evaluate(r) for k, s in specs.items()}) for r in records] == expected


@pytest.mark.parametrize(
    ("text", "fmt", "tz", "expected"),
    [
        ("1675079506", "epoch_s", None, datetime(2023, 1, 30, 11, 51, 46)),
        ("1675079506.25", "auto", None, datetime(2023, 1, 30, 11, 51, 46, 250000)),
        ("1675079501299000000", "epoch_ns", None, datetime(2023, 1, 30, 11, 51, 41, 299000)),
        ("1675079501299123456", "auto", None, datetime(2023, 1, 30, 11, 51, 41, 299123)),
        ("1675079501299123", "epoch_us", None, datetime(2023, 1, 30, 11, 51, 41, 299123)),
        ("1675079501299", "auto", None, datetime(2023, 1, 30, 11, 51, 41, 299000)),
        ("2023-01-30T11:50:59.971622667Z", "iso", None, datetime(2023, 1, 30, 11, 50, 59, 971622)),
        ("2023-01-30T19:50:59+08:00", "iso", "Europe/Paris", datetime(2023, 1, 30, 11, 50, 59)),
        ("2023-01-30 12:50:59", "iso", "Europe/Paris", datetime(2023, 1, 30, 11, 50, 59)),
        ("30/01/2023 12:50", "dd/MM/yyyy HH:mm", "Europe/Paris", datetime(2023, 1, 30, 11, 50)),
        ("yesterday", "auto", None, None),
        ("-6795364578871345152", "epoch_ns", None, datetime(1754, 8, 30, 22, 43, 41, 128654)),
    ],
)
def test_time_parsing_spark_and_python(spark, text, fmt, tz, expected):
    got = spark.createDataFrame([(text,)], "t string").select(parse_time(F.col("t"), fmt, tz)).first()[0]
    assert got == expected
    assert parse_time_py(text, fmt, tz) == expected


def test_java_pattern_translation():
    assert java_to_strptime("yyyy-MM-dd'T'HH:mm:ss.SSS") == "%Y-%m-%dT%H:%M:%S.%f"


def test_walk_records():
    doc = {"11": [{"a": 1}, {"a": 2}], "12": [{"a": 3}]}
    assert [r["a"] for r in walk_records(doc, "*.*")] == [1, 2, 3]
    assert [r["a"] for r in walk_records(doc, "*")] == [1, 2, 3]
    assert [r["a"] for r in walk_records({"faults": [{"a": 9}]}, "faults")] == [9]


def test_labels_from_a_mapping(tmp_path):
    (tmp_path / "faults.json").write_text(
        '{"9": [{"when": "2024-01-02 09:30:00", "pod": "cart-6c9f8d7b5-abcde", "type": "cpu"}],'
        ' "10": [{"when": "2024-01-02 10:00:00", "pod": "db-0-x", "type": "disk"}]}'
    )
    m = write(
        tmp_path,
        "system: lab\nroot: .\nmetrics: {files: x, format: bronze}\nlabels:\n  files: faults.json\n  records: '*.*'\n"
        "  duration_minutes: 10\n  fields:\n    start: {column: when, format: 'yyyy-MM-dd HH:mm:ss', timezone: Europe/Paris}\n"
        "    root_cause_service: {column: pod, regex: '^(.+)-[^-]+-[^-]+$'}\n    fault_type: type\n"
        "    indicator: {column: type, map: {cpu: cpu_usage_mean}}\n",
    )
    labels = labels_from_mapping(m)
    assert labels == [
        {"fault_id": "lab-20240102T083000-cart", "system": "lab", "root_cause_service": "cart", "fault_type": "cpu",
         "start": "2024-01-02T08:30:00Z", "end": "2024-01-02T08:40:00Z", "affected_services": ["cart"], "indicator": "cpu_usage_mean"},
        {"fault_id": "lab-20240102T090000-db", "system": "lab", "root_cause_service": "db", "fault_type": "disk",
         "start": "2024-01-02T09:00:00Z", "end": "2024-01-02T09:10:00Z", "affected_services": ["db"], "indicator": "disk"},
    ]
    assert labels_from_mapping(m, system="other")[0]["system"] == "other"
    with pytest.raises(InputError, match="labels: no file matches faults.json"):
        labels_from_mapping(m, root=str(tmp_path / "elsewhere"))


def test_deduplicate_keeps_the_least_row_per_key(spark):
    """Map keys group regardless of entry order; the kept row is the least by the other columns."""
    from meltrca.ingest.pipeline import deduplicate

    schema = "k string, labels map<string,string>, v double, note string"
    df = spark.createDataFrame(
        [
            ("a", {"x": "1", "y": "2"}, 3.0, "late"),
            ("a", {"y": "2", "x": "1"}, 1.0, "kept"),
            ("a", {"x": "1", "y": "2"}, 1.0, "later"),
            ("a", {"x": "9"}, 5.0, "own key"),
            ("b", None, None, "null v sorts first"),
            ("b", None, 0.5, "dropped"),
        ],
        schema,
    )
    got = deduplicate(df, keys=("k", "labels"))
    expected = spark.createDataFrame(
        [
            ("a", {"x": "1", "y": "2"}, 1.0, "kept"),
            ("a", {"x": "9"}, 5.0, "own key"),
            ("b", None, None, "null v sorts first"),
        ],
        schema,
    )
    assert got.columns == df.columns
    assertDataFrameEqual(got, expected)
    # a whole-row key (logs): identical rows collapse, attribute maps break no ties wrongly
    rows = spark.createDataFrame([("m", {"p": "1"}), ("m", {"p": "1"}), ("m", {"p": "2"})], "k string, attributes map<string,string>")
    assertDataFrameEqual(deduplicate(rows, keys=("k",)), spark.createDataFrame([("m", {"p": "1"})], rows.schema))
