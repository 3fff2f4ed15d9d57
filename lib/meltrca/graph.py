"""Graph algorithms on Spark DataFrames: connected components and directed reachability.

Two engines return the same DataFrames: GraphFrames (when its JVM jar is on the classpath)
and a native engine of iterative Spark joins. ``spark.graph_engine: auto`` picks GraphFrames
when it is loadable, else native. Vertex ids are strings; edges are ``src -> dst``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from meltrca.errors import SetupError
from meltrca.logs import get_logger
from meltrca.spark import SETUP_HINT, graphframes_available

log = get_logger("graph")

ENGINES = ("auto", "graphframes", "native")


def choose_engine(spark: SparkSession, requested: str = "auto") -> str:
    """Resolve 'auto' to the engine that can run here; 'graphframes' without the jar is an error."""
    if requested not in ENGINES:
        raise SetupError(f"unknown graph engine {requested!r}; use one of {', '.join(ENGINES)}")
    if requested == "native":
        return "native"
    if graphframes_available(spark):
        return "graphframes"
    if requested == "graphframes":
        raise SetupError(f"GraphFrames classes are not on the Spark classpath: {SETUP_HINT}")
    return "native"


def _undirected(edges: DataFrame) -> DataFrame:
    e = edges.select(F.col("src").cast("string").alias("src"), F.col("dst").cast("string").alias("dst"))
    return e.unionByName(e.select(F.col("dst").alias("src"), F.col("src").alias("dst"))).distinct()


def connected_components(vertices: DataFrame, edges: DataFrame, *, engine: str = "auto") -> DataFrame:
    """(id, component): component = the smallest vertex id of the weakly connected component."""
    spark = vertices.sparkSession
    ids = vertices.select(F.col("id").cast("string").alias("id")).distinct().localCheckpoint()
    edges = edges.select(F.col("src").cast("string").alias("src"), F.col("dst").cast("string").alias("dst"))
    edges = edges.localCheckpoint()
    if choose_engine(spark, engine) == "graphframes":
        from graphframes import GraphFrame

        g = GraphFrame(ids, edges)
        cc = g.connectedComponents()
        # GraphFrames labels components with a long; map each to its smallest member id.
        smallest = cc.groupBy("component").agg(F.min("id").alias("label"))
        return cc.join(smallest, "component").select("id", F.col("label").alias("component"))
    return _native_components(ids, edges)


def _native_components(ids: DataFrame, edges: DataFrame, max_iterations: int = 100) -> DataFrame:
    """Min-label propagation over undirected edges until no label changes."""
    und = _undirected(edges).localCheckpoint()
    labels = ids.select("id", F.col("id").alias("component")).localCheckpoint()
    for i in range(max_iterations):
        incoming = (
            und.join(labels, und.src == labels.id)
            .select(F.col("dst").alias("id"), F.col("component").alias("candidate"))
        )
        updated = (
            labels.join(incoming, "id", "left")
            .groupBy("id")
            .agg(F.least(F.min("component"), F.min("candidate")).alias("component"))
            .localCheckpoint()
        )
        changed = updated.join(labels.withColumnRenamed("component", "old"), "id").where(
            F.col("component") != F.col("old")
        ).limit(1).count()
        labels = updated
        if changed == 0:
            log.debug("connected components converged after %d iterations", i + 1)
            return labels
    log.warning("connected components stopped after %d iterations without converging", max_iterations)
    return labels


def reachability(vertices: DataFrame, edges: DataFrame, *, engine: str = "auto") -> DataFrame:
    """(src, dst, hops): every dst reachable from src along edge direction, with the fewest hops.

    A vertex reaches itself with 0 hops. Used to ask "is this service downstream of that one?"
    """
    spark = vertices.sparkSession
    # Materialised inputs: iterative self-joins over deep lineage trip Spark's attribute resolution.
    ids = vertices.select(F.col("id").cast("string").alias("id")).distinct().localCheckpoint()
    e = edges.select(F.col("src").cast("string").alias("src"), F.col("dst").cast("string").alias("dst"))
    e = e.distinct().localCheckpoint()
    if choose_engine(spark, engine) == "graphframes":
        from graphframes import GraphFrame

        landmarks = [r["id"] for r in ids.collect()]
        sp = GraphFrame(ids, e).shortestPaths(landmarks=landmarks)
        return sp.select(F.col("id").alias("src"), F.explode("distances").alias("dst", "hops")).select(
            "src", "dst", F.col("hops").cast("int")
        )
    return _native_reachability(ids, e)


def _native_reachability(ids: DataFrame, edges: DataFrame, max_hops: int = 1000) -> DataFrame:
    """Breadth-first frontier expansion with joins; stops when no new (src, dst) pair appears."""
    known = ids.select(F.col("id").alias("src"), F.col("id").alias("dst"), F.lit(0).alias("hops")).localCheckpoint()
    frontier = known
    for hop in range(1, max_hops + 1):
        step = (
            frontier.alias("f")
            .join(edges.alias("e"), F.col("f.dst") == F.col("e.src"))
            .select(F.col("f.src").alias("src"), F.col("e.dst").alias("dst"))
            .distinct()
        )
        new = step.join(known, ["src", "dst"], "left_anti").withColumn("hops", F.lit(hop)).localCheckpoint()
        if new.limit(1).count() == 0:
            break
        known = known.unionByName(new).localCheckpoint()
        frontier = new
    return known.select("src", "dst", F.col("hops").cast("int"))
