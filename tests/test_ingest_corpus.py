"""Bad input per format never crashes ingest and never vanishes (issue 25): the corpus of
tests/corpus.py through the real pipeline, asserting exact reconciliation, the reason of every
quarantined record, and every accepted row."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import corpus
from meltrca.ingest import load_mapping, run_ingest
from test_ingest_formats import make_ctx

T0 = datetime(2024, 9, 26, 10, 0)


@pytest.mark.parametrize("build", [corpus.csv_metrics, corpus.jsonl_logs, corpus.wide_csv, corpus.otlp_logs],
                         ids=["csv", "jsonl", "wide_csv", "otlp"])
def test_bad_input_corpus_is_quarantined_with_reasons_and_reconciles_exactly(spark, settings, lake, tmp_path, build):
    (tmp_path / "input").mkdir()
    c = build(tmp_path / "input")
    report = run_ingest(make_ctx(spark, settings, lake.root), load_mapping(c.mapping))
    (signal,) = report.signals
    counts = report.signals[signal]
    assert (counts.rows_in, counts.accepted, counts.quarantined, counts.deduplicated) == c.counts
    assert counts.reconciles and counts.outside_window == 0
    quarantine = [(r["source"].rsplit("/", 1)[1], r["record"], r["reason"], r["system"])
                  for r in lake.read("quarantine").collect()]
    assert sorted(quarantine) == sorted((*q, "corpus") for q in c.quarantine)
    if signal == "metrics":
        rows = [(r["service"], r["ts"], r["metric"], r["value"]) for r in lake.read("metrics").collect()]
    else:
        rows = [(r["service"], r["ts"], r["level"], r["message"]) for r in lake.read("logs").collect()]
    assert sorted(rows) == sorted((s, T0 + timedelta(minutes=m), k, v) for s, m, k, v in c.accepted)
    if signal == "logs":  # the 1 MB line is kept, cut to max_message_length and marked
        (long,) = [r for r in lake.read("logs").collect() if r["message"].startswith("xxxx")]
        assert long["attributes"]["meltrca.truncated"] == "1048576"
