"""`phi1 ablate`: the variant plan, the results and figure, and (slow) a shrunken
ablation through the real command: two DVC experiments in a temp git + DVC copy of the
pipeline, MLflow runs tagged by variant, results and figure, then a seed repeat."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from phi1.ablate import (VARIANTS, Ablation, collect, experiments, figure, plan, statistics, summary_table, table,
                         tracking_env, valid_exp_name, verdicts, write_results)
from phi1.errors import Phi1Error
from tests.conftest import REPO
from tests.dvc_repo import pipeline_repo, tool_env

PNG = b"\x89PNG\r\n\x1a\n"


def test_plan_gives_every_variant_the_same_budget_and_overrides():
    got = plan(None, 4096, ["pretrain.max_steps=3"])
    assert list(got) == ["unfiltered", "filtered", "filtered+textbook"]
    assert got["unfiltered"][:2] == ["decontaminate.prune_raw=true", "tokenize.pretrain_inputs=[data/pruned/raw:content]"]
    for sets in got.values():
        assert sets[-2:] == ["tokenize.max_tokens=4096", "pretrain.max_steps=3"]
    assert plan(["filtered"], None)["filtered"] == ["tokenize.pretrain_inputs=[data/pruned/filtered:content]"]


def test_plan_with_seeds_runs_each_variant_once_per_training_seed():
    got = plan(["filtered", "unfiltered"], 4096, ["pretrain.max_steps=3"], seeds=[7, 8])
    assert list(got) == ["filtered-seed7", "filtered-seed8", "unfiltered-seed7", "unfiltered-seed8"]
    assert got["filtered-seed8"] == ["tokenize.pretrain_inputs=[data/pruned/filtered:content]", "tokenize.max_tokens=4096",
                                     "pretrain.max_steps=3", "pretrain.seed=8", "finetune.seed=8"]
    assert all(valid_exp_name(n) for n in plan(None, 10, seeds=[0, 1234]))


@pytest.mark.parametrize("variants, max_tokens, overrides, seeds, msg", [
    (["textbook"], 10, [], None, "unknown ablation variant"),
    (["filtered", "filtered"], 10, [], None, "lists a variant twice"),
    (None, 0, [], None, "--max-tokens must be positive"),
    (None, 10, ["nokey"], None, "expected section.key=value"),
    (None, 10, ["tokenize.max_tokens=5"], None, "what the variants"),
    (None, 10, ["pretrain.seed=5"], [1, 2], "what each seed sets"),
    (None, 10, [], [1, 1], "lists a seed twice"),
    (None, 10, [], [-1], "non-negative integers"),
    (None, 10, [], [], "--seeds is empty"),
])
def test_plan_rejects_what_would_break_the_comparison(variants, max_tokens, overrides, seeds, msg):
    with pytest.raises(Phi1Error, match=msg):
        plan(variants, max_tokens, overrides, seeds)


def test_variant_names_are_valid_exp_names_and_the_check_agrees_with_git():
    for name in [*VARIANTS, "a b", "x/y", "a..b", ".x", "x.lock", "q?", "t~1", "c:d", "ok_name-1.2"]:
        git = subprocess.run(["git", "check-ref-format", f"refs/exps/ab/cd/{name}"]).returncode == 0
        assert valid_exp_name(name) == (git and "/" not in name), name
    assert all(valid_exp_name(n) for n in VARIANTS)


def test_tracking_env_makes_the_store_absolute_and_drops_a_fixed_variant(tmp_path):
    base = {"PATH": "/usr/bin", "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "PHI1_VARIANT": "x"}
    env = tracking_env(tmp_path, "abl", base)
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert env["PHI1_EXPERIMENT"] == "abl" and "PHI1_VARIANT" not in env
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert tracking_env(tmp_path, "abl", {})["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    remote = tracking_env(tmp_path, "abl", {"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert remote["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_workers_running_reads_dvc_task_process_files(tmp_path):
    from phi1.ablate import workers_running

    celery = tmp_path / ".dvc/tmp/exps/celery"
    celery.mkdir(parents=True)
    assert workers_running(tmp_path) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (celery / "dvc-exp-worker-1.json").write_text(json.dumps({"pid": os.getpid(), "returncode": None}))
    (celery / "dvc-exp-worker-2.json").write_text(json.dumps({"pid": os.getpid(), "returncode": 0}))
    (celery / "dvc-exp-worker-3.json").write_text(json.dumps({"pid": int(dead.stdout), "returncode": None}))
    (celery / "dvc-exp-worker-4.json").write_text("")  # being written
    assert workers_running(tmp_path) == 1


def _exp(name: str, state: str, he_loss: float, tokens: int, seed: int = 1234) -> dict:
    """One experiment entry in the shape `dvc exp show --json` prints."""
    evals = {ck: {bm: {"pass@1": 0.0, "solution_loss": he_loss - 0.1 * i, "solution_tokens": tokens,
                       "solution_truncated": 0} for bm in ("humaneval", "mbpp")}
             for i, ck in enumerate(("base", "phi1"))}
    data = {"metrics": {"metrics/eval.json": {"data": evals},
                        "metrics/pretrain.json": {"data": {"final_val_loss": 5.0, "tokens_seen": 1000}},
                        "metrics/finetune.json": {"data": {"final_val_loss": 4.0, "tokens_seen": 200}},
                        "metrics/tokenize.json": {"data": {"pretrain": {"train_tokens": 4096}}}},
            "params": {"params.yaml": {"data": {"evaluate": {"mbpp_split": "test", "solution_loss_limit": 3},
                                                "pretrain": {"seed": seed}}}}}
    return {"name": name, "revs": [{"rev": f"{name}-rev", "name": name, "data": data}],
            "executor": {"state": state, "local": {"log": None}}}


def test_collect_reads_finished_exps_and_normalises_loss_per_character():
    from phi1.engines import benchmarks
    from phi1.engines.solution_loss import reference

    show = [{"rev": "HEAD", "experiments": [_exp("filtered", "success", 2.0, 300), _exp("unfiltered", "failed", 1.0, 300)]}]
    assert {n: e["state"] for n, e in experiments(show).items()} == {"filtered": "success", "unfiltered": "failed"}
    rows = collect(show, ["filtered", "unfiltered"])
    assert [(r["variant"], r["checkpoint"]) for r in rows] == [("filtered", "base"), ("filtered", "phi1")]
    chars = sum(len(reference(t)) for t in benchmarks.load("humaneval", "test", 3))
    assert rows[0]["humaneval_solution_nats_per_char"] == pytest.approx(2.0 * 300 / chars)
    assert rows[1]["humaneval_solution_loss"] == pytest.approx(1.9)
    assert rows[0]["tokens_seen"] == 1000 and rows[1]["tokens_seen"] == 1200
    assert rows[0]["finetune_val_loss"] is None and rows[1]["finetune_val_loss"] == 4.0
    assert rows[0]["exp_rev"] == "filtered-rev" and rows[0]["pretrain_pool_tokens"] == 4096
    assert rows[0]["seed"] == 1234 and rows[0]["exp"] == "filtered"
    # a seed repeat's exp belongs to its variant, with its own seed
    seeded = collect([{"rev": "HEAD", "experiments": [_exp("filtered-seed7", "success", 2.0, 300, seed=7)]}],
                     ["filtered-seed7"])
    assert [(r["variant"], r["seed"], r["exp"]) for r in seeded] == [("filtered", 7, "filtered-seed7")] * 2


def _row(variant: str, seed: int, ckpt: str, he: float, mbpp: float = 2.0) -> dict:
    return {"variant": variant, "checkpoint": ckpt, "seed": seed, "exp": f"{variant}-seed{seed}", "humaneval_pass@1": 0.0,
            "mbpp_pass@1": 0.0, "humaneval_solution_nats_per_char": he, "mbpp_solution_nats_per_char": mbpp}


def test_statistics_give_means_sds_paired_finetune_effects_and_t_interval_contrasts():
    he = {("a", 1, "base"): 1.0, ("a", 2, "base"): 1.2, ("a", 1, "phi1"): 0.8, ("a", 2, "phi1"): 0.9,
          ("b", 1, "base"): 1.5, ("b", 2, "base"): 1.7, ("b", 1, "phi1"): 1.0, ("b", 2, "phi1"): 1.3}
    rows = [_row(v, s, c, x, mbpp=2.0 + s / 100) for (v, s, c), x in he.items()]
    st = statistics(rows)
    a_base = next(e for e in st["summary"] if (e["variant"], e["checkpoint"]) == ("a", "base"))
    assert a_base["n"] == 2 and a_base["seeds"] == [1, 2]
    assert a_base["humaneval_solution_nats_per_char_mean"] == pytest.approx(1.1)
    assert a_base["humaneval_solution_nats_per_char_sd"] == pytest.approx(math.sqrt(0.02))
    assert a_base["humaneval_pass@1_sd"] == 0.0
    # finetuning, paired by seed: a: -0.2, -0.3 -> mean -0.25, sd 0.0707, SE 0.05, df 1:
    # the 95% t half-width is 12.706 * 0.05 = 0.635, so two seeds cannot resolve it
    eff = {(e["variant"], e["metric"]): e for e in st["finetune_effect"]}
    a_he = eff[("a", "humaneval_solution_nats_per_char")]
    assert a_he["mean"] == pytest.approx(-0.25) and a_he["se"] == pytest.approx(0.05) and a_he["df"] == 1
    assert a_he["half_width"] == pytest.approx(12.7062 * 0.05, rel=1e-4) and a_he["resolved"] is False
    assert eff[("a", "mbpp_solution_nats_per_char")]["resolved"] is False  # no change at all (SE 0)
    # a - b on base HumanEval: -0.5, SE sqrt(0.02/2 + 0.02/2) = 0.141, Welch df 2:
    # half-width 4.303 * 0.141 = 0.609 > 0.5: within noise
    con = {(c["checkpoint"], c["metric"]): c for c in st["contrasts"]}
    base_he = con[("base", "humaneval_solution_nats_per_char")]
    assert (base_he["a"], base_he["b"]) == ("a", "b") and base_he["diff"] == pytest.approx(-0.5)
    assert base_he["se"] == pytest.approx(math.sqrt(0.02)) and base_he["df"] == pytest.approx(2.0)
    assert base_he["half_width"] == pytest.approx(4.3027 * math.sqrt(0.02), rel=1e-4) and base_he["resolved"] is False
    lines = verdicts(st)
    assert "base, humaneval_solution_nats_per_char: a - b = -0.5000 +- 0.6085 (95% t, df 2.0): within noise" in lines
    # with four seeds a (sd 0.01) and b (sd 0.01) 0.5 apart: resolved
    tight = [_row(v, s, "base", x + 0.01 * (-1) ** s) for v, x in (("a", 1.0), ("b", 1.5)) for s in range(4)]
    c = statistics(tight)["contrasts"][2]
    assert c["metric"] == "humaneval_solution_nats_per_char" and c["df"] == pytest.approx(6.0) and c["resolved"] is True
    assert summary_table(st).row_count == 4
    assert figure(rows)[:8] == PNG  # error bars and seed dots


def test_one_seed_gives_means_and_says_the_noise_is_unknown():
    st = statistics([_row("a", 1, "base", 1.0), _row("a", 1, "phi1", 0.9), _row("b", 1, "base", 1.2)])
    assert [e["n"] for e in st["summary"]] == [1, 1, 1]
    assert all(c["se"] is None and c["resolved"] is None for c in st["contrasts"])
    assert all(line.endswith("noise unknown (one seed: run --seeds)") for line in verdicts(st))


def test_results_files_figure_and_table(tmp_path):
    show = [{"rev": "HEAD", "experiments": [_exp(n, "success", 2.0 + i / 10, 300) for i, n in enumerate(VARIANTS)]}]
    res = Ablation(plan=plan(None, 4096), states={n: "success" for n in VARIANTS}, rows=collect(show, list(VARIANTS)))
    write_results(tmp_path / "abl", res, {"max_tokens": 4096})
    got = json.loads((tmp_path / "abl/results.json").read_text())
    assert len(got["rows"]) == 6 and got["max_tokens"] == 4096 and got["plan"] == res.plan
    assert len(got["statistics"]["summary"]) == 6 and got["verdicts"]
    lines = (tmp_path / "abl/results.csv").read_text().splitlines()
    assert lines[0].startswith("variant,checkpoint,seed,humaneval_pass@1") and len(lines) == 7
    assert (tmp_path / "abl/figure.png").read_bytes()[:8] == PNG
    assert figure(res.rows[:2])[:8] == PNG  # one variant is drawable too
    assert table(res.rows).row_count == 6


# --------------------------------------------------------------------------- end to end

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
FAST = {"max_steps": 2, "micro_batch_size": 2, "global_batch_size": 2, "warmup_steps": 1, "eval_every": 2,
        "eval_batches": 1, "checkpoint_every": 2, "log_every": 1, "log_model": False, "log_system_metrics": False}


def shrunk_params(corpus: Path) -> dict:
    """The repo's params.yaml, test-sized: 20 files, few exercises, a 2-layer model, 2
    steps, one task per benchmark. Nearly all of the test's time is process starts
    (each stage imports torch, transformers and MLflow), so fewer stage runs is what counts."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["ingest"]["sources"] = [{"name": "corpus", "kind": "local", "paths": [str(corpus)]}]
    # all 20 files are library modules scoring 0.59..0.94: a higher bar gives both classes
    p["annotate"].update({"sample_size": 20, "label_threshold": 0.8})
    p["embed"].update({"max_tokens": 64})
    p["filter"].update({"n_estimators": 20})
    p["synthesize"].update({"n_textbook": 10, "n_exercises": 30, "max_tokens": 64})
    p["decontaminate"].update({"max_tokens": 64, "detectors": ["ngram", "ast"]})
    p["validate"].update({"data_docs": False})
    p["tokenize"].update({"vocab_size": 512, "seq_len": 64})
    p["pretrain"].update(FAST, model_overrides=TINY)
    p["finetune"].update(FAST)
    p["evaluate"].update({"limit": 1, "max_new_tokens": 4, "solution_loss_limit": 2})
    return p


@pytest.mark.slow
def test_shrunken_ablation_through_the_command(tmp_path, small_corpus, monkeypatch):
    """~2.5 min on the 2-core box: `dvc repro validate` once, then `phi1 ablate` with two
    variants (tokenize -> evaluate each, in DVC's queue; unfiltered decontaminates data/raw
    first). The seed repeats are the `long` test below."""
    import mlflow

    # A relative sqlite URI, as a user has it: ablate must make it absolute for the queue.
    env = tool_env(MLFLOW_TRACKING_URI="sqlite:///mlflow.db")
    env.pop("PHI1_EXPERIMENT", None)
    repo = pipeline_repo(tmp_path / "repo", shrunk_params(small_corpus), env)
    repo.sh("dvc", "repro", "validate")
    repo.commit("baseline: shared upstream stages")

    done = repo.sh("phi1", "ablate", "--variants", "unfiltered,filtered", "--max-tokens", "8192",
                   "-S", "pretrain.seed=7", "-S", "finetune.seed=7", "--jobs", "2", "--poll", "3", "--timeout", "600")
    assert "unfiltered: success" in done.stderr and "filtered: success" in done.stderr
    assert "unfiltered: running (" in done.stderr  # live progress: which exp, which stage
    assert "phi1 ablation" in done.stdout  # the table

    show = json.loads(repo.sh("dvc", "exp", "show", "--json").stdout)
    exps = experiments([b for b in show if b["rev"] != "workspace"])
    assert {n: e["state"] for n, e in exps.items()} == {"unfiltered": "success", "filtered": "success"}
    params = {n: e["data"]["params"]["params.yaml"]["data"] for n, e in exps.items()}
    assert params["unfiltered"]["tokenize"]["pretrain_inputs"] == ["data/pruned/raw:content"]
    assert params["unfiltered"]["decontaminate"]["prune_raw"] is True and params["filtered"]["decontaminate"]["prune_raw"] is False
    pruned = {n: e["data"]["metrics"]["metrics/decontaminate.json"]["data"]["items"] for n, e in exps.items()}
    assert "raw" in pruned["unfiltered"] and "raw" not in pruned["filtered"]  # every variant decontaminated
    assert params["filtered"]["tokenize"]["max_tokens"] == 8192 and params["filtered"]["pretrain"]["seed"] == 7

    out = repo.root / "reports/ablation"
    res = json.loads((out / "results.json").read_text())
    assert {(r["variant"], r["checkpoint"]) for r in res["rows"]} == {
        (v, c) for v in ("unfiltered", "filtered") for c in ("base", "phi1")}
    for r in res["rows"]:
        for key in ("humaneval_solution_loss", "mbpp_solution_loss", "humaneval_solution_nats_per_char"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["variant"], key)
        assert r["pretrain_pool_tokens"] == 8192 and r["exp_rev"] == exps[r["variant"]]["rev"]
    # the variants trained on different data: their base models differ
    base = {r["variant"]: r["humaneval_solution_loss"] for r in res["rows"] if r["checkpoint"] == "base"}
    assert base["unfiltered"] != base["filtered"]
    assert (out / "figure.png").read_bytes()[:8] == PNG

    # MLflow: one experiment (in the repo's store, not a temp copy's), runs tagged by variant
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo.root}/mlflow.db")
    exp = client.get_experiment_by_name("phi1-ablation")
    data = client.get_experiment_by_name("phi1-ablation-data")  # the data stages' runs (DATA_STAGES)
    assert exp.artifact_location == data.artifact_location == (repo.root / "mlruns").as_uri()
    both = [exp.experiment_id, data.experiment_id]
    for variant in ("unfiltered", "filtered"):
        runs = client.search_runs(both, f"tags.`phi1.variant` = '{variant}'")
        assert {r.data.tags["phi1.stage"] for r in runs} >= {"tokenize", "pretrain", "finetune", "evaluate"}
        assert {r.info.experiment_id for r in runs if r.data.tags["phi1.stage"] == "tokenize"} == {data.experiment_id}
    summary = client.search_runs([exp.experiment_id], "tags.`phi1.stage` = 'ablate'")
    assert len(summary) == 1
    assert summary[0].data.metrics["filtered.base.humaneval_solution_loss"] == pytest.approx(base["filtered"])
    assert {a.path for a in client.list_artifacts(summary[0].info.run_id, "ablation")} == {
        "ablation/results.json", "ablation/results.csv", "ablation/figure.png"}
    assert not list((repo.root / ".dvc/tmp/exps").glob("tmp*/mlflow.db"))

    # `phi1 compare` shows the ablation's runs of one variant
    monkeypatch.chdir(repo.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo.root}/mlflow.db")
    from typer.testing import CliRunner

    from phi1.cli import app

    cmp = CliRunner().invoke(app, ["compare", "--experiment", "phi1-ablation", "--variant", "filtered",
                                   "--stage", "pretrain"])
    assert cmp.exit_code == 0, cmp.output
    # two pretrain runs in the experiment, one per variant: the filter keeps one
    assert "phi1: 1 runs" in cmp.output and "pretrain [filtered]" in cmp.output and "unfiltered" not in cmp.output

    # a commit since moves HEAD off the exps' baseline: --collect-only finds none there,
    # and with --baseline redraws them from the DVC records without running anything
    # (in this process: a new one would only add its start-up time)
    first = repo.sh("git", "rev-parse", "HEAD").stdout.strip()
    repo.sh("git", "commit", "-q", "--allow-empty", "-m", "later work")
    lost = CliRunner().invoke(app, ["ablate", "--variants", "filtered", "--collect-only"])
    assert lost.exit_code == 2 and "--baseline REV" in lost.output
    again = CliRunner().invoke(app, ["ablate", "--variants", "unfiltered,filtered", "--collect-only",
                                     "--baseline", first[:10], "--out", "reports/again"])
    assert again.exit_code == 0, again.output
    assert "unfiltered" in again.output
    redrawn = json.loads((repo.root / "reports/again/results.json").read_text())
    assert redrawn["baseline"] == first and redrawn["rows"] == res["rows"]
    assert len(client.search_runs([exp.experiment_id], "tags.`phi1.stage` = 'ablate'")) == 2



@pytest.mark.long  # ~2.5 min: three trainings; make test keeps the two-variant run above
def test_seed_repeats_reuse_the_run_cache_and_add_the_noise(tmp_path, small_corpus):
    """`filtered` under seed 7, then `--seeds 7,8`: seed 7's exp is restored from DVC's
    run cache (no stage runs), seed 8 trains anew, and the results add mean +- sd."""
    import mlflow

    env = tool_env(MLFLOW_TRACKING_URI="sqlite:///mlflow.db")
    env.pop("PHI1_EXPERIMENT", None)
    repo = pipeline_repo(tmp_path / "repo", shrunk_params(small_corpus), env)
    repo.sh("dvc", "repro", "validate")
    repo.commit("baseline: shared upstream stages")
    repo.sh("phi1", "ablate", "--variants", "filtered", "--max-tokens", "8192", "-S", "pretrain.seed=7",
            "-S", "finetune.seed=7", "--poll", "3", "--timeout", "600")
    base = {r["variant"]: r["humaneval_solution_loss"] for r in json.loads(
        (repo.root / "reports/ablation/results.json").read_text())["rows"] if r["checkpoint"] == "base"}
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo.root}/mlflow.db")
    exp = client.get_experiment_by_name("phi1-ablation")
    both = [exp.experiment_id, client.get_experiment_by_name("phi1-ablation-data").experiment_id]

    # --seeds: `filtered` again under training seeds 7 and 8 (exps filtered-seed7/-seed8);
    # seed 7 is the run above's exp again: DVC's run cache restores every stage of it
    seeded = repo.sh("phi1", "ablate", "--variants", "filtered", "--seeds", "7,8", "--max-tokens", "8192",
                     "--jobs", "2", "--poll", "3", "--timeout", "600", "--out", "reports/seeds")
    assert "filtered-seed8: success" in seeded.stderr
    # no stage of filtered-seed7 ran (each would have logged a run tagged with its seed)
    assert not client.search_runs(both, "tags.`phi1.seed` = '7'")
    assert "mean +- sd over seeds" in seeded.stdout and "finetune effect, filtered, " in seeded.stdout
    got = json.loads((repo.root / "reports/seeds/results.json").read_text())
    assert sorted((r["variant"], r["seed"], r["checkpoint"]) for r in got["rows"]) == [
        ("filtered", s, c) for s in (7, 8) for c in ("base", "phi1")]
    assert [(e["checkpoint"], e["n"]) for e in got["statistics"]["summary"]] == [("base", 2), ("phi1", 2)]
    seed7 = next(r for r in got["rows"] if r["seed"] == 7 and r["checkpoint"] == "base")
    assert seed7["humaneval_solution_loss"] == pytest.approx(base["filtered"])  # the same pretrained model
    seed8 = next(r for r in got["rows"] if r["seed"] == 8 and r["checkpoint"] == "base")
    assert seed8["humaneval_solution_loss"] != seed7["humaneval_solution_loss"]  # trained anew
    shown = json.loads(repo.sh("dvc", "exp", "show", "--json").stdout)
    names = {e["name"] for b in shown for e in b.get("experiments") or []}
    assert {"filtered", "filtered-seed7", "filtered-seed8"} <= names
    runs = client.search_runs(both, "tags.`phi1.seed` = '8'")
    assert runs and {r.data.tags["phi1.variant"] for r in runs} == {"filtered"}
    last = client.search_runs([exp.experiment_id], "tags.`phi1.stage` = 'ablate'", order_by=["attributes.start_time DESC"])[0]
    assert "filtered.base.sd.humaneval_solution_nats_per_char" in last.data.metrics


def test_check_repo_resolves_the_baseline_commit_and_names_a_bad_one(tmp_path):
    from phi1.ablate import check_repo
    from tests.dvc_repo import init_repo

    repo = init_repo(tmp_path / "r")
    (repo.root / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(Phi1Error, match="no git commit yet"):
        check_repo(repo.root)
    repo.commit("one")
    head = repo.sh("git", "rev-parse", "HEAD").stdout.strip()
    assert check_repo(repo.root) == head and check_repo(repo.root, head[:8]) == head
    with pytest.raises(Phi1Error, match="--baseline 'nope' is not a commit"):
        check_repo(repo.root, "nope")


def test_ablate_names_a_folder_that_is_not_a_dvc_repo(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "phi1"), "ablate"], cwd=tmp_path,
                          capture_output=True, text=True, env=tool_env())
    assert done.returncode == 2
    assert "is not a DVC repository" in done.stderr


def test_probe_solution_loss_and_its_emergence_interval_reach_the_rows_stats_and_figure():
    """With `--target evaluate,probe` each exp's metrics/probe.json gives the probe
    solution loss per checkpoint and, on the finetuned row, finetuned - base paired by
    probe with its t interval; the finetune effect and the figure's fourth panel use them."""
    exp = _exp("filtered", "success", 2.0, 300)
    exp["revs"][0]["data"]["metrics"]["metrics/probe.json"] = {"data": {
        "base": {"solution_loss": 1.30}, "phi1": {"solution_loss": 1.25},
        "emergence": {"base": "base", "finetuned": "phi1",
                      "solution_loss_delta": {"mean": -0.05, "n": 25, "ci95": {"low": -0.08, "high": -0.02}}}}}
    rows = collect([{"rev": "HEAD", "experiments": [exp]}], ["filtered"])
    assert [r["probe_solution_nats_per_char"] for r in rows] == [1.30, 1.25]
    assert rows[0]["probe_emergence_delta"] is None
    assert (rows[1]["probe_emergence_delta"], rows[1]["probe_emergence_ci95_low"],
            rows[1]["probe_emergence_ci95_high"]) == (-0.05, -0.08, -0.02)
    eff = {e["metric"]: e for e in statistics(rows)["finetune_effect"]}
    assert eff["probe_solution_nats_per_char"]["mean"] == pytest.approx(-0.05)
    assert "HE loss/char" in [c.header for c in table(rows).columns]
    assert "probe ft-base" in [c.header for c in table(rows).columns]
    assert figure(rows)[:8] == PNG
    # exps without the probe stage: no probe columns in the terminal table
    plain = collect([{"rev": "HEAD", "experiments": [_exp("filtered", "success", 2.0, 300)]}], ["filtered"])
    assert plain[1]["probe_solution_nats_per_char"] is None
    assert "probe loss/char" not in [c.header for c in table(plain).columns]
