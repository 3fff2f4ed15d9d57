"""The Nezha Train Ticket export through conf/sources/nezha-trainticket.yaml, with no dataset code.

The default case ingests a small copy laid out as "another day" (other file names, dates and
hours) via --path; the slow case runs the whole shipped dataset through the CLI."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from conftest import NEZHA, REPO, run_cli
from meltrca.ingest import labels_from_mapping, load_mapping, run_ingest
from test_ingest_formats import make_ctx

MAPPING = REPO / "conf" / "sources" / "nezha-trainticket.yaml"
FOOD = "ts-food-service-f5756978c-6sb8t_metric.csv"
BASIC = "ts-basic-service-5dc8d4f9fd-llznp_metric.csv"


def copy_lines(src: Path, dst: Path, keep) -> list[str]:
    """Header plus the data lines `keep(index, line)` selects; returns the data lines copied."""
    lines = src.read_text(encoding="utf-8").splitlines()
    body = [line for i, line in enumerate(lines[1:]) if keep(i, line)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join([lines[0], *body]) + "\n", encoding="utf-8")
    return body


@pytest.fixture(scope="module")
def other_day(tmp_path_factory) -> Path:
    """A few Nezha files renamed as if exported another day, at other hours."""
    root = tmp_path_factory.mktemp("nezha-2023-02-07")
    src = NEZHA / "fault"
    (root / "fault").mkdir()
    (root / "fault" / "2023-02-07-fault_list.json").write_text((src / "2023-01-30-fault_list.json").read_text())
    for name in (FOOD, BASIC, "front_service.csv"):
        copy_lines(src / "metric" / name, root / "fault" / "metric" / name, lambda i, _: i < 30)
    copy_lines(NEZHA / "fault_free" / "metric" / FOOD, root / "fault_free" / "metric" / FOOD, lambda i, _: i < 30)
    copy_lines(src / "trace" / "12_44_trace.csv", root / "fault" / "trace" / "09_15_trace.csv", lambda i, _: i < 300)
    copy_lines(src / "log" / "12_44_log.csv", root / "fault" / "log" / "09_15_log.csv", lambda i, line: i < 40 or " ERROR " in line)
    return root


def count_cells(path: Path) -> tuple[int, int]:
    """(value cells, NaN cells) of a pod metric file."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    values = [v for r in rows for k, v in r.items() if k not in ("Time", "TimeStamp", "PodName", "ServiceName")]
    return len(values), sum(1 for v in values if v == "NaN")


def test_another_day_ingests_with_path_alone(spark, settings, lake, other_day):
    ctx = make_ctx(spark, settings, lake.root)
    report = run_ingest(ctx, load_mapping(MAPPING), root=str(other_day))
    assert ctx.systems == ["trainticket"]
    assert all(c.reconciles for c in report.signals.values())

    # metrics: one row per (pod file line, value column); NaN cells quarantined; the fault_free
    # copy of a fault file is all duplicates.
    files = [other_day / "fault" / "metric" / n for n in (FOOD, BASIC, "front_service.csv")]
    cells = [count_cells(f) for f in files]
    dup_cells, dup_nan = count_cells(other_day / "fault_free" / "metric" / FOOD)
    m = report.signals["metrics"]
    assert m.rows_in == sum(c for c, _ in cells) + dup_cells
    assert m.quarantined == sum(n for _, n in cells) + dup_nan
    assert m.deduplicated == dup_cells - dup_nan
    assert m.accepted == sum(c - n for c, n in cells)
    assert m.reasons == {"nan_value": m.quarantined}
    metrics = lake.read("metrics")
    assert {r[0] for r in metrics.select("service").distinct().collect()} == {"ts-food-service", "ts-basic-service", "frontend"}
    assert {r[0] for r in metrics.select("metric").distinct().collect()} == {
        "cpu_usage", "cpu_millicores", "memory_usage", "memory_usage_percent", "syscall_read", "syscall_write",
        "network_receive_bytes", "network_transmit_bytes", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
        "client_latency_p90_ms", "client_latency_p95_ms", "client_latency_p99_ms", "request_rate", "success_rate",
        "node_cpu_usage", "node_memory_usage_percent", "node_network_receive_bytes", "latency_p50_ms",
    }
    with open(files[0], newline="") as fh:
        first = next(csv.DictReader(fh))
    row = metrics.where(
        (F.col("service") == "ts-food-service") & (F.col("metric") == "client_latency_p90_ms")
        & (F.col("ts") == datetime.fromtimestamp(int(first["TimeStamp"]), UTC).replace(tzinfo=None))
    ).first()
    assert row["value"] == pytest.approx(float(first["PodClientLatencyP90(s)"]) * 1000)
    assert row["instance"] == "ts-food-service-f5756978c-6sb8t"

    # spans: root parent -> null, µs duration -> ms, service from the pod name
    s = report.signals["spans"]
    assert (s.rows_in, s.quarantined) == (300, 0) and s.accepted + s.deduplicated == 300
    with open(other_day / "fault" / "trace" / "09_15_trace.csv", newline="") as fh:
        first_span = next(csv.DictReader(fh))
    span = lake.read("spans").where(F.col("span_id") == first_span["SpanID"]).first()
    assert span["parent_span_id"] is None and span["service"] == "ts-gateway-service" and span["operation"] == "/*"
    assert span["duration_ms"] == pytest.approx(int(first_span["Duration"]) / 1000)
    assert span["start_ts"] == datetime(2023, 1, 30, 12, 44, 52, 281000)

    # logs: JSON inside the Log column, level and message split by the mapping's regexes
    lg = report.signals["logs"]
    assert lg.quarantined == 0 and lg.accepted + lg.deduplicated == lg.rows_in
    logs = lake.read("logs")
    levels = {r["level"]: r["count"] for r in logs.groupBy("level").count().collect()}
    with open(other_day / "fault" / "log" / "09_15_log.csv", newline="") as fh:
        expected_levels = Counter(json.loads(r["Log"])["log"].split()[1] for r in csv.DictReader(fh))
    assert sum(levels.values()) == lg.accepted and lg.deduplicated == 0
    assert levels == dict(expected_levels) and levels["ERROR"] >= 2
    food_error = logs.where(F.col("span_id") == "e152ab0dc5fa136f").first()
    assert (food_error["service"], food_error["level"]) == ("ts-food-service", "ERROR")
    assert food_error["ts"] == datetime(2023, 1, 30, 12, 44, 46, 726848)
    assert food_error["message"] == (
        "f.s.FoodServiceImpl#302 TraceID: d73ce60918d0671dbf3363f2736cb6d7 SpanID: e152ab0dc5fa136f [getAllFood]"
        "[Get the Get Food Request Failed!][foodStoresListResult is null][date: 2021-07-14, tripId: D1345]"
    )
    assert food_error["attributes"] == {"node": "33.33.33.76", "container": "server"}


def test_labels_from_the_mapping_with_path(other_day):
    labels = labels_from_mapping(MAPPING, root=str(other_day))
    assert len(labels) == 17
    assert labels[0] == {
        "fault_id": "trainticket-20230130T115146-ts-contacts-service", "system": "trainticket",
        "root_cause_service": "ts-contacts-service", "fault_type": "network_delay",
        "start": "2023-01-30T11:51:46Z", "end": "2023-01-30T11:54:46Z",
        "affected_services": ["ts-contacts-service"], "indicator": "latency_p90_ms_mean",
    }
    assert {lab["fault_type"] for lab in labels} == {"network_delay", "cpu_contention"}
    assert all(re.fullmatch(r"ts-[a-z0-9-]+-service", lab["root_cause_service"]) for lab in labels)


@pytest.mark.slow
def test_full_dataset_acceptance(spark, tmp_path):
    """Issue 4 acceptance 1: the whole export, ingest then features, through the CLI."""
    lake = tmp_path / "lake"
    res = run_cli("ingest", "--source", str(MAPPING), "--path", str(NEZHA), "--lake", str(lake), timeout=3600)
    assert res.returncode == 0, res.stderr
    table = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines() if line.split() and line.split()[0] in ("metrics", "logs", "spans")}
    assert set(table) == {"metrics", "logs", "spans"}
    for signal, cols in table.items():
        n_in, acc, quar, dedup = (int(x.replace(",", "")) for x in cols[:4])
        assert n_in == acc + quar + dedup and cols[4] == "ok", signal
        assert acc > 0
    res = run_cli("features", "--lake", str(lake), timeout=3600)
    assert res.returncode == 0, res.stderr
    from meltrca.io import Lake

    lk = Lake(spark, lake)
    metric_services = {r[0] for r in lk.read("metrics").select("service").distinct().collect()}
    span_services = {r[0] for r in lk.read("spans").select("service").distinct().collect()}
    feats = lk.read("features")
    assert len(metric_services) >= 45
    assert {r[0] for r in feats.where("component = 'metric'").select("service").distinct().collect()} == metric_services
    assert {r[0] for r in feats.where("feature = 'request_count'").select("service").distinct().collect()} >= {
        r[0] for r in lk.read("spans").where("parent_span_id IS NULL").select("service").distinct().collect()
    }
    assert span_services <= {r[0] for r in feats.where("component = 'trace'").select("service").distinct().collect()}
