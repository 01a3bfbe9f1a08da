"""`phi1 ablate`: the paper's data-quality ablation (Figure 2.1) as DVC experiments.

    dvc repro                                # once: the shared upstream stages, cached
    phi1 ablate                              # 3 variants x {base, phi1}; ~10-15 min on 2 CPUs
    phi1 ablate --variants unfiltered,filtered+textbook --max-tokens 1000000 -S pretrain.seed=7
    phi1 ablate --seeds 1234,1,2             # each variant x 3 training seeds: mean +- sd, noise test
    phi1 ablate --collect-only               # redraw results/figure from the finished exps
    phi1 ablate --collect-only --baseline REV   # ... after a commit moved HEAD off their baseline
    dvc exp show --only-changed              # the DVC records
    phi1 compare --experiment phi1-ablation --stage evaluate

Each variant is one `dvc exp run --queue --name <variant> -S ...` over the same pipeline,
run by `dvc queue start`; every experiment produces both checkpoints (pretrained `base`,
CodeExercises-finetuned `phi1`), so three experiments give the paper's six bars. Seed
repeats (`--seeds`) run each variant once per training seed as `<variant>-seed<N>`, and
the results add means, sds and 95% t intervals. The queued stages log to the ablation's
MLflow experiment, each run tagged `phi1.variant` = `DVC_EXP_NAME` by `phi1.tracking`.

Modules, one idea each:
    plan     the variants and what each exp sets (`-S`), the queue's environment
    queue    `dvc exp run --queue`, `dvc queue start`, polling until done (dvc CLI)
    results  DVC's exp records (in-process) -> one row per variant x checkpoint
    stats    means, sds, paired finetune effects, Welch t intervals, verdict lines
    figure   Figure 2.1 as PNG
    report   results.json/.csv + figure.png, and the `ablate` MLflow run
    stage    run(): queue, wait, collect, write, log
    console  command(): what `phi1 ablate` prints and its exit status
"""

from phi1.ablate.console import command, summary_table, table
from phi1.ablate.figure import figure
from phi1.ablate.plan import DEFAULT_EXPERIMENT, DEFAULT_MAX_TOKENS, VARIANTS, plan, tracking_env, valid_exp_name
from phi1.ablate.queue import check_repo, workers_running
from phi1.ablate.report import write_results
from phi1.ablate.results import Ablation, collect, experiments, rows_of
from phi1.ablate.stage import run
from phi1.ablate.stats import statistics, verdicts

__all__ = ["VARIANTS", "Ablation", "plan", "run", "command", "collect", "rows_of", "figure", "table", "summary_table",
           "statistics", "verdicts", "tracking_env", "write_results", "check_repo", "workers_running",
           "valid_exp_name", "experiments", "DEFAULT_EXPERIMENT", "DEFAULT_MAX_TOKENS"]
