"""The results pages open offline and read well: the `phi1 report` page, the `dvc plots
show` page (with the template of `make plots-offline`) and the validation index, each opened
from file:// in headless Chromium with every network request sent to a closed proxy port.
The checks read the DOM after scripts ran: numbers in tables, vega's canvas, links."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_report import CHROMIUM_FLAGS, write_inputs

# every request (CDNs included, loopback too) goes to a port nothing listens on
OFFLINE = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
NODE_MODULES = Path(sys.prefix) / "vega" / "node_modules"  # `make plots-offline`: $(VENV)/vega


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM of `page` after its scripts ran, opened offline in headless Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (make sysdeps)"
    res = subprocess.run([chromium, *CHROMIUM_FLAGS, *OFFLINE, f"--user-data-dir={profile}", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert "<body" in res.stdout, f"chromium gave no DOM for {page}: {res.stderr[-2000:]}"
    return res.stdout


def text_of(dom: str) -> str:
    """The visible text, roughly: tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]+>", " ", dom, flags=re.S).split())


def test_report_page_reads_offline(workdir, tmp_path):
    from phi1.report import build

    write_inputs(workdir)
    (workdir / "reports/validation").mkdir(parents=True)
    (workdir / "reports/validation/summary.json").write_text(json.dumps(
        {"raw": {"success": True, "evaluated": 19, "failed": []}}))
    build(workdir / "reports/report")
    dom = dump_dom(workdir / "reports/report/index.html", tmp_path / "profile")
    text = text_of(dom)
    assert "phi1 report" in text and "missing: none" in text
    assert re.search(r"phi1 humaneval 0\.3 10 4\.293", text)  # the eval numbers table
    assert re.search(r"phi1 pygame - 0\.5", text)  # probe rate per library
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', dom)) == 6
    assert re.search(r"raw passed 19 0 0", text)  # the validation summary


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"dvc {' '.join(args)}: {res.stderr[-2000:]}"
    return res


@pytest.mark.slow
def test_dvc_plots_page_draws_the_loss_curves_offline(tmp_path):
    """`dvc plots show` with the template `make plots-offline` configures draws vega's
    charts without a network; DVC's own template (vega from a CDN) draws none here, which
    shows the network really is cut."""
    from phi1.report import dvc_plots_template

    assert (NODE_MODULES / "vega").is_dir(), f"{NODE_MODULES} missing: run `make plots-offline`"
    repo = tmp_path / "repo"
    (repo / "plots/pretrain").mkdir(parents=True)
    (repo / "plots/pretrain/train.csv").write_text("step,loss\n0,8.0\n5,6.1\n10,5.2\n15,4.9\n")
    (repo / "dvc.yaml").write_text("plots:\n  - plots/pretrain/train.csv:\n      x: step\n      y: loss\n")
    _dvc(repo, "init", "--no-scm", "-q")
    template = tmp_path / "dvc_plots.html"
    template.write_text(dvc_plots_template(NODE_MODULES))  # what `phi1 plots-template` writes
    _dvc(repo, "config", "--local", "plots.html_template", str(template))
    _dvc(repo, "plots", "show", "-o", "offline")
    dom = dump_dom(repo / "offline/index.html", tmp_path / "profile")
    assert "cdn.jsdelivr" not in dom
    canvases = re.findall(r'<canvas width="(\d+)" height="(\d+)" class="marks"', dom)
    assert len(canvases) == 1 and all(int(w) > 100 and int(h) > 100 for w, h in canvases), dom[-3000:]

    _dvc(repo, "config", "--local", "--unset", "plots.html_template")
    _dvc(repo, "plots", "show", "-o", "cdn")
    dom = dump_dom(repo / "cdn/index.html", tmp_path / "profile-cdn")
    assert "cdn.jsdelivr.net/npm/vega" in dom and 'class="marks"' not in dom


@pytest.mark.slow
def test_validation_index_and_dataset_pages_read_offline(tmp_path, small_corpus):
    """The validate stage's index.html lists each suite with its counts and links GX's
    per-dataset pages, which show their statistics offline too."""
    from phi1.validate.stage import validate, write_report
    from tests.validate.test_stage import EXPECTATIONS, build_datasets

    paths = build_datasets(tmp_path, small_corpus)
    out = tmp_path / "reports/validation"
    results = validate(paths, EXPECTATIONS, tmp_path / "metrics/filter.json", docs_dir=out / "data_docs")
    write_report(results, out)
    dom = dump_dom(out / "index.html", tmp_path / "profile")
    text = text_of(dom)
    assert "All 3 suites passed." in text
    for r in results:
        assert f"{r.name} passed {r.evaluated} {r.evaluated} 0 0" in text
    links = re.findall(r'<a href="([^"]+)">validation result</a>', dom)
    assert len(links) == 3 and all((out / link).is_file() for link in links)
    raw_page = out / next(link for link in links if "/raw/" in link)
    text = text_of(dump_dom(raw_page, tmp_path / "profile-raw"))
    raw = next(r for r in results if r.name == "raw")
    assert f"Evaluated Expectations {raw.evaluated}" in text and "Status: Succeeded" in text
