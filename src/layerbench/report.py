"""Render ``reports/<study>/index.html``: one self-contained file.

Inline CSS and images (PNG as data URIs), no scripts, no network. Jinja2
autoescaping is on, so model answers, prompts and config strings are shown
as text, never interpreted as HTML.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from pathlib import Path

from layerbench.collect import arm_sort_key
from layerbench.io import atomic_write_text, read_csv
from layerbench.workflow import StudyPaths


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def contribution_chart(contributions: list[dict]) -> str | None:
    """C(k) by layer with 95% CIs, one series per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_budget = defaultdict(list)
    for row in contributions:
        if row["arm"].startswith("layer:") and row["C"] != "":
            by_budget[int(row["budget"])].append(row)
    if not by_budget:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    offsets = {b: (i - (len(by_budget) - 1) / 2) * 0.12 for i, b in enumerate(sorted(by_budget))}
    for budget, rows in sorted(by_budget.items()):
        xs = [int(r["arm"].split(":")[1]) + offsets[budget] for r in rows]
        ys = [float(r["C"]) for r in rows]
        lo = [float(r["C"]) - float(r["ci_low"]) if r["ci_low"] != "" else 0 for r in rows]
        hi = [float(r["ci_high"]) - float(r["C"]) if r["ci_high"] != "" else 0 for r in rows]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=f"budget {budget}")
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.axhline(0.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("trained decoder layer k")
    ax.set_ylabel("C(k)")
    ax.legend(fontsize=8)
    return _png(fig)


def score_table(scores: list[dict]) -> tuple[list[int], list[dict]]:
    """Rows per arm, columns per budget: mean over seeds and tasks."""
    budgets = sorted({int(r["budget"]) for r in scores})
    acc = defaultdict(list)
    for r in scores:
        acc[(r["arm"], int(r["budget"]))].append(r)
    rows = []
    for arm in sorted({r["arm"] for r in scores}, key=arm_sort_key):
        cells = []
        for b in budgets:
            sel = acc[(arm, b)]
            fin = [float(r["finished_accuracy"]) for r in sel if r["finished_accuracy"] != ""]
            cells.append({
                "accuracy": sum(float(r["accuracy"]) for r in sel) / len(sel),
                "truncated": sum(float(r["truncated_rate"]) for r in sel) / len(sel),
                "finished": sum(fin) / len(fin) if fin else None,
            })
        rows.append({"arm": arm, "cells": cells})
    return budgets, rows


def render_study_report(paths: StudyPaths, out: Path) -> Path:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("layerbench", "templates"), autoescape=select_autoescape(["html", "j2"]))
    scores = read_csv(paths.scores)
    contributions = sorted(read_csv(paths.contributions), key=lambda r: (int(r["budget"]), arm_sort_key(r["arm"])))
    budgets, table = score_table(scores)
    html = env.get_template("report.html.j2").render(
        study=paths.study,
        budgets=budgets,
        table=table,
        contributions=contributions,
        chart=contribution_chart(contributions),
    )
    return atomic_write_text(out, html)
