"""`meltrca report`: one self-contained report.html for a results folder.

gather (Spark, bounded reads of the lake) -> plain values (model) -> page (HTML with inline PNG
timelines from ``timeline`` and inline SVG graphs from ``graph_svg``) -> written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from meltrca.errors import ConfigError
from meltrca.io import local_path
from meltrca.logs import redact
from meltrca.report.gather import ReportParams, gather
from meltrca.report.model import ReportData
from meltrca.report.page import render_page
from meltrca.timewindow import TimeWindow

if TYPE_CHECKING:
    from meltrca.io import Lake

REPORT_NAME = "report.html"

__all__ = ["REPORT_NAME", "ReportParams", "build_report", "local_results_dir", "write_page"]


def local_results_dir(root: str) -> Path:
    """The results folder as a local path (the page is a file a person opens)."""
    path = local_path(root)
    if path is None:
        raise ConfigError(f"the results folder {root} is not a local folder: report.html is written beside the lake")
    return path


def write_page(html: str, path: Path) -> None:
    """Write atomically (temp file + rename): a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(redact(html), encoding="utf-8")
    os.replace(tmp, path)


def build_report(
    lake: Lake,
    *,
    systems: list[str] | None = None,
    window: TimeWindow | None = None,
    params: ReportParams | None = None,
    max_graph_nodes: int = 30,
) -> tuple[Path, ReportData]:
    """Gather, render and write report.html into the results folder; returns its path and content."""
    results = local_results_dir(lake.root)
    data = gather(lake, results=results, systems=systems, window=window or TimeWindow(), params=params or ReportParams())
    path = results / REPORT_NAME
    write_page(render_page(data, max_graph_nodes=max_graph_nodes), path)
    return path, data
