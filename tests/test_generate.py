"""`meltrca generate` end to end on Spark: tables, determinism, physics on the written rows, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from conftest import compiled_plans, run_cli, set_comparable
from meltrca.config import load_settings
from meltrca.generate import distributed
from meltrca.generate.labels import labels
from meltrca.generate.plan import build_plan
from meltrca.generate.schedule import DISTRACTOR_CLEARANCE_MINUTES
from meltrca.io import read_table_dir
from meltrca.jobrunner import JobContext
from meltrca.schemas import TABLES
from meltrca.stages.generate import process
from meltrca.timewindow import TimeWindow, parse_utc

SMALL = {"services": 5, "duration": 4.0, "faults": 1, "seed": 21, "requests_per_minute": 20}
BRONZE = ("metrics", "spans", "logs", "events")


def generate(spark, out: Path, **kw) -> JobContext:
    settings = load_settings(environ={}, overrides={f"generate.{k}": v for k, v in {**SMALL, **kw}.items()})
    ctx = JobContext(job="generate", args=argparse.Namespace(output=str(out), end=None), settings=settings,
                     run_id="test", window=TimeWindow(), _spark=spark)
    process(ctx, output=str(out))
    return ctx


@pytest.fixture(scope="module")
def small_run(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "a"
    ctx = generate(spark, out)
    return out, ctx


def table(spark, out: Path, name: str):
    return read_table_dir(spark, out / name)


def test_writes_the_four_bronze_tables_as_delta_with_their_schemas(spark, small_run):
    out, ctx = small_run
    for name in BRONZE:
        assert (out / name / "_delta_log").is_dir()
        df = table(spark, out, name)
        want = TABLES[name].schema
        assert [(f.name, f.dataType) for f in df.schema.fields] == [(f.name, f.dataType) for f in want.fields]
        assert ctx.counts[name] == df.count()
    assert {p.name for p in out.iterdir()} >= {*BRONZE, "labels.json", "topology.json"}
    assert ctx.counts["rows"] == sum(ctx.counts[t] for t in BRONZE)


def test_metrics_have_every_instance_sample(spark, small_run):
    """Ten metrics per running instance per sample minute: nothing missing, nothing doubled."""
    out, _ = small_run
    settings = load_settings(environ={}, overrides={f"generate.{k}": v for k, v in SMALL.items()})
    plan = build_plan(settings.generate)
    expected = 0
    for s in plan.systems[0].topology.services:
        for inst in s.instances:
            end = plan.minutes if inst.active_to is None else inst.active_to
            expected += 10 * len([m for m in range(inst.active_from, end) if m % plan.interval == 0])
    m = table(spark, out, "metrics")
    assert m.count() == expected
    assert m.groupBy("instance", "ts", "metric").count().where("count > 1").count() == 0
    assert {r.metric for r in m.select("metric").distinct().collect()} == {
        "request_rate", "error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "cpu_usage",
        "memory_usage", "conn_pool_usage", "gc_pause_ms", "thread_count"}


def test_same_seed_same_output_regardless_of_partitioning(spark, small_run, tmp_path, monkeypatch):
    out, _ = small_run
    monkeypatch.setattr(distributed, "ROWS_PER_TASK", 5000)  # many more tasks: a different split of the same units
    again = tmp_path / "b"
    generate(spark, again)
    for name in BRONZE:
        assertDataFrameEqual(table(spark, again, name), table(spark, out, name))
    assert json.loads((again / "labels.json").read_text()) == json.loads((out / "labels.json").read_text())


def test_another_seed_gives_other_data(spark, small_run, tmp_path):
    out, _ = small_run
    other = tmp_path / "c"
    generate(spark, other, seed=22, format="parquet")
    assert not (other / "metrics" / "_delta_log").exists()
    a = table(spark, out, "metrics").where("metric = 'cpu_usage'").select("value")
    b = table(spark, other, "metrics").where("metric = 'cpu_usage'").select("value")
    assert a.exceptAll(b).count() > 0.9 * a.count()


def test_written_spans_nest_inside_their_parents(spark, small_run):
    out, _ = small_run
    s = table(spark, out, "spans")
    p = s.select("trace_id", F.col("span_id").alias("parent_span_id"), F.col("start_ts").alias("p_start"),
                 F.col("end_ts").alias("p_end"))
    children = s.where("parent_span_id IS NOT NULL").join(p, ["trace_id", "parent_span_id"], "left")
    assert children.count() > 1000
    assert children.where("p_start IS NULL").count() == 0  # every parent exists in its trace
    assert children.where("start_ts < p_start OR end_ts > p_end").count() == 0
    assert s.where("parent_span_id IS NULL").count() == s.select("trace_id").distinct().count()  # one root per trace
    assert s.groupBy("span_id").count().where("count > 1").count() == 0
    bad = s.where(F.abs(F.col("duration_ms") - (F.unix_micros("end_ts") - F.unix_micros("start_ts")) / 1000) > 1e-6)
    assert bad.count() == 0


def test_logs_link_to_spans_of_their_service(spark, small_run):
    out, _ = small_run
    logs = table(spark, out, "logs").where("span_id IS NOT NULL")
    spans = table(spark, out, "spans").select("trace_id", "span_id", F.col("service").alias("span_service"))
    joined = logs.join(spans, ["trace_id", "span_id"], "left")
    assert joined.count() > 1000
    assert joined.where("span_service IS NULL OR span_service != service").count() == 0


def test_labels_and_distractor_events(spark, small_run):
    out, _ = small_run
    truth = json.loads((out / "labels.json").read_text())
    settings = load_settings(environ={}, overrides={f"generate.{k}": v for k, v in SMALL.items()})
    assert truth == labels(build_plan(settings.generate))
    events = table(spark, out, "events").collect()
    doc = json.loads((out / "topology.json").read_text())
    causes = {(e["service"], e["event_type"], e["ts"]): e["cause"] for s in doc["systems"] for e in s["events"]}
    benign = [e for e in events if causes[(e.service, e.event_type, e.ts.strftime("%Y-%m-%dT%H:%M:%SZ"))] == "distractor"]
    assert benign
    margin = DISTRACTOR_CLEARANCE_MINUTES * 60
    for e in benign:
        for lab in truth:
            assert (e.ts - parse_utc(lab["end"])).total_seconds() > margin or (
                parse_utc(lab["start"]) - e.ts).total_seconds() > margin


def test_several_systems_each_with_its_own_topology(spark, tmp_path):
    out = tmp_path / "multi"
    generate(spark, out, systems=2, services=3, duration=2.0, faults=0, format="parquet")
    for name in ("metrics", "spans", "logs"):
        systems = {r.system for r in table(spark, out, name).select("system").distinct().collect()}
        assert systems == {"shop-1", "shop-2"}
    doc = json.loads((out / "topology.json").read_text())
    assert [s["system"] for s in doc["systems"]] == ["shop-1", "shop-2"]
    assert doc["systems"][0]["services"] != doc["systems"][1]["services"]
    assert json.loads((out / "labels.json").read_text()) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--duration", "-1"], "config key 'generate.duration' must be in (0, 8760]"),
        (["--services", "0"], "config key 'generate.services' must be >= 1"),
        (["--faults", "40", "--duration", "12"], "--faults 40 does not fit in 12 h: at most 13 faults fit"),
        (["--interval", "0"], "config key 'generate.interval' must be >= 1"),
        (["--end", "2024-09-27T00:00:00Z"], "generate takes --start and --duration; --end is not used"),
        (["--start", "yesterday"], "--start 'yesterday' is not an ISO-8601 time"),
        (["--signals", "metrics,prometheus"], "config key 'generate.signals' must be a non-empty list drawn from "
                                              "metrics, logs, traces, events (got ['metrics', 'prometheus'])"),
    ],
)
def test_bad_flags_fail_in_one_line_and_write_nothing(tmp_path, flags, message):
    out = tmp_path / "out"
    res = run_cli("generate", *flags, "--output", str(out))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meltrca generate: error: ") and message in lines[0]
    assert not out.exists()


def test_cli_two_systems_parquet(spark, tmp_path):
    out = tmp_path / "cli"
    res = run_cli("generate", "--services", "3", "--duration", "1.5", "--faults", "0", "--systems", "2", "--seed", "4",
                  "--format", "parquet", "--output", str(out), "--master", "local[2]")
    assert res.returncode == 0, res.stderr
    for name in ("metrics", "spans", "logs"):
        assert any((out / name).glob("date=*/*.parquet")), name
    for name in BRONZE:
        assert not (out / name / "_delta_log").exists()
    # no faults and 1.5 h: no change events, yet the empty table still has its columns
    events = read_table_dir(spark, out / "events", "parquet")
    assert events.count() == 0 and "event_type" in events.columns
    assert "[meltrca] spans" in res.stderr and "rows" in res.stderr
    assert json.loads((out / "labels.json").read_text()) == []


def test_metrics_only_system_has_the_same_metrics_and_labels(spark, small_run, tmp_path):
    """--signals metrics (issue 19): a metrics-only system; its metrics and labels are those of the
    full system of the same seed, its spans, logs and events tables exist and are empty."""
    full, _ = small_run
    out = tmp_path / "metrics-only"
    ctx = generate(spark, out, signals=["metrics"])
    assertDataFrameEqual(table(spark, out, "metrics"), table(spark, full, "metrics"))
    for name in ("spans", "logs", "events"):
        assert (out / name / "_delta_log").is_dir() and ctx.counts[name] == 0
        assert table(spark, out, name).columns == table(spark, full, name).columns
    assert json.loads((out / "labels.json").read_text()) == json.loads((full / "labels.json").read_text())


@pytest.mark.slow
def test_acceptance_command_is_deterministic(spark, tmp_path):
    """Issue 3, acceptance 1: the documented command, twice, gives identical tables and labels."""
    args = ["generate", "--services", "12", "--duration", "24", "--interval", "1", "--faults", "8", "--seed", "3"]
    first, second = tmp_path / "d1", tmp_path / "d2"
    for out in (first, second):
        res = run_cli(*args, "--output", str(out), "--master", "local[2]")
        assert res.returncode == 0, res.stderr
    with compiled_plans(spark):  # millions of rows: compared in Spark (multiset difference both ways)
        for name in BRONZE:
            assert (first / name / "_delta_log").is_dir()
            a, b = set_comparable(table(spark, first, name)), set_comparable(table(spark, second, name))
            assert a.schema == b.schema, name
            only_first, only_second = a.exceptAll(b), b.exceptAll(a)
            assert (only_first.count(), only_second.count()) == (0, 0), (name, only_first.take(3), only_second.take(3))
            assert a.count() == b.count() > 0, name
    truth = json.loads((first / "labels.json").read_text())
    assert len(truth) == 8 and truth == json.loads((second / "labels.json").read_text())
