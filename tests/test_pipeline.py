"""dvc.yaml, params.yaml, the CLI and the config dataclasses agree: one name per stage."""

import shlex
from pathlib import Path

import yaml
from typer.main import get_command

from phi1.cli import DEFAULT_DATASETS, app
from phi1.config import STAGES, ValidateConfig
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


# ------------------------------------------------------------------ deps = import closure

SRC = REPO / "src"
FLOOR = {"__init__.py", "config.py", "errors.py", "io.py", "tracking.py"}
"""src/phi1 modules every stage stands on (with phi1.engines below the stages)."""


def _module_file(module: str):
    p = SRC.joinpath(*module.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _phi1_imports(path) -> set[str]:
    """Every phi1 module a file imports, at any depth (function-level imports too)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "phi1"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "phi1":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from phi1.x import module`
    return found


def import_closure(package: str) -> set:
    """The files of src/phi1 that running `package` may execute: its own files and every
    phi1 module they import, transitively, with the __init__ of each parent package."""
    todo = sorted((SRC / "phi1" / package).rglob("*.py"))
    seen: set = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for module in _phi1_imports(f):
            parts = module.split(".")
            todo += [m for i in range(1, len(parts) + 1) if (m := _module_file(".".join(parts[:i])))]
    return seen


def test_src_deps_are_exactly_each_stages_import_closure():
    """A change to a file reruns exactly the stages whose code imports it: dvc.yaml lists
    every file of a stage's closure (a listed folder covers its files), and no src
    file or folder outside it, but for package data (e.g. engines/data/mbpp)."""
    for name, stage in _dvc_stages().items():
        listed = [REPO / d for d in stage.get("deps", []) if d.startswith("src/")]
        closure = import_closure(name)
        missing = [f for f in closure if not any(f == d or d in f.parents for d in listed)]
        assert not missing, f"{name}: dvc.yaml deps miss {sorted(str(f.relative_to(REPO)) for f in missing)}"
        extra = [d for d in listed if "data" not in d.parts and not any(f == d or d in f.parents for f in closure)]
        assert not extra, f"{name}: dvc.yaml deps {extra} are not imported by the stage"


def test_a_stage_imports_no_other_stage():
    """Stages stand on phi1.engines and the floor; what two stages share moves down a floor."""
    stages = set(_dvc_stages())
    for name in stages:
        for f in import_closure(name):
            rel = f.relative_to(SRC / "phi1")
            owner = rel.parts[0] if len(rel.parts) > 1 else rel.name
            assert owner in {name, "engines"} | FLOOR, f"stage {name} runs {rel}, which belongs to {owner}"


# ------------------------------------------------------------------ paths written once

# Path options a stage's command reads that dvc.yaml cannot name as a dep: DVC's own files.
NOT_IN_DVC_YAML = {
    "--params": "params.yaml, DVC's params file: `params:` lists its keys, not the file",
    "--lock": "dvc.lock (register's lineage tags), written by DVC itself, so no stage may depend on it",
}


def _stage_command(name: str, stage: dict):
    """The click command dvc.yaml's `cmd` runs and the arguments it passes (`${<stage>.launch}` is `phi1`)."""
    argv = shlex.split(stage["cmd"].replace(f"${{{name}.launch}}", "phi1"))[1:]
    command = get_command(app)
    while hasattr(command, "commands"):  # `phi1 evaluate run`: walk down the command groups
        command = command.commands[argv.pop(0)]
    return command, argv


def _declared(stage: dict) -> list[str]:
    """Every path dvc.yaml declares for a stage: deps, outs, metrics, plots."""
    entries = [*stage.get("deps", []), *stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def _under(path: str, declared: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


def test_dvc_yaml_paths_are_the_cli_defaults():
    """dvc.yaml writes each stage's paths; the CLI's defaults (what `phi1 <stage>` run by hand
    uses) are the same paths: every `--option value` of a stage's cmd equals that option's
    default, and every path option the cmd leaves out defaults to a path the stage declares
    (a dep, out, metric or plot, or a file inside one), but for DVC's own files."""
    for name, stage in _dvc_stages().items():
        command, argv = _stage_command(name, stage)
        options = {o: p for p in command.params if p.param_type_name == "option" for o in p.opts}
        passed: set[str] = set()
        while argv:
            arg = argv.pop(0)
            if not arg.startswith("-"):
                continue  # a positional argument (validate's dataset names: checked below)
            assert arg in options, f"{name}: dvc.yaml passes {arg}, which `phi1 {name}` does not take"
            param, value = options[arg], argv.pop(0)
            passed.add(param.name)
            assert str(param.default) == value, \
                f"{name}: dvc.yaml passes {arg} {value} but the CLI default is {param.default}"
        declared = _declared(stage)
        for param in command.params:
            if param.name in passed or not isinstance(param.default, Path):
                continue
            flag = param.opts[0]
            if flag in NOT_IN_DVC_YAML:
                continue
            assert _under(str(param.default), declared), (
                f"{name}: {flag} defaults to {param.default}, which dvc.yaml neither passes nor declares")


def test_validate_dataset_names_are_the_cli_datasets_and_stage_deps():
    """`phi1 validate NAME...` in dvc.yaml: each NAME's path (cli.DEFAULT_DATASETS) is a dep
    of the stage, and every dataset the CLI knows is validated by the pipeline."""
    stage = _dvc_stages()["validate"]
    _, argv = _stage_command("validate", stage)
    names = []
    while argv and not argv[0].startswith("-"):
        names.append(argv.pop(0))
    assert set(names) == set(DEFAULT_DATASETS), f"dvc.yaml validates {names}; the CLI knows {list(DEFAULT_DATASETS)}"
    for n in names:
        assert _under(DEFAULT_DATASETS[n], stage["deps"]), f"validate: {n} = {DEFAULT_DATASETS[n]} is not a dep"
    params = yaml.safe_load((REPO / "params.yaml").read_text()).get("validate", {})
    assert set(params.get("datasets", ValidateConfig().datasets)) <= set(DEFAULT_DATASETS)


def test_stage_run_has_no_path_defaults():
    """A stage's `run()` takes its paths from its caller (the CLI, from dvc.yaml's cmd)."""
    import importlib
    import inspect

    for name, cls in STAGES.items():
        run = importlib.import_module(f"phi1.{name}.stage").run
        sig = inspect.signature(run)
        assert list(sig.parameters)[0] == "cfg" and sig.parameters["cfg"].annotation in (cls, cls.__name__), \
            f"{name}.run: cfg is not typed {cls.__name__}"
        defaults = {p: v.default for p, v in sig.parameters.items() if isinstance(v.default, (str, Path))}
        assert not defaults, f"{name}.run has path defaults {defaults}: dvc.yaml writes paths, callers pass them"


def test_the_library_never_imports_the_cli():
    """cli.py parses arguments and calls the library; nothing below it imports it or typer."""
    import ast

    for f in (SRC / "phi1").rglob("*.py"):
        if f == SRC / "phi1" / "cli.py":
            continue
        assert not any(m == "phi1.cli" or m.startswith("phi1.cli.") for m in _phi1_imports(f)), f"{f} imports phi1.cli"
        nodes = list(ast.walk(ast.parse(f.read_text())))
        tops = {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
        tops |= {(n.module or "").split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom)}
        assert "typer" not in tops, f"{f} imports typer"
