from phi1.decontaminate.report import plot_sweep, removed_ids, sweep


def _flag(dataset, id_, task, det, score, bench="humaneval"):
    return {"dataset": dataset, "id": id_, "unit": None, "benchmark": bench, "task_id": task, "detector": det,
            "score": score}


FLAGS = [
    _flag("exercises", "a", "HumanEval/1", "ast", 1.0),
    _flag("exercises", "a", "HumanEval/1", "embedding", 0.83),
    _flag("exercises", "b", "HumanEval/2", "ast", 0.9),
    _flag("filtered", "c", "Mbpp/11", "ngram", 0.85, "mbpp"),
]


def test_sweep_counts_items_and_tasks_per_threshold_and_detector():
    rows = sweep(FLAGS, [0.8, 0.95, 0.9, 0.85], ["filtered", "exercises"], {"humaneval": 164, "mbpp": 500},
                 ["ngram", "embedding", "ast"])
    assert [r["tau"] for r in rows] == [0.95, 0.9, 0.85, 0.8]
    assert [r["removed"]["exercises"] for r in rows] == [1, 2, 2, 2]
    assert [r["removed"]["filtered"] for r in rows] == [0, 0, 1, 1]
    assert [r["tasks_similar"]["humaneval"] for r in rows] == [1, 2, 2, 2]
    assert rows[2]["tasks_similar"]["mbpp"] == 1 and rows[2]["tasks_similar_to_exercises"]["mbpp"] == 0
    assert rows[3]["by_detector"]["embedding"]["removed"]["exercises"] == 1
    assert rows[0]["by_detector"]["ast"]["tasks_similar"] == {"humaneval": 1, "mbpp": 0}
    assert removed_ids(FLAGS, 0.9) == {"exercises": {"a", "b"}}


def test_plot_is_a_png(tmp_path):
    rows = sweep(FLAGS, [0.95, 0.9, 0.85, 0.8], ["filtered", "exercises"], {"humaneval": 164, "mbpp": 500}, ["ast"])
    plot_sweep(rows, {"humaneval": 164, "mbpp": 500}, tmp_path / "plots" / "sweep.png")
    assert (tmp_path / "plots" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
