"""What a gain is made of: finishing inside the budget, or being right.

For each arm and budget, compared with the base model on the same problems
and seed, every problem the arm gets right that the base got wrong is either

(a) ``now_right_was_truncated``: the base ran out of budget on it, or
(b) ``now_right_was_wrong_finished``: the base finished with a wrong answer;

and ``lost`` counts problems the base got right and the arm gets wrong. The
gain in problems is (a) + (b) - lost. If most of a gain is (a), the arm
mostly learned to be shorter. Counts are averaged over seeds.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from layerbench.analysis.per_sample import PerSampleTable
from layerbench.analysis.stats import spearman
from layerbench.config import Arm, Study

DECOMPOSITION_COLUMNS = ["arm", "budget", "n", "base_accuracy", "arm_accuracy", "gain", "now_right_was_truncated",
                         "now_right_was_wrong_finished", "lost", "finished_share_base", "finished_share_arm"]
RANKING_COLUMNS = ["budget_a", "budget_b", "spearman", "n_layers"]


def outcomes(per_sample: PerSampleTable) -> dict:
    """{(arm, seed, budget): {(task, doc_id, repeat): (solved, truncated)}}"""
    table: dict = defaultdict(dict)
    for (arm, seed), rows in per_sample.items():
        for r in rows:
            table[(arm, seed, r.budget)][r.problem] = (r.solved, r.truncated)
    return table


def decomposition_rows(study: Study, per_sample: PerSampleTable) -> list[dict]:
    """One row per trained arm and budget."""
    table = outcomes(per_sample)
    rows = []
    for arm in study.arms:
        if arm.kind == "base":
            continue
        for budget in study.limits.eval_budgets:
            counts = defaultdict(list)
            for seed in study.seeds:
                base, mine = table[("base", seed, budget)], table[(arm.name, seed, budget)]
                c = defaultdict(int)
                for key, (b_right, b_trunc) in base.items():
                    a_right, a_trunc = mine[key]
                    c["base_right"] += b_right
                    c["arm_right"] += a_right
                    c["now_right_was_truncated"] += a_right and not b_right and b_trunc
                    c["now_right_was_wrong_finished"] += a_right and not b_right and not b_trunc
                    c["lost"] += b_right and not a_right
                    c["base_finished"] += not b_trunc
                    c["arm_finished"] += not a_trunc
                n = len(base)
                for k, v in c.items():
                    counts[k].append(v)
                counts["n"].append(n)
            mean = {k: float(np.mean(v)) for k, v in counts.items()}
            n = mean["n"]
            rows.append({
                "arm": arm.name, "budget": budget, "n": int(n),
                "base_accuracy": round(mean["base_right"] / n, 4), "arm_accuracy": round(mean["arm_right"] / n, 4),
                "gain": round((mean["arm_right"] - mean["base_right"]) / n, 4),
                "now_right_was_truncated": mean["now_right_was_truncated"],
                "now_right_was_wrong_finished": mean["now_right_was_wrong_finished"],
                "lost": mean["lost"],
                "finished_share_base": round(mean["base_finished"] / n, 4),
                "finished_share_arm": round(mean["arm_finished"] / n, 4),
            })
    return rows


def ranking_rows(contributions: list[dict]) -> list[dict]:
    """Spearman correlation of single-layer C(k) between every pair of budgets."""
    by_budget: dict[int, dict[str, float]] = defaultdict(dict)
    for r in contributions:
        if Arm.parse(r["arm"]).in_layer_scan and r["C"] not in ("", None):
            by_budget[int(r["budget"])][r["arm"]] = float(r["C"])
    budgets = sorted(by_budget)
    rows = []
    for i, a in enumerate(budgets):
        for b in budgets[i + 1:]:
            layers = sorted(set(by_budget[a]) & set(by_budget[b]))
            rho = spearman([by_budget[a][k] for k in layers], [by_budget[b][k] for k in layers])
            rows.append({"budget_a": a, "budget_b": b, "spearman": None if rho is None else round(rho, 4),
                         "n_layers": len(layers)})
    return rows
