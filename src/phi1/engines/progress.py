"""One progress bar for every long loop: rich, on stderr, only when stderr is a terminal.

    with progress_bar(len(tasks), "humaneval: generate") as update:
        for i, t in enumerate(tasks, 1): ...; update(i)
    for doc in tracked(docs, "encode"): ...   # counts the items as they are taken

`update(n, label)` may also change the label (the training loop shows its loss there).
Datatrove's own tqdm bars stay, and so do the per-task bars of ingest's reader, which run
in datatrove's worker processes, one line each (tqdm's `position`), where a rich display
per process would draw over the others.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def progress_bar(total: Optional[int], label: str, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr (when it is a terminal, `enabled`, and `total` is not
    0; None: unknown); yields `update(n_done, label=None)`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not enabled or total == 0 or not console.is_terminal:  # a log file or a pipe gets no bar and no stray newline
        yield lambda n, label=None: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n, label=None: bar.update(task, completed=n, **({"description": label} if label else {}))


def tracked(items: Iterable[T], label: str, total: Optional[int] = None, enabled: bool = True) -> Iterator[T]:
    """`items`, counted on a progress bar as they are taken (`total` None: their len, when
    they have one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, label, enabled) as update:
        for n, x in enumerate(items, 1):
            yield x
            update(n)
