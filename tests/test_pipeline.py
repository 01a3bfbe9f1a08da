"""dvc.yaml, params.yaml, the CLI and the config dataclasses agree: one name per stage."""

import shlex

import yaml
from typer.main import get_command

from phi1.cli import app
from phi1.config import STAGES
from tests.conftest import REPO


def _dvc_stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_every_dvc_stage_is_a_phi1_command_with_its_own_params_section():
    commands = get_command(app).commands
    for name, stage in _dvc_stages().items():
        assert name in STAGES, f"dvc stage {name} has no config dataclass"
        # `${<stage>.launch}` (pretrain, finetune) is the params' launcher, `phi1` by default
        argv = shlex.split(stage["cmd"].replace(f"${{{name}.launch}}", "phi1"))
        assert argv[0] == "phi1" and argv[1] == name, stage["cmd"]
        assert name in commands
        for p in stage.get("params", []):
            key = p if isinstance(p, str) else next(iter(p))
            assert key.split(".")[0] == name, f"stage {name} reads params of {key}"


def test_every_stage_config_has_a_cli_command():
    commands = get_command(app).commands
    assert set(STAGES) <= set(commands)


def test_dvc_deps_exist():
    for name, stage in _dvc_stages().items():
        for dep in stage.get("deps", []):
            if dep.startswith("src/") or dep == "expectations":
                assert (REPO / dep).exists(), f"{name}: dep {dep} missing"


# decontaminate's report JSON is neither a metric nor a plot; the stage never reruns in an
# ablation (it is upstream of every variant), so it may stay out of the run cache.
RUN_CACHE_EXEMPT = {"decontaminate"}


def test_uncached_files_are_metrics_or_plots_so_training_stays_in_the_run_cache():
    """DVC skips the run cache for a stage with an uncached plain `outs` entry
    (dvc/stage/__init__.py, Stage.run: `no_cache_outs`); pretrain and finetune must be in
    it, or every seed repeat of `phi1 ablate` retrains a model DVC already has."""
    for name, stage in _dvc_stages().items():
        uncached = [next(iter(o)) for o in stage.get("outs", []) if isinstance(o, dict)
                    and not next(iter(o.values())).get("cache", True)]
        assert not uncached or name in RUN_CACHE_EXEMPT, f"{name}: uncached outs {uncached}: make them metrics or plots"
