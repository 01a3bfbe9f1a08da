"""The `site-packages` source kind: each .py file of an installed environment with its
distribution, version and declared licence; the licence allow-list and its drop reason."""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from email.message import Message
from pathlib import Path

import pytest

from phi1.config import IngestConfig, SourceConfig
from phi1.errors import Phi1Error
from phi1.ingest.filters import LICENCE_REASON, REASONS, LicenceFilter
from phi1.ingest.licences import UNKNOWN, allow_list, declared_licence, from_classifier, permits
from phi1.ingest.sources import UNOWNED, Owner, site_dirs, site_packages
from phi1.ingest.stage import build_pipeline, plan_sources, run

from .conftest import STDLIB

PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"

# (distribution, version, METADATA lines after Name/Version, {file in site-packages: stdlib file})
DISTS = [
    ("alpha", "1.0", ["License-Expression: MIT"],
     {"alpha/__init__.py": "bisect.py", "alpha/core.py": "colorsys.py"}),
    ("beta", "2.1", ["License: GPLv3", "Classifier: Programming Language :: Python :: 3",
                     "Classifier: License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)"],
     {"beta/__init__.py": "shlex.py", "beta/mod.py": "textwrap.py"}),
]
STRAY = "stray.py"  # in no distribution's RECORD


def make_fake_site(site: Path) -> Path:
    """A site-packages folder with two dist-info distributions (METADATA, RECORD) and one
    file no distribution owns."""
    site.mkdir(parents=True)
    for name, version, meta, files in DISTS:
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("\n".join(["Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}",
                                                  *meta]) + "\n")
        record = [f"{rel},," for rel in files] + [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
        (info / "RECORD").write_text("\n".join(record) + "\n")
        for rel, src in files.items():
            (site / rel).parent.mkdir(exist_ok=True)
            (site / rel).write_bytes((STDLIB / src).read_bytes())
    (site / STRAY).write_bytes((STDLIB / "fnmatch.py").read_bytes())
    return site


@pytest.fixture
def fake_venv(tmp_path) -> Path:
    """A virtualenv folder (pyvenv.cfg, lib/pythonX.Y/site-packages, lib64 -> lib) around the fake site."""
    venv = tmp_path / "venv"
    make_fake_site(venv / "lib" / PYVER / "site-packages")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    os.symlink("lib", venv / "lib64")
    return venv


OWNERS = {
    "alpha/__init__.py": Owner("alpha", "1.0", "MIT"),
    "alpha/core.py": Owner("alpha", "1.0", "MIT"),
    "beta/__init__.py": Owner("beta", "2.1", "GPL-3.0-or-later"),
    "beta/mod.py": Owner("beta", "2.1", "GPL-3.0-or-later"),
    STRAY: UNOWNED,
}


def test_files_carry_their_distribution_version_and_licence(fake_venv):
    site = fake_venv / "lib" / PYVER / "site-packages"
    by_venv = site_packages("env", (str(fake_venv),))  # lib64 -> lib is the same folder: listed once
    assert by_venv.sites == [str(site)] and by_venv.root == str(site) and by_venv.n_distributions == 2
    assert by_venv.owners == OWNERS
    assert [e.rel for e in by_venv.entries] == sorted(OWNERS)
    by_site = site_packages("env", (str(site),), exclude=("beta/*",))
    assert by_site.owners == {k: v for k, v in OWNERS.items() if not k.startswith("beta/")}


def test_a_python_executable_names_its_site_packages(tmp_path):
    assert site_dirs("env", sys.executable) == list(dict.fromkeys(
        [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(Phi1Error, match="'env': .*notes.txt' is neither a folder nor a Python executable"):
        site_dirs("env", str(tmp_path / "notes.txt"))
    with pytest.raises(Phi1Error, match="'env': path not found: '/no/such/venv'"):
        site_packages("env", ("/no/such/venv",))


def _meta(*lines: str) -> Message:
    m = Message()
    for line in lines:
        k, v = line.split(": ", 1)
        m[k] = v
    return m


@pytest.mark.parametrize("lines, spdx", [
    (["License-Expression: mit OR apache-2.0", "License: GPL"], "MIT OR Apache-2.0"),  # PEP 639 first, canonical
    (["License: Apache License, Version 2.0"], "Apache-2.0"),
    (["License: BSD 3-Clause License\n\nCopyright (c) 2020 ...\nRedistribution and use ..."], "BSD-3-Clause"),
    (["License: Copyright 2018 Databricks, Inc.  All rights reserved.",
      "Classifier: License :: OSI Approved :: Apache Software License"], "LicenseRef-Apache"),  # ambiguous: no guess
    (["Classifier: License :: OSI Approved :: BSD License",
      "Classifier: License :: OSI Approved :: MIT License"], "LicenseRef-BSD OR MIT"),
    (["Classifier: License :: OSI Approved :: Eclipse Public License 2.0 (EPL-2.0)"], "EPL-2.0"),
    (["License: Dual License", "Classifier: License :: OSI Approved"], UNKNOWN),
    ([], UNKNOWN),
])
def test_declared_licence_as_spdx(lines, spdx):
    assert declared_licence(_meta(*lines)) == spdx


def test_allow_list_normalises_and_permits_expressions():
    allowed = allow_list(["mit", "License :: OSI Approved :: BSD License", "Apache 2.0", "PSF-2.0"])
    assert allowed == {"mit", "licenseref-bsd", "apache-2.0", "psf-2.0"}
    assert from_classifier("License :: OSI Approved :: Python Software Foundation License") == "PSF-2.0"
    assert permits("MIT", allowed) and permits("GPL-2.0-only OR MIT", allowed)
    assert not permits("MIT AND MPL-2.0", allowed) and permits("(MPL-2.0 OR MIT) AND Apache-2.0", allowed)
    assert permits("Apache-2.0 WITH LLVM-exception AND MIT", allowed)
    assert not permits(UNKNOWN, allowed) and permits(UNKNOWN, allow_list(["unknown"]))
    with pytest.raises(Phi1Error, match="ingest.licences: 'MIT OR GPL-2.0-only' is not one SPDX licence id"):
        allow_list(["MIT OR GPL-2.0-only"])
    with pytest.raises(Phi1Error, match="ingest.licences: 'permissive' is not"):
        plan_sources(IngestConfig(licences=("permissive",)))


def test_licence_filter_drops_with_its_reason_and_passes_other_sources():
    from datatrove.data import Document

    f = LicenceFilter(("MIT",))
    licences = {"a": "MIT", "b": "GPL-3.0-only", "c": UNKNOWN, "d": None}  # d: a local file, no licence
    docs = [Document(text="x", id=k, metadata={} if v is None else {"licence": v}) for k, v in licences.items()]
    assert [d.id for d in f.run(iter(docs))] == ["a", "d"]
    assert f.stats[f"dropped_{LICENCE_REASON}"].total == 2


def test_ingest_keeps_permitted_licences_and_counts_the_rest(workdir, fake_venv):
    """`phi1 ingest` over the fake venv: the manifest records each file's owner; the
    GPL distribution and the unowned file are dropped as licence_not_allowed."""
    src = SourceConfig(name="env", kind="site-packages", paths=(str(fake_venv),))
    cfg = IngestConfig(sources=(src,), licences=("MIT", "Apache-2.0", "BSD-3-Clause"))
    metrics = run(cfg, workdir / "raw", workdir / "ingest.json")
    manifest = json.loads((workdir / "raw" / "manifest.json").read_text())
    files = {f["path"]: f for f in manifest["files"]}
    assert {p: Owner(f["distribution"], f["version"], f["licence"]) for p, f in files.items()} == OWNERS
    assert {p: f["verdict"] for p, f in files.items()} == {
        "alpha/__init__.py": "kept", "alpha/core.py": "kept",
        "beta/__init__.py": LICENCE_REASON, "beta/mod.py": LICENCE_REASON, STRAY: LICENCE_REASON}
    assert metrics["dropped"] == {LICENCE_REASON: 3, **{r: 0 for r in REASONS}} and metrics["n_kept"] == 2
    assert json.loads((workdir / "ingest.json").read_text())["dropped"][LICENCE_REASON] == 3
    (described,) = manifest["sources"]
    assert described["kind"] == "site-packages" and described["n_distributions"] == 2
    assert described["site_packages"] == [str(fake_venv / "lib" / PYVER / "site-packages")]


def test_without_an_allow_list_nothing_is_filtered_by_licence(tmp_path, fake_venv):
    src = SourceConfig(name="env", kind="site-packages", paths=(str(fake_venv),))
    cfg = IngestConfig(sources=(src,))
    steps = build_pipeline(cfg, plan_sources(cfg), tmp_path)
    assert not any(isinstance(s, LicenceFilter) for s in steps)
    assert isinstance(build_pipeline(cfg := IngestConfig(sources=(src,), licences=("MIT",)), plan_sources(cfg),
                                     tmp_path)[1], LicenceFilter)  # first after the reader: cheapest
