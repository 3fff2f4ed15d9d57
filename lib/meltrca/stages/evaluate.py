"""`meltrca evaluate`: detection, root-cause and metadata metrics against labels (SPEC §7)."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meltrca import evaluation
from meltrca.config import conf_dir
from meltrca.errors import InputError
from meltrca.io import read_jsonl
from meltrca.stages.common import require_tables

if TYPE_CHECKING:
    from meltrca.jobrunner import JobContext

DESCRIPTION = "Score results against fault labels: precision/recall/F1, AC@k, Avg@5, metadata validity."

ALL_METRICS = ("accuracy", "precision", "recall", "f1", "ac@k")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR", help="results folder of `meltrca run` (its lake)")
    p.add_argument(
        "--labels", required=True, metavar="PATH", help="labels.json, or a source mapping YAML that declares labels"
    )
    p.add_argument("--path", metavar="DIR", help="with a mapping as --labels: root folder of the dataset")
    p.add_argument("--metrics", default=",".join(ALL_METRICS), help="metrics to print (default: all)")
    p.add_argument("--triggered", action="store_true",
                   help="also score triggered RCA: `rca --at` each fault's start (given the fault time, as "
                        "research tools are scored), AC@k per fault")
    p.add_argument("--window", metavar="DURATION", default="5m", help="with --triggered: rca --at's --window")


def lake_root(args: argparse.Namespace) -> str:
    return args.results


def load_labels(labels: str, root: str | None = None) -> list[dict[str, Any]]:
    """labels.json, or the labels a source mapping declares (e.g. Nezha's fault list)."""
    if labels.endswith((".yaml", ".yml")):
        from meltrca.ingest import labels_from_mapping

        return labels_from_mapping(labels, root=root)
    return evaluation.load_labels_file(labels)


def _metadata_schema() -> dict[str, Any] | None:
    path = conf_dir() / "schemas" / "metadata.schema.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def process(ctx: JobContext, *, labels: str, root: str | None = None, metrics: str = ",".join(ALL_METRICS),
            triggered: bool = False, window: str = "5m") -> dict[str, Any]:
    from pyspark.sql import functions as F

    results = Path(ctx.lake_root or ".")
    if not results.is_dir():
        raise InputError(f"results folder not found: {results}")
    wanted = [m.strip().lower() for m in metrics.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in ALL_METRICS]
    if unknown:
        raise InputError(f"--metrics: unknown metric(s) {', '.join(unknown)} (use {', '.join(ALL_METRICS)})")
    with ctx.stage("evaluate") as info:
        faults = evaluation.parse_faults(load_labels(labels, root))
        lake = ctx.lake
        inc_rows = [r.asDict(recursive=True) for r in lake.read("incidents", required=True).collect()]
        incidents = evaluation.parse_incidents(inc_rows)
        anomalies = [
            {"system": r["system"], "service": r["service"], "component": r["component"], "timestamp": r["window_start"]}
            for r in lake.read("anomalies", required=True)
            .select("system", "service", "component", "window_start")
            .toLocalIterator()
        ]
        spans = {
            r["system"]: (r["start"], r["end"])
            for r in lake.read("features", required=True)
            .groupBy("system")
            .agg(F.min("window_start").alias("start"), F.max("window_end").alias("end"))
            .collect()
        }
        meta_path = results / "metadata.jsonl"
        docs = read_jsonl(meta_path) if meta_path.is_file() else []
        s = ctx.settings
        result = evaluation.evaluate(
            faults,
            incidents,
            anomalies,
            spans,
            tolerance=timedelta(minutes=s.rca.time_tolerance_minutes),
            window=_window_delta(s.features.window),
            metadata_docs=docs,
            metadata_schema=_metadata_schema(),
        )
        result["metrics_requested"] = wanted
        if triggered:
            result["triggered"] = score_triggered(ctx, faults, window)
        (results / "evaluation.json").write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
        info["rows"] = len(faults)
        ctx.count("faults", len(faults))
        ctx.count("incidents", len(incidents))
    print(evaluation.format_table(result))
    if triggered:
        print(format_triggered(result["triggered"]))
    print(f"evaluation: {results / 'evaluation.json'}")
    return result


def score_triggered(ctx: JobContext, faults: list[evaluation.Fault], window: str) -> dict[str, Any]:
    """Triggered RCA at each fault's start (its system only): rank of the true root cause per fault."""
    from meltrca.graph import choose_engine
    from meltrca.rca.ranking import RankingParams
    from meltrca.rca.triggered import alert_incidents, reach_pairs
    from meltrca.reference import system_references
    from meltrca.stages.rca import alert_of

    s, lake = ctx.settings, ctx.lake
    params = RankingParams.from_settings(s.rca.to_dict())
    engine = choose_engine(ctx.spark, s.spark.graph_engine)
    systems = sorted({f.system for f in faults})
    pairs = reach_pairs(lake, systems, engine=engine, run_id=ctx.run_id, scratch_dir=lake.path("_scratch"))
    references = system_references(lake, systems, s)
    per_fault = []
    for f in sorted(faults, key=lambda f: (f.start, f.fault_id)):
        docs = alert_incidents(lake, params, ctx.run_id, alert=alert_of(f.start, window, s), systems=[f.system],
                               engine=engine, min_z=float(s.detection.models.zscore.threshold), pairs=pairs,
                               references=references)
        parsed = evaluation.parse_incidents(docs)
        rank = evaluation.rank_of(f, parsed[0] if parsed else None)
        per_fault.append({"fault_id": f.fault_id, "service": f.root_cause_service, "fault_type": f.fault_type,
                          "at": f.start.isoformat(), "rank": rank, "top3": list(parsed[0].ranking[:3]) if parsed else []})
    return {"window": window, "faults": per_fault,
            "accuracy": evaluation.root_cause_accuracy([r["rank"] for r in per_fault])}


def format_triggered(res: dict[str, Any]) -> str:
    acc = res["accuracy"]
    lines = [f"triggered RCA (rca --at each fault start, --window {res['window']}): "
             f"AC@1 {acc['ac@1']:.3f}  AC@3 {acc['ac@3']:.3f}  AC@5 {acc['ac@5']:.3f}  Avg@5 {acc['avg@5']:.3f}"]
    lines += [f"  {r['at'][:19]}  {r['fault_type']:<18} {r['service']:<32} rank {r['rank'] or '-':>2}  top3 {r['top3']}"
              for r in res["faults"]]
    return "\n".join(lines)


def _window_delta(text: str) -> timedelta:
    n, unit = text.split()
    return timedelta(**{unit.rstrip("s") + "s": int(n)})


def preflight(args: argparse.Namespace, settings: Any) -> None:
    require_tables(args.results, "incidents")


def execute(ctx: JobContext) -> None:
    process(ctx, labels=ctx.args.labels, root=ctx.args.path, metrics=ctx.args.metrics,
            triggered=ctx.args.triggered, window=ctx.args.window)
