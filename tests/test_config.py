import dataclasses
from pathlib import Path

import pytest
import yaml

from phi1.config import (
    SHARED,
    STAGES,
    ConfigError,
    FilterConfig,
    IngestConfig,
    SourceConfig,
    field_docs,
    load_stage_config,
    read_params,
    to_dict,
)
from tests.conftest import REPO


def test_params_yaml_matches_dataclasses():
    """params.yaml holds every key of every stage, and nothing else; it builds cleanly."""
    params = read_params(REPO / "params.yaml")
    assert set(params) == set(STAGES) | set(SHARED)
    for name, cls in SHARED.items():  # the sections no single stage owns (tracking)
        assert params[name] == to_dict(cls()), name
    for stage, cls in STAGES.items():
        defaults = to_dict(cls())
        assert set(params[stage]) == set(defaults), stage
        cfg = load_stage_config(stage, REPO / "params.yaml")
        assert isinstance(cfg, cls)
        # and the values: params.yaml is the defaults written out, so a stale value
        # (e.g. a renamed metric key) cannot hide there
        assert to_dict(cfg) == defaults, stage


def test_a_gate_metric_with_at_sign_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="pass_at_1"):
        load_stage_config("register", REPO / "params.yaml", ["register.gate_metrics={eval.mbpp.pass@1: higher}"])


@pytest.mark.parametrize("cls", [*STAGES.values(), *SHARED.values(), SourceConfig], ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_overrides_apply_and_parse_yaml(tmp_path):
    p = _write(tmp_path, {"filter": {"threshold": 0.5}})
    cfg = load_stage_config("filter", p, ["filter.threshold=0.7", "filter.max_depth=8"])
    assert cfg.threshold == 0.7 and cfg.max_depth == 8
    assert isinstance(cfg, FilterConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.threshold = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    "data, overrides, message",
    [
        ({"filter": {"thresold": 0.5}}, [], "filter.thresold: unknown key"),
        ({"filter": {"threshold": "high"}}, [], "filter.threshold: expected a number"),
        ({"filter": {"n_estimators": 2.5}}, [], "filter.n_estimators: expected an integer"),
        ({"ingest": {"dedup_exact": "yes"}}, [], "ingest.dedup_exact: expected true/false"),
        ({"ingest": {"sources": [{"name": "x", "kind": "ftp", "paths": ["a"]}]}}, [], "ingest.sources[0].kind"),
        ({"ingest": {"sources": [{"kind": "local", "paths": ["a"]}]}}, [], "ingest.sources[0].name: required"),
        ({}, ["filter.threshold=2"], "filter.threshold must be in [0, 1]"),
        ({}, ["filter.top_fraction=0.2"], "exactly one of threshold and top_fraction"),
        ({}, ["nosuch.key=1"], "unknown section 'nosuch'"),
        ({}, ["filter"], "expected section.key=value"),
    ],
)
def test_bad_config_is_one_line_error_naming_the_key(tmp_path, data, overrides, message):
    p = _write(tmp_path, data)
    stage = "ingest" if "ingest" in data else "filter"
    with pytest.raises(ConfigError) as info:
        load_stage_config(stage, p, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found: .*nope.yaml"):
        load_stage_config("filter", tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("filter: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_stage_config("filter", bad)


def test_nested_sources_build(tmp_path):
    p = _write(tmp_path, {"ingest": {"sources": [
        {"name": "a", "kind": "local", "paths": ["src"]},
        {"name": "b", "kind": "jsonl", "paths": ["x.jsonl"], "content_column": "text"},
    ]}})
    cfg = load_stage_config("ingest", p)
    assert [s.name for s in cfg.sources] == ["a", "b"]
    assert cfg.sources[1].content_column == "text"
    assert cfg.sources[0].paths == ("src",)
