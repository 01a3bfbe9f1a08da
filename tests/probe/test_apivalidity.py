"""Static API validity of completions against the installed pygame and tkinter."""

from __future__ import annotations

from phi1.probe.apivalidity import api_chains
from phi1.probe.suite import load_suite


def test_every_reference_uses_only_existing_apis():
    for p in load_suite():
        chains = api_chains(p.prompt, p.reference, p.library)
        assert chains, p.id
        assert all(ok for _, ok in chains), (p.id, chains)


def test_a_plausible_but_wrong_pygame_call_is_invalid():
    prompt = "import pygame\n\n\ndef f():\n"
    chains = api_chains(prompt, "    pygame.init()\n    s = pygame.display.setmode((10, 10))\n", "pygame")
    assert chains == [("pygame.init", True), ("pygame.display.setmode", False)]


def test_instances_typed_by_annotations_and_constructors_are_checked():
    prompt = "import tkinter as tk\nfrom tkinter import ttk\n\n\ndef f(root: tk.Tk):\n"
    body = ("    b = tk.Button(root, text='x')\n    b.pack()\n    b.click()\n    root.title('t')\n"
            "    root.set_title('t')\n    c = ttk.Combobox(root)\n    c.current(0)\n    b.master.update()\n")
    chains = dict(api_chains(prompt, body, "tkinter"))
    assert chains == {
        "tkinter.Button": True, "<tkinter.Button>.pack": True, "<tkinter.Button>.click": False,
        "<tkinter.Tk>.title": True, "<tkinter.Tk>.set_title": False, "tkinter.ttk.Combobox": True,
        "<tkinter.ttk.Combobox>.current": True, "<tkinter.Button>.master.update": True,
    }


def test_only_the_completion_is_counted_and_a_syntax_error_is_none():
    prompt = "import pygame\nx = pygame.nonexistent\n\ndef f():\n"
    assert api_chains(prompt, "    return 1\n", "pygame") == []
    assert api_chains(prompt, "    return (\n", "pygame") is None
