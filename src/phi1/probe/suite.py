"""The probe suite: small Pygame, Tkinter and matplotlib programs in HumanEval style.

    phi1 probe list                          # the suite as JSONL
    probes = load_suite(); probes[0].program(probes[0].reference)

Each probe (data/probes.jsonl, one JSON object a line) has an `id`, a `library`, a
`prompt` (imports, a signature and a docstring describing a small program), a
`reference` body that passes, and a behavioural `check`: code run after the completion
that calls the function and inspects what it did (pixels, positions and returned
values of pygame under SDL's dummy video driver; the Tk widget tree, texts, layout and
callbacks driven by `invoke()` or generated events under Xvfb). The check ends the
program itself: the harness replaces Tk's `mainloop` by one pass over pending events,
and pygame probes are told how many frames to run. Checks use `assert`, so an
AssertionError means the program ran but did the wrong thing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Optional

from phi1.errors import Phi1Error

LIBRARIES = ("pygame", "tkinter", "matplotlib")

# Harness code placed before the prompt (never shown to a model).
_HARNESS = {
    "tkinter": '''import tkinter as _phi1_tk


def _phi1_mainloop(self, n=0):
    # The check ends the program: a main loop processes what is pending and returns.
    self.update()


_phi1_tk.Misc.mainloop = _phi1_mainloop
_phi1_tk.mainloop = lambda n=0: None


def _phi1_widgets(widget):
    """Every descendant of `widget`, depth first, in creation order."""
    out = []
    for child in widget.winfo_children():
        out.append(child)
        out.extend(_phi1_widgets(child))
    return out


''',
    "pygame": "",
    "matplotlib": "import matplotlib as _phi1_mpl\n_phi1_mpl.use('Agg')\n\n",
}


@dataclass(frozen=True)
class Probe:
    """One probe of the suite."""

    id: str
    library: str
    prompt: str
    """What the model is given: imports, signature, docstring."""
    reference: str
    """A body that passes the check."""
    check: str
    """Code run after the completion; it passes when it returns without an exception."""

    def program(self, completion: str) -> str:
        """The whole program the sandbox runs for `completion` (a function body)."""
        return _HARNESS[self.library] + self.prompt + completion + "\n\n" + self.check + "\n"

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def default_path() -> Path:
    return Path(str(resources.files("phi1.probe") / "data" / "probes.jsonl"))


@cache
def _load(path: str) -> tuple[Probe, ...]:
    probes = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                probe = Probe(**row)
            except (ValueError, TypeError) as exc:
                raise Phi1Error(f"{path} line {lineno}: not a probe ({exc})") from None
            if probe.library not in LIBRARIES:
                raise Phi1Error(f"{path} line {lineno}: unknown library {probe.library!r}")
            probes.append(probe)
    ids = [p.id for p in probes]
    if len(set(ids)) != len(ids):
        raise Phi1Error(f"{path}: probe ids must be unique")
    return tuple(probes)


def load_suite(path: Optional[str | Path] = None, libraries: Optional[tuple[str, ...]] = None) -> list[Probe]:
    """The probes of `path` (default: the shipped suite), optionally of some libraries only."""
    probes = _load(str(path or default_path()))
    return [p for p in probes if libraries is None or p.library in libraries]
