"""Ingest: telemetry files in the shape a stack exports them -> validated bronze tables.

A source mapping (conf/sources/*.yaml, see ``meltrca.ingest.mapping``) says which files hold
which signal and how to read them; the built-in ``bronze`` format reads our own schema (what
`meltrca generate` writes). Bad rows go to ``quarantine`` with a reason; counts reconcile.
"""

from __future__ import annotations

from meltrca.ingest.labels import labels_from_mapping
from meltrca.ingest.mapping import SourceMapping, bronze_mapping, load_mapping
from meltrca.ingest.pipeline import IngestReport, SignalCounts, ingest_bronze_dir, run_ingest

__all__ = [
    "IngestReport",
    "SignalCounts",
    "SourceMapping",
    "bronze_mapping",
    "ingest_bronze_dir",
    "labels_from_mapping",
    "load_mapping",
    "run_ingest",
]
