import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from phi1.config import (
    SHARED,
    STAGES,
    ConfigError,
    EmbeddingConfig,
    FilterConfig,
    LLMBackendConfig,
    SourceConfig,
    TrainingConfig,
    _own_field_docs,
    field_docs,
    load_stage_config,
    read_params,
    to_dict,
)
from tests.conftest import REPO

GROUPS = (TrainingConfig, LLMBackendConfig, EmbeddingConfig)


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


@pytest.mark.parametrize("cls", [*STAGES.values(), *SHARED.values(), *GROUPS, SourceConfig], ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing


@pytest.mark.parametrize("group", GROUPS, ids=lambda c: c.__name__)
def test_a_group_is_written_once(group):
    """Each stage composed of a group has all its keys with the group's types and docs; a
    stage redeclares a group key only for its own default (and, rarely, a closer docstring)."""
    users = [cls for cls in STAGES.values() if issubclass(cls, group)]
    assert len(users) >= 2
    group_types = typing.get_type_hints(group)
    for cls in users:
        types = typing.get_type_hints(cls)
        assert {k: types[k] for k in group_types} == group_types, cls.__name__
    group_docs = set(_own_field_docs(group).values())
    for cls in STAGES.values():  # a group key's docstring lives in the group alone
        assert not set(_own_field_docs(cls).values()) & group_docs, cls.__name__


@pytest.mark.parametrize(
    "override, message",
    [
        ("pretrain.lr=0", "pretrain.lr must be > 0"),
        ("finetune.lr=-1", "finetune.lr must be > 0"),
        ("finetune.micro_batch_size=3", "finetune.global_batch_size must be a positive multiple of finetune.micro"),
        ("pretrain.warmup_steps=1000", "pretrain.warmup_steps must be in [0, max_steps]"),
        ("annotate.concurrency=0", "annotate.concurrency must be >= 1"),
        ("synthesize.max_retries=-1", "synthesize.max_retries must be >= 0"),
        ("synthesize.timeout=0", "synthesize.timeout must be > 0"),
        ("embed.embedding=bert", "embed.embedding must be 'minilm', 'hf:<dir>', 'model2vec' or 'model2vec:<dir>'"),
        ("synthesize.batch_size=0", "synthesize.max_tokens and synthesize.batch_size must be >= 1"),
        ("decontaminate.max_tokens=0", "decontaminate.max_tokens and decontaminate.batch_size must be >= 1"),
        ("annotate.timeout=fast", "annotate.timeout: expected a number"),
    ],
)
def test_a_group_check_names_the_stage_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_stage_config(override.split(".")[0], REPO / "params.yaml", [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_per_stage_defaults_of_group_keys():
    """Group keys whose default differs by stage keep each stage's own."""
    stages = {name: cls() for name, cls in STAGES.items()}
    assert (stages["embed"].max_tokens, stages["synthesize"].max_tokens, stages["decontaminate"].max_tokens) == (
        256, 128, 128)
    assert (stages["annotate"].model, stages["annotate"].timeout) == ("gpt-4o-mini", 60.0)
    assert (stages["synthesize"].model, stages["synthesize"].timeout) == ("gpt-3.5-turbo", 120.0)
    assert (stages["pretrain"].lr, stages["finetune"].lr) == (0.004, 0.001)
    assert (stages["pretrain"].export, stages["finetune"].export) == ("last", "best")


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
        ({"filter": {"dtype": "float32"}}, [], "filter.dtype: moved to embed.dtype"),
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
