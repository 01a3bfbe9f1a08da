"""Table 3 (similar / not similar tasks at each tau): a hand-made contamination report and
hand-made results give known subsets, counts, pass@1 and solution losses."""

from __future__ import annotations

import pytest

from phi1.errors import Phi1Error
from phi1.evaluate.table3 import covers, mlflow_metrics, similarity, subset_rows


def _report(**extra):
    # HumanEval/1 scores 0.97 (similar at every tau), /2 0.88 (similar at 0.85 and 0.8),
    # /7 0.95 (similar at 0.95 too, but not evaluated), everything else below the floor.
    scores = {"humaneval": {"HumanEval/1": 0.97, "HumanEval/2": 0.88, "HumanEval/7": 0.95}}
    sweep = [{"tau": 0.95, "tasks_similar": {"humaneval": 2}}, {"tau": 0.9, "tasks_similar": {"humaneval": 2}},
             {"tau": 0.85, "tasks_similar": {"humaneval": 3}}, {"tau": 0.8, "tasks_similar": {"humaneval": 3}}]
    return {"tau": 0.9, "sweep": sweep, "benchmark_tasks": {"humaneval": 164}, "task_scores": scores, **extra}


PER_TASK = [{"task_id": f"HumanEval/{i}", "n_samples": 1, "n_passed": p, "pass@1": float(p)}
            for i, p in enumerate([1, 0, 1, 0])]  # evaluated: 0..3 (limit 4); 0 and 2 pass
LOSS = [{"task_id": f"HumanEval/{i}", "loss": loss, "tokens": tok}
        for i, (loss, tok) in enumerate([(2.0, 10), (1.0, 30), (4.0, 10), (3.0, 10), (5.0, 20), (6.0, 20),
                                         (7.0, 10), (0.5, 40)])]  # loss scored on 0..7


def test_a_known_similarity_gives_the_known_subsets_counts_and_scores():
    sim = similarity(_report())
    assert sim.taus == (0.95, 0.9, 0.85, 0.8)
    rows = {(r["tau"], r["subset"]): r for r in subset_rows(sim, "humaneval", PER_TASK, LOSS, ks=[1])}
    hi = rows[(0.95, "similar")]  # {1, 7} similar; 1 evaluated (failed), 1 and 7 loss-scored
    assert (hi["n_tasks"], hi["pass@1"], hi["task_ids"], hi["tasks_similar_total"]) == (1, 0.0, ["HumanEval/1"], 2)
    assert (hi["solution_tasks"], hi["solution_tokens"]) == (2, 70)
    assert hi["solution_loss"] == pytest.approx((1.0 * 30 + 0.5 * 40) / 70)
    rest = rows[(0.95, "not_similar")]  # 0, 2, 3 evaluated (0 and 2 pass); loss on 0, 2..6
    assert (rest["n_tasks"], rest["pass@1"], rest["solution_tasks"]) == (3, pytest.approx(2 / 3), 6)
    assert rest["solution_loss"] == pytest.approx((20 + 40 + 30 + 100 + 120 + 70) / 80)
    assert rows[(0.9, "similar")]["n_tasks"] == 1
    low = rows[(0.85, "similar")]  # 2 joins at 0.88: evaluated 1 (failed) and 2 (passed)
    assert (low["n_tasks"], low["pass@1"], low["task_ids"]) == (2, 0.5, ["HumanEval/1", "HumanEval/2"])
    assert low["solution_loss"] == pytest.approx((30 + 40 + 20) / 80)  # tasks 1, 2, 7
    assert (rows[(0.8, "not_similar")]["n_tasks"], rows[(0.8, "not_similar")]["pass@1"]) == (2, 0.5)
    # every evaluated task is in exactly one subset at each tau
    assert all(rows[(t, "similar")]["n_tasks"] + rows[(t, "not_similar")]["n_tasks"] == 4 for t in sim.taus)
    m = mlflow_metrics(list(rows.values()))
    assert m["table3.tau_0.85.similar.pass_at_1"] == 0.5 and m["table3.tau_0.95.not_similar.n_tasks"] == 3


def test_an_empty_subset_has_null_scores_and_no_loss_means_no_loss_columns():
    sim = similarity(_report(task_scores={"humaneval": {"HumanEval/9": 0.99}}, sweep=[{"tau": 0.9}]))
    similar, rest = subset_rows(sim, "humaneval", PER_TASK, None, ks=[1])
    assert (similar["n_tasks"], similar["pass@1"], similar["task_ids"]) == (0, None, [])
    assert rest["n_tasks"] == 4 and "solution_loss" not in rest
    assert "table3.tau_0.90.similar.pass_at_1" not in mlflow_metrics([similar, rest])


def test_the_split_follows_the_reports_flags_and_checks_its_counts():
    flags = [{"benchmark": "humaneval", "task_id": "HumanEval/1", "score": 0.97},
             {"benchmark": "humaneval", "task_id": "HumanEval/1", "score": 0.81},
             {"benchmark": "humaneval", "task_id": "HumanEval/2", "score": 0.88},
             {"benchmark": "humaneval", "task_id": "HumanEval/7", "score": 0.95}]
    old = _report(flagged=flags, n_flagged=4)
    del old["task_scores"]  # a report from before `task_scores`: its complete flag list
    assert similarity(old).similar("humaneval", 0.85) == {"HumanEval/1", "HumanEval/2", "HumanEval/7"}
    with pytest.raises(Phi1Error, match="lists 4 of 9 flags and no `task_scores`; rerun decontaminate"):
        similarity({**old, "n_flagged": 9})
    with pytest.raises(Phi1Error, match="2 humaneval tasks score >= 0.95 but its sweep counts 5 similar"):
        similarity(_report(sweep=[{"tau": 0.95, "tasks_similar": {"humaneval": 5}}]))
    with pytest.raises(Phi1Error, match="r.json: not a decontaminate report"):
        similarity({"flagged": []}, "r.json")
    sim = similarity(_report())
    assert covers(sim, "humaneval", "validation") is None
    assert covers(sim, "mbpp", "test") == "the contamination report does not cover mbpp"
    assert "not validation" in covers(similarity(_report(benchmark_tasks={"mbpp": 500})), "mbpp", "validation")


def test_the_decontaminate_report_records_each_tasks_highest_score():
    from phi1.decontaminate.report import sweep, task_scores

    flags = [{"benchmark": "humaneval", "task_id": "HumanEval/1", "score": s, "dataset": "filtered", "id": str(i),
              "detector": "ast"} for i, s in enumerate([0.81, 0.97, 0.9])]
    flags.append({"benchmark": "mbpp", "task_id": "Mbpp/11", "score": 0.8, "dataset": "exercises", "id": "x",
                  "detector": "ngram"})
    scores = task_scores(flags)
    assert scores == {"humaneval": {"HumanEval/1": 0.97}, "mbpp": {"Mbpp/11": 0.8}}
    table = sweep(flags, [0.95, 0.8], ["filtered", "exercises"], {"humaneval": 164, "mbpp": 500}, ["ast", "ngram"])
    sim = similarity({"tau": 0.9, "sweep": table, "benchmark_tasks": {"humaneval": 164, "mbpp": 500},
                      "task_scores": scores})  # consistent with the sweep's own counts
    assert sim.similar("mbpp", 0.95) == set() and sim.similar("mbpp", 0.8) == {"Mbpp/11"}
