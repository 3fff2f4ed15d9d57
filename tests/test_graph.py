"""Graph algorithms on a tiny service graph, with every engine that can run here."""

from __future__ import annotations

import pytest
from pyspark.testing import assertDataFrameEqual

from meltrca.errors import SetupError
from meltrca.graph import choose_engine, connected_components, reachability
from meltrca.spark import graphframes_available


def engines(spark) -> list[str]:
    return ["native", "graphframes"] if graphframes_available(spark) else ["native"]


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


def test_engine_choice(spark):
    assert choose_engine(spark, "native") == "native"
    auto = choose_engine(spark, "auto")
    if graphframes_available(spark):
        assert auto == "graphframes"
    else:
        assert auto == "native"
        with pytest.raises(SetupError, match="make setup"):
            choose_engine(spark, "graphframes")


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

