"""Scale presets (pipelines/): they load and validate, `preset use` writes params.yaml
atomically or not at all, `exp-args` gives DVC the same params, dvc.yaml runs the
preset's launcher, and the Accelerate configs are what Accelerate reads them as.
(Model sizes and the two-step training runs of each preset: tests/engines/training/test_model_shapes.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from phi1.cli import app
from phi1.config import STAGES, ConfigError, load_stage_config, read_params, to_dict
from phi1.errors import Phi1Error
from phi1.pipeline_presets import changes, deep_merge, exp_args, list_presets, merged, read_preset, use, validate
from tests.conftest import REPO

PRESETS = REPO / "pipelines"
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
NAMES = ["phi-1", "phi-1-small"]  # the paper's scale
DATA_PRESETS = ["site-packages"]  # another corpus for the default model
ABLATION_PRESETS = ["site-packages-ablation", "site-packages-ablation-gpu"]  # training keys over site-packages


@pytest.fixture
def params(tmp_path) -> Path:
    """A copy of the repo's params.yaml (the embedded default)."""
    p = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", p)
    return p


def test_presets_are_listed_with_their_titles():
    assert list_presets(PRESETS) == sorted(NAMES + DATA_PRESETS + ABLATION_PRESETS)
    out = CliRunner().invoke(app, ["preset", "list", "--presets", str(PRESETS)])
    assert out.exit_code == 0
    lines = dict(line.split("\t") for line in out.output.splitlines())
    assert set(lines) == set(NAMES + DATA_PRESETS + ABLATION_PRESETS) and all(lines.values())


@pytest.mark.parametrize("name", NAMES)
def test_each_preset_validates_with_every_stage_loader(name, params):
    full = merged(name, params, PRESETS)
    for stage in STAGES:  # the merged file loads through the stage loaders the CLI uses
        assert load_stage_config(stage, _write(params.parent / f"{name}.yaml", full)) is not None
    assert full["pretrain"]["preset"] == name and full["tokenize"]["seq_len"] == 2048
    assert (full["pretrain"]["global_batch_size"], full["finetune"]["global_batch_size"]) == (1024, 256)
    assert (full["pretrain"]["lr"], full["pretrain"]["warmup_steps"]) == (1e-3, 750)
    assert (full["finetune"]["lr"], full["finetune"]["warmup_steps"], full["finetune"]["max_steps"]) == (1e-4, 50, 6000)
    assert full["ingest"]["executor"] == "slurm" and full["ingest"]["sources"][0]["dataset"] == "bigcode/the-stack-dedup"
    assert full["evaluate"]["limit"] is None
    # a section the preset does not set keeps its params.yaml values
    assert "register" not in read_preset(name, PRESETS)
    assert full["register"] == to_dict(load_stage_config("register", params))
    for stage in ("pretrain", "finetune"):  # the launcher names an Accelerate config that exists
        launch = full[stage]["launch"].split()
        assert launch[:3] == ["accelerate", "launch", "--config_file"] and launch[-2:] == ["-m", "phi1.cli"]
        assert (REPO / launch[3]).is_file() and launch[3].startswith(f"pipelines/{name}/accelerate/")


def test_paper_schedule_stops_at_phi1_base_with_the_36k_schedule_lr():
    """phi-1-base is step 24,000 of a 36,000-step linear schedule: our 24,000-step run
    with min_lr set for it follows the same learning rate at every step."""
    from phi1.config import PretrainConfig
    from phi1.engines.training.loop import lr_factor

    full = merged("phi-1", REPO / "params.yaml", PRESETS)["pretrain"]
    cfg = PretrainConfig(**{k: full[k] for k in ("lr", "min_lr", "max_steps", "warmup_steps", "schedule")})
    assert (cfg.max_steps, cfg.schedule) == (24000, "linear")
    for step in (750, 5000, 12000, 23999):
        paper = 1 - (step - 750) / (36000 - 750)  # linear decay to 0 at step 36,000
        assert lr_factor(step, cfg) == pytest.approx(paper, abs=1e-7)


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_use_writes_the_merged_params_and_prints_the_changes(params):
    shown = CliRunner().invoke(app, ["preset", "show", "phi-1", "-p", str(params), "--presets", str(PRESETS)])
    assert shown.exit_code == 0
    dry = CliRunner().invoke(app, ["preset", "use", "phi-1", "-p", str(params), "--presets", str(PRESETS),
                                   "--dry-run"])
    assert dry.exit_code == 0 and "would change" in dry.output
    assert params.read_text() == (REPO / "params.yaml").read_text()  # dry run: untouched

    out = CliRunner().invoke(app, ["preset", "use", "phi-1", "-p", str(params), "--presets", str(PRESETS)])
    assert out.exit_code == 0, out.output
    assert "  pretrain.preset: tiny -> phi-1\n" in out.output
    assert "  tokenize.seq_len: 256 -> 2048\n" in out.output
    assert yaml.safe_load(params.read_text()) == yaml.safe_load(shown.output)
    assert set(read_params(params)) == set(read_params(REPO / "params.yaml"))
    assert use("phi-1", params, PRESETS) == []  # applying it again changes nothing
    assert not [p for p in params.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_lists_are_replaced_and_mappings_merged():
    base = {"a": {"x": 1, "y": [1, 2, 3], "z": {"p": 1}}, "b": 2}
    over = {"a": {"y": [9], "z": {"q": 2}}}
    assert deep_merge(base, over) == {"a": {"x": 1, "y": [9], "z": {"p": 1, "q": 2}}, "b": 2}
    assert changes(base, deep_merge(base, over)) == [("a.y", [1, 2, 3], [9]), ("a.z.q", None, 2)]


@pytest.mark.parametrize(
    "preset, message",
    [
        ({"pretrain": {"lr": "fast"}}, "preset bad over .*params.yaml: pretrain.lr: expected a number"),
        ({"pretrain": {"lrate": 0.1}}, "pretrain.lrate: unknown key"),
        ({"pretrain": {"warmup_steps": 500}}, "pretrain.warmup_steps must be in \\[0, max_steps\\]"),
        ({"pretraining": {"lr": 0.1}}, "bad/params.yaml: unknown section 'pretraining'"),
    ],
)
def test_a_bad_preset_leaves_params_untouched(tmp_path, params, preset, message):
    presets = tmp_path / "presets"
    (presets / "bad").mkdir(parents=True)
    _write(presets / "bad" / "params.yaml", preset)
    before = params.read_bytes()
    with pytest.raises(ConfigError, match=message):
        use("bad", params, presets)
    out = CliRunner().invoke(app, ["preset", "use", "bad", "-p", str(params), "--presets", str(presets)])
    assert out.exit_code == 2 and out.output.startswith("error: ") and out.output.count("\n") == 1
    assert params.read_bytes() == before


def test_unknown_preset_names_the_known_ones(params):
    out = CliRunner().invoke(app, ["preset", "use", "phi-2", "-p", str(params), "--presets", str(PRESETS)])
    assert out.exit_code == 2
    assert out.output == "error: unknown preset 'phi-2'; known: phi-1, phi-1-small, site-packages, site-packages-ablation, site-packages-ablation-gpu\n"
    with pytest.raises(Phi1Error):
        exp_args("phi-2", params, PRESETS)


@pytest.mark.parametrize("name", NAMES)
def test_exp_args_give_dvc_the_same_params_as_use(name, params, tmp_path):
    """DVC's own `-S` code (Hydra overrides) applied to params.yaml = `preset use`."""
    from dvc.utils.hydra import apply_overrides

    args = exp_args(name, params, PRESETS)
    assert args[0::2] == ["-S"] * (len(args) // 2)
    assert "-S" in args and "++pretrain.model_overrides.attention_dropout=0.1" in args  # a key params lacks
    apply_overrides(str(params), args[1::2])
    assert validate(read_params(params), "dvc") == merged(name, REPO / "params.yaml", PRESETS)


def test_exp_args_line_survives_the_shell(params):
    """The printed line, read back by `eval` in bash, is the same argv."""
    line = CliRunner().invoke(app, ["preset", "exp-args", "phi-1", "-p", str(params), "--presets", str(PRESETS)])
    assert line.exit_code == 0
    got = subprocess.run(["bash", "-c", 'eval "set -- $PHI1_ARGS"; printf "%s\\n" "$@"'],
                         env={**os.environ, "PHI1_ARGS": line.output.strip()}, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert got == exp_args("phi-1", params, PRESETS)


def _dvc_dry(root: Path, stage: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--dry", "-s", stage], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return next(line[2:] for line in done.stdout.splitlines() if line.startswith("> "))


@pytest.mark.slow
def test_dvc_yaml_runs_the_launcher_from_params(tmp_path):
    """dvc.yaml's `${pretrain.launch}` resolves from params.yaml: `phi1` by default, the
    preset's `accelerate launch` line after `phi1 preset use`."""
    root = tmp_path / "repo"
    root.mkdir()
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copyfile(REPO / f, root / f)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for d in {d for s in ("pretrain", "finetune") for d in stages[s]["deps"]}:
        (root / d).mkdir(parents=True)  # deps must exist even for a dry run (a file dep as a folder will do)
        (root / d / "x").write_text("x")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    assert _dvc_dry(root, "pretrain").startswith("phi1 pretrain --tokens data/tokens/pretrain ")
    use("phi-1", root / "params.yaml", PRESETS)
    launcher = "accelerate launch --config_file pipelines/phi-1/accelerate/ddp-8gpu.yaml -m phi1.cli"
    assert _dvc_dry(root, "pretrain").startswith(f"{launcher} pretrain --tokens data/tokens/pretrain ")
    assert _dvc_dry(root, "finetune").startswith(f"{launcher} finetune --tokens data/tokens/finetune ")


# --------------------------------------------------------------------------- Accelerate configs


def _launch_args(config: Path):
    """The launch arguments Accelerate derives from a config file (as `accelerate launch` does)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "phi1.cli", "pretrain"])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize("name", NAMES)
def test_accelerate_configs_parse_with_accelerates_own_loader(name):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    folder = PRESETS / name / "accelerate"
    assert sorted(p.name for p in folder.glob("*.yaml")) == [
        "ddp-8gpu.yaml", "ddp-multinode.yaml", "fsdp-8gpu.yaml", "fsdp-multinode.yaml"]
    for f in folder.glob("*.yaml"):
        cfg = ClusterConfig.from_yaml_file(str(f))
        args = _launch_args(f)
        assert cfg.mixed_precision == args.mixed_precision == "bf16", f.name
        multinode = "multinode" in f.name
        assert (args.num_machines, args.num_processes) == ((2, 16) if multinode else (1, 8)), f.name
        if multinode:
            assert args.main_process_ip and args.main_process_port == 29500 and args.machine_rank == 0
        if f.name.startswith("ddp"):
            assert cfg.distributed_type == DistributedType.MULTI_GPU and args.multi_gpu and not args.use_fsdp
        else:
            assert cfg.distributed_type == DistributedType.FSDP and args.use_fsdp
            assert (args.fsdp_version, args.fsdp_reshard_after_forward) == (1, "FULL_SHARD")
            assert args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"


def test_fsdp_wraps_the_phi_decoder_layer_class():
    """The class name FSDP wraps (passed to the processes as FSDP_TRANSFORMER_CLS_TO_WRAP)
    is the class of each transformer block of phi1's model."""
    from accelerate.utils.launch import prepare_multi_gpu_env

    import torch
    from transformers import AutoModelForCausalLM

    from phi1.engines.training.model_shapes import build_config

    env = prepare_multi_gpu_env(_launch_args(PRESETS / "phi-1" / "accelerate" / "fsdp-8gpu.yaml"))
    assert env["ACCELERATE_USE_FSDP"] == "true"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(build_config("tiny", 512, 64))
    assert {type(layer).__name__ for layer in model.model.layers} == {env["FSDP_TRANSFORMER_CLS_TO_WRAP"]}


def test_site_packages_preset_ingests_the_venv_under_a_licence_allow_list(params):
    """Ingest reads this project's .venv, which the source kind resolves to its
    site-packages; every allow-list entry is a licence id it knows; besides ingest only the
    embedding (model2vec, with a MiniLM second pass near the threshold) and the annotation
    label bar change."""
    from phi1.ingest.licences import allow_list
    from phi1.ingest.sources import site_dirs

    assert set(read_preset("site-packages", PRESETS)) == {"ingest", "embed", "filter", "annotate"}
    assert read_preset("site-packages", PRESETS)["embed"] == {"embedding": "model2vec"}
    assert read_preset("site-packages", PRESETS)["filter"] == {"refine": {"embedding": "minilm", "margin": 0.05}}
    assert read_preset("site-packages", PRESETS)["annotate"] == {"label_threshold": 0.65}
    full = merged("site-packages", params, PRESETS)
    sp = _write(params.parent / "sp.yaml", full)
    assert load_stage_config("ingest", sp) is not None
    refine = load_stage_config("filter", sp).refine  # the default's other refine keys stay
    assert (refine.embedding, refine.margin, refine.batch_size) == ("minilm", 0.05, 1)
    ing = full["ingest"]
    (src,) = ing["sources"]
    assert src["kind"] == "site-packages" and src["paths"] == [".venv"]
    found = {os.path.realpath(d) for d in site_dirs("venv", str(REPO / ".venv"))}  # lib and lib64 -> lib
    assert found == {os.path.realpath(REPO / ".venv" / "lib" / PYVER / "site-packages")}
    allowed = allow_list(ing["licences"])
    assert {"mit", "apache-2.0", "bsd-3-clause", "licenseref-bsd", "psf-2.0"} <= allowed
    assert not allowed & {"gpl-3.0-only", "lgpl-3.0-only", "mpl-2.0", "unknown"}
    assert full["pretrain"]["preset"] == "tiny" and ing["executor"] == "local" and ing["tasks"] == 2


@pytest.mark.parametrize("name", ABLATION_PRESETS)
def test_ablation_presets_are_training_keys_over_site_packages(params, name, monkeypatch):
    """Applied after site-packages (as their READMEs say), they change no data stage, so
    the ablation's experiments reuse the curated data; the merged params validate and the
    model they build has the size the README states."""
    import torch
    from transformers import AutoModelForCausalLM

    from phi1.engines.training.model_shapes import build_config

    assert set(read_preset(name, PRESETS)) <= {"tokenize", "pretrain", "finetune", "evaluate"}
    assert not set(read_preset(name, PRESETS).get("tokenize", {})) - {"vocab_size", "seq_len"}
    monkeypatch.chdir(params.parent)
    use("site-packages", params, PRESETS)
    use(name, params, PRESETS)
    full = yaml.safe_load(params.read_text())
    assert full["ingest"]["sources"][0]["kind"] == "site-packages"  # the first preset stays
    for stage in ("tokenize", "pretrain", "finetune", "evaluate"):
        assert load_stage_config(stage, params) is not None
    pre, tok = full["pretrain"], full["tokenize"]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            build_config(pre["preset"], tok["vocab_size"], tok["seq_len"], overrides=pre["model_overrides"]))
    n = sum(p.numel() for p in model.parameters())
    assert (1.5e6 < n < 2.5e6) if name == "site-packages-ablation" else (30e6 < n < 40e6), n
