"""What the contributions say, decided once: the headline answer and each C(k)'s verdict.

Stage ``collect`` computes these from its contribution rows and writes them
to ``verdicts.json``; the report shows them and decides nothing itself.
A C with a 95% interval is ``beats`` (interval above 1), ``short`` (below 1),
``unclear`` (it reaches both the base, 0, and full RL, 1) or ``matches``.

Also how a table cell becomes a number, shared by collect, the checks and
the report (an arm's label and place in every table are ``Arm``'s).
"""

from __future__ import annotations

import math

from layerbench.config import Arm


def number(value) -> float | None:
    """A table value as a float; None for an empty cell or NaN."""
    if value is None or value == "":
        return None
    x = float(value)
    return None if math.isnan(x) else x


def verdict(c: float, lo: float | None, hi: float | None) -> str:
    """beats / matches / short of full RL, or unclear when the interval
    reaches both the base (0) and full RL (1)."""
    if lo is None or hi is None:
        return "matches" if c >= 1 else "short"
    if lo > 1:
        return "beats"
    if hi < 1:
        return "short"
    return "unclear" if lo <= 0 else "matches"


def cell_verdicts(contributions: list[dict]) -> list[dict]:
    """[{arm, budget, verdict}] per contribution row; verdict None where C is undefined."""
    out = []
    for r in contributions:
        c = number(r["C"])
        out.append({"arm": r["arm"], "budget": int(r["budget"]),
                    "verdict": None if c is None else verdict(c, number(r["ci_low"]), number(r["ci_high"]))})
    return out


def headline(contributions: list[dict], budgets: list[int], cap: int, unstable: frozenset = frozenset(),
             spread: dict | None = None) -> dict:
    """Best single layer per budget and one sentence: does it match full RL?

    ``spread`` ((arm, budget) -> the SD of one training seed's C, from the
    variance split): a layer whose interval includes 1 but also a shortfall
    larger than that spread is not said to "match": it "cannot be told
    apart" from full RL (answer ``close``).

    {"answer": yes/close/no/partly/unclear/undetermined, "sentence", "budgets": per
    budget {budget, arm, C, lo, hi, verdict}, or {budget, arm: None, reason,
    verdict: "undefined"}}. Arms whose seeds disagree at a budget (``unstable``,
    (arm, budget) pairs) are not ranked there. Among equal C the first row
    wins: pass the rows in the order the report lists them."""
    per_budget = []
    for budget in budgets:
        rows = [r for r in contributions if int(r["budget"]) == budget and Arm.parse(r["arm"]).in_layer_scan]
        defined = [r for r in rows if number(r["C"]) is not None and (r["arm"], budget) not in unstable]
        if not defined:
            reason = next((r["reason"] for r in rows if r["reason"]),
                          "every single-layer arm's seeds disagree" if rows else "no single-layer arm has a C")
            per_budget.append({"budget": budget, "arm": None, "reason": reason, "verdict": "undefined"})
            continue
        best = max(defined, key=lambda r: float(r["C"]))
        c, lo, hi = float(best["C"]), number(best["ci_low"]), number(best["ci_high"])
        entry = {"budget": budget, "arm": best["arm"], "C": c, "lo": lo, "hi": hi, "verdict": verdict(c, lo, hi)}
        seed_sd = (spread or {}).get((best["arm"], budget))
        if entry["verdict"] == "matches" and seed_sd is not None and lo is not None and 1 - lo > seed_sd:
            entry["loose"] = {"shortfall": 1 - lo, "seed_sd": seed_sd}
        per_budget.append(entry)

    def where(b):
        return f"the {b['budget']}-token training cap" if b["budget"] == cap else f"{b['budget']} tokens"

    def part(b, first):
        ci = "no CI" if b["lo"] is None else f"{'95% CI ' if first else ''}{b['lo']:.2f} to {b['hi']:.2f}"
        spans = ", spanning both base and full RL" if b["verdict"] == "unclear" else ""
        if "loose" in b:
            spans = (f", which allows a shortfall of {b['loose']['shortfall']:.2f}, more than one seed's spread of "
                     f"{b['loose']['seed_sd']:.2f}")
        return f"{Arm.label_of(b['arm'])} at {where(b)} (C = {b['C']:.2f}, {ci}{spans})"

    defined = [b for b in per_budget if b["arm"]]
    undefined = "; ".join(f"at {where(b)} C is undefined because {b['reason']}" for b in per_budget if not b["arm"])
    good = [b for b in defined if b["verdict"] in ("matches", "beats")]
    scope = " where C is defined" if undefined else ""
    if not defined:
        answer = "undetermined"
        sentence = f"Undetermined \u2014 {undefined or 'contributions.csv has no single-layer rows'}."
    else:
        rest = [b for b in defined if b not in good]
        all_short = all(b["verdict"] == "short" for b in rest)
        loose = [b for b in good if "loose" in b]
        if not rest and loose:
            answer = "close"
            lead = (f"Not shown to differ \u2014 at every budget{scope} a single layer cannot be told apart from full "
                    f"RL, but its interval is wider than the seed spread at {join([str(b['budget']) for b in loose])} "
                    f"tokens, so a real gap is not ruled out")
        elif not rest:
            answer, lead = "yes", f"Yes \u2014 a single layer matches full RL at every budget{scope}"
        elif not good and all_short:
            answer, lead = "no", f"No \u2014 no single layer matches full RL at any budget{scope}"
        elif not good:
            answer, lead = "unclear", f"Unclear \u2014 no single layer is shown to match full RL at any budget{scope}"
        else:
            answer = "partly"
            lead = (f"Only at some budgets \u2014 a single layer {'cannot be told apart from' if loose else 'matches'} "
                    f"full RL at "
                    f"{join([str(b['budget']) for b in good])} tokens but {'not' if all_short else 'not clearly'} "
                    f"at {join([str(b['budget']) for b in rest])}")
        sentence = (f"{lead}: " + join([part(b, i == 0) for i, b in enumerate(defined)])
                    + (f"; {undefined}" if undefined else "") + ".")
    return {"answer": answer, "sentence": sentence, "budgets": per_budget}


def best_arms(headline: dict) -> dict[int, str]:
    """{budget: the single layer with the highest C} where C is defined."""
    return {b["budget"]: b["arm"] for b in headline["budgets"] if b["arm"]}


def join(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# An arm's seeds "disagree in kind" at a budget when their shares of answers cut
# off by the budget differ by more than this (one seed learned to finish inside
# the budget, another did not) ...
UNSTABLE_TRUNCATION_GAP = 0.20
# ... or when one seed reaches full RL (its own C at least REACHED) while another
# stays closer to the base (below HALFWAY). Per-seed C compares a seed's arm with
# the same seed's base and full RL.
REACHED, HALFWAY = 0.9, 0.5


def seed_outcomes(scores: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    """{(arm, budget): {seed: {"S": accuracy, "truncated": share}}}, means over tasks."""
    cells: dict = {}
    for r in scores:
        cells.setdefault((r["arm"], int(r["budget"])), {}).setdefault(str(r["seed"]), []).append(r)
    return {key: {seed: {"S": _mean(number(r["accuracy"]) for r in rows),
                         "truncated": _mean(number(r["truncated_rate"]) for r in rows)}
                  for seed, rows in by_seed.items()} for key, by_seed in cells.items()}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def unstable_cells(scores: list[dict]) -> list[dict]:
    """Trained single- and multi-layer arms whose seeds disagree in kind at a
    budget (see UNSTABLE_TRUNCATION_GAP, REACHED, HALFWAY): [{arm, budget,
    seeds: [{seed, S, truncated, C}]}]. Such an arm's mean C averages two
    different outcomes, so it is flagged instead of ranked."""
    outcomes = seed_outcomes(scores)
    out = []
    for (arm, budget), by_seed in sorted(outcomes.items(), key=lambda kv: (kv[0][1], Arm.sort_key_of(kv[0][0]))):
        if not arm.startswith("layer") or len(by_seed) < 2:
            continue
        seeds = []
        for seed, o in sorted(by_seed.items()):
            base = outcomes.get(("base", budget), {}).get(seed, {}).get("S")
            full = outcomes.get(("full", budget), {}).get(seed, {}).get("S")
            c = (o["S"] - base) / (full - base) if None not in (o["S"], base, full) and full != base else None
            seeds.append({"seed": seed, "S": o["S"], "truncated": o["truncated"], "C": c})
        shares = [s["truncated"] for s in seeds if s["truncated"] is not None]
        cs = [s["C"] for s in seeds if s["C"] is not None]
        split_cut = bool(shares) and max(shares) - min(shares) > UNSTABLE_TRUNCATION_GAP
        split_c = bool(cs) and max(cs) >= REACHED and min(cs) < HALFWAY
        if split_cut or split_c:
            out.append({"arm": arm, "budget": budget, "seeds": seeds})
    return out


def budget_dependence(per_budget: list[dict], ranking: list[dict], contributions: list[dict], cap: int) -> str | None:
    """Whether the best layer, or the ranking of layers, changes with the budget, naming the layers."""
    best = [b for b in per_budget if b["arm"]]
    if not best:
        return None
    by_arm: dict[str, list[int]] = {}
    for b in best:
        by_arm.setdefault(b["arm"], []).append(b["budget"])
    if len(by_arm) > 1:
        text = "The best layer changes with the budget: " + join(
            [f"{Arm.label_of(arm)} at {_budgets(bs, cap)}" for arm, bs in by_arm.items()]) + "."
    else:
        text = f"The best layer is {Arm.label_of(best[0]['arm'])} at every budget."
    pairs = [r for r in ranking if number(r["spearman"]) is not None]
    if not pairs:
        return text
    worst = min(pairs, key=lambda r: float(r["spearman"]))
    rho, a, b = float(worst["spearman"]), int(worst["budget_a"]), int(worst["budget_b"])
    if rho >= 1:
        return text + " The ranking of the layers is the same at every budget (Spearman 1)."
    rank_a, rank_b = _ranks(contributions, a), _ranks(contributions, b)
    moved = [f"{Arm.label_of(arm)} {'rises' if rank_b[arm] < rank_a[arm] else 'drops'} from {_ordinal(rank_a[arm])} to "
             f"{_ordinal(rank_b[arm])}" for arm in sorted(rank_a, key=Arm.sort_key_of)
             if arm in rank_b and rank_a[arm] != rank_b[arm]]
    return (text + f" The ranking of the layers changes: Spearman {rho:.2f} between {a} and {b} tokens"
            + (f" (of {len(rank_a)} layers, {join(moved)})" if moved else "") + ".")


def _ranks(contributions: list[dict], budget: int) -> dict[str, int]:
    rows = [r for r in contributions if int(r["budget"]) == budget and Arm.parse(r["arm"]).in_layer_scan
            and number(r["C"]) is not None]
    ordered = sorted(rows, key=lambda r: -float(r["C"]))
    return {r["arm"]: i + 1 for i, r in enumerate(ordered)}


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _budgets(budgets: list[int], cap: int) -> str:
    named = [f"the {b}-token cap" if b == cap else f"{b}" for b in sorted(budgets)]
    plain = [n for n in named if not n.startswith("the")]
    return join([n for n in named if n.startswith("the")] + ([f"{join(plain)} tokens"] if plain else []))


def gain_sources(decomposition: list[dict], arms: list[str], cap: int) -> str | None:
    """Where full RL's and the best layer's gain at the cap came from: answers
    that no longer run out of budget vs answers that now finish right."""
    rows = {r["arm"]: r for r in decomposition if int(r["budget"]) == cap}
    parts = []
    for arm in dict.fromkeys(arms):
        r = rows.get(arm)
        if r is None:
            continue
        finished, right, lost = (float(r[k]) for k in ("now_right_was_truncated", "now_right_was_wrong_finished",
                                                       "lost"))
        share = finished / (finished + right) if finished + right else None
        parts.append(f"{Arm.label_of(arm)}'s gain of {float(r['gain']):+.3f} is {finished:g} problems per seed that no "
                     f"longer run out of budget and {right:g} that now finish with the right answer, minus "
                     f"{lost:g} lost" + (f" ({100 * share:.0f}% from finishing inside the cap)" if share is not None
                                         else ""))
    return f"At the {cap}-token cap, " + "; ".join(parts) + "." if parts else None


def unstable_sentence(unstable: list[dict], cap: int) -> str | None:
    """One sentence per flagged arm: what each seed did."""
    if not unstable:
        return None
    parts = []
    for u in unstable:
        seeds = join([f"seed {s['seed']} {'-' if s['S'] is None else format(s['S'], '.2f')} accuracy with "
                      f"{'-' if s['truncated'] is None else format(100 * s['truncated'], '.0f')}% cut off"
                      + ("" if s["C"] is None else f" (C {s['C']:.2f})") for s in u["seeds"]])
        parts.append(f"{Arm.label_of(u['arm'])} at {_budgets([u['budget']], cap)}: {seeds}")
    return ("Unstable, not ranked (its seeds disagree in kind, so their mean C describes neither): "
            + "; ".join(parts) + ".")


# What a control arm's share of full RL's gain at the cap (its C) says, by where its interval lies.
CONTROL_READINGS = {
    "finish_only": ("most of full RL's gain at the cap is the model learning to finish inside it",
                    "learning to finish inside the cap explains less than half of full RL's gain"),
    "random": ("most of full RL's gain at the cap comes from the rollout loop itself, not from the reward",
               "a random reward gives less than half of full RL's gain: the reward carries most of it"),
}


def control_sentence(contributions: list[dict], cap: int) -> str | None:
    """How much of full RL's gain at the cap each control arm reaches (its C,
    with the interval), and what that says: the truncation question (and the
    rollout loop's share) answered by an experiment, not read off budgets."""
    parts = []
    for r in sorted((r for r in contributions if int(r["budget"]) == cap and Arm.parse(r["arm"]).control),
                    key=lambda r: Arm.sort_key_of(r["arm"])):
        arm, c = Arm.parse(r["arm"]), number(r["C"])
        if c is None:
            parts.append(f"{arm.label} has no share because {r['reason']}")
            continue
        lo, hi = number(r["ci_low"]), number(r["ci_high"])
        text = f"{arm.label} reaches {c:.2f} of full RL's gain" + ("" if lo is None else f" (95% CI {lo:.2f} to {hi:.2f})")
        most, less = CONTROL_READINGS.get(arm.reward, (None, None))  # dup:K+none: no reward to read
        if most and lo is not None and lo > 0.5:
            text += f": {most}"
        elif less and hi is not None and hi < 0.5:
            text += f": {less}"
        parts.append(text)
    if not parts:
        return None
    return f"Controls at the {cap}-token training cap: " + "; ".join(parts) + "."


def study_verdicts(contributions: list[dict], budgets: list[int], cap: int, scores: list[dict],
                   decomposition: list[dict], ranking: list[dict], spread: dict | None = None) -> dict:
    """What ``verdicts.json`` holds: the headline (answer, sentence, and the
    details a careful reader asks next: budget dependence, where the gain came
    from, unstable arms) and each C(k)'s verdict. ``spread``: see :func:`headline`."""
    unstable = unstable_cells(scores)
    flagged = frozenset((u["arm"], u["budget"]) for u in unstable)
    head = headline(contributions, budgets, cap, flagged, spread)
    best_at_cap = best_arms(head).get(cap)
    details = [control_sentence(contributions, cap),
               budget_dependence(head["budgets"], ranking, contributions, cap),
               gain_sources(decomposition, ["full"] + ([best_at_cap] if best_at_cap else []), cap),
               unstable_sentence(unstable, cap)]
    head.update(details=[d for d in details if d], unstable=unstable)
    cells = [{**c, "verdict": "unstable"} if (c["arm"], c["budget"]) in flagged and c["verdict"] else c
             for c in cell_verdicts(contributions)]
    return {"headline": head, "cells": cells}
