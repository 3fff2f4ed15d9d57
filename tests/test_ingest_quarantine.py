"""Bad input never vanishes: each bad record lands in quarantine with its reason; counts reconcile;
reruns replace instead of duplicating; schema drift is tolerated, a missing required column is not."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest

from conftest import run_cli
from meltrca.errors import InputError
from meltrca.ingest import load_mapping, run_ingest
from meltrca.timewindow import TimeWindow
from test_ingest_formats import DATA, make_ctx

METRIC_REASONS = sorted(
    [
        ("2024-09-26T10:01:00Z,api,cpu", "malformed_line: expected 4 fields"),
        ("2024-09-26T10:02:00Z,api,cpu,1.0,extra", "malformed_line: expected 4 fields"),
        ("yesterday,api,cpu,2", "unparsable_timestamp: ts 'yesterday'"),
        ("2024-09-26T10:03:00Z,,cpu,2", "missing_field: service"),
        ("2024-09-26T10:04:00Z,api,cpu,NaN", "nan_value: value 'NaN'"),
        ("2024-09-26T10:05:00Z,api,cpu,-Infinity", "nan_value: value '-Infinity'"),
        ("2024-09-26T10:06:00Z,api,cpu,abc", "invalid_number: value 'abc'"),
        ("2999-01-01T00:00:00Z,api,cpu,1", "future_timestamp: ts 2999-01-01T00:00:00Z"),
        ("1970-01-01T00:00:00Z,api,cpu,1", "timestamp_too_old: ts 1970-01-01T00:00:00Z"),
        ('"2024-09-26T10:07:00Z,api,cpu,1', "malformed_line: expected 4 fields"),
    ]
)
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_REASONS = sorted(
    [
        (f"{TID},00f067aa0ba902b8,00f067aa0ba902b7,db,query,1727344800001,-3,ok", "negative_duration: -3.0 ms"),
        ("xyz,00f067aa0ba902b9,,api,GET /,1727344800002,1,ok", "invalid_id: trace_id 'xyz'"),
        (f"{TID},00f067,,api,GET /,1727344800003,1,ok", "invalid_id: span_id '00f067'"),
        (f"{TID},00f067aa0ba902ba,,api,GET /,1727344800004,1,weird", "invalid_status: 'weird'"),
        (",00f067aa0ba902bb,,api,GET /,1727344800005,1,ok", "missing_field: trace_id"),
        ("00000000000000000000000000000000,00f067aa0ba902bc,,api,GET /,1727344800006,1,ok",
         "invalid_id: trace_id '00000000000000000000000000000000'"),
    ]
)
LOG_REASONS = sorted(
    [
        ("not json at all", "malformed_json: not a JSON object"),
        ('{"ts": "2024-09-26T10:00:01Z", "service": "api", "level": "LOUD", "msg": "hello"}', "invalid_level: 'LOUD'"),
        ("[1, 2, 3]", "malformed_json: not a JSON object"),
        ('{"ts": "2024-09-26T10:00:02Z", "service": "api", "level": "ERROR"}', "missing_field: message"),
    ]
)


def quarantined(lake, signal: str) -> list[tuple[str, str]]:
    rows = lake.read("quarantine").where(f"source LIKE '{signal}:%'").select("record", "reason").collect()
    return sorted((r["record"], r["reason"]) for r in rows)


def test_bad_records_land_in_quarantine_with_reasons_and_reconcile(spark, settings, lake):
    ctx = make_ctx(spark, settings, lake.root)
    mapping = load_mapping(DATA / "bad" / "mapping.yaml")
    report = run_ingest(ctx, mapping)
    assert quarantined(lake, "metrics") == METRIC_REASONS
    assert quarantined(lake, "spans") == SPAN_REASONS
    assert quarantined(lake, "logs") == LOG_REASONS
    counts = {s: (c.rows_in, c.accepted, c.quarantined, c.deduplicated) for s, c in report.signals.items()}
    assert counts == {"metrics": (13, 2, 10, 1), "spans": (8, 1, 6, 1), "logs": (7, 2, 4, 1)}
    assert all(c.reconciles for c in report.signals.values())
    assert ctx.counts["metrics.in"] == 13 and ctx.counts["metrics.deduplicated"] == 1
    # What was accepted is exactly the clean rows, duplicates once.
    assert sorted((r["ts"], r["value"]) for r in lake.read("metrics").collect()) == [
        (datetime(2024, 9, 26, 10, 0), 1.5), (datetime(2024, 9, 26, 10, 8), 2.5)
    ]
    span = lake.read("spans").first()
    assert (span["span_id"], span["duration_ms"]) == ("00f067aa0ba902b7", 12.5)  # the kept duplicate is deterministic
    assert sorted((r["level"], r["message"]) for r in lake.read("logs").collect()) == [("INFO", "started"), ("WARN", "slow")]
    sources = {r["source"] for r in lake.read("quarantine").select("source").collect()}
    assert sources == {f"{s}:file:{DATA / 'bad' / f}" for s, f in [("metrics", "metrics.csv"), ("spans", "spans.csv"), ("logs", "logs.jsonl")]}

    # The report printed for people is the same reconciliation.
    table = report.table()
    assert "metrics            13            2           10             1  ok" in table
    assert "quarantined metrics: malformed_line x 3" in table

    # Rerun: same rows, no duplicates anywhere.
    before = {t: lake.read(t).count() for t in ("metrics", "spans", "logs", "quarantine")}
    ctx2 = make_ctx(spark, settings, lake.root)
    ctx2.run_id = "rerun"
    run_ingest(ctx2, mapping)
    assert {t: lake.read(t).count() for t in before} == before
    assert {r["run_id"] for r in lake.read("quarantine").collect()} == {"rerun"}


def test_window_flag_keeps_rows_inside_and_counts_the_rest(spark, settings, lake):
    window = TimeWindow(datetime(2024, 9, 26, 10, 5), datetime(2024, 9, 26, 11, 0))
    ctx = make_ctx(spark, settings, lake.root, window)
    mapping = load_mapping(DATA / "bad" / "mapping.yaml")
    report = run_ingest(ctx, mapping)
    m = report.signals["metrics"]
    assert (m.rows_in, m.accepted, m.quarantined, m.deduplicated, m.outside_window) == (13, 1, 10, 0, 2)
    assert m.reconciles and "outside_window" in report.table()
    assert [r["ts"] for r in lake.read("metrics").collect()] == [datetime(2024, 9, 26, 10, 8)]


def test_schema_drift_tolerated_and_logged(spark, settings, lake, caplog):
    ctx = make_ctx(spark, settings, lake.root)
    logger = logging.getLogger("meltrca")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="meltrca"):
            report = run_ingest(ctx, load_mapping(DATA / "drift" / "mapping.yaml"))
    finally:
        logger.removeHandler(caplog.handler)
    rows = sorted((r["ts"].minute, r["instance"], r["value"]) for r in lake.read("metrics").collect())
    assert rows == [(0, "api-1", 1.0), (1, None, 2.0)]
    assert report.signals["metrics"].quarantined == 0
    text = caplog.text
    assert "lack optional column(s) instance" in text and "b.csv" in text
    assert "column(s) region not mapped" in text


def test_gzipped_csv_is_read_like_plain_text(spark, settings, lake, tmp_path):
    import gzip
    import shutil

    for name in ("a.csv", "b.csv"):
        with open(DATA / "drift" / name, "rb") as src, gzip.open(tmp_path / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    mapping = (DATA / "drift" / "mapping.yaml").read_text().replace('["a.csv", "b.csv"]', '"*.csv.gz"')
    (tmp_path / "mapping.yaml").write_text(mapping)
    ctx = make_ctx(spark, settings, lake.root)
    report = run_ingest(ctx, load_mapping(tmp_path / "mapping.yaml"))
    assert sorted((r["ts"].minute, r["value"]) for r in lake.read("metrics").collect()) == [(0, 1.0), (1, 2.0)]
    assert (report.signals["metrics"].rows_in, report.signals["metrics"].quarantined) == (2, 0)


def test_missing_required_column_names_column_and_file(spark, settings, lake):
    ctx = make_ctx(spark, settings, lake.root)
    with pytest.raises(InputError, match=r"metrics file file:.*/drift/c\.csv: missing required column\(s\) service"):
        run_ingest(ctx, load_mapping(DATA / "drift" / "missing-required.yaml"))


def test_cli_one_line_errors(tmp_path):
    res = run_cli("ingest", "--source", str(DATA / "drift" / "missing-required.yaml"), "--lake", str(tmp_path / "lake"))
    assert res.returncode == 3
    lines = res.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("meltrca ingest: error: metrics file file:")
    assert lines[-1].endswith("c.csv: missing required column(s) service")
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: x\nmetrics: {files: a.csv, format: csv, fields: {ts: ts, sevice: s}}\n")
    res = run_cli("ingest", "--source", str(bad), "--lake", str(tmp_path / "lake"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(
        "meltrca ingest: error: source mapping metrics[0].fields.sevice: not a field of metrics"
    )
