"""SPEC §7 metrics on hand-made labels and incidents (no Spark)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from meltrca import evaluation as ev

T0 = datetime(2024, 9, 26, 10, 0)


def fault(fid, system, root, start_min, end_min, ftype="cpu_hog"):
    return {
        "fault_id": fid, "system": system, "root_cause_service": root, "fault_type": ftype,
        "start": (T0 + timedelta(minutes=start_min)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (T0 + timedelta(minutes=end_min)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "affected_services": [root, "front"], "indicator": "cpu_usage_mean",
    }


def incident(iid, system, start_min, end_min, ranking):
    return {
        "incident_id": iid, "system": system,
        "start": (T0 + timedelta(minutes=start_min)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (T0 + timedelta(minutes=end_min)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "root_causes": [{"service": s, "rank": r + 1, "score": 1.0 - r / 10} for r, s in enumerate(ranking)],
    }


@pytest.fixture
def case():
    faults = ev.parse_faults([
        fault("f1", "a", "db", 0, 10),
        fault("f2", "a", "cache", 60, 70, "network_delay"),
        fault("f3", "b", "auth", 0, 10),          # missed
        fault("f4", "a", "queue", 120, 130, "network_delay"),
    ])
    incidents = ev.parse_incidents([
        incident("i1", "a", 2, 12, ["db", "api"]),           # f1, rank 1
        incident("i2", "a", 61, 75, ["front", "api", "cache"]),  # f2, rank 3
        incident("i3", "a", 66, 67, ["cache"]),              # also overlaps f2, shorter overlap
        incident("i4", "a", 300, 305, ["x"]),                # false positive
        incident("i5", "b", 30, 35, ["auth"]),               # outside f3 + tolerance: false positive
        incident("i6", "a", 131, 135, ["api", "front"]),     # within 2 min tolerance of f4, root absent
    ])
    return faults, incidents


def test_event_level_counts(case):
    faults, incidents = case
    res = ev.event_level(faults, incidents, timedelta(minutes=2))
    assert res == {"precision": round(4 / 6, 4), "recall": 0.75, "f1": round(2 * (4 / 6) * 0.75 / (4 / 6 + 0.75), 4),
                   "faults": 4, "detected": 3, "incidents": 6, "false_positive_incidents": 2}


def test_best_match_and_ranks(case):
    faults, incidents = case
    best, _ = ev.match_incidents(faults, incidents, timedelta(minutes=2))
    assert {k: v.incident_id for k, v in best.items()} == {"f1": "i1", "f2": "i2", "f4": "i6"}
    ranks = [ev.rank_of(f, best.get(f.fault_id)) for f in faults]
    assert ranks == [1, 3, None, None]
    acc = ev.root_cause_accuracy(ranks)
    assert acc == {"ac@1": 0.25, "ac@2": 0.25, "ac@3": 0.5, "ac@4": 0.5, "ac@5": 0.5, "avg@5": 0.4, "n": 4}


def test_case_level_ranks_every_service_of_every_overlapping_incident(case):
    """f2 overlaps i2 (cache 3rd, score 0.8) and i3 (cache 1st, score 1.0): cache is first for the
    case; f4's only incident names api and front, not queue; f3 has none."""
    faults, incidents = case
    tol = timedelta(minutes=2)
    assert [ev.case_ranking(f, incidents, tol) for f in faults] == [
        ("db", "api"), ("cache", "front", "api"), (), ("api", "front")]
    res = ev.evaluate(faults, incidents, [], {"a": (T0, T0 + timedelta(hours=6))}, tolerance=tol,
                      window=timedelta(minutes=1))
    assert res["root_cause"]["case_level"] == {"ac@1": 0.5, "ac@2": 0.5, "ac@3": 0.5, "ac@4": 0.5, "ac@5": 0.5,
                                               "avg@5": 0.5, "n": 4}
    assert [(f["rank"], f["case_rank"]) for f in res["faults"]] == [(1, 1), (3, 1), (None, None), (None, None)]
    assert f"{'AC@1 (case level)':<28}{0.5:>10.3f}" in ev.format_table(res).splitlines()


def test_point_level_confusion():
    faults = ev.parse_faults([fault("f1", "a", "db", 0, 3)])  # windows 0,1,2
    anomalies = [
        {"system": "a", "service": "db", "component": "metric", "timestamp": T0 + timedelta(minutes=1)},
        {"system": "a", "service": "db", "component": "metric", "timestamp": T0 + timedelta(minutes=1, seconds=30)},
        {"system": "a", "service": "db", "component": "log", "timestamp": T0 + timedelta(minutes=5)},
        {"system": "a", "service": "db", "component": "event", "timestamp": T0 + timedelta(minutes=7)},  # ignored
    ]
    res = ev.point_level(faults, anomalies, {"a": (T0, T0 + timedelta(minutes=10))}, timedelta(minutes=1))
    assert (res["tp"], res["fp"], res["fn"], res["tn"]) == (1, 1, 2, 6)
    assert res["precision"] == 0.5 and res["recall"] == round(1 / 3, 4) and res["accuracy"] == 0.7


def test_full_evaluation_document(case):
    faults, incidents = case
    anomalies = [{"system": "a", "service": "db", "component": "metric", "timestamp": T0 + timedelta(minutes=3)}]
    res = ev.evaluate(faults, incidents, anomalies, {"a": (T0, T0 + timedelta(hours=6))},
                      tolerance=timedelta(minutes=2), window=timedelta(minutes=1))
    assert res["root_cause"]["detected_faults"]["ac@1"] == round(1 / 3, 4)
    assert res["per_fault_type"]["network_delay"] == {"faults": 2, "detected": 2, "ac@1": 0.0, "ac@2": 0.0,
                                                     "ac@3": 0.5, "ac@4": 0.5, "ac@5": 0.5, "avg@5": 0.3}
    assert res["per_signal"] == {"metric": {"faults_with_anomaly": 1, "recall": 0.25}}
    assert [f["rank"] for f in res["faults"]] == [1, 3, None, None]
    table = ev.format_table(res)
    assert "AC@1 (all faults)" in table and "network_delay" in table


def test_bad_labels_name_the_key(tmp_path):
    with pytest.raises(Exception, match="lacks key 'root_cause_service'"):
        ev.parse_faults([{"fault_id": "x", "system": "a", "start": "2024-01-01", "end": "2024-01-01"}])
    p = tmp_path / "labels.json"
    p.write_text("{not json")
    with pytest.raises(Exception, match="not valid JSON"):
        ev.load_labels_file(p)
