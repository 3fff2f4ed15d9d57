"""The one Spark session builder: Delta, GraphFrames jars, UTC, Arrow, quiet logs, venv workers."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyspark

from meltrca.config import Settings, conf_dir
from meltrca.errors import SetupError
from meltrca.logs import get_logger

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = get_logger("spark")

# Maven coordinates per Spark minor. Delta 4.0.x and GraphFrames' spark4 build both target
# Spark 4.0 / Scala 2.13; keep in step with conf/jars/pom.xml.
JVM_PACKAGES: dict[str, dict[str, str]] = {
    "4.0": {
        "delta": "io.delta:delta-spark_2.13:4.0.1",
        "graphframes": "io.graphframes:graphframes-spark4_2.13:0.11.0",
    },
}
SETUP_HINT = "run `make setup` (or `make jars`) to resolve the JVM jars with Maven into .jars/"
DELTA_CLASS = "io.delta.sql.DeltaSparkSessionExtension"
GRAPHFRAMES_CLASS = "org.graphframes.GraphFramePythonAPI"


def spark_minor() -> str:
    return ".".join(pyspark.__version__.split(".")[:2])


def jars_dir(settings: Settings | None = None) -> Path:
    """The local jars folder: spark.jars_dir, $MELTRCA_JARS_DIR, or .jars next to conf/."""
    configured = settings.spark.jars_dir if settings is not None else None
    if configured:
        return Path(configured)
    env = os.environ.get("MELTRCA_JARS_DIR")
    if env:
        return Path(env)
    return conf_dir().parent / ".jars"


def local_jars(settings: Settings | None = None) -> list[str]:
    d = jars_dir(settings)
    return sorted(str(p) for p in d.glob("*.jar")) if d.is_dir() else []


def _jar_conf(settings: Settings) -> dict[str, str]:
    jars = local_jars(settings)
    if any("delta-spark" in Path(j).name for j in jars):
        return {"spark.jars": ",".join(jars)}
    if settings.spark.packages_fallback:
        coords = JVM_PACKAGES.get(spark_minor())
        if coords is None:
            raise SetupError(f"no known Delta/GraphFrames coordinates for Spark {spark_minor()}")
        return {"spark.jars.packages": coords["delta"]}
    raise SetupError(f"Delta jar not found in {jars_dir(settings)}: {SETUP_HINT}")


def launched_by_spark_submit() -> bool:
    """True when this Python process was started by spark-submit (its JVM is already running)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _log4j_conf(verbose: bool) -> str | None:
    name = "log4j2-verbose.properties" if verbose else "log4j2.properties"
    path = conf_dir() / name
    return str(path) if path.is_file() else None


def session_conf(
    settings: Settings,
    *,
    master: str | None = None,
    app_name: str | None = None,
    verbose: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Every Spark setting meltrca applies, as a plain dict (spark-submit.sh reuses it)."""
    sp = settings.spark
    checkpoint = sp.checkpoint_dir or os.path.join(tempfile.gettempdir(), "meltrca-checkpoints")
    conf: dict[str, str] = {
        "spark.app.name": app_name or sp.app_name,
        "spark.sql.extensions": DELTA_CLASS,
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(sp.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": sp.driver_memory,
        "spark.ui.showConsoleProgress": "true" if verbose else "false",
        "spark.checkpoint.dir": checkpoint,
        "spark.sql.execution.pyspark.udf.faulthandler.enabled": "true",
        "spark.python.worker.faulthandler.enabled": "true",
        # Spark 4.0 carries constraints of checkpointed plans into unions and then fails to
        # resolve them ("key not found: src#..") in iterative graph joins; the rewrite buys
        # nothing for these jobs.
        "spark.sql.constraintPropagation.enabled": "false",
    }
    # Under spark-submit the master comes from its --master; the config's is a default for direct runs.
    if master or not launched_by_spark_submit():
        conf["spark.master"] = master or sp.master
    java_opts = "-Duser.timezone=UTC"
    log4j = _log4j_conf(verbose)
    if log4j:
        java_opts += f" -Dlog4j2.configurationFile=file:{log4j}"
    conf["spark.driver.extraJavaOptions"] = java_opts
    conf["spark.executor.extraJavaOptions"] = "-Duser.timezone=UTC"
    conf.update(_jar_conf(settings))
    conf.update({k: str(v) for k, v in sp.conf.items()})
    conf.update({k: str(v) for k, v in (extra or {}).items()})
    return conf


def build_session(
    settings: Settings,
    *,
    master: str | None = None,
    app_name: str | None = None,
    verbose: bool = False,
    extra: dict[str, Any] | None = None,
) -> SparkSession:
    """Start (or join) the Spark session meltrca runs in, and check Delta is really there."""
    from pyspark.sql import SparkSession

    # Executors must run this interpreter (the project venv) unless spark-submit.sh set a packed one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("TZ", "UTC")
    conf = session_conf(settings, master=master, app_name=app_name, verbose=verbose, extra=extra)
    builder = SparkSession.builder
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("INFO" if verbose else "WARN")
    spark.sparkContext.setCheckpointDir(conf["spark.checkpoint.dir"])
    if not jvm_class_available(spark, DELTA_CLASS):
        raise SetupError(f"Delta classes are not on the Spark classpath: {SETUP_HINT}")
    log.debug("spark %s session on %s", spark.version, spark.sparkContext.master)
    return spark


def jvm_class_available(spark: SparkSession, class_name: str) -> bool:
    """Whether a JVM class loads in the driver (used to report missing jars clearly)."""
    jvm = spark.sparkContext._jvm
    try:
        loader = jvm.Thread.currentThread().getContextClassLoader()
        loader.loadClass(class_name)
        return True
    except Exception:  # py4j wraps ClassNotFoundException
        return False


def graphframes_available(spark: SparkSession) -> bool:
    return jvm_class_available(spark, GRAPHFRAMES_CLASS)
