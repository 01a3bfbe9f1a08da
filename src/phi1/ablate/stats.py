"""The noise test of seed repeats: means and sds over seeds, the finetuning effect per
variant (paired by seed), and every pair of variants' difference, called resolved when
its 95% Student-t interval (Welch) excludes zero.

With two or three seeds the sds are rough and no correction is made for the many pairs:
read "resolved" as "worth a closer look", not as proof.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from phi1.ablate.plan import CHECKPOINTS

# The numbers compared across variants (per-token losses are not comparable: own tokenizers).
SUMMARY_METRICS = ("humaneval_pass@1", "mbpp_pass@1", "humaneval_solution_nats_per_char", "mbpp_solution_nats_per_char",
                   "probe_solution_nats_per_char")


def mean_sd(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample sd (None below two values) of the non-None values."""
    xs = [float(x) for x in values if x is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return mean, sd


def t_crit(df: Optional[float]) -> Optional[float]:
    """The two-sided 95% Student-t critical value for `df` degrees of freedom (None: none);
    `df` may be fractional (Welch)."""
    if df is None or not df > 0:
        return None
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def judge(diff: float, se: Optional[float], df: Optional[float]) -> dict[str, Any]:
    """{se, df, half_width, resolved}: resolved when the 95% t interval of `diff` excludes 0
    (|diff| > t(0.975, df) * SE); None without an SE (a single seed). A zero SE (every seed
    gave the same number) resolves any nonzero difference."""
    if se is None:
        return {"se": None, "df": None, "half_width": None, "resolved": None}
    if se == 0:
        return {"se": 0.0, "df": df, "half_width": 0.0, "resolved": diff != 0}
    crit = t_crit(df)
    half = None if crit is None else crit * se
    return {"se": se, "df": df, "half_width": half, "resolved": None if half is None else abs(diff) > half}


def welch_df(va: float, na: int, vb: float, nb: int) -> Optional[float]:
    """Welch-Satterthwaite degrees of freedom of a difference of two means."""
    a, b = va / na, vb / nb
    den = (a * a / (na - 1) if na > 1 else 0.0) + (b * b / (nb - 1) if nb > 1 else 0.0)
    return (a + b) ** 2 / den if den > 0 else None


def statistics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Across the seeds of each variant (one seed gives means and no noise estimate):

    - `summary`: per variant x checkpoint, n, the seeds, mean and sd of SUMMARY_METRICS;
    - `finetune_effect`: per variant and metric, phi1 minus base paired by exp (same
      seed, same data): mean, sd, SE, df = n - 1, the 95% t half-width, resolved;
    - `contrasts`: per checkpoint, metric and pair of variants, the difference of the
      means, its SE (Welch: sqrt(sd_a^2/n_a + sd_b^2/n_b)), Welch-Satterthwaite df, the
      95% t half-width, and resolved = the interval excludes 0.
    """
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for v in variants:
        for c in CHECKPOINTS:
            group = [r for r in rows if r["variant"] == v and r["checkpoint"] == c]
            if not group:
                continue
            entry: dict[str, Any] = {"variant": v, "checkpoint": c, "n": len(group), "seeds": [r.get("seed") for r in group]}
            for m in SUMMARY_METRICS:
                entry[f"{m}_mean"], entry[f"{m}_sd"] = mean_sd([r.get(m) for r in group])
            summary[(v, c)] = entry
    effects = []
    for v in variants:
        pairs: dict[str, dict[str, dict]] = {}
        for r in rows:
            if r["variant"] == v:
                pairs.setdefault(r.get("exp") or v, {})[r["checkpoint"]] = r
        for m in SUMMARY_METRICS:
            diffs = [p["phi1"][m] - p["base"][m] for p in pairs.values()
                     if {"base", "phi1"} <= p.keys() and p["base"].get(m) is not None and p["phi1"].get(m) is not None]
            if not diffs:
                continue
            mean, sd = mean_sd(diffs)
            se = None if sd is None else sd / math.sqrt(len(diffs))
            effects.append({"variant": v, "metric": m, "n": len(diffs), "mean": mean, "sd": sd,
                            **judge(mean, se, len(diffs) - 1)})
    contrasts = []
    for c in CHECKPOINTS:
        for m in SUMMARY_METRICS:
            for i, a in enumerate(variants):
                for b in variants[i + 1:]:
                    ea, eb = summary.get((a, c)), summary.get((b, c))
                    if not ea or not eb or ea[f"{m}_mean"] is None or eb[f"{m}_mean"] is None:
                        continue
                    diff = ea[f"{m}_mean"] - eb[f"{m}_mean"]
                    sa, sb = ea[f"{m}_sd"], eb[f"{m}_sd"]
                    if sa is None or sb is None:
                        se, df = None, None
                    else:
                        se = math.sqrt(sa ** 2 / ea["n"] + sb ** 2 / eb["n"])
                        df = welch_df(sa ** 2, ea["n"], sb ** 2, eb["n"])
                    contrasts.append({"checkpoint": c, "metric": m, "a": a, "b": b, "diff": diff, **judge(diff, se, df)})
    return {"summary": list(summary.values()), "finetune_effect": effects, "contrasts": contrasts}


def verdicts(stats: dict[str, Any], metrics: Sequence[str] = SUMMARY_METRICS[2:]) -> list[str]:
    """One plain line per finetuning effect and variant contrast of `metrics` (default: the
    solution losses per character, the numbers that move at small scale)."""
    def judged(x: dict) -> str:
        if x["se"] is None:
            return "noise unknown (one seed: run --seeds)"
        if x["half_width"] is None:
            return "noise unknown (no degrees of freedom)"
        df = "" if x["df"] is None else f", df {x['df']:.1f}"
        return f"+- {x['half_width']:.4f} (95% t{df}): " + ("resolved" if x["resolved"] else "within noise")

    lines = []
    for e in stats.get("finetune_effect", []):
        if e["metric"] in metrics:
            lines.append(f"finetune effect, {e['variant']}, {e['metric']}: {e['mean']:+.4f} over {e['n']} seed(s) "
                         + judged(e))
    for c in stats.get("contrasts", []):
        if c["metric"] in metrics:
            lines.append(f"{c['checkpoint']}, {c['metric']}: {c['a']} - {c['b']} = {c['diff']:+.4f} "
                         + judged(c))
    return lines
