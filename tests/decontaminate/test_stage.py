import json

import mlflow
import numpy as np
import pytest

from phi1.config import DecontaminateConfig
from phi1.decontaminate.stage import run
from phi1.errors import Phi1Error
from phi1.io import read_table


@pytest.mark.slow
def test_planted_humaneval_solutions_are_all_pruned_and_stdlib_code_is_not(workdir, datasets):
    cfg = DecontaminateConfig(tau=0.9, benchmarks=("humaneval",), max_tokens=128)
    paths = {k: datasets[k] for k in ("filtered", "textbook", "exercises")}
    metrics = run(cfg, paths, out=workdir / "pruned", report_path=workdir / "report.json",
                  plot_path=workdir / "sweep.png", metrics_path=workdir / "metrics.json", progress=False)
    report = json.loads((workdir / "report.json").read_text())
    planted, unrelated = datasets["planted_ids"], datasets["unrelated_ids"]
    flagged_at_tau = {f["id"] for f in report["flagged"] if f["dataset"] == "exercises" and f["score"] >= 0.9}
    assert planted <= flagged_at_tau  # every disguised HumanEval solution is caught...
    assert not (unrelated & flagged_at_tau)  # ...and no unrelated standard-library function
    # Renaming and reformatting leave the normalised AST unchanged: the AST detector alone finds them all.
    ast_hits = {f["id"] for f in report["flagged"] if f["detector"] == "ast" and f["score"] >= 0.9}
    assert planted <= ast_hits
    # Each planted exercise is attributed to its own task.
    own = {(f["id"], f["task_id"]) for f in report["flagged"] if f["detector"] == "ast" and f["score"] == 1.0}
    pruned = read_table(workdir / "pruned" / "exercises").to_pylist()
    assert {r["id"] for r in pruned} == unrelated
    assert all(r["contamination_score"] < 0.9 for r in pruned)
    assert read_table(workdir / "pruned" / "filtered").num_rows == read_table(paths["filtered"]).num_rows
    assert metrics["removed"]["exercises"] == len(planted) == 164
    assert metrics["tasks_similar"]["humaneval"] == 164
    assert len(own) >= 164
    # each task's highest score, the split evaluate's Table 3 reads, agrees with the counts
    assert sum(s >= 0.9 for s in report["task_scores"]["humaneval"].values()) == 164

    taus = [row["tau"] for row in report["sweep"]]
    assert taus == [0.95, 0.9, 0.85, 0.8]
    removed = [row["removed"]["exercises"] for row in report["sweep"]]
    assert removed == sorted(removed) and removed[1] == 164  # lower tau never removes less
    assert set(report["at_tau"]["by_detector"]) == {"ngram", "embedding", "ast"}
    stats = report["ast_pairs"]["exercises"]
    assert stats["pairs"] >= stats["after_size"] >= stats["after_labels"] >= stats["after_top_k"]
    assert (workdir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (cached,) = (workdir / ".cache" / "decontaminate").glob("tasks-*.npy")  # task embeddings, for reruns
    assert np.load(cached).shape == (164, 384)

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["phi1-test-data"], filter_string="tags.`phi1.stage` = 'decontaminate'")
    assert runs.iloc[0]["metrics.removed.exercises"] == 164
    client = mlflow.MlflowClient()
    arts = {a.path for a in client.list_artifacts(runs.iloc[0]["run_id"], "decontaminate")}
    assert arts == {"decontaminate/report.json", "decontaminate/sweep.png"}
    sweep = client.get_metric_history(runs.iloc[0]["run_id"], "sweep.removed.exercises")
    assert sorted((m.step, m.value) for m in sweep) == [(80, removed[3]), (85, removed[2]), (90, 164), (95, removed[0])]


def test_missing_dataset_is_a_one_line_error(workdir, tmp_path):
    with pytest.raises(Phi1Error, match="dataset exercises not found: .*nope"):
        run(DecontaminateConfig(), {"exercises": tmp_path / "nope"}, out=workdir / "p", report_path=workdir / "r.json",
            plot_path=workdir / "s.png", metrics_path=workdir / "m.json")
    assert not (workdir / "p").exists()


def test_rerun_reuses_scores_of_unchanged_datasets(workdir, small_corpus, tmp_path):
    from phi1.synthesize.stage import EXERCISES_SCHEMA
    from tests.decontaminate.conftest import filtered_rows, planted_humaneval, write

    cfg = DecontaminateConfig(detectors=("ngram", "ast"), benchmarks=("humaneval",))
    planted = planted_humaneval()
    paths = {"filtered": write(tmp_path / "f", filtered_rows(small_corpus)),
             "exercises": write(tmp_path / "e1", planted[:3], EXERCISES_SCHEMA)}

    def once(paths):
        m = run(cfg, paths, out=workdir / "p", report_path=workdir / "r.json", plot_path=workdir / "s.png",
                metrics_path=workdir / "m.json", progress=False)
        return m, json.loads((workdir / "r.json").read_text())["flagged"]

    first, flags1 = once(paths)
    again, flags2 = once(paths)
    assert first["cached"] == [] and again["cached"] == ["filtered", "exercises"]
    assert flags1 == flags2 and again["removed"] == first["removed"] == {"filtered": 0, "exercises": 3}
    paths["exercises"] = write(tmp_path / "e2", planted[3:5], EXERCISES_SCHEMA)
    changed, _ = once(paths)
    assert changed["cached"] == ["filtered"] and changed["removed"]["exercises"] == 2


def test_prune_raw_prunes_the_unfiltered_corpus_as_it_prunes_the_filtered_code(workdir, small_corpus, tmp_path):
    """The ablation's unfiltered variant trains on data/pruned/raw: disguised HumanEval
    solutions planted as files of the raw corpus are pruned from it, its own files stay."""
    from tests.decontaminate.conftest import filtered_rows, planted_humaneval, write

    corpus = filtered_rows(small_corpus)
    planted = [{"id": f"planted-{i}", "path": f"planted/{r['function_name']}.py", "content": r["prompt"] + r["solution"],
                "quality_score": 0.0} for i, r in enumerate(planted_humaneval()[:12])]
    raw = write(tmp_path / "raw", corpus + planted)
    cfg = DecontaminateConfig(detectors=("ngram", "ast"), benchmarks=("humaneval",), prune_raw=True)
    m = run(cfg, {"filtered": write(tmp_path / "f", corpus), "raw": raw}, out=workdir / "p",
            report_path=workdir / "r.json", plot_path=workdir / "s.png", metrics_path=workdir / "m.json", progress=False)
    kept = {r["id"] for r in read_table(workdir / "p" / "raw").to_pylist()}
    assert kept == {r["id"] for r in corpus}
    assert m["removed"] == {"filtered": 0, "raw": 12} and m["tasks_similar"]["humaneval"] == 12
    assert sorted(p.name for p in (workdir / "p").iterdir() if not p.name.startswith(".")) == ["filtered", "raw"]


def test_scoring_a_chunk_at_a_time_changes_no_score(workdir, small_corpus, tmp_path, monkeypatch):
    """Big corpora are scored CHUNK_ITEMS items at a time (bounded memory): chunks of 5
    give the same flags, item scores, AST counts and cache key as one chunk."""
    from phi1.decontaminate import stage
    from phi1.decontaminate.references import load_references
    from tests.decontaminate.conftest import filtered_rows, planted_humaneval, write

    rows = filtered_rows(small_corpus)
    rows[3:3] = [{"id": f"planted-{i}", "path": "p.py", "content": r["prompt"] + r["solution"], "quality_score": 0.0}
                 for i, r in enumerate(planted_humaneval()[:8])]
    table = read_table(write(tmp_path / "raw", rows))
    cfg = DecontaminateConfig(detectors=("ngram", "ast"), benchmarks=("humaneval",), cache_path=None)
    refs = load_references(cfg.benchmarks)
    whole = stage.score(cfg, {"raw": table}, progress=False)
    key = stage._cache_key(cfg, refs, "raw", table)
    monkeypatch.setattr(stage, "CHUNK_ITEMS", 5)
    chunked = stage.score(cfg, {"raw": table}, progress=False)
    assert table.num_rows > 3 * 5 and chunked["flags"] == whole["flags"] and len(whole["flags"]) >= 8
    assert chunked["item_max"] == whole["item_max"]
    drop = ("seconds",)
    assert {k: v for k, v in chunked["ast"]["raw"].items() if k not in drop} == {
        k: v for k, v in whole["ast"]["raw"].items() if k not in drop}
    assert stage._cache_key(cfg, refs, "raw", table) == key
