"""The private Xvfb display and the sandbox's GUI policy."""

from __future__ import annotations

import os

import pytest

from phi1.engines.sandbox import Sandbox
from phi1.probe.xvfb import xvfb

pytestmark = pytest.mark.gui

TK = "import tkinter as tk\nr = tk.Tk()\nb = tk.Button(r, text='hi')\nb.pack()\nr.update()\nassert b.winfo_ismapped()\nr.destroy()\n"
PYGAME = ("import pygame\npygame.init()\ns = pygame.display.set_mode((20, 20))\ns.fill((1, 2, 3))\n"
          "assert tuple(s.get_at((5, 5)))[:3] == (1, 2, 3)\n")
NETWORK = "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)\n"
WRITE_SOCKET_DIR = "open('/tmp/.X11-unix/evil', 'w')\n"


def test_xvfb_serves_a_display_and_is_gone_afterwards():
    with xvfb() as display:
        number = display.lstrip(":")
        assert os.path.exists(f"/tmp/.X11-unix/X{number}")
        # pygame's import calls os.putenv, which the guard blocks: workers preload it.
        with Sandbox(workers=1, display=display, preload=("pygame",)) as box:
            tk, pg, net, write = box.map([TK, PYGAME, NETWORK, WRITE_SOCKET_DIR], timeout=10)
    assert tk.passed, tk.error
    assert pg.passed, pg.error
    assert net.status == "failed" and "unreachable" in net.error.lower()
    assert write.status == "failed"  # the socket folder is read-only inside
    assert not os.path.exists(f"/tmp/.X11-unix/X{number}")


def test_without_the_gui_policy_tk_has_no_display():
    with Sandbox(workers=1) as box:
        res = box.run(TK, timeout=10)
    assert res.status == "failed" and "display" in res.error
