"""Code in model output: the fenced ```python blocks of a markdown text."""

from __future__ import annotations

import re

FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def python_blocks(text: str) -> list[str]:
    """The code of each fenced ```python block of a markdown text, in order."""
    return [m.group(1) for m in FENCE.finditer(text or "")]
