"""`meltrca explain` (through the job runner, as the CLI calls it) then `meltrca queue` as a real
subprocess (the installed console script), with the LLM key only in the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from meltrca.explain.documents import schema_validator
from meltrca.io import Lake, read_jsonl
from meltrca.jobrunner import run_stage
from meltrca.stages import explain
from test_explain_lake import build_lake

# Slow target: an explain stage on a cold session plus a console-script JVM (~65 s on an idle 2-core machine).
pytestmark = pytest.mark.slow

SECRET = "sk-cli-never-stored-9d8e7f"


def test_explain_then_queue_from_the_command_line(spark, tmp_path, monkeypatch, capfd):
    lake = Lake(spark, tmp_path / "lake")
    build_lake(spark, lake)
    out = tmp_path / "out"
    monkeypatch.setenv("LLM_API_KEY", SECRET)
    code = run_stage("explain", explain, ["--lake", lake.root, "--output", str(out), "--master", "local[2]"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "[meltrca] metadata" in err and "[meltrca] export" in err and SECRET not in err
    validator = schema_validator("metadata")
    docs = read_jsonl(out / "metadata.jsonl")
    assert len(docs) == 74 and all(validator.is_valid(d) for d in docs)
    assert len(read_jsonl(out / "incidents.jsonl")) == 3

    sink = tmp_path / "alerts.jsonl"
    first = run_cli("queue", "--results", lake.root, "--sink", f"jsonl:{sink}", "--master", "local[2]")
    assert first.returncode == 0, first.stderr
    delivered = [json.loads(x) for x in sink.read_text().splitlines()]
    assert sorted(d["event"] for d in delivered) == ["opened", "opened", "opened", "resolved"]
    # a bad --sink is refused before Spark starts: one line, exit 2, no run recorded
    bad = run_cli("queue", "--results", lake.root, "--sink", "smtp:ops@example.com", "--master", "local[2]")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["meltrca queue: error: --sink must be jsonl:PATH or webhook:URL (got 'smtp'...)"]

    # The key given in the environment is in no file the runs wrote (runs table included).
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert all(SECRET not in row for row in lake.read("runs").toJSON().collect())
    runs = sorted((r["job"], r["status"]) for r in lake.read("runs").collect())
    assert runs == [("explain", "succeeded"), ("queue", "succeeded")]
