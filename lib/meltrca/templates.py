"""Log message templates: mask variable parts natively, then cluster Drain-style per group.

1. ``mask_messages`` (native Spark regexes) replaces quoted strings, UUIDs, IPs, timestamps,
   hex ids and numbers with placeholders (``<STR>``, ``<UUID>``, ``<IP>``, ``<TS>``, ``<HEX>``,
   ``<NUM>``; ``12.5ms`` -> ``<NUM>ms``). Numbers glued to a word or a ``#`` (``Impl#457``, ``v2``)
   are kept: they are code locations and names, not values.
2. Distinct masked messages (far fewer than log lines) are clustered by ``TemplateMiner`` (pure
   Python, testable alone), distributed with ``applyInPandas`` over (system, token count, first
   token) groups, as Drain's fixed-depth tree does: within a group a message joins the most
   similar template when at least ``similarity`` of its tokens are equal, and positions that
   differ become ``<*>``. Templates already in ``log_templates`` are seeds that never change, so
   a template keeps its id across runs; ``template_id`` = first 16 hex of sha1(template text).
3. ``assign_templates`` joins each log line to its template through its masked text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

WILDCARD = "<*>"
# (Java regex, placeholder), applied in order.
MASKS: tuple[tuple[str, str], ...] = (
    (r"\"[^\"]*\"|'[^']*'", "<STR>"),
    (r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<UUID>"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b", "<IP>"),
    (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?", "<TS>"),
    (r"(?i)\b0x[0-9a-f]+\b", "<HEX>"),
    (r"(?i)\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", "<HEX>"),
    (r"(?<![A-Za-z0-9_#.])[-+]?\d+(?:\.\d+)?((?i:ms|us|ns|s|m|h|kb|mb|gb|kib|mib|gib|b))(?![A-Za-z0-9_])", "<NUM>$1"),
    (r"(?<![A-Za-z0-9_#.])[-+]?\d+(?:\.\d+)?(?![A-Za-z0-9_])", "<NUM>"),
)
TEMPLATE_MATCH_SCHEMA = "system string, masked string, template string, template_id string"


def template_id(template: str) -> str:
    """Stable id of a template text."""
    return hashlib.sha1(template.encode("utf-8")).hexdigest()[:16]


def tokens_of(text: str) -> list[str]:
    return text.split()


@dataclass
class TemplateMiner:
    """Drain-style clustering of masked messages that share token count and first token."""

    similarity: float = 0.5
    seeds: list[list[str]] = field(default_factory=list)
    clusters: list[list[str]] = field(default_factory=list)

    def _seed_for(self, tokens: list[str]) -> list[str] | None:
        """The most specific seed template that matches the message exactly (wildcards aside)."""
        matches = [s for s in self.seeds if len(s) == len(tokens) and all(a in (WILDCARD, b) for a, b in zip(s, tokens, strict=True))]
        if not matches:
            return None
        return min(matches, key=lambda s: (s.count(WILDCARD), " ".join(s)))

    def _best_cluster(self, tokens: list[str]) -> list[str] | None:
        best, best_key = None, (-1.0, -1)
        for c in self.clusters:
            if len(c) != len(tokens):
                continue
            same = sum(1 for a, b in zip(c, tokens, strict=True) if a == b and a != WILDCARD)
            params = c.count(WILDCARD)
            sim = same / len(tokens) if tokens else 1.0
            if (sim, params) > best_key:
                best, best_key = c, (sim, params)
        return best if best is not None and best_key[0] >= self.similarity else None

    def add(self, masked: str) -> list[str]:
        """Place one masked message; returns the (live) template token list it belongs to."""
        tokens = tokens_of(masked)
        seed = self._seed_for(tokens)
        if seed is not None:
            return seed
        cluster = self._best_cluster(tokens)
        if cluster is None:
            cluster = list(tokens)
            self.clusters.append(cluster)
            return cluster
        for i, (a, b) in enumerate(zip(cluster, tokens, strict=True)):
            if a != b:
                cluster[i] = WILDCARD
        return cluster

    def fit(self, messages: Iterable[str]) -> dict[str, str]:
        """masked message -> template text (messages in a deterministic order: caller sorts)."""
        placed = [(m, self.add(m)) for m in messages]
        return {m: " ".join(t) for m, t in placed}


def mask_messages(df: DataFrame, *, column: str = "message", output: str = "masked") -> DataFrame:
    """Add the masked, whitespace-normalised message text."""
    col = F.col(column)
    for pattern, placeholder in MASKS:
        col = F.regexp_replace(col, pattern, placeholder)
    return df.withColumn(output, F.trim(F.regexp_replace(col, r"\s+", " ")))


def _mine_group(similarity: float):
    """The applyInPandas function for one (system, n_tokens, bucket) group; plain values only."""

    def mine(pdf: pd.DataFrame) -> pd.DataFrame:
        seeds = pdf[pdf["is_seed"]]
        messages = pdf[~pdf["is_seed"]].sort_values(["count", "text"], ascending=[False, True])
        miner = TemplateMiner(similarity=similarity, seeds=[tokens_of(t) for t in seeds["text"]])
        mapping = miner.fit(messages["text"].tolist())
        system = pdf["system"].iloc[0]
        columns = {
            "system": [system] * len(mapping),
            "masked": list(mapping),
            "template": list(mapping.values()),
            "template_id": [template_id(t) for t in mapping.values()],
        }
        # object dtype even when empty (a group of seeds only), so Arrow sees strings
        return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})

    return mine


def mine_templates(masked_counts: DataFrame, seeds: DataFrame, *, similarity: float) -> DataFrame:
    """(system, masked, count) + seed templates (system, template) -> (system, masked, template, template_id)."""
    def grouped(df: DataFrame, text: str, count: F.Column, is_seed: bool) -> DataFrame:
        toks = F.split(F.col(text), " ")
        n = F.when(F.col(text) == "", F.lit(0)).otherwise(F.size(toks))
        first = F.when(n == 0, F.lit("")).otherwise(toks[0])
        # Drain's first tree level, except that a name with digits (Impl#457, G1234) keeps its own
        # group: only a placeholder or a bare number shares the wildcard group.
        bucket = F.when(first.contains("<") | ~first.rlike("[A-Za-z]"), F.lit(WILDCARD)).otherwise(first)
        return df.select(
            "system", F.col(text).alias("text"), count.alias("count"), n.alias("n_tokens"), bucket.alias("bucket"),
            F.lit(is_seed).alias("is_seed"),
        )

    rows = grouped(masked_counts, "masked", F.col("count").cast("long"), False).unionByName(
        grouped(seeds, "template", F.lit(0).cast("long"), True)
    )
    return rows.groupBy("system", "n_tokens", "bucket").applyInPandas(_mine_group(float(similarity)), TEMPLATE_MATCH_SCHEMA)


def assign_templates(masked_logs: DataFrame, matches: DataFrame) -> DataFrame:
    """Masked log rows + (system, masked) -> template_id: each log row with its template_id."""
    return masked_logs.join(matches.select("system", "masked", "template_id"), on=["system", "masked"], how="left")
