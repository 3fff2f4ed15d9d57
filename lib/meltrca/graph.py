"""Graph algorithms on Spark DataFrames: connected components and directed reachability.

Two engines return the same DataFrames: GraphFrames (when its JVM jar is on the classpath)
and a native engine of iterative Spark joins. ``spark.graph_engine: auto`` picks GraphFrames
when it is loadable, else native. Vertex ids are strings; edges are ``src -> dst``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from meltrca.errors import SetupError
from meltrca.io import Scratch
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


def connected_components(
    vertices: DataFrame, edges: DataFrame, *, engine: str = "auto", scratch_dir: str | None = None
) -> DataFrame:
    """(id, component): component = the smallest vertex id of the weakly connected component.

    scratch_dir: shared folder for the rounds' files (default: Spark's checkpoint dir)."""
    spark = vertices.sparkSession
    with Scratch(spark, "components", scratch_dir) as scratch:
        ids = scratch.reread(vertices.select(F.col("id").cast("string").alias("id")).distinct())
        edges = scratch.reread(
            edges.select(F.col("src").cast("string").alias("src"), F.col("dst").cast("string").alias("dst"))
        )
        if choose_engine(spark, engine) == "graphframes":
            from graphframes import GraphFrame

            # GraphFrames checkpoints to sc's checkpoint dir (files: fresh statistics each round).
            cc = GraphFrame(ids, edges).connectedComponents(algorithm="two_phase", max_iter=1000)
            # GraphFrames labels components with a long; map each to its smallest member id.
            smallest = cc.groupBy("component").agg(F.min("id").alias("label"))
            labels = cc.join(smallest, "component").select("id", F.col("label").alias("component"))
        else:
            labels = _native_components(ids, edges, scratch)
        return scratch.keep(labels)


def _native_components(ids: DataFrame, edges: DataFrame, scratch: Scratch, max_iterations: int = 200) -> DataFrame:
    """Min-label propagation with pointer jumping over undirected edges, until no label changes.

    Each round a vertex takes the smallest label among itself and its neighbours, then the label
    of that label (jumping halves a long chain's distance per round, so a path of n vertices
    converges in O(log n) rounds instead of n). Labels are always member ids and only decrease,
    so the fixpoint labels every component with its smallest id. Every round is re-read from
    files (``Scratch``): see SPARK-52163 there.
    """
    und = scratch.reread(_undirected(edges))
    labels = scratch.reread(ids.select("id", F.col("id").alias("component")))
    for i in range(max_iterations):
        incoming = und.join(labels, und.src == labels.id).select(
            F.col("dst").alias("id"), F.col("component").alias("candidate")
        )
        propagated = (
            labels.join(incoming, "id", "left")
            .groupBy("id")
            .agg(F.least(F.min("component"), F.min("candidate")).alias("component"))
        )
        target = propagated.select(F.col("id").alias("t_id"), F.col("component").alias("t_component"))
        jumped = propagated.join(target, propagated.component == target.t_id, "left").select(
            "id", F.least(F.col("component"), F.coalesce("t_component", "component")).alias("component")
        )
        updated = scratch.reread(jumped)
        changed = (
            updated.join(labels.withColumnRenamed("component", "old"), "id")
            .where(F.col("component") != F.col("old"))
            .limit(1)
            .count()
        )
        labels = updated
        if changed == 0:
            log.debug("connected components converged after %d rounds", i + 1)
            return labels
    log.warning("connected components stopped after %d rounds without converging", max_iterations)
    return labels


def reachability(
    vertices: DataFrame, edges: DataFrame, *, engine: str = "auto", scratch_dir: str | None = None
) -> DataFrame:
    """(src, dst, hops): every dst reachable from src along edge direction, with the fewest hops.

    A vertex reaches itself with 0 hops. Used to ask "is this service downstream of that one?"
    """
    spark = vertices.sparkSession
    with Scratch(spark, "reachability", scratch_dir) as scratch:
        ids = scratch.reread(vertices.select(F.col("id").cast("string").alias("id")).distinct())
        e = edges.select(F.col("src").cast("string").alias("src"), F.col("dst").cast("string").alias("dst"))
        e = scratch.reread(e.distinct())
        landmarks = [r["id"] for r in ids.collect()] if choose_engine(spark, engine) == "graphframes" else []
        if landmarks:  # GraphFrames 0.11 fails to analyse an empty landmark map (a system without calls)
            from graphframes import GraphFrame

            sp = GraphFrame(ids, e).shortestPaths(landmarks=landmarks)
            known = sp.select(F.col("id").alias("src"), F.explode("distances").alias("dst", "hops"))
        else:
            known = _native_reachability(ids, e, scratch)
        return scratch.keep(known.select("src", "dst", F.col("hops").cast("int")))


def _native_reachability(ids: DataFrame, edges: DataFrame, scratch: Scratch, max_hops: int = 1000) -> DataFrame:
    """Breadth-first frontier expansion with joins; stops when no new (src, dst) pair appears."""
    known = scratch.reread(ids.select(F.col("id").alias("src"), F.col("id").alias("dst"), F.lit(0).alias("hops")))
    frontier = known
    for hop in range(1, max_hops + 1):
        step = (
            frontier.alias("f")
            .join(edges.alias("e"), F.col("f.dst") == F.col("e.src"))
            .select(F.col("f.src").alias("src"), F.col("e.dst").alias("dst"))
            .distinct()
        )
        new = scratch.reread(step.join(known, ["src", "dst"], "left_anti").withColumn("hops", F.lit(hop)))
        if new.limit(1).count() == 0:
            break
        known = known.unionByName(new)  # sizes add up here: no round-trip needed
        frontier = new
    return known
