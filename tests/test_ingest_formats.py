"""Each built-in ingest format, through the real pipeline into real Delta tables, row by row."""

from __future__ import annotations

import argparse
from datetime import date, datetime

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from conftest import REPO
from meltrca.ingest import ingest_bronze_dir, load_mapping, run_ingest
from meltrca.io import write_table_dir
from meltrca.jobrunner import JobContext
from meltrca.schemas import LOGS, METRICS, SPANS
from meltrca.timewindow import TimeWindow

DATA = REPO / "tests" / "data" / "ingest"
D = date(2024, 9, 26)


def make_ctx(spark, settings, lake_root, window: TimeWindow | None = None) -> JobContext:
    args = argparse.Namespace(master=None, verbose=False, debug=False)
    return JobContext(
        job="ingest", args=args, settings=settings, run_id="test-run", window=window or TimeWindow(),
        lake_root=str(lake_root), _spark=spark,
    )


def ingest(spark, settings, lake, name: str):
    ctx = make_ctx(spark, settings, lake.root)
    report = run_ingest(ctx, load_mapping(DATA / name / "mapping.yaml"))
    return ctx, report


def bronze(lake, table: str):
    return lake.read(table).drop("date")


def test_otlp_json_traces_logs_and_metrics(spark, settings, lake):
    ctx, report = ingest(spark, settings, lake, "otlp")
    tid = "5b8efff798038103d269b633813fc60c"
    spans = spark.createDataFrame(
        [
            ("otel-demo", tid, "eee19b7ec3c1b174", None, "frontend", "GET /cart", datetime(2024, 9, 26, 10, 30),
             datetime(2024, 9, 26, 10, 30, 0, 120000), 120.0, "ok", "server", {"http.method": "GET", "http.status_code": "200"}, D),
            ("otel-demo", tid, "aaa19b7ec3c1b175", "eee19b7ec3c1b174", "frontend", "cart.get", datetime(2024, 9, 26, 10, 30, 0, 10000),
             datetime(2024, 9, 26, 10, 30, 0, 110500), 100.5, "ok", "client", None, D),
            ("otel-demo", tid, "bbb19b7ec3c1b176", "aaa19b7ec3c1b175", "cart", "CartService/Get", datetime(2024, 9, 26, 10, 30, 0, 20000),
             datetime(2024, 9, 26, 10, 30, 0, 100000), 80.0, "error", "server", {"retry": "true", "attempt": "2"}, D),
        ],
        SPANS,
    ).drop("date")
    assertDataFrameEqual(bronze(lake, "spans"), spans)
    logs = spark.createDataFrame(
        [
            ("otel-demo", datetime(2024, 9, 26, 10, 30, 0, 50000), "cart", "cart-0", "ERROR", "redis timeout after 250 ms",
             tid, "bbb19b7ec3c1b176", {"db.system": "redis"}, D),
            ("otel-demo", datetime(2024, 9, 26, 10, 30, 1), "cart", "cart-0", "WARN", "cache miss ratio high", None, None, None, D),
        ],
        LOGS,
    ).drop("date")
    assertDataFrameEqual(bronze(lake, "logs"), logs)
    t0, t1 = datetime(2024, 9, 26, 10, 30), datetime(2024, 9, 26, 10, 31)
    metrics = spark.createDataFrame(
        [
            ("otel-demo", t0, "cart", "cart-0", "cpu_usage", 42.5, None, D),
            ("otel-demo", t0, "cart", "cart-0", "request_count", 1200.0, {"route": "/get"}, D),
            ("otel-demo", t1, "cart", "cart-0", "latency_ms_count", 10.0, None, D),
            ("otel-demo", t1, "cart", "cart-0", "latency_ms_sum", 250.0, None, D),
            ("otel-demo", t1, "cart", "cart-0", "latency_ms_min", 5.0, None, D),
            ("otel-demo", t1, "cart", "cart-0", "latency_ms_max", 80.0, None, D),
        ],
        METRICS,
    ).drop("date")
    assertDataFrameEqual(bronze(lake, "metrics"), metrics)
    # The truncated last line of traces.jsonl is one malformed record, kept raw in quarantine.
    q = lake.read("quarantine").select("system", "source", "record", "reason", "run_id")
    source = f"spans:file:{DATA / 'otlp' / 'traces.jsonl'}"
    expected_q = [Row(system="otel-demo", source=source,
                      record='{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name"',
                      reason="malformed_json: not an OTLP JSON object", run_id="test-run")]
    assertDataFrameEqual(q, spark.createDataFrame(expected_q))
    assert {s: (c.rows_in, c.accepted, c.quarantined, c.deduplicated) for s, c in report.signals.items()} == {
        "spans": (4, 3, 1, 0), "logs": (2, 2, 0, 0), "metrics": (6, 6, 0, 0),
    }
    assert ctx.counts["spans.in"] == 4 and ctx.counts["spans.quarantined"] == 1
    assert ctx.systems == ["otel-demo"]


def test_csv_and_json_lines_with_mapping(spark, settings, lake):
    _, report = ingest(spark, settings, lake, "csv")
    metrics = spark.createDataFrame(
        [  # Paris is UTC+2 on 2024-09-26
            ("shop", datetime(2024, 9, 26, 10, 30), "checkout", "checkout-7d9f5c6b8-x2x4q", "cpu_usage", 31.5, {"host": "node-a"}, D),
            ("shop", datetime(2024, 9, 26, 10, 31), "checkout", "checkout-7d9f5c6b8-x2x4q", "cpu_usage", 35.0, {"host": "node-a"}, D),
            ("shop", datetime(2024, 9, 26, 10, 30), "payment", "payment-5c7f8d9b4-qq9zt", "memory_usage", 512.25, {"host": "node-b"}, D),
        ],
        METRICS,
    ).drop("date")
    assertDataFrameEqual(bronze(lake, "metrics"), metrics)
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    spans = spark.createDataFrame(
        [
            ("shop", tid, "00f067aa0ba902b7", None, "checkout", "POST /pay", datetime(2024, 9, 26, 10, 30),
             datetime(2024, 9, 26, 10, 30, 0, 250500), 250.5, "ok", None, None, D),
            ("shop", tid, "00f067aa0ba902b8", "00f067aa0ba902b7", "payment", "charge", datetime(2024, 9, 26, 10, 30, 0, 10000),
             datetime(2024, 9, 26, 10, 30, 0, 210000), 200.0, "error", None, None, D),
        ],
        SPANS,
    ).drop("date")
    assertDataFrameEqual(bronze(lake, "spans"), spans)
    logs = spark.createDataFrame(
        [
            ("shop", datetime(2024, 9, 26, 10, 30, 1, 500000), "checkout", "checkout-7d9f5c6b8-x2x4q", "WARN",
             "slow payment call: 250 ms", tid, None, {"node": "node-a"}, D),
            ("shop", datetime(2024, 9, 26, 10, 30, 2), "payment", "payment-5c7f8d9b4-qq9zt", "ERROR", "card declined", None, None, None, D),
        ],
        LOGS,
    ).drop("date")
    assertDataFrameEqual(bronze(lake, "logs"), logs)
    events = lake.read("events").select("system", "ts", "service", "event_type", "message")
    assertDataFrameEqual(
        events,
        spark.createDataFrame(
            [
                Row(system="shop", ts=datetime(2024, 9, 26, 10, 29), service="payment", event_type="deploy", message="payment v2.3.1"),
                Row(system="shop", ts=datetime(2024, 9, 26, 10, 31), service="checkout", event_type="config_change",
                    message="pool size 10 -> 20"),
            ]
        ),
    )
    assert all(c.quarantined == 0 and c.reconciles for c in report.signals.values())
    assert lake.read("quarantine").count() == 0


def test_wide_metric_csv_splits_service_and_metric(spark, settings, lake):
    _, report = ingest(spark, settings, lake, "wide")
    t0, t1 = datetime(2024, 9, 26, 10, 30), datetime(2024, 9, 26, 10, 31)
    expected = spark.createDataFrame(
        [
            ("rcaeval", t0, "cartservice", None, "cpu", 0.25, None, D),
            ("rcaeval", t0, "cartservice", None, "latency-50", 12.5, None, D),
            ("rcaeval", t0, "frontend", None, "cpu", 0.5, None, D),
            ("rcaeval", t0, "frontend", None, "mem", 256.0, None, D),
            ("rcaeval", t1, "cartservice", None, "cpu", 0.3, None, D),
            ("rcaeval", t1, "frontend", None, "cpu", 0.55, None, D),
            ("rcaeval", t1, "frontend", None, "mem", 260.0, None, D),
        ],
        METRICS,
    ).drop("date")
    assertDataFrameEqual(bronze(lake, "metrics"), expected)
    # The empty cell is a record without a value: quarantined, named by its column.
    reasons = [r["reason"] for r in lake.read("quarantine").collect()]
    assert reasons == ["missing_field: value (column 'cartservice_latency-50')"]
    c = report.signals["metrics"]
    assert (c.rows_in, c.accepted, c.quarantined, c.deduplicated) == (8, 7, 1, 0)


def test_bronze_passthrough_validates_dedups_and_keeps_systems(spark, settings, lake, tmp_path):
    t = datetime(2024, 9, 26, 10, 0)
    rows = [
        ("a", t, "api", "api-1", "cpu", 1.0, {"k": "v"}, D),
        ("a", t, "api", "api-1", "cpu", 1.0, {"k": "v"}, D),  # exact duplicate
        ("b", t, "db", None, "cpu", float("nan"), None, D),  # NaN value
        ("b", t, "db", None, "cpu", 2.0, None, D),
    ]
    src = tmp_path / "bronze"
    write_table_dir(spark.createDataFrame(rows, METRICS), src / "metrics", "parquet", ["date"])
    ctx = make_ctx(spark, settings, lake.root)
    report = ingest_bronze_dir(ctx, str(src))
    expected = spark.createDataFrame([rows[0], rows[3]], METRICS)
    assertDataFrameEqual(lake.read("metrics"), expected)
    assert list(report.signals) == ["metrics"]
    c = report.signals["metrics"]
    assert (c.rows_in, c.accepted, c.quarantined, c.deduplicated) == (4, 2, 1, 1)
    q = lake.read("quarantine").first()
    assert q["system"] == "b" and q["reason"] == "nan_value: value 'NaN'" and q["source"] == f"metrics:{src / 'metrics'}"
    assert '"value":"NaN"' in q["record"] and '"service":"db"' in q["record"]
    assert ctx.systems == ["a", "b"]


def test_bronze_mapping_format_and_missing_required_column(spark, settings, lake, tmp_path):
    from meltrca.errors import InputError

    t = datetime(2024, 9, 26, 10, 0)
    src = tmp_path / "in"
    df = spark.createDataFrame([("a", t, "api", None, "cpu", 1.0, None, D)], METRICS)
    write_table_dir(df.drop("instance"), src / "good", "delta", ["date"])  # optional column missing: tolerated
    write_table_dir(df.drop("value"), src / "bad", "delta", ["date"])  # required column missing: an error
    (tmp_path / "good.yaml").write_text("system: x\nmetrics: {files: good, format: bronze}\n")
    (tmp_path / "bad.yaml").write_text("system: x\nmetrics: {files: bad, format: bronze}\n")
    ctx = make_ctx(spark, settings, lake.root)
    run_ingest(ctx, load_mapping(tmp_path / "good.yaml"), root=str(src))
    assertDataFrameEqual(lake.read("metrics"), df)
    with pytest.raises(InputError, match=r"metrics table .*/bad: missing required column\(s\) value"):
        run_ingest(ctx, load_mapping(tmp_path / "bad.yaml"), root=str(src))


def test_one_ingest_of_fifty_folders_loads_fifty_systems_each_reconciled(spark, settings, lake, tmp_path):
    """Issue 19: a metrics-only benchmark ships one folder per case; `system: {path: ...}` takes each
    record's system from its folder, so one ingest loads all of them. Case k has k % 3 + 2 samples,
    one of them repeated (deduplicated) in every fifth case and an empty cell (quarantined) in every
    seventh; each system's rows reconcile on their own and land under its name."""
    root = tmp_path / "cases"
    want, per_case = [], {}
    for k in range(50):
        case = root / f"case-{k:02d}"
        case.mkdir(parents=True)
        lines = ["time,cart_cpu,front_mem"]
        for i in range(k % 3 + 2):
            lines.append(f"{1727346600 + 60 * i},{k + i / 10},{256 + i}")
            want += [(f"case-{k:02d}", datetime(2024, 9, 26, 10, 30 + i), "cart", None, "cpu", k + i / 10, None, D),
                     (f"case-{k:02d}", datetime(2024, 9, 26, 10, 30 + i), "front", None, "mem", 256.0 + i, None, D)]
        n = 2 * (k % 3 + 2)
        dup = 2 if k % 5 == 0 else 0
        bad = 1 if k % 7 == 0 else 0
        if dup:
            lines.append(lines[1])
        if bad:
            lines.append("1727350200,,300")  # no cpu value: one record quarantined, its mem accepted
            want.append((f"case-{k:02d}", datetime(2024, 9, 26, 11, 30), "front", None, "mem", 300.0, None, D))
        per_case[f"case-{k:02d}"] = (n + dup + 2 * bad, n + bad, bad, dup)
        (case / "metrics.csv").write_text("\n".join(lines) + "\n")
    mapping = tmp_path / "cases.yaml"
    mapping.write_text(
        "system: {path: '{system}/metrics.csv'}\n"
        f"root: {root}\n"
        "metrics:\n"
        "  files: '*/metrics.csv'\n"
        "  format: wide_csv\n"
        "  fields:\n"
        "    ts: {column: time, format: epoch_s}\n"
        "  values:\n"
        "    exclude: [time]\n"
        "    split: {separator: '_', at: first}\n"
    )
    ctx = make_ctx(spark, settings, lake.root)
    report = run_ingest(ctx, load_mapping(mapping))
    assert report.systems == sorted(per_case) and ctx.systems == sorted(per_case)
    assertDataFrameEqual(bronze(lake, "metrics"), spark.createDataFrame(want, METRICS).drop("date"))
    c = report.signals["metrics"]
    got = {s: (p.rows_in, p.accepted, p.quarantined, p.deduplicated) for s, p in c.per_system.items()}
    assert got == per_case and c.reconciles
    assert (c.rows_in, c.accepted, c.quarantined, c.deduplicated) == tuple(
        sum(v[i] for v in per_case.values()) for i in range(4))
    quarantined = sorted((r["system"], r["reason"]) for r in lake.read("quarantine").collect())
    assert quarantined == [(f"case-{k:02d}", "missing_field: value (column 'cart_cpu')") for k in range(0, 50, 7)]
    assert "  case-35: in 12 = accepted 9 + quarantined 1 + deduplicated 2" in report.table()


def test_system_from_a_column_and_a_record_without_one(spark, settings, lake, tmp_path):
    """`system: {column: site}`: each record names its system; one that names none is quarantined."""
    (tmp_path / "m.csv").write_text(
        "ts,site,service,metric,value\n"
        "1727346600,eu,api,cpu,0.5\n"
        "1727346600,us,api,cpu,0.7\n"
        "1727346660,,api,cpu,0.9\n"
    )
    mapping = tmp_path / "sites.yaml"
    mapping.write_text(
        f"system: {{column: site}}\nroot: {tmp_path}\nmetrics:\n  files: m.csv\n  format: csv\n  fields:\n"
        "    ts: {column: ts, format: epoch_s}\n    service: service\n    metric: metric\n    value: value\n"
    )
    ctx = make_ctx(spark, settings, lake.root)
    report = run_ingest(ctx, load_mapping(mapping))
    t0 = datetime(2024, 9, 26, 10, 30)
    assertDataFrameEqual(bronze(lake, "metrics"), spark.createDataFrame(
        [("eu", t0, "api", None, "cpu", 0.5, None, D), ("us", t0, "api", None, "cpu", 0.7, None, D)], METRICS).drop("date"))
    assert [(r["system"], r["reason"]) for r in lake.read("quarantine").collect()] == [(None, "missing_field: system")]
    c = report.signals["metrics"]
    assert {s: (p.rows_in, p.accepted, p.quarantined) for s, p in c.per_system.items()} == {
        "eu": (1, 1, 0), "us": (1, 1, 0), None: (1, 0, 1)}
    assert report.systems == ["eu", "us"]
