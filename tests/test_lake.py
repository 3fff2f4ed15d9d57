"""Lake I/O: real Delta tables, window-scoped rewrites, runs bookkeeping."""

from __future__ import annotations

import argparse
from datetime import date, datetime

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from meltrca.errors import InputError
from meltrca.io import window_predicate
from meltrca.jobrunner import JobContext
from meltrca.runs import last_successful_window_end
from meltrca.schemas import METRICS, TABLES
from meltrca.timewindow import TimeWindow


def metric_rows(system: str, hours: list[int], value: float = 1.0):
    return [
        (system, datetime(2024, 9, 26, h, 0), "api", "api-1", "cpu", value + h, {"k": "v"}, date(2024, 9, 26))
        for h in hours
    ]


def test_write_then_read_back_delta(spark, lake):
    df = spark.createDataFrame(metric_rows("a", [0, 1, 2]), METRICS)
    lake.replace_window("metrics", df, systems=["a"], window=None)
    assert (lake.root + "/metrics") == lake.path("metrics")
    assert lake.exists("metrics")
    assertDataFrameEqual(lake.read("metrics"), df)
    # The table is partitioned by date, as SPEC §3 asks of time-series tables.
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{lake.path('metrics')}`").first()
    assert detail["partitionColumns"] == ["date"]
    assert detail["format"] == "delta"


def test_rerun_of_a_window_replaces_instead_of_duplicating(spark, lake):
    morning = TimeWindow(datetime(2024, 9, 26, 0), datetime(2024, 9, 26, 6))
    evening = TimeWindow(datetime(2024, 9, 26, 18), datetime(2024, 9, 26, 23))
    lake.replace_window("metrics", spark.createDataFrame(metric_rows("a", [0, 1, 2]), METRICS), systems=["a"], window=morning)
    lake.replace_window("metrics", spark.createDataFrame(metric_rows("a", [18, 19]), METRICS), systems=["a"], window=evening)
    lake.replace_window("metrics", spark.createDataFrame(metric_rows("b", [0, 1]), METRICS), systems=["b"], window=morning)

    # Rerun system a's morning twice, the second time with corrected values and one row fewer.
    lake.replace_window("metrics", spark.createDataFrame(metric_rows("a", [0, 1, 2]), METRICS), systems=["a"], window=morning)
    lake.replace_window("metrics", spark.createDataFrame(metric_rows("a", [0, 1], 10.0), METRICS), systems=["a"], window=morning)

    expected = spark.createDataFrame(
        metric_rows("a", [0, 1], 10.0) + metric_rows("a", [18, 19]) + metric_rows("b", [0, 1]), METRICS
    )
    got = lake.read("metrics")
    assert got.count() == 6
    assertDataFrameEqual(got, expected)
    assertDataFrameEqual(lake.read("metrics", systems=["b"]), spark.createDataFrame(metric_rows("b", [0, 1]), METRICS))
    assertDataFrameEqual(
        lake.read("metrics", systems=["a"], window=evening), spark.createDataFrame(metric_rows("a", [18, 19]), METRICS)
    )


def test_rows_outside_the_window_are_refused(spark, lake):
    w = TimeWindow(datetime(2024, 9, 26, 0), datetime(2024, 9, 26, 6))
    lake.replace_window("metrics", spark.createDataFrame(metric_rows("a", [0]), METRICS), systems=["a"], window=w)
    with pytest.raises(Exception, match="(?i)replaceWhere|does not conform|DELTA_REPLACE_WHERE"):
        lake.replace_window("metrics", spark.createDataFrame(metric_rows("a", [7]), METRICS), systems=["a"], window=w)
    assertDataFrameEqual(lake.read("metrics"), spark.createDataFrame(metric_rows("a", [0]), METRICS))


def test_conform_derives_date_and_rejects_missing_columns(spark, lake):
    df = spark.createDataFrame([Row(system="a", ts=datetime(2024, 9, 27, 23, 59), service="s", metric="m", value=2.0)])
    lake.append("metrics", df)
    row = lake.read("metrics").first()
    assert row["date"] == date(2024, 9, 27) and row["instance"] is None and row["labels"] is None
    with pytest.raises(InputError, match="missing required column.*value"):
        lake.append("metrics", df.drop("value"))


def test_missing_table_reads_empty_or_fails_when_required(lake):
    assert lake.read("anomalies").count() == 0
    with pytest.raises(InputError, match="lake table 'anomalies' not found"):
        lake.read("anomalies", required=True)


def test_window_predicate_quotes_and_prunes():
    pred = window_predicate(TABLES["spans"], ["o'brien"], TimeWindow(datetime(2024, 1, 1), datetime(2024, 1, 2)))
    assert pred == (
        "system IN ('o''brien') AND `start_ts` >= TIMESTAMP'2024-01-01 00:00:00.000000' AND date >= DATE'2024-01-01'"
        " AND `start_ts` < TIMESTAMP'2024-01-02 00:00:00.000000' AND date <= DATE'2024-01-02'"
    )
    assert window_predicate(TABLES["metrics"], None, None) == "true"


def test_runs_table_records_status_and_watermark(spark, lake, settings):
    args = argparse.Namespace(lake=lake.root, debug=False)
    w = TimeWindow(datetime(2024, 9, 26, 0), datetime(2024, 9, 26, 6))
    ctx = JobContext(job="features", args=args, settings=settings, run_id="r1", window=w, lake_root=lake.root, _spark=spark)
    ctx.systems = ["a"]
    ctx.record_run("running")
    ctx.count("features", 42)
    ctx.record_run("succeeded")
    failed = JobContext(job="features", args=args, settings=settings, run_id="r2",
                        window=TimeWindow(datetime(2024, 9, 26, 6), datetime(2024, 9, 26, 12)),
                        lake_root=lake.root, _spark=spark)
    failed.record_run("failed", "boom")
    runs = {r["run_id"]: r for r in lake.read("runs").collect()}
    assert set(runs) == {"r1", "r2"}
    assert runs["r1"]["status"] == "succeeded" and runs["r1"]["row_counts"] == {"features": 42}
    assert runs["r1"]["systems"] == ["a"] and runs["r1"]["ended_at"] is not None
    assert runs["r2"]["status"] == "failed" and runs["r2"]["error"] == "boom"
    # The watermark ignores the failed run.
    assert last_successful_window_end(lake, "features") == datetime(2024, 9, 26, 6)


def test_runs_of_a_lake_made_before_notes_gain_the_column(spark, lake, settings, capsys):
    """A lake whose `runs` predates the notes column takes the next run's notes (schema evolution on merge)."""
    from pyspark.sql.types import StructType

    old = StructType([f for f in TABLES["runs"].schema.fields if f.name != "notes"])
    row = ("r0", "detect", ["a"], "{}", None, None, {}, "succeeded", datetime(2024, 9, 25), datetime(2024, 9, 25), {}, None)
    spark.createDataFrame([row], old).write.format("delta").save(lake.path("runs"))
    args = argparse.Namespace(lake=lake.root, debug=False)
    ctx = JobContext(job="detect", args=args, settings=settings, run_id="r1", window=TimeWindow(), lake_root=lake.root, _spark=spark)
    ctx.note("shop/batch: too short to model")
    ctx.record_run("succeeded")
    assert "[meltrca] note: shop/batch: too short to model" in capsys.readouterr().err
    runs = {r["run_id"]: r["notes"] for r in lake.read("runs").collect()}
    assert runs == {"r0": None, "r1": ["shop/batch: too short to model"]}
