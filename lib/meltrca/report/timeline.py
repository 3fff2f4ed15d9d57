"""Timeline plot of an incident: its top anomalous series around the incident, as an inline PNG.

Matplotlib's object API on the Agg canvas (no pyplot state, no display, safe inside notebooks and
threads). Anomalous windows are shaded red, the expected range is a green band, the incident span
is a grey band and change events are dashed vertical lines.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure

from meltrca.report.model import IncidentView

ANOMALY_COLOR = "#d62728"
EXPECTED_COLOR = "#2ca02c"
LINE_COLOR = "#1f4e79"
CHANGE_COLOR = "#9467bd"


def timeline_png(incident: IncidentView, *, dpi: int = 96) -> bytes:
    """PNG bytes: one panel per plotted series, sharing the time axis."""
    series = incident.series
    rows = max(len(series), 1)
    fig = Figure(figsize=(10, 1.0 + 1.9 * rows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    top = incident.top_cause["service"] if incident.top_cause else None
    lo, hi = _time_span(incident)
    for ax, s in zip(axes, series or [None], strict=False):
        ax.axvspan(incident.start, incident.end, color="#bbbbbb", alpha=0.25, lw=0, label="incident")
        for c in incident.changes:
            ax.axvline(c.ts, color=CHANGE_COLOR, ls="--", lw=1.2, label=f"{c.kind} ({c.service})")
        if s is None:
            ax.text(0.5, 0.5, "no anomalous series with values to plot", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
            continue
        if s.expected is not None:
            ax.axhspan(s.expected[0], s.expected[1], color=EXPECTED_COLOR, alpha=0.15, lw=0, label="expected range")
        for i, (ws, we) in enumerate(s.anomaly_windows):
            ax.axvspan(ws, we, color=ANOMALY_COLOR, alpha=0.28, lw=0, label="anomalous window" if i == 0 else None)
        if s.points:
            xs, ys = zip(*s.points, strict=True)
            ax.plot(xs, ys, color=LINE_COLOR, lw=1.4, marker="o", ms=2.5)
        else:
            ax.text(0.5, 0.5, "no feature values in the lake", ha="center", va="center", transform=ax.transAxes)
        title = s.label + ("   ← root cause" if s.service == top else "")
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold" if s.service == top else "normal")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    handles, labels = _unique_legend(axes)
    if handles:  # above the panels, never over the data
        fig.legend(handles, labels, loc="outside upper right", fontsize=8, ncols=len(handles), frameon=False)
    axes[-1].set_xlim(lo, hi)
    axes[-1].xaxis.set_major_locator(AutoDateLocator(minticks=4, maxticks=10))
    axes[-1].xaxis.set_major_formatter(DateFormatter("%H:%M"))
    axes[-1].set_xlabel(f"UTC, {incident.start:%Y-%m-%d}", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _time_span(incident: IncidentView) -> tuple[datetime, datetime]:
    """The x range: every plotted point, window and marker, and the incident itself."""
    times = [incident.start, incident.end]
    for s in incident.series:
        times += [t for t, _ in s.points]
        times += [t for w in s.anomaly_windows for t in w]
    times += [c.ts for c in incident.changes]
    lo, hi = min(times), max(times)
    return (lo, hi) if hi > lo else (lo - timedelta(minutes=1), hi + timedelta(minutes=1))


def _unique_legend(axes) -> tuple[list, list]:
    """One legend entry per label over all panels (each panel may add its own kinds)."""
    seen: dict[str, object] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for h, lab in zip(handles, labels, strict=True):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen.keys())
