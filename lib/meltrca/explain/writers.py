"""Both explanation writers behind one Spark transform, with the LLM's concurrency cap and cache.

The template writer runs where the facts are. The LLM writer runs on ``concurrency``
partitions (so at most that many requests are in flight), one HTTP client per partition; the
closure carries only plain values. Incidents whose signature (prompt version, model, knowledge
base version, facts) is in the ``explain_cache`` table reuse the cached text instead of calling
the LLM again; only real LLM answers are cached, never fallbacks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from meltrca.config import Settings
from meltrca.explain import llm as llm_writer
from meltrca.explain.template import TemplateWriter

EXPLAINED = StructType([
    StructField("system", StringType(), False),
    StructField("incident_id", StringType(), False),
    StructField("signature", StringType(), True),
    StructField("explanation", StringType(), False),
    StructField("explanation_writer", StringType(), False),
])


def llm_config(settings: Settings) -> dict[str, Any]:
    """Plain values for the LLM writer (the key revealed here, for the Authorization header only)."""
    e = settings.explain.llm
    key = e.api_key.reveal() if e.api_key else ""
    return {
        "base_url": e.base_url, "model": e.model, "api_key": key,
        "timeout_seconds": e.timeout_seconds, "max_retries": e.max_retries, "backoff_seconds": e.backoff_seconds,
        "max_tokens": e.max_tokens, "temperature": e.temperature, "max_response_chars": e.max_response_chars,
        "circuit_breaker": e.circuit_breaker,
    }


def with_signature(facts: DataFrame, *, model: str | None, kb_version: str) -> DataFrame:
    """Adds ``signature``: what an explanation depends on (facts, model, prompt, knowledge base)."""
    parts = [F.lit(llm_writer.PROMPT_VERSION), F.lit(model or ""), F.lit(kb_version), F.col("facts_json")]
    return facts.withColumn("signature", F.sha1(F.concat_ws("|", *parts)))


def write_explanations(facts: DataFrame, *, llm: Mapping[str, Any] | None) -> DataFrame:
    """mapInPandas: (system, incident_id, signature, facts_json) -> EXPLAINED rows."""
    config = dict(llm) if llm is not None else None

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        writer = llm_writer.LLMWriter(config) if config is not None else TemplateWriter()
        for pdf in batches:
            texts, used = [], []
            for raw in pdf["facts_json"]:
                text, name = writer.write(json.loads(raw))
                texts.append(text)
                used.append(name)
            yield pd.DataFrame({
                "system": pdf["system"], "incident_id": pdf["incident_id"], "signature": pdf["signature"],
                "explanation": texts, "explanation_writer": used,
            })

    return facts.select("system", "incident_id", "signature", "facts_json").mapInPandas(run, EXPLAINED)


def explain_incidents(
    facts: DataFrame,
    *,
    llm: Mapping[str, Any] | None,
    concurrency: int = 1,
    cache: DataFrame | None = None,
) -> DataFrame:
    """EXPLAINED rows for every incident: template text, or LLM text (cached or fresh, with fallback)."""
    if llm is None:
        return write_explanations(facts, llm=None)
    todo = facts
    hits = None
    if cache is not None:
        cached = cache.select("signature", "explanation").dropDuplicates(["signature"])
        hits = facts.join(cached, "signature").select(
            "system", "incident_id", "signature", "explanation", F.lit(llm_writer.WRITER).alias("explanation_writer")
        )
        todo = facts.join(cached, "signature", "left_anti")
    fresh = write_explanations(todo.repartition(max(1, int(concurrency))), llm=llm)
    return fresh if hits is None else hits.unionByName(fresh)
