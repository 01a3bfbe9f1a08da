"""Figure 2.1 of the paper for our ablation: per variant, pretrained vs finetuned bars
(with seed repeats: the mean, +- 1 sd error bars and one dot per seed)."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

from phi1.ablate.plan import CHECKPOINTS
from phi1.ablate.stats import statistics


def figure(rows: Sequence[dict[str, Any]]) -> bytes:
    """Figure 2.1 in the paper's style as PNG bytes: HumanEval pass@1 and the solution
    loss per character of HumanEval and MBPP; when the exps ran the probe stage, the probe
    solution loss too (emergence: finetuned vs base on Pygame/Tkinter/matplotlib code that
    CodeExercises never shows), each variant labelled with finetuned - base and its 95%
    t interval over probes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    summary = {(e["variant"], e["checkpoint"]): e for e in statistics(rows)["summary"]}
    repeated = any(e["n"] > 1 for e in summary.values())
    panels = [
        ("humaneval_pass@1", "HumanEval pass@1 (%)", 100.0, "higher is better"),
        ("humaneval_solution_nats_per_char", "HumanEval solution loss\n(nats/char, lower is better; axis zoomed)", 1.0, None),
        ("mbpp_solution_nats_per_char", "MBPP solution loss\n(nats/char, lower is better; axis zoomed)", 1.0, None),
    ]
    if any(r.get("probe_solution_nats_per_char") is not None for r in rows):
        panels.append(("probe_solution_nats_per_char", "Probe solution loss, Pygame/Tkinter/mpl\n"
                       "(nats/char, lower is better; axis zoomed)", 1.0, None))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    width = 0.38
    colors = {"base": "#9ecae1", "phi1": "#3182bd"}
    for ax, (key, label, scale, _) in zip(axes, panels):
        for i, ckpt in enumerate(CHECKPOINTS):
            vals, errs = [], []
            for v in variants:
                e = summary.get((v, ckpt)) or {}
                mean, sd = e.get(f"{key}_mean"), e.get(f"{key}_sd")
                vals.append(float("nan") if mean is None else mean * scale)
                errs.append(0.0 if sd is None else sd * scale)
            xs = [j + (i - 0.5) * width for j in range(len(variants))]
            bars = ax.bar(xs, vals, width, label=CHECKPOINTS[ckpt], color=colors[ckpt], edgecolor="#333",
                          yerr=errs if repeated else None, capsize=3 if repeated else 0)
            ax.bar_label(bars, labels=["-" if math.isnan(x) else (f"{x:.1f}" if scale == 100 else f"{x:.3f}") for x in vals],
                         fontsize=7, padding=2)
            if repeated:  # each seed as a dot on its bar
                for j, v in enumerate(variants):
                    ys = [r[key] * scale for r in rows if r["variant"] == v and r["checkpoint"] == ckpt
                          and r.get(key) is not None]
                    ax.scatter([xs[j]] * len(ys), ys, s=9, color="#222", zorder=3)
        ticks = variants
        if key == "probe_solution_nats_per_char":  # the emergence delta, paired by probe
            ticks = [v + _emergence_tick([r for r in rows if r["variant"] == v and r.get("probe_emergence_delta") is not None])
                     for v in variants]
        ax.set_xticks(range(len(variants)), ticks, fontsize=8 if ticks is variants else 6)
        ax.set_ylabel(label, fontsize=9)
        if scale == 1.0:
            finite = [r.get(key) for r in rows if r.get(key) is not None]
            if finite:  # zoom in: the differences are a few percent of the value
                lo, hi = min(finite), max(finite)
                pad = max((hi - lo) * 0.6, hi * 0.02)
                ax.set_ylim(max(0.0, lo - pad), hi + pad)
        else:
            ax.set_ylim(0, max(5.0, *(r.get(key) * 100 + 5 for r in rows if r.get(key) is not None)))
    axes[0].legend(fontsize=8, loc="upper left")
    seeds = max((e["n"] for e in summary.values()), default=1)
    fig.suptitle("Data quality ablation (cf. phi-1 Figure 2.1): same model and token budget, different pretraining data"
                 + (f"; mean of {seeds} seeds, bars +- 1 sd, dots = seeds" if repeated else ""), fontsize=9)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _emergence_tick(rows: list[dict]) -> str:
    """Under a variant: its finetuned-minus-base probe loss with the 95% interval over
    probes; with several seeds, their mean (the interval over seeds is in the verdicts)."""
    if not rows:
        return ""
    if len(rows) > 1:
        mean = sum(r["probe_emergence_delta"] for r in rows) / len(rows)
        return f"\nft-base {mean:+.3f}\n(mean of {len(rows)} seeds)"
    r = rows[0]
    if r.get("probe_emergence_ci95_low") is None:
        return f"\nft-base {r['probe_emergence_delta']:+.3f}"
    return f"\nft-base {r['probe_emergence_delta']:+.3f} [{r['probe_emergence_ci95_low']:+.3f}, {r['probe_emergence_ci95_high']:+.3f}]"
