"""What the contributions say, decided once: the headline answer and each C(k)'s verdict.

Stage ``collect`` computes these from its contribution rows and writes them
to ``verdicts.json``; the report shows them and decides nothing itself.
A C with a 95% interval is ``beats`` (interval above 1), ``short`` (below 1),
``unclear`` (it reaches both the base, 0, and full RL, 1) or ``matches``.

Also the terms the verdicts are stated in, shared by collect, the checks and
the report: an arm's label and place in every table, a table cell as a number.
"""

from __future__ import annotations

import math

from layerbench.config import Arm


def arm_label(name: str) -> str:
    """How sentences and the report name an arm: ``layer 3``, ``layers 1+2``, ``full RL``."""
    arm = Arm.parse(name)
    if arm.kind == "layer":
        return f"layer {arm.layers[0]}"
    if arm.kind == "layers":
        return "layers " + "+".join(map(str, arm.layers))
    return {"base": "base", "full": "full RL"}[arm.kind]


def arm_sort_key(name: str):
    """Base, full RL, single layers by index, then layer sets: every table's order."""
    arm = Arm.parse(name)
    return ({"base": 0, "full": 1, "layer": 2, "layers": 3}[arm.kind], arm.layers or ())


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


def headline(contributions: list[dict], budgets: list[int], cap: int) -> dict:
    """Best single layer per budget and one sentence: does it match full RL?

    {"answer": yes/no/partly/unclear/undetermined, "sentence", "budgets": per
    budget {budget, arm, C, lo, hi, verdict}, or {budget, arm: None, reason,
    verdict: "undefined"}}. Among equal C the first row wins: pass the rows
    in the order the report lists them."""
    per_budget = []
    for budget in budgets:
        rows = [r for r in contributions if int(r["budget"]) == budget and r["arm"].startswith("layer:")]
        defined = [r for r in rows if number(r["C"]) is not None]
        if not defined:
            reason = next((r["reason"] for r in rows if r["reason"]), "no single-layer arm has a C")
            per_budget.append({"budget": budget, "arm": None, "reason": reason, "verdict": "undefined"})
            continue
        best = max(defined, key=lambda r: float(r["C"]))
        c, lo, hi = float(best["C"]), number(best["ci_low"]), number(best["ci_high"])
        per_budget.append({"budget": budget, "arm": best["arm"], "C": c, "lo": lo, "hi": hi,
                           "verdict": verdict(c, lo, hi)})

    def where(b):
        return f"the {b['budget']}-token training cap" if b["budget"] == cap else f"{b['budget']} tokens"

    def part(b, first):
        ci = "no CI" if b["lo"] is None else f"{'95% CI ' if first else ''}{b['lo']:.2f} to {b['hi']:.2f}"
        spans = ", spanning both base and full RL" if b["verdict"] == "unclear" else ""
        return f"{arm_label(b['arm'])} at {where(b)} (C = {b['C']:.2f}, {ci}{spans})"

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
        if not rest:
            answer, lead = "yes", f"Yes \u2014 a single layer matches full RL at every budget{scope}"
        elif not good and all_short:
            answer, lead = "no", f"No \u2014 no single layer matches full RL at any budget{scope}"
        elif not good:
            answer, lead = "unclear", f"Unclear \u2014 no single layer is shown to match full RL at any budget{scope}"
        else:
            answer = "partly"
            lead = (f"Only at some budgets \u2014 a single layer matches full RL at "
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


def study_verdicts(contributions: list[dict], budgets: list[int], cap: int) -> dict:
    """What ``verdicts.json`` holds: {"headline": headline(...), "cells": cell_verdicts(...)}."""
    return {"headline": headline(contributions, budgets, cap), "cells": cell_verdicts(contributions)}
