"""notebooks/demo.ipynb executes top to bottom (nbclient, a kernel on this venv's Python), so it cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "demo.ipynb"
KERNEL = "meltrca-venv"


def register_kernel(root: Path) -> None:
    """A kernelspec running this interpreter (the project venv), findable through JUPYTER_PATH."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "meltrca venv",
            "language": "python",
        }),
        encoding="utf-8",
    )


@pytest.mark.slow
def test_demo_notebook_runs_end_to_end(tmp_path, monkeypatch):
    register_kernel(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MELTRCA_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("MELTRCA_DEMO_MASTER", "local[2]")
    monkeypatch.setenv("TZ", "UTC")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=900, resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / "demo.executed.ipynb")  # kept for a look after a failure
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    results = tmp_path / "demo" / "results"
    for name in ("report.html", "metadata.jsonl", "incidents.jsonl", "evaluation.json"):
        assert (results / name).is_file(), name
    ev = json.loads((results / "evaluation.json").read_text(encoding="utf-8"))
    assert ev["event_level"]["faults"] == len(json.loads((tmp_path / "demo" / "input" / "labels.json").read_text()))
    # the notebook shows the tables and the plots it promises
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert sum("text/html" in o.get("data", {}) for o in outputs) >= 6  # DataFrames rendered as tables
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    graphs = sum("image/svg+xml" in o.get("data", {}) for o in outputs)
    incidents = sum(1 for _ in (results / "incidents.jsonl").open(encoding="utf-8"))
    assert images == graphs == min(incidents, 2)
