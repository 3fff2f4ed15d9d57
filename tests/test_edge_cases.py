"""Edge cases of ordinary data through the whole pipeline under ANSI mode (issue 25).

Spark 4 runs ANSI SQL: a division by zero, a bad cast or an out-of-range index raises and ends the
run where Spark 3 returned null/NaN. One small bronze lake holds the shapes that trip it: a series
with one point, a constant series, a series with gaps (a point every 15 minutes), windows in which
a service has no requests at all, and a real fault (api CPU and ERROR logs, minutes 200-204). `meltrca run` must
finish and say exactly what the data supports.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from meltrca.io import Lake
from meltrca.jobrunner import run_stage
from meltrca.schemas import LOGS, METRICS, SPANS
from meltrca.stages import run

T0 = datetime(2024, 9, 26)
MINUTES = 240
QUIET = range(50, 60)  # api makes no request and writes no log line in these windows
FAULT = range(200, 205)


def at(m: int, s: int = 0) -> datetime:
    return T0 + timedelta(minutes=m, seconds=s)


def bronze(spark, root) -> None:
    rng = np.random.default_rng(5)
    cpu = 40 + rng.normal(0, 1, MINUTES)
    cpu[list(FAULT)] += 30
    metrics = [("edge", at(m), "api", "api-1", "cpu_usage", float(cpu[m]), {}, T0.date()) for m in range(MINUTES)]
    metrics += [("edge", at(m), "db", "db-1", "cpu_usage", 5.0, {}, T0.date()) for m in range(MINUTES)]  # constant
    metrics += [("edge", at(100), "lonely", "l-1", "memory_usage", 512.0, {}, T0.date())]  # one point
    metrics += [("edge", at(m), "gappy", "g-1", "cpu_usage", float(10 + m % 7), {}, T0.date()) for m in range(0, MINUTES, 15)]
    spans, logs = [], []
    for m in range(MINUTES):
        if m in QUIET:
            continue
        for i in range(3):
            start = at(m, 10 * i)
            trace = f"t{m}-{i}"
            spans.append(("edge", trace, f"{trace}a", None, "api", "GET /", start, start + timedelta(milliseconds=20),
                          20.0, "ok", "server", {}, T0.date()))
            spans.append(("edge", trace, f"{trace}d", f"{trace}a", "db", "SELECT", start, start + timedelta(milliseconds=5),
                          5.0, "ok", "server", {}, T0.date()))
        logs.append(("edge", at(m, 1), "api", "api-1", "INFO", f"served {m % 5} requests", None, None, {}, T0.date()))
        if m in FAULT:  # the fault shows in two signal kinds, so it is an incident (corroboration)
            logs += [("edge", at(m, 2 + k), "api", "api-1", "ERROR", f"worker {k} timed out", None, None, {}, T0.date())
                     for k in range(5)]
    lake = Lake(spark, root)
    lake.overwrite("metrics", spark.createDataFrame(metrics, METRICS))
    lake.overwrite("spans", spark.createDataFrame(spans, SPANS))
    lake.overwrite("logs", spark.createDataFrame(logs, LOGS))


def test_edge_case_lake_runs_end_to_end_under_ansi_mode(spark, tmp_path, capfd):
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"  # kept on: it catches real bugs
    bronze(spark, tmp_path / "input")
    out = tmp_path / "results"
    code = run_stage("run", run, ["--input", str(tmp_path / "input"), "--output", str(out), "--models", "zscore"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert not (out / "_scratch").exists()  # the graph rounds' scratch files leave nothing behind
    lake = Lake(spark, out)
    features = lake.read("features")

    # One point in, one window out; the constant and gappy series keep exactly their points.
    assertDataFrameEqual(
        features.where("service = 'lonely'").select("window_start", "component", "feature", "value"),
        spark.createDataFrame([(at(100), "metric", f"memory_usage_{agg}", 512.0) for agg in ("mean", "max", "p95")],
                              "window_start timestamp, "
                              "component string, feature string, value double"),
    )
    db = features.where("service = 'db' AND feature = 'cpu_usage_mean'")
    assert db.count() == MINUTES and db.where("value != 5.0").count() == 0
    assert sorted(r[0] for r in features.where("service = 'gappy' AND feature = 'cpu_usage_mean'").select(
        "window_start").collect()) == [at(m) for m in range(0, MINUTES, 15)]
    # Windows without requests count zero requests and have no error ratio (not a division by zero).
    quiet = {(r["feature"], r["value"]) for r in features.where(
        (F.col("service") == "api") & (F.col("component") == "trace") & F.col("window_start").isin([at(m) for m in QUIET])
    ).collect()}
    assert quiet <= {("request_count", 0.0), ("error_count", 0.0)}, quiet

    # The fault, and nothing else: the constant db, the one-point and the gappy series raise nothing.
    anomalies = lake.read("anomalies").where("component != 'event'")
    got = {(r["service"], r["feature"], r["window_start"]) for r in anomalies.collect()}
    assert {s for s, _, _ in got} == {"api"}
    assert {t for s, f, t in got if f == "cpu_usage_mean"} == {at(m) for m in FAULT}
    (incident,) = lake.read("incidents").collect()
    assert incident["root_causes"][0]["service"] == "api" and incident["start"] == at(200)
    assert lake.read("metadata").count() == anomalies.count()

    (row,) = lake.read("runs").where("job = 'run'").collect()
    assert row["status"] == "succeeded" and row["row_counts"]["documents_invalid"] == 0
    notes = row["notes"]
    assert [n.split(":")[0] for n in notes] == ["edge/gappy", "edge/lonely"]
    assert all("too short to model" in n for n in notes) and all(f"[meltrca] note: {n}" in err for n in notes)
