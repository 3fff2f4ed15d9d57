"""The console script as a user meets it: help, exit codes, one-line errors, no leaked secrets."""

from __future__ import annotations

from conftest import run_cli
from meltrca.cli import SUBCOMMANDS

SPEC_COMMANDS = ["generate", "ingest", "features", "detect", "rca", "explain", "run", "evaluate", "report", "queue"]


def test_help_lists_every_spec_subcommand():
    res = run_cli("--help")
    assert res.returncode == 0
    listed = [line.split()[0] for line in res.stdout.split("commands:")[1].strip().splitlines()]
    assert listed == SPEC_COMMANDS
    assert list(SUBCOMMANDS) == SPEC_COMMANDS


def test_each_subcommand_has_help_with_common_flags():
    for name in ("run", "detect"):
        res = run_cli(name, "--help")
        assert res.returncode == 0, res.stderr
        for flag in ("--config", "--master", "--debug", "--verbose", "--start", "--end", "--batch-size"):
            assert flag in res.stdout
    assert "--models" in run_cli("run", "--help").stdout


def test_missing_config_file_is_one_line_naming_the_file(tmp_path):
    res = run_cli("run", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--config", "missing.yaml")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == ["meltrca run: error: config file not found: missing.yaml"]


def test_unknown_config_key_is_named(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("detection:\n  modles: {}\n")
    res = run_cli("detect", "--lake", str(tmp_path), "--config", str(cfg))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"meltrca detect: error: unknown config key 'detection.modles' ({cfg})"
    ]


def test_usage_errors_exit_2_with_one_line():
    res = run_cli("ingest", "--lake", "x")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("meltrca ingest: error: the following arguments are required: --source")
    res = run_cli("frobnicate")
    assert res.returncode == 2 and "unknown command 'frobnicate'" in res.stderr
    res = run_cli("run", "--input", "a", "--output", "b", "--models", "prophet")
    assert res.returncode == 2 and res.stderr.strip().endswith("--models: unknown detector 'prophet' (use isolation, zscore, lstm or all)")


def test_api_key_never_printed_even_with_debug(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("explain:\n  llm:\n    model: m\n")
    res = run_cli(
        "ingest", "--source", str(tmp_path / "missing.yaml"), "--lake", str(tmp_path / "lake"),
        "--config", str(cfg), "--debug",
        env={"LLM_API_KEY": "sk-secret", "LLM_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "sk-secret" not in out
    assert "'api_key': '***'" in out  # the debug settings dump shows the key redacted
