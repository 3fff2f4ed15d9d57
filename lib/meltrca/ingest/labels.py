"""Ground-truth labels declared by a source mapping (a dataset's own fault list) -> SPEC §7 dicts.

Labels stay out of the lake: `meltrca evaluate --labels conf/sources/NAME.yaml` reads them here.
``records`` walks the JSON document: ``*`` expands a list's items or an object's values, a name
selects a key, so ``*.*`` flattens ``{"11": [{...}, ...], "12": [...]}`` (faults keyed by hour).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from meltrca.errors import InputError
from meltrca.ingest.files import join_root
from meltrca.ingest.mapping import LabelsSpec, load_mapping
from meltrca.timewindow import to_iso


def walk_records(doc: Any, path: str) -> Iterator[Any]:
    """The records at ``path`` ('*' expands lists/objects, names select keys, '.' separates steps)."""
    nodes = [doc]
    for step in [p for p in path.split(".") if p] if path not in ("", "$") else []:
        nxt: list[Any] = []
        for node in nodes:
            if step == "*":
                if isinstance(node, list):
                    nxt.extend(node)
                elif isinstance(node, dict):
                    nxt.extend(node.values())
            elif isinstance(node, dict) and step in node:
                nxt.append(node[step])
        nodes = nxt
    for node in nodes:
        if isinstance(node, list):
            yield from node
        else:
            yield node


def _load(path: str) -> list[Any]:
    with open(path, encoding="utf-8") as fh:
        if path.endswith((".jsonl", ".ndjson")):
            return [json.loads(line) for line in fh if line.strip()]
        return [json.load(fh)]


def label_from_record(rec: dict[str, Any], spec: LabelsSpec, system: str, where: str) -> dict[str, Any]:
    """One SPEC §7 label from one fault record."""
    f = spec.fields
    start = f["start"].evaluate_time(rec)
    service = f["root_cause_service"].evaluate(rec)
    if start is None or service is None:
        missing = "start" if start is None else "root_cause_service"
        raise InputError(f"labels {where}: cannot read {missing} from record {json.dumps(rec, default=str)[:200]}")
    end = f["end"].evaluate_time(rec) if "end" in f else None
    end = end or start + timedelta(minutes=spec.duration_minutes)
    affected = f["affected_services"].evaluate(rec) if "affected_services" in f else None
    fault_id = f["fault_id"].evaluate(rec) if "fault_id" in f else None
    return {
        "fault_id": fault_id or f"{system}-{start:%Y%m%dT%H%M%S}-{service}",
        "system": system,
        "root_cause_service": service,
        "fault_type": (f["fault_type"].evaluate(rec) if "fault_type" in f else None) or "unknown",
        "start": to_iso(start),
        "end": to_iso(end),
        "affected_services": [s.strip() for s in affected.split(",")] if affected else [service],
        "indicator": f["indicator"].evaluate(rec) if "indicator" in f else None,
    }


def labels_from_mapping(mapping_path: str | os.PathLike[str], root: str | None = None, system: str | None = None) -> list[dict[str, Any]]:
    """The labels a mapping declares, sorted by start; --path (root) and --system as for ingest."""
    mapping = load_mapping(mapping_path)
    if mapping.labels is None:
        raise InputError(f"source mapping {mapping.path} declares no labels")
    base = mapping.resolve_root(root)
    name = system or mapping.system or "default"
    files: list[str] = []
    for pattern in mapping.labels.files:
        files.extend(sorted(glob.glob(join_root(base, pattern))))
    if not files:
        raise InputError(f"labels: no file matches {', '.join(mapping.labels.files)} under {base}")
    out: list[dict[str, Any]] = []
    for path in dict.fromkeys(files):
        try:
            docs = _load(path)
        except ValueError as exc:
            raise InputError(f"labels file {path} is not valid JSON ({exc})") from None
        for doc in docs:
            for rec in walk_records(doc, mapping.labels.records):
                if not isinstance(rec, dict):
                    raise InputError(f"labels {path}: records path {mapping.labels.records!r} reaches a non-object {rec!r}")
                out.append(label_from_record(rec, mapping.labels, name, Path(path).name))
    return sorted(out, key=lambda lab: (lab["start"], lab["root_cause_service"]))
