"""Root-cause accuracy on generated data (issue 6, acceptance 1): generate (12 services, 48 h, 10
faults, fixed seed) -> ingest -> features -> detect (ensemble) -> rca -> AC@1 / AC@3 over all
faults (RCAEval definitions, SPEC §7), with the table per fault type.

Slow. Shares the generated input and features with tests/test_detect_accuracy.py (same seed, same
folder under pytest's base temp). Also a script, for other seeds:

    .venv/bin/python tests/test_rca_accuracy.py --workdir /tmp/rca-acc [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import compiled_plans
from test_detect_accuracy import ENSEMBLE, SEED, detect_and_rca, prepare, script_session


def rank_faults(spark: Any, lake: Path, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """detect (every detector) + rca on the lake; per fault: type, true service, rank, top 3."""
    from meltrca import evaluation
    from meltrca.io import Lake

    settings = detect_and_rca(spark, lake, ENSEMBLE)
    docs = [r.asDict(recursive=True) for r in Lake(spark, str(lake)).read("incidents").collect()]
    incidents = evaluation.parse_incidents(docs)
    faults = evaluation.parse_faults(labels)
    best, _ = evaluation.match_incidents(faults, incidents, timedelta(minutes=settings.rca.time_tolerance_minutes))
    out = []
    for f in sorted(faults, key=lambda f: f.start):
        inc = best.get(f.fault_id)
        out.append({
            "fault_type": f.fault_type,
            "service": f.root_cause_service,
            "rank": evaluation.rank_of(f, inc),
            "top3": list(inc.ranking[:3]) if inc is not None else [],
        })
    return out


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    from meltrca import evaluation

    by_type: dict[str, list[int | None]] = defaultdict(list)
    for r in rows:
        by_type[r["fault_type"]].append(r["rank"])
    lines = [f"{'fault type':<32}{'n':>3}{'AC@1':>7}{'AC@3':>7}"]
    for t, ranks in sorted(by_type.items()):
        ac = evaluation.root_cause_accuracy(ranks)
        lines.append(f"{t:<32}{len(ranks):>3}{ac['ac@1']:>7.2f}{ac['ac@3']:>7.2f}")
    ac = evaluation.root_cause_accuracy([r["rank"] for r in rows])
    lines.append(f"{'all faults':<32}{len(rows):>3}{ac['ac@1']:>7.2f}{ac['ac@3']:>7.2f}   Avg@5 {ac['avg@5']:.3f}")
    lines += [f"  {r['fault_type']:<30} {r['service']:<24} rank {r['rank']}  top3 {r['top3']}" for r in rows]
    return "\n".join(lines)


@pytest.mark.slow
def test_root_cause_accuracy_on_generated_faults(spark, tmp_path_factory):
    from meltrca import evaluation

    workdir = tmp_path_factory.getbasetemp() / f"accuracy-seed{SEED}"
    workdir.mkdir(exist_ok=True)
    with compiled_plans(spark):  # millions of rows: generated code pays off here
        lake, labels = prepare(spark, workdir)
        rows = rank_faults(spark, lake, labels)
    print("\n" + accuracy_table(rows))
    assert len(rows) >= 10
    ac = evaluation.root_cause_accuracy([r["rank"] for r in rows])
    assert ac["ac@1"] >= 0.8, accuracy_table(rows)
    assert ac["ac@3"] >= 0.95, accuracy_table(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="folder for the generated input and the lake (reused)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--master", default="local[2]")
    args = p.parse_args(argv)
    spark, lake, labels = script_session(args, "meltrca-rca-accuracy")
    print(accuracy_table(rank_faults(spark, lake, labels)))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
