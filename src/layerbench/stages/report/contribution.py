"""The report's C(k) section, every arm's cells and bars: the table (arms x
budgets, C with its interval and verdict) and the chart (C(k) by layer, one
series per budget), from collect's ``contributions.csv`` and the cells of
``verdicts.json``."""

from __future__ import annotations

from collections import defaultdict

from layerbench.analysis.verdicts import join, number
from layerbench.config import Arm
from layerbench.stages.report.charts import png_data_uri, pyplot


def contribution_view(contributions: list[dict] | None, verdicts: list[dict]) -> dict:
    """The template's ``c_*`` entries, and ``contributions`` sorted by budget, then arm (None when absent)."""
    if contributions is None:
        return {"contributions": None}
    contributions = sorted(contributions, key=lambda r: (int(r["budget"]), Arm.sort_key_of(r["arm"])))
    budgets, rows, notes = contribution_matrix(contributions, verdicts)
    return {"contributions": contributions, "c_chart": contribution_chart(contributions), "c_budgets": budgets,
            "c_rows": rows, "c_notes": notes}


def contribution_matrix(contributions: list[dict], verdicts: list[dict]) -> tuple[list[int], list[dict], list[str]]:
    """Arms x budgets of C with intervals and verdicts (``verdicts.json``'s
    cells), and one note per distinct reason a C is undefined."""
    budgets = sorted({int(r["budget"]) for r in contributions})
    cells = {(r["arm"], int(r["budget"])): r for r in contributions}
    verdict = {(c["arm"], c["budget"]): c["verdict"] for c in verdicts}
    notes = defaultdict(set)
    for r in contributions:
        if number(r["C"]) is None:
            notes[r["reason"] or "no reason given"].add(int(r["budget"]))
    rows = []
    for arm in sorted({r["arm"] for r in contributions}, key=Arm.sort_key_of):
        row = []
        for b in budgets:
            r = cells.get((arm, b))
            if r is None:
                row.append(None)
                continue
            row.append({"C": number(r["C"]), "lo": number(r["ci_low"]), "hi": number(r["ci_high"]),
                        "verdict": verdict.get((arm, b), "")})
        rows.append({"arm": arm, "label": Arm.label_of(arm), "cells": row})
    return budgets, rows, [f"Undefined at budget{'s' if len(bs) > 1 else ''} {join(list(map(str, sorted(bs))))}: "
                           f"{reason}" for reason, bs in notes.items()]



def contribution_chart(contributions: list[dict]) -> str | None:
    """C(k) by layer with 95% CIs, one series per budget."""
    by_budget = defaultdict(list)
    for row in contributions:
        if Arm.parse(row["arm"]).in_layer_scan and number(row["C"]) is not None:
            by_budget[int(row["budget"])].append(row)
    if not by_budget:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 3.4))
    offsets = {b: (i - (len(by_budget) - 1) / 2) * 0.12 for i, b in enumerate(sorted(by_budget))}
    layers = set()
    for budget, rows in sorted(by_budget.items()):
        ks = [Arm.parse(r["arm"]).layers[0] for r in rows]
        layers |= set(ks)
        ys = [float(r["C"]) for r in rows]
        lo = [y - number(r["ci_low"]) if number(r["ci_low"]) is not None else 0 for y, r in zip(ys, rows)]
        hi = [number(r["ci_high"]) - y if number(r["ci_high"]) is not None else 0 for y, r in zip(ys, rows)]
        ax.errorbar([k + offsets[budget] for k in ks], ys, yerr=[lo, hi], fmt="o-", ms=5, lw=1, capsize=3,
                    label=f"budget {budget}")
    ax.axhline(1.0, color="#444", ls="--", lw=1)
    ax.axhline(0.0, color="#444", ls=":", lw=1)
    ax.text(1.0, 1.0, " full RL", transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="#444")
    ax.text(1.0, 0.0, " base", transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="#444")
    ax.set_xticks(sorted(layers))
    ax.set_xlabel("trained decoder layer k")
    ax.set_ylabel("C(k)")
    ax.legend(loc="best", frameon=False)
    return png_data_uri(fig)
