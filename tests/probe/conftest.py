"""Fixtures of the probe tests: one Xvfb display + GUI-policy sandbox per test module."""

from __future__ import annotations

import pytest

from phi1.probe.score import probe_sandbox


@pytest.fixture(scope="module")
def gui_box():
    """A two-worker sandbox allowed to use a private Xvfb display (stopped afterwards)."""
    with probe_sandbox(workers=2) as box:
        yield box
