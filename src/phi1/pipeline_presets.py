"""Scale presets: partial params files under `pipelines/<name>/params.yaml` merged over params.yaml.

    phi1 preset list
    phi1 preset show phi-1                      # the params.yaml `use` would write
    phi1 preset use phi-1 [--dry-run]           # rewrite params.yaml (atomically), print what changed
    eval "dvc exp run $(phi1 preset exp-args phi-1)"   # or as a DVC experiment, params.yaml untouched

A preset holds only the keys that differ from the embedded default. Merging is deep for
mappings and replaces everything else (a list in a preset replaces the list in
params.yaml; it is not appended to). The merged result is validated with every stage's
config loader before anything is written, so a bad preset or params file leaves
params.yaml as it was.

`exp_args` renders the same merge as `dvc exp run -S` overrides, in the Hydra override
grammar DVC parses them with: one override per leaf (`++` for a key params.yaml does
not have yet), values quoted so that spaces survive; the printed line is shell-quoted,
hence `eval`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from phi1.config import STAGES, ConfigError, from_dict, read_params, to_dict
from phi1.errors import Phi1Error
from phi1.io import atomic_file
from phi1.tracking import flatten

PRESETS_DIR = Path("pipelines")
"""Where presets live, relative to the project root (where dvc.yaml is)."""


def list_presets(presets_dir: str | Path = PRESETS_DIR) -> list[str]:
    """Names of the presets: the folders of `presets_dir` holding a params.yaml."""
    root = Path(presets_dir)
    return sorted(p.parent.name for p in root.glob("*/params.yaml")) if root.is_dir() else []


def describe(name: str, presets_dir: str | Path = PRESETS_DIR) -> str:
    """The first line of the preset's README.md (its title), or ''."""
    readme = Path(presets_dir) / name / "README.md"
    if not readme.is_file():
        return ""
    first = next((ln for ln in readme.read_text().splitlines() if ln.strip()), "")
    return first.lstrip("#").strip()


def titles(presets_dir: str | Path = PRESETS_DIR) -> dict[str, str]:
    """{name: title} of every preset."""
    return {name: describe(name, presets_dir) for name in list_presets(presets_dir)}


def preset_file(name: str, presets_dir: str | Path = PRESETS_DIR) -> Path:
    """The preset's params file; an unknown name is a Phi1Error listing the known ones."""
    path = Path(presets_dir) / name / "params.yaml"
    if not path.is_file():
        known = list_presets(presets_dir)
        raise Phi1Error(f"unknown preset {name!r}; known: {', '.join(known) if known else f'none in {presets_dir}/'}")
    return path


def read_preset(name: str, presets_dir: str | Path = PRESETS_DIR) -> dict[str, Any]:
    """The preset's partial params; an unknown section or key is a ConfigError naming its file."""
    path = preset_file(name, presets_dir)
    data = read_params(path)
    for section, body in data.items():
        if section not in STAGES:
            raise ConfigError(f"{path}: unknown section {section!r} (known: {', '.join(STAGES)})")
        if body is not None and not isinstance(body, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
    return data


def deep_merge(base: Any, over: Any) -> Any:
    """`over` on top of `base`: mappings merge key by key; anything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else v
        return out
    return over


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Every stage section built with its config loader; returns params with those sections
    in their full normalised form (every key, as `phi1 params` prints them)."""
    out = dict(params)
    for stage, cls in STAGES.items():
        try:
            out[stage] = to_dict(from_dict(cls, params.get(stage) or {}, stage))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return out


def merged(name: str, params_path: str | Path = "params.yaml", presets_dir: str | Path = PRESETS_DIR) -> dict:
    """The validated params of `params_path` with preset `name` merged over them."""
    preset = read_preset(name, presets_dir)
    return validate(deep_merge(read_params(params_path), preset), f"preset {name} over {params_path}")


def leaves(d: Any) -> dict[str, Any]:
    """`a.b.c -> value` for every non-mapping value (lists are leaves); an empty mapping is a leaf."""
    return flatten(d, empty=True)


def changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs, in new's order."""
    before, after = leaves(old), leaves(new)
    missing = object()
    return [(k, before.get(k), v) for k, v in after.items() if before.get(k, missing) != v]


def dump(params: dict) -> str:
    return yaml.safe_dump(params, sort_keys=False)


def use(name: str, params_path: str | Path = "params.yaml", presets_dir: str | Path = PRESETS_DIR,
        dry_run: bool = False) -> list[tuple[str, Any, Any]]:
    """Merge preset `name` into `params_path` and write it atomically (not with dry_run);
    returns the changed keys. Nothing is written when anything fails to validate."""
    new = merged(name, params_path, presets_dir)
    diff = changes(read_params(params_path), new)
    if not dry_run:
        with atomic_file(params_path) as fh:
            fh.write(dump(new))
    return diff


def change_lines(diff: list[tuple[str, Any, Any]]) -> list[str]:
    """`  key: old -> new` per changed key, values in YAML flow style (cut at 100 characters)."""
    return [f"  {key}: {_flow(old)} -> {_flow(new)}" for key, old, new in diff]


def _flow(v: Any) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 100 else text[:97] + "..."


def hydra_value(v: Any) -> str:
    """`v` in Hydra's override grammar (what `dvc exp run -S` parses), without whitespace
    outside quoted strings."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):  # always quoted: unquoted, `true` or `1.0` would change type
        return '"' + v.replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    raise Phi1Error(f"cannot write {v!r} as a dvc -S value")


def exp_args(name: str, params_path: str | Path = "params.yaml", presets_dir: str | Path = PRESETS_DIR) -> list[str]:
    """`-S key=value` arguments for `dvc exp run` that apply preset `name` to `params_path`."""
    merged(name, params_path, presets_dir)  # validate first: never print overrides that would not load
    have = leaves(read_params(params_path))
    args: list[str] = []
    for key, value in leaves(read_preset(name, presets_dir)).items():
        exists = key in have or any(k.startswith(key + ".") for k in have)
        args += ["-S", f"{'' if exists else '++'}{key}={hydra_value(value)}"]
    return args


def shell_line(args: list[str]) -> str:
    """`args` quoted for a POSIX shell (to be read back with eval)."""
    return shlex.join(args)


__all__ = ["PRESETS_DIR", "list_presets", "describe", "preset_file", "read_preset", "deep_merge", "validate",
           "merged", "leaves", "changes", "use", "change_lines", "titles", "exp_args", "hydra_value", "shell_line", "dump"]
