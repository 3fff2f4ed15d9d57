"""Config loading per SPEC §6: defaults, overlay, environment, CLI; errors name the key."""

from __future__ import annotations

import pytest

from meltrca.config import Secret, load_settings
from meltrca.errors import ConfigError


def write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_hold_the_seed_keys():
    s = load_settings(environ={})
    assert s.detection.models.isolation_forest.contamination == 0.01
    assert s.detection.models.isolation_forest.n_estimators == 100
    assert s.detection.models.zscore.threshold == 3.5
    assert s.detection.models.lstm.sequence_length == 10
    assert s.detection.models.lstm.epochs == 20
    assert s.processing.batch_size == 10000
    assert s.processing.parallel_workers == 2
    assert s.output.format == "json"
    assert s.output.include_explanations is True
    assert s.detection.threshold == 0.95


def test_precedence_cli_over_env_over_file(tmp_path):
    cfg = write(tmp_path, "detection:\n  threshold: 0.9\nprocessing:\n  batch_size: 7\n")
    s = load_settings(cfg, environ={})
    assert (s.detection.threshold, s.processing.batch_size) == (0.9, 7)
    s = load_settings(cfg, environ={"ANOMALY_THRESHOLD": "0.97", "BATCH_SIZE": "11"})
    assert (s.detection.threshold, s.processing.batch_size) == (0.97, 11)
    s = load_settings(cfg, overrides={"detection.threshold": 0.99}, environ={"ANOMALY_THRESHOLD": "0.97"})
    assert s.detection.threshold == 0.99
    assert s.processing.batch_size == 7  # untouched keys keep the file's value


def test_file_overlay_keeps_sibling_defaults(tmp_path):
    cfg = write(tmp_path, "detection:\n  models:\n    zscore:\n      threshold: 4\n")
    s = load_settings(cfg, environ={})
    assert s.detection.models.zscore.threshold == 4.0
    defaults = load_settings(None, environ={})
    assert s.detection.models.zscore.rolling_window == defaults.detection.models.zscore.rolling_window
    assert s.detection.models.lstm.epochs == defaults.detection.models.lstm.epochs
    assert defaults.detection.models.zscore.threshold != 4.0  # the overlay really changed something


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("detection:\n  treshold: 0.9\n", "unknown config key 'detection.treshold'"),
        ("detection:\n  models:\n    zscore:\n      thresh: 3\n", "unknown config key 'detection.models.zscore.thresh'"),
        ("detection:\n  threshold: high\n", "config key 'detection.threshold'"),
        ("detection:\n  threshold: 1.5\n", "config key 'detection.threshold' must be in (0, 1]"),
        ("processing:\n  batch_size: 0\n", "config key 'processing.batch_size' must be >= 1"),
        ("processing:\n  batch_size: 2.5\n", "config key 'processing.batch_size'"),
        ("detection:\n  enabled: [zscore, prophet]\n", "config key 'detection.enabled'"),
        ("features:\n  window: soon\n", "config key 'features.window'"),
        ("explain:\n  writer: gpt\n", "config key 'explain.writer' must be one of template, llm"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("detection: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_environment_value_names_variable_and_key():
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"ANOMALY_THRESHOLD": "lots"})
    assert "detection.threshold" in str(err.value) and "ANOMALY_THRESHOLD" in str(err.value)


def test_missing_config_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_api_key_is_a_secret_everywhere(tmp_path):
    s = load_settings(environ={"LLM_API_KEY": "sk-secret", "LLM_BASE_URL": "http://127.0.0.1:9"})
    key = s.explain.llm.api_key
    assert isinstance(key, Secret) and key.reveal() == "sk-secret"
    for text in (repr(s), str(s.to_dict()), repr(key), str(key), repr(s.explain.llm)):
        assert "sk-secret" not in text
    assert s.to_dict()["explain"]["llm"]["api_key"] == "***"
    # A key put in a config file is wrapped the same way.
    f = load_settings(write(tmp_path, "explain:\n  llm:\n    api_key: sk-file\n"), environ={})
    assert isinstance(f.explain.llm.api_key, Secret) and "sk-file" not in repr(f)


def test_with_overrides_validates():
    s = load_settings(environ={})
    assert s.with_overrides({"rca.top_k": 3}).rca.top_k == 3
    with pytest.raises(ConfigError, match="rca.top_k"):
        s.with_overrides({"rca.top_k": 0})
