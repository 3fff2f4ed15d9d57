"""Finding input files through Hadoop's FileSystem (local paths, hdfs://, s3a:// alike).

Paths come back in the URI form Spark reports in ``_metadata.file_path``, so the quarantine's
``source`` column and the rerun predicate that replaces it use the very same strings.
"""

from __future__ import annotations

import re

from py4j.protocol import Py4JJavaError
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from meltrca.errors import InputError

LOCAL_URI = r"^file:/+"


def canonical_uri(uri: str) -> str:
    """'file:///a/b' and 'file:/a/b' are the same file: keep one spelling ('file:/a/b')."""
    return re.sub(LOCAL_URI, "file:/", uri)


def canonical_uri_column(col: Column) -> Column:
    """``canonical_uri`` for a column (Spark's ``_metadata.file_path``)."""
    return F.regexp_replace(col, LOCAL_URI, "file:/")


def _fs_path(spark: SparkSession, path: str):  # -> (FileSystem, Path) py4j objects
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), p


def join_root(root: str, pattern: str) -> str:
    """A glob under the root (absolute patterns and URIs are kept)."""
    if pattern.startswith("/") or "://" in pattern:
        return pattern
    return f"{root.rstrip('/')}/{pattern}"


def glob_files(spark: SparkSession, pattern: str) -> list[str]:
    """Files (not folders) matching a glob, sorted, as URIs."""
    fs, p = _fs_path(spark, pattern)
    statuses = fs.globStatus(p)
    if statuses is None:
        return []
    return sorted(canonical_uri(s.getPath().toUri().toString()) for s in statuses if s.isFile())


def path_exists(spark: SparkSession, path: str) -> bool:
    fs, p = _fs_path(spark, path)
    return bool(fs.exists(p))


def first_line(spark: SparkSession, uri: str) -> str:
    """The first line of a file (a CSV header; .gz and other Hadoop codecs decompressed), without a BOM."""
    jvm = spark.sparkContext._jvm
    fs, p = _fs_path(spark, uri)
    stream = fs.open(p)
    codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(spark.sparkContext._jsc.hadoopConfiguration()).getCodec(p)
    if codec is not None:
        stream = codec.createInputStream(stream)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        line = reader.readLine()
    finally:
        stream.close()
    if line is None:
        return ""
    return line.lstrip("\ufeff")


def resolve_inputs(spark: SparkSession, root: str, patterns: tuple[str, ...], what: str, *, must_match: bool = True) -> list[str]:
    """All files of an input's globs (each once); a root that does not exist is an InputError."""
    if not path_exists(spark, root):
        raise InputError(f"input folder not found: {root}")
    files: list[str] = []
    for pattern in patterns:
        files.extend(glob_files(spark, join_root(root, pattern)))
    unique = list(dict.fromkeys(files))
    if not unique and must_match:
        raise InputError(f"{what}: no file matches {', '.join(patterns)} under {root}")
    return unique


def unreadable_files(spark: SparkSession, files: list[str]) -> dict[str, str]:
    """Compressed files that do not decompress to their end (a truncated or corrupt .gz): file -> reason.

    Spark's text reader fails the whole job on such a file, or with ignoreCorruptFiles drops the
    rest of it without a trace. Reading each compressed file through its codec once, on the driver,
    lets ingest quarantine it by name instead (costs one decompression pass of compressed inputs).
    """
    jvm = spark.sparkContext._jvm
    factory = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(spark.sparkContext._jsc.hadoopConfiguration())
    out: dict[str, str] = {}
    for uri in files:
        fs, p = _fs_path(spark, uri)
        codec = factory.getCodec(p)
        if codec is None:
            continue
        stream = None
        try:
            stream = codec.createInputStream(fs.open(p))
            stream.transferTo(jvm.java.io.OutputStream.nullOutputStream())
        except Py4JJavaError as exc:
            java = exc.java_exception
            out[uri] = f"corrupt_file: {java.getClass().getName()}: {java.getMessage()}"[:300]
        finally:
            if stream is not None:
                stream.close()
    return out
