"""The metrics-only benchmark's reference ranker (BARO's RobustScorer, issue 19 item 7), on frames
built by hand: the numbers it compares meltrca with must be right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_metrics_only.py"
T0 = pd.Timestamp("2024-09-26 10:00:00")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_metrics_only", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def samples(service: str, metric: str, values: list[float], system: str = "shop-1", instance_offset: float = 0.0):
    """One sample a minute from T0, and a second instance offset by instance_offset (averaged away)."""
    rows = []
    for i, v in enumerate(values):
        for inst, off in (("a", -instance_offset), ("b", instance_offset)):
            rows.append({"system": system, "service": service, "instance": inst, "metric": metric,
                         "ts": T0 + pd.Timedelta(minutes=i), "value": v + off})
    return rows


def test_robust_deviation_is_the_largest_distance_from_the_median_in_iqrs(bench):
    ref = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])  # median 3, IQR 4 - 2 = 2
    assert bench.robust_deviation(ref, np.array([3.0, 8.0, -3.0, np.nan])) == 3.0  # |-3 - 3| / 2
    assert bench.robust_deviation(np.array([2.0, 2.0, 2.0]), np.array([5.0])) == 3.0  # IQR 0 counts as 1
    assert bench.robust_deviation(np.array([np.nan]), np.array([5.0])) == 0.0


def test_services_rank_by_their_largest_series_deviation_inside_the_fault(bench):
    # 10 reference minutes, then a 5-minute fault. db's cpu jumps 6 IQRs; api's latency 2 IQRs,
    # its cpu drops 4 IQRs (a drop counts as much as a rise). web is flat in its last 5 reference
    # minutes (IQR 0 counts as 1) but swung before: median 1, IQR 1 - 0.25 over all 10 minutes.
    ref = [10.0, 11.0, 12.0, 13.0, 14.0, 10.0, 11.0, 12.0, 13.0, 14.0]  # median 12, IQR 2
    rows = (samples("db", "cpu", [*ref, 24.0, 24.0, 12.0, 12.0, 12.0], instance_offset=5.0)
            + samples("db", "memory", ref + [12.0] * 5)
            + samples("api", "latency", ref + [16.0] * 5)
            + samples("api", "cpu", ref + [4.0] * 5)
            + samples("web", "cpu", [0.0, 5.0, 0.0, 5.0, 0.0] + [1.0] * 5 + [1.5] * 5)
            + samples("db", "cpu", ref + [100.0] * 5, system="other"))  # another system, not looked at
    metrics = pd.DataFrame(rows)
    start, end = T0 + pd.Timedelta(minutes=10), T0 + pd.Timedelta(minutes=14)
    got = bench.baro_ranking(metrics[metrics["system"] == "shop-1"], start, end, pd.Timedelta(minutes=10))
    want = pd.DataFrame({"service": ["db", "api", "web"], "score": [6.0, 4.0, 0.5 / 0.75], "metric": ["cpu", "cpu", "cpu"]})
    assert_frame_equal(got, want)
    # Only the reference period counts as normal: 5 minutes leave web's swings out.
    short = bench.baro_ranking(metrics[metrics["system"] == "shop-1"], start, end, pd.Timedelta(minutes=5))
    assert_frame_equal(short, want.assign(score=[6.0, 4.0, 0.5]))
    labels = [
        {"fault_id": "f1", "system": "shop-1", "root_cause_service": "api", "start": str(start), "end": str(end)},
        {"fault_id": "f2", "system": "other", "root_cause_service": "db", "start": str(start), "end": str(end)},
        {"fault_id": "f3", "system": "shop-1", "root_cause_service": "cache", "start": str(start), "end": str(end)},
    ]
    assert bench.rank_faults(metrics, labels, pd.Timedelta(minutes=10)) == [2, 1, None]


def test_the_printed_stage_lines_are_read_back(bench):
    lines = [
        "[meltrca] ingest metrics     605,710 rows     11.1s  in 605,710 = accepted 605,710 + quarantined 0",
        "2026-12-05 18:17:36,277 INFO meltrca.detect: detect fit_score over [-inf, +inf) for shop-1",
        "[meltrca] fit                 36 rows     51.9s  12 services",
        "[meltrca] export           4,045 rows      2.4s  /tmp/x",
    ]
    assert bench.stage_lines(lines) == {
        "ingest metrics": {"rows": 605710, "seconds": 11.1, "note": "in 605,710 = accepted 605,710 + quarantined 0"},
        "fit": {"rows": 36, "seconds": 51.9, "note": "12 services"},
        "export": {"rows": 4045, "seconds": 2.4, "note": "/tmp/x"},
    }
