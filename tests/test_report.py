"""`phi1 report` (static HTML, offline), `phi1 compare`, and the MLflow UI in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phi1.cli import app
from phi1.report import build, compare_table, probe_table, run_rows
from tests.mlflow_server import mlflow_server

REPO = Path(__file__).resolve().parents[1]


def write_inputs(root: Path) -> None:
    for stage in ("pretrain", "finetune"):
        d = root / "plots" / stage
        d.mkdir(parents=True)
        (d / "train.csv").write_text("step,loss\n0,8.0\n5,6.1\n10,5.2\n")
        (d / "val.csv").write_text("step,val_loss\n0,8.1\n10,5.6\n")
    (root / "plots/filter").mkdir()
    (root / "plots/filter/scores_hist.csv").write_text("bin_start,bin_end,kept,dropped\n0.00,0.50,1,7\n0.50,1.00,9,0\n")
    (root / "metrics").mkdir()
    (root / "metrics/eval.json").write_text(json.dumps({
        "base": {"humaneval": {"pass@1": 0.1, "n_tasks": 10, "solution_loss": 4.677},
                 "mbpp": {"pass@1": 0.2, "solution_loss": 5.439}},
        "phi1": {"humaneval": {"pass@1": 0.3, "n_tasks": 10, "solution_loss": 4.293},
                 "mbpp": {"pass@1": 0.4, "solution_loss": 5.462}}}))
    (root / "metrics/probe.json").write_text(json.dumps({
        "base": {"pass_rate": 0.0, "libraries": {"pygame": {"pass_rate": 0.0}, "tkinter": {"pass_rate": 0.0}}},
        "phi1": {"pass_rate": 0.5, "libraries": {"pygame": {"pass_rate": 0.5}, "tkinter": {"pass_rate": 0.5}}}}))
    (root / "reports").mkdir()
    (root / "reports/contamination.json").write_text(json.dumps({"tau": 0.9, "sweep": [
        {"tau": 0.95, "removed": {"exercises": 1}, "tasks_similar": {"humaneval": 1}},
        {"tau": 0.8, "removed": {"exercises": 4}, "tasks_similar": {"humaneval": 3}}]}))


def test_report_draws_every_figure_offline(workdir):
    write_inputs(workdir)
    res = CliRunner().invoke(app, ["report"])
    assert res.exit_code == 0, res.output
    out = workdir / "reports/report"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["contamination_sweep.png", "loss_curves.png", "pass_at_k.png", "probe.png", "quality_scores.png",
                    "solution_loss.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 6
    assert "missing: none" in page and "all zero (a sentence instead of a chart): none" in page
    # the numbers beside the charts: one row per checkpoint and benchmark, probes per library
    assert '<td>phi1</td><td>humaneval</td><td class="n">0.3</td><td class="n">10</td><td class="n">4.293</td>' in page
    assert '<td>phi1</td><td>tkinter</td><td class="n">-</td><td class="n">0.5</td>' not in page  # n_probes absent
    assert "<td>phi1</td><td>tkinter</td><td>-</td><td class=\"n\">0.5</td>" in page
    # nothing fetched from the network: no scripts, no external URLs
    assert "<script" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)


def test_report_names_the_missing_inputs(workdir):
    (workdir / "metrics").mkdir()
    (workdir / "metrics/eval.json").write_text(json.dumps({"phi1": {"humaneval": {"pass@1": 0.5}}}))
    status = build(workdir / "out")
    assert status["pass_at_k"] == "written"
    assert status["probe"] == "missing: no metrics/probe.json"
    page = (workdir / "out/index.html").read_text()
    assert "Not available: metrics/probe.json does not exist" in page
    assert page.count("data:image/png") == 1
    assert "Registry lineage not shown: no registered model in metrics/register.json." in page
    # a fresh clone has the filter's committed PNG but not its CSV: the PNG is shown
    (workdir / "plots/filter").mkdir(parents=True)
    (workdir / "plots/filter/scores_hist.png").write_bytes((workdir / "out/pass_at_k.png").read_bytes())
    assert build(workdir / "out")["quality_scores"] == "written"


def test_probe_table_reads_libraries_at_any_depth():
    probe = {"phi1": {"pass_rate": 0.25, "by_library": {"pygame": {"pass_rate": 0.5, "n": 2}}}}
    assert probe_table(probe) == {"phi1": {"all": 0.25, "pygame": 0.5}}


def test_compare_lists_runs_with_hashes_differing_params_and_metrics(workdir):
    import mlflow
    from rich.console import Console

    from phi1.config import RegisterConfig
    from phi1.tracking import stage_run

    (workdir / "data.txt").write_text("x")
    for tol in (0.01, 0.05):
        with stage_run("register", RegisterConfig(tolerance=tol), inputs=["data.txt"]):
            mlflow.log_metric("score", tol * 10)
    rows = run_rows("register")
    assert len(rows) == 2 and rows[0]["params"] == {"tolerance": "0.05"}
    assert rows[0]["data"]["data.txt"].startswith("computed:")
    console = Console(width=200, record=True)
    console.print(compare_table(rows))
    text = console.export_text()
    assert "tolerance=0.01" in text and "score=0.5" in text and "data.txt=" in text
    res = CliRunner().invoke(app, ["compare", "--models", "--model", "phi1"])
    assert res.exit_code == 2 and "registered model 'phi1' not found" in res.output


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--virtual-time-budget=20000"]


@pytest.mark.slow
@pytest.mark.gui
def test_mlflow_ui_compares_the_runs_in_headless_chromium(workdir, tmp_path):
    import mlflow

    from phi1.tracking import setup, stage_run

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (apt-get install -y chromium)"
    exp_id = setup()
    ids = []
    for name, loss in (("pretrain-alpha", 3.2), ("pretrain-beta", 2.9)):
        with stage_run("pretrain", None, run_name=name) as run:
            mlflow.log_metric("final_val_loss", loss)
            ids.append(run.info.run_id)
    with mlflow_server(os.environ["MLFLOW_TRACKING_URI"]) as server:
        base = server.url
        url = (f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
               f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}")
        shot = REPO / "reports" / "mlflow_compare_runs.png"
        shot.parent.mkdir(exist_ok=True)
        shot.unlink(missing_ok=True)
        common = [chromium, *CHROMIUM_FLAGS]
        dom = subprocess.run([*common, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180).stdout
        for needle in ("pretrain-alpha", "pretrain-beta", "final_val_loss"):
            assert needle in dom, f"{needle} not on the run comparison page"
        subprocess.run([*common, f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={shot}", url],
                       capture_output=True, timeout=180)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_embeds_the_ablation_when_it_exists(workdir):
    from phi1.ablate import Ablation, plan, write_results

    rows = [{"variant": v, "checkpoint": c, "humaneval_pass@1": 0.0, "humaneval_solution_nats_per_char": 1.0 + i / 10,
             "mbpp_solution_nats_per_char": 1.2, "exp_rev": "abc"}
            for i, (v, c) in enumerate((v, c) for v in ("unfiltered", "filtered") for c in ("base", "phi1"))]
    write_results(workdir / "reports/ablation", Ablation(plan=plan(["unfiltered", "filtered"]), rows=rows), {})
    status = build(workdir / "out")
    assert status["ablation"] == "written"
    page = (workdir / "out/index.html").read_text()
    assert 'id="ablation"' in page and page.count("<tr>") == 5 and "unfiltered" in page and "abc" not in page
    assert (workdir / "out/ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ablation" not in build(workdir / "out2", ablation_dir=workdir / "nowhere")


def test_summary_gives_each_stages_headline_in_80_columns(tmp_path):
    import io as _io
    import shutil

    from rich.console import Console

    from phi1.report import summary_rows, summary_table
    from tests.conftest import REPO

    metrics = tmp_path / "metrics"
    shutil.copytree(REPO / "metrics", metrics)  # the committed run of the default pipeline
    rows = summary_rows(metrics)
    stages = [r[0] for r in rows]
    assert stages[0] == "ingest" and "evaluate" in stages and stages[-1] == "register"
    got = {(s, f): v for s, f, v in rows}
    ingest = json.loads((metrics / "ingest.json").read_text())
    assert got["ingest", "files kept / read"] == f"{ingest['n_kept']} / {ingest['n_read']}"
    assert all(v not in ("None", "") for v in got.values())
    out = _io.StringIO()
    Console(file=out, width=80).print(summary_table(rows))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80 and len(lines) < 60
    (metrics / "eval.json").unlink()  # a stage not run yet is left out, not an error
    assert not [r for r in summary_rows(metrics) if r[0] == "evaluate"]
    # a filter run with a second pass (filter.refine) says what it rescored
    f = json.loads((metrics / "filter.json").read_text())
    f["refine"] = {"embedding": "minilm", "n_refined": 3622, "n_flipped": 677}
    (metrics / "filter.json").write_text(json.dumps(f))
    got = {(s, f): v for s, f, v in summary_rows(metrics)}
    assert got["filter", "second pass (minilm)"] == "3622 rescored, 677 flipped"


def test_all_zero_charts_become_a_sentence(workdir):
    """pass@k and probe charts whose every bar is 0 say so in words; solution loss, which
    still separates the checkpoints, is drawn."""
    (workdir / "metrics").mkdir()
    (workdir / "metrics/eval.json").write_text(json.dumps({
        c: {b: {"pass@1": 0.0, "n_tasks": 10, "solution_loss": loss + i} for i, b in enumerate(("humaneval", "mbpp"))}
        for c, loss in (("base", 4.7), ("phi1", 4.3))}))
    (workdir / "metrics/probe.json").write_text(json.dumps({
        c: {"pass_rate": 0.0, "n_probes": 3, "by_library": {"pygame": {"pass_rate": 0.0, "n_probes": 3}}}
        for c in ("base", "phi1")}))
    (workdir / "reports/eval").mkdir(parents=True)  # evaluate's Table 3 goes with the numbers
    (workdir / "reports/eval/table3.json").write_text(json.dumps({"limit": 10, "rule": "similar at tau: ...", "rows": [
        {"tau": 0.9, "checkpoint": "phi1", "benchmark": "humaneval", "subset": s, "n_tasks": n, "pass@1": p,
         "solution_tasks": m, "solution_loss": loss} for s, n, p, m, loss in
        (("similar", 0, None, 2, 3.25), ("not_similar", 10, 0.0, 162, 4.3))]}))
    status = build(workdir / "out", registry=False)
    assert status["pass_at_k"].startswith("all zero: Every pass metric (pass@1) is 0")
    assert status["probe"].startswith("all zero: Every probe pass rate is 0")
    assert status["solution_loss"] == "written"
    out = workdir / "out"
    assert sorted(p.name for p in out.glob("*.png")) == ["solution_loss.png"]
    page = (out / "index.html").read_text()
    assert page.count('class="allzero"') == 2 and page.count("data:image/png") == 1
    assert "no generated solution passed its tests" in page
    assert '<td>base</td><td>mbpp</td><td class="n">0</td><td class="n">10</td><td class="n">5.7</td>' in page
    assert "<h3>Table 3: tasks similar / not similar to the training data</h3>" in page
    assert ('<td class="n">0.9</td><td>phi1</td><td>humaneval</td><td>similar</td><td class="n">0</td><td>-</td>'
            '<td class="n">2</td><td class="n">3.25</td>') in page


def test_report_shows_champion_and_challenger_with_lineage_and_gates(workdir):
    """Versions in a real MLflow registry (created directly, with the tags the register stage
    writes) and metrics/register.json: the page names each alias's version, git commit and
    data hashes, marks the hashes that differ, and lists every gate's verdict."""
    from phi1.engines.model_registry import DECISION_TAG, client

    c = client()  # on this test's store (MLFLOW_TRACKING_URI), whatever an earlier test set
    c.create_registered_model("phi1")
    lineage = {"1": ("a" * 40, "md5old00000000000000000000000000"), "2": ("b" * 40, "md5new00000000000000000000000000")}
    for version, (commit, pruned) in lineage.items():
        mv = c.create_model_version("phi1", source=(workdir / f"model{version}").as_uri())
        assert str(mv.version) == version
        for k, v in {"git.commit": commit, "git.dirty": "false", "params.sha256": "c" * 64,
                     "checkpoint.hash": f"md5:ckpt{version}", "validation.status": "passed",
                     "lineage.dvc.data/pruned": pruned, "lineage.dvc.data/raw": "md5raw",
                     "eval.humaneval.pass_at_1": "0.0" if version == "1" else "0.1", "probe.pass_rate": "0.0"}.items():
            c.set_model_version_tag("phi1", version, k, v)
    c.set_model_version_tag("phi1", "2", DECISION_TAG, json.dumps(
        {"action": "promote", "accepted": True, "dry_run": True, "failing": [], "at": "2026-12-06T10:00:00Z"}))
    c.set_registered_model_alias("phi1", "champion", "1")
    c.set_registered_model_alias("phi1", "challenger", "2")
    (workdir / "metrics").mkdir()
    gate = {"metric": "eval.humaneval.solution_loss", "direction": "lower", "candidate": 4.29, "champion": 4.68,
            "rule": "<= champion + 0.01", "verdict": "pass", "note": ""}
    (workdir / "metrics/register.json").write_text(json.dumps({"phi1": {
        "version": 2, "checkpoint": "checkpoints/phi1", "registered": 1, "promoted": 0, "promotable": 1,
        "gates_failed": 0, "champion": 1, "gates": {"eval.humaneval.solution_loss": gate}}}))
    build(workdir / "out")
    page = (workdir / "out/index.html").read_text()
    assert "<td>phi1</td><td>v2</td><td>checkpoints/phi1</td><td>promotable (gates pass)</td><td>v1</td>" in page
    assert ("<td>eval.humaneval.solution_loss</td><td>pass</td><td>lower</td><td class=\"n\">4.29</td>"
            "<td class=\"n\">4.68</td><td>&lt;= champion + 0.01</td>") in page
    assert "<td>phi1</td><td>champion</td><td>v1</td><td>aaaaaaaaaa</td>" in page
    assert "<td>phi1</td><td>challenger</td><td>v2</td><td>bbbbbbbbbb</td>" in page
    assert "promote would pass, 2026-12-06T10:00:00Z" in page
    assert "<td>data/pruned</td><td>md5old00</td><td>md5new00</td><td>differs</td>" in page
    assert "<td>data/raw</td><td>md5raw</td><td>md5raw</td><td>same</td>" in page
    # a champion that passed nothing is said to be one (the challenger passed a task: no sentence)
    assert ("The champion phi1 v1 passed nothing: every pass metric of it (eval.humaneval.pass_at_1, "
            "probe.pass_rate) is 0.") in page and page.count("passed nothing") == 1
    # without the registry (or without a store) the page says why, and still has the gates
    build(workdir / "out", registry=False)
    page = (workdir / "out/index.html").read_text()
    assert "Registry lineage not shown: not asked for (--no-registry)." in page and "lower" in page


def test_dvc_plots_template_inlines_vega_from_node_modules(tmp_path):
    """The `dvc plots show` template carries vega, vega-lite and vega-embed (from `make
    plots-offline`'s npm ci) and no CDN address; a missing build is a one-line error."""
    import sys

    from phi1.errors import Phi1Error
    from phi1.report import dvc_plots_template

    node_modules = Path(sys.prefix) / "vega" / "node_modules"
    assert (node_modules / "vega").is_dir(), f"{node_modules} missing: run `make plots-offline`"
    res = CliRunner().invoke(app, ["plots-template", "--node-modules", str(node_modules), "--out", str(tmp_path / "t.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "t.html").read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page and "cdn.jsdelivr" not in page
    assert page.count("<script>") == 3 and "<!-- vega-embed 6." in page and "vegaEmbed" in page
    with pytest.raises(Phi1Error, match="vega/build/vega.min.js not found"):
        dvc_plots_template(tmp_path)


def test_probe_numbers_show_solution_loss_api_topk_and_the_emergence_interval(workdir):
    from phi1.report import summary_rows

    lib = {"pygame": {"n_probes": 2, "pass_rate": 0.0, "solution_loss": 1.5, "api_topk": 0.25}}
    em = {"base": "base", "finetuned": "phi1", "api_topk_delta": 0.125,
          "solution_loss_delta": {"mean": -0.0625, "sd": 0.01, "n": 2, "ci95": {"low": -0.125, "high": 0.0}},
          "by_library": {"pygame": {"solution_loss_delta": {"mean": -0.0625, "n": 2, "ci95": {"low": -0.125, "high": 0.0}}}}}
    (workdir / "metrics").mkdir()
    (workdir / "metrics/probe.json").write_text(json.dumps({
        "base": {"n_probes": 2, "pass_rate": 0.0, "solution_loss": 1.5, "api_topk": 0.25, "by_library": lib},
        "phi1": {"n_probes": 2, "pass_rate": 0.0, "solution_loss": 1.4375, "api_topk": 0.375, "by_library": lib},
        "emergence": em}))
    status = build(workdir / "out", registry=False)
    assert status["probe"].startswith("all zero: Every probe pass rate is 0")  # the emergence key is no checkpoint
    page = (workdir / "out/index.html").read_text()
    assert '<td>phi1</td><td>all</td><td class="n">2</td><td class="n">0</td><td>-</td><td class="n">1.438</td>' \
           '<td class="n">0.375</td>' in page
    assert '<td>phi1 - base</td><td>all</td><td class="n">2</td><td class="n">-0.0625</td><td class="n">-0.125</td>' \
           '<td class="n">0</td><td class="n">0.125</td>' in page
    assert "<td>emergence</td>" not in page
    rows = {(s, f): v for s, f, v in summary_rows(workdir / "metrics")}
    assert rows["probe", "phi1: pass rate, sol. loss, 2 probes"].endswith("1.438")
    assert rows["probe", "phi1 - base sol. loss, 95% CI"] == "-0.0625 [-0.1250, +0.0000]"
