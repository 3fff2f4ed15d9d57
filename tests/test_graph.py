"""Graph algorithms on a tiny service graph, with both engines: GraphFrames and native joins.

`make setup` puts GraphFrames on the classpath (from Maven Central, or built from the vendored
sources), so these tests require it: a missing jar fails them instead of quietly testing native only.
"""

from __future__ import annotations

import pytest
from pyspark.testing import assertDataFrameEqual

from meltrca import graph as graph_module
from meltrca.errors import SetupError
from meltrca.graph import choose_engine, connected_components, reachability

ENGINES = ["native", "graphframes"]


def engines(spark) -> list[str]:
    return ENGINES


@pytest.fixture
def graph(spark):
    v = spark.createDataFrame([(x,) for x in ["front", "api", "db", "cache", "batch", "queue", "lonely"]], "id string")
    e = spark.createDataFrame(
        [("front", "api"), ("api", "db"), ("api", "cache"), ("batch", "queue")], "src string, dst string"
    )
    return v, e


def test_connected_components(spark, graph):
    v, e = graph
    expected = spark.createDataFrame(
        [("api", "api"), ("cache", "api"), ("db", "api"), ("front", "api"),
         ("batch", "batch"), ("queue", "batch"), ("lonely", "lonely")],
        "id string, component string",
    )
    for engine in engines(spark):
        assertDataFrameEqual(connected_components(v, e, engine=engine), expected)


def test_reachability_follows_edge_direction(spark, graph):
    v, e = graph
    expected = spark.createDataFrame(
        [(x, x, 0) for x in ["front", "api", "db", "cache", "batch", "queue", "lonely"]]
        + [("front", "api", 1), ("front", "db", 2), ("front", "cache", 2), ("api", "db", 1),
           ("api", "cache", 1), ("batch", "queue", 1)],
        "src string, dst string, hops int",
    )
    for engine in engines(spark):
        assertDataFrameEqual(reachability(v, e, engine=engine), expected)


def test_engine_choice(spark, monkeypatch):
    assert choose_engine(spark, "native") == "native"
    assert choose_engine(spark, "auto") == "graphframes"  # the jar from `make setup` is on the classpath
    assert choose_engine(spark, "graphframes") == "graphframes"
    with pytest.raises(SetupError, match="unknown graph engine 'pagerank'"):
        choose_engine(spark, "pagerank")
    # a machine without the jar: auto falls back to native, an explicit request is a setup error
    monkeypatch.setattr(graph_module, "graphframes_available", lambda spark: False)
    assert choose_engine(spark, "auto") == "native"
    with pytest.raises(SetupError, match="make setup"):
        choose_engine(spark, "graphframes")


def test_graphframes_runs_in_the_jvm(spark, graph):
    """GraphFrames' own JVM algorithms on the hand-built graph (not our wrappers): components and a
    breadth-first search from the front door to the database."""
    from graphframes import GraphFrame

    v, e = graph
    g = GraphFrame(v, e)
    comps = g.connectedComponents(algorithm="two_phase").groupBy("component").count().select("count")
    assert sorted(r[0] for r in comps.collect()) == [1, 2, 4]
    paths = g.bfs(fromExpr="id = 'front'", toExpr="id = 'db'", maxPathLength=3)
    assert [(r["from"]["id"], r["v1"]["id"], r["to"]["id"]) for r in paths.collect()] == [("front", "api", "db")]
    assert g.bfs(fromExpr="id = 'db'", toExpr="id = 'front'", maxPathLength=3).count() == 0  # edges are directed


@pytest.mark.timeout(240)  # before the fix this hung for many minutes in the driver
def test_long_chains_do_not_blow_up_size_estimates(spark, tmp_path):
    """SPARK-52163 regression: iterated self-joins over localCheckpoint'ed rounds kept the origin
    plan's size estimate, which multiplied every round as a BigInt until the driver spent minutes
    in visitJoin and overflowed ("BigInteger would overflow supported range"). A 60-vertex path
    needs 60 label-propagation rounds without pointer jumping; every round is now read
    back from files, and jumping brings it to a handful."""
    n = 60
    names = [f"n{i:03d}" for i in range(n)]
    v = spark.createDataFrame([(x,) for x in names] + [("solo",)], "id string")
    # edges point both ways along the chain, in shuffled direction, so both orientations count
    e = spark.createDataFrame(
        [(names[i], names[i + 1]) if i % 2 else (names[i + 1], names[i]) for i in range(n - 1)], "src string, dst string"
    )
    expected = spark.createDataFrame([(x, "n000") for x in names] + [("solo", "solo")], "id string, component string")
    for engine in engines(spark):
        scratch = tmp_path / f"scratch-{engine}"
        assertDataFrameEqual(connected_components(v, e, engine=engine, scratch_dir=str(scratch)), expected)
        assert not scratch.exists()  # the rounds' files (and their empty folders) are gone once the result is kept
        plan_size = connected_components(v, e, engine=engine)._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()
        assert int(plan_size) < 2**63



def test_run_uses_graphframes_and_its_incidents_equal_the_native_engines(spark, tmp_path, capfd):
    """`meltrca run` on generated data groups and ranks with GraphFrames (auto); rca again on the same
    lake with the native engine writes the same incidents (ids, services, ranking, chain)."""
    import json

    from meltrca.io import Lake
    from meltrca.jobrunner import run_stage
    from meltrca.rca.ranking import INCIDENT_COLUMNS
    from meltrca.stages import generate, rca, run

    gen, out = tmp_path / "gen", tmp_path / "out"
    assert run_stage("generate", generate, ["--services", "5", "--duration", "2", "--faults", "1", "--seed", "122",
                                            "--output", str(gen)]) == 0
    (fault,) = json.loads((gen / "labels.json").read_text())
    capfd.readouterr()
    # `run --at`: the pipeline, then triggered RCA at the fault's start on the finished lake
    alert = tmp_path / "alert.jsonl"
    assert run_stage("run", run, ["--input", str(gen), "--output", str(out), "--at", fault["start"],
                                  "--alert-output", str(alert)]) == 0
    printed = capfd.readouterr()
    assert "graph engine graphframes" in printed.err
    assert f"root causes of the trouble around {fault['start']}" in printed.out
    (doc,) = [json.loads(line) for line in alert.read_text().splitlines()]
    assert fault["root_cause_service"] in [c["service"] for c in doc["root_causes"]]
    lake = Lake(spark, out)
    columns = [c for c in INCIDENT_COLUMNS if c not in ("run_id", "explanation", "explanation_writer")]
    by_graphframes = lake.read("incidents").select(columns).collect()

    native = tmp_path / "native.yaml"
    native.write_text("spark:\n  graph_engine: native\n")
    assert run_stage("rca", rca, ["--lake", str(out), "--config", str(native)]) == 0
    assert "graph engine native" in capfd.readouterr().err
    by_native = lake.read("incidents").select(columns)
    assertDataFrameEqual(by_native, spark.createDataFrame(by_graphframes, by_native.schema))
    # not a vacuous comparison: the injected fault's service is in an incident
    assert any(fault["root_cause_service"] in r["services"] for r in by_graphframes)


def test_a_system_without_calls_has_empty_components_and_paths(spark):
    """No spans, so no edges and no vertices (a metrics-only system): both engines give empty results
    (GraphFrames' shortest paths cannot analyse an empty landmark list, so it is never asked)."""
    v = spark.createDataFrame([], "id string")
    e = spark.createDataFrame([], "src string, dst string")
    for engine in engines(spark):
        assertDataFrameEqual(connected_components(v, e, engine=engine), spark.createDataFrame([], "id string, component string"))
        assertDataFrameEqual(reachability(v, e, engine=engine), spark.createDataFrame([], "src string, dst string, hops int"))
