"""Render ``reports/<study>/index.html``: one self-contained file.

The page answers, in the order a reader asks: does a single layer match full
RL (headline), C(k) by layer, the scores, training curves, the truncation
audit, the preflight, the pairing / parameter / re-run checks, provenance and
a sample browser. Every input is a file under ``results/<study>/``; a section
whose file does not exist says so instead of disappearing.

Inline CSS, PNG charts as data URIs and one tiny inline script (open every
``<details>`` before printing); no network. Jinja2 autoescaping is on, so
model answers, prompts, dataset fields and config strings are shown as text,
never interpreted as HTML.

``compare_command`` renders the same page for two studies side by side.
"""

from __future__ import annotations

import base64
import io
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from layerbench.stages.collect import arm_sort_key
from layerbench.config import Arm, ConfigError, Study
from layerbench.stages.data import read_jsonl
from layerbench.runtime.io import atomic_write_text, read_csv
from layerbench.runtime.timing import latest_wall_time
from layerbench.paths import StudyPaths

TRAINING_METRICS = (
    ("reward", "reward (mean)"),
    ("completions/mean_length", "completion length (tokens)"),
    ("rollouts/truncated_share", "truncated rollouts (share)"),
)
SAMPLES_PER_ARM = 6


def missing(name) -> str:
    return f"not produced by this study: {name} missing"


# --------------------------------------------------------------------------
# reading: every input is optional
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyFolder(StudyPaths):
    """A study read from any folder (a copied ``results/<study>/``), not
    necessarily ``<root>/results/<name>``."""

    folder: Path = Path(".")

    @property
    def results(self) -> Path:
        return self.folder


def _csv(paths: StudyPaths, name: str) -> list[dict] | None:
    path = paths.results / name
    return read_csv(path) if path.exists() else None


def _json(paths: StudyPaths, name: str):
    path = paths.results / name
    return json.loads(path.read_text()) if path.exists() else None


def _f(value) -> float | None:
    if value is None or value == "":
        return None
    x = float(value)
    return None if math.isnan(x) else x


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _nan(values) -> list[float]:
    """None as NaN, so that matplotlib leaves a gap."""
    return [float("nan") if v is None else v for v in values]


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _arm_label(name: str) -> str:
    arm = Arm.parse(name)
    if arm.kind == "layer":
        return f"layer {arm.layers[0]}"
    if arm.kind == "layers":
        return "layers " + "+".join(map(str, arm.layers))
    return {"base": "base", "full": "full RL"}[arm.kind]


# --------------------------------------------------------------------------
# charts
# --------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9.5, "axes.titlesize": 10, "axes.labelsize": 9.5, "legend.fontsize": 8.5,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
        "figure.dpi": 100,
    })
    return plt


def _png(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def arm_style(name: str, num_layers: int) -> dict:
    """One colour and line style per arm, the same in every chart."""
    import matplotlib

    arm = Arm.parse(name)
    if arm.kind == "base":
        return {"color": "#8a8a8a", "ls": ":", "lw": 1.8, "marker": "s"}
    if arm.kind == "full":
        return {"color": "#111111", "ls": "-", "lw": 2.2, "marker": "D"}
    x = sum(arm.layers) / len(arm.layers) / max(1, num_layers - 1)
    color = matplotlib.colormaps["viridis"](0.05 + 0.8 * x)
    return {"color": color, "ls": "-" if arm.kind == "layer" else "--", "lw": 1.4, "marker": "o"}


def contribution_chart(contributions: list[dict]) -> str | None:
    """C(k) by layer with 95% CIs, one series per budget."""
    by_budget = defaultdict(list)
    for row in contributions:
        if row["arm"].startswith("layer:") and _f(row["C"]) is not None:
            by_budget[int(row["budget"])].append(row)
    if not by_budget:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 3.4))
    offsets = {b: (i - (len(by_budget) - 1) / 2) * 0.12 for i, b in enumerate(sorted(by_budget))}
    layers = set()
    for budget, rows in sorted(by_budget.items()):
        ks = [Arm.parse(r["arm"]).layers[0] for r in rows]
        layers |= set(ks)
        ys = [float(r["C"]) for r in rows]
        lo = [y - _f(r["ci_low"]) if _f(r["ci_low"]) is not None else 0 for y, r in zip(ys, rows)]
        hi = [_f(r["ci_high"]) - y if _f(r["ci_high"]) is not None else 0 for y, r in zip(ys, rows)]
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
    return _png(fig)


def headline_chart(per_seed: dict, best: dict[int, str], budgets: list[int], cap: int) -> str:
    """S for base, full RL and the best single layer at each budget; dots are seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 3.2))
    width = 0.26
    colors = {"base": "#b5b5b5", "full": "#333333", "best": "#2a9d8f"}
    for i, budget in enumerate(budgets):
        bars = [("base", "base"), ("full", "full")]
        if budget in best:
            bars.append((best[budget], "best"))
        for j, (arm, role) in enumerate(bars):
            seeds = per_seed.get((arm, budget), {})
            if not seeds:
                continue
            x = i + (j - 1) * width
            s = sum(v["accuracy"] for v in seeds.values()) / len(seeds)
            ax.bar(x, s, width * 0.92, color=colors[role])
            ax.scatter([x] * len(seeds), [v["accuracy"] for v in seeds.values()], s=9, color="white",
                       edgecolor="black", linewidth=0.6, zorder=3)
            name = {"base": "base", "full": "full"}.get(role, _arm_label(arm))
            ax.text(x, 0.02, name, rotation=90, ha="center", va="bottom", fontsize=7.5,
                    color="white" if role != "base" else "#222")
            cut = _mean([v["truncated"] for v in seeds.values()])
            if cut:
                top = max([s] + [v["accuracy"] for v in seeds.values()])
                ax.text(x, top + 0.02, f"{100 * cut:.0f}% cut", ha="center", va="bottom", fontsize=7.5,
                        color="#b23a48")
        if budget not in best:
            ax.text(i + width, 0.02, "C undefined", rotation=90, ha="center", va="bottom", fontsize=7.5,
                    color="#777")
    ax.set_xticks(range(len(budgets)))
    ax.set_xticklabels([f"{b} tokens" + (" (training cap)" if b == cap else "") for b in budgets])
    ax.set_ylabel("accuracy S (mean over tasks)")
    ax.set_ylim(0, 1.08)
    ax.grid(axis="x", visible=False)
    return _png(fig)


def budget_chart(scores: list[dict], cap: int, num_layers: int) -> str | None:
    """Accuracy, finished-only accuracy and truncated share vs budget, per arm."""
    if not scores:
        return None
    cells = defaultdict(lambda: defaultdict(list))
    for r in scores:
        cells[r["arm"]][int(r["budget"])].append(r)
    budgets = sorted({int(r["budget"]) for r in scores})
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    panels = (("accuracy", "accuracy"), ("finished_accuracy", "accuracy on finished answers"),
              ("truncated_rate", "truncated answers (share)"))
    for ax, (col, title) in zip(axes, panels):
        for arm in sorted(cells, key=arm_sort_key):
            ys = [_mean(_f(r[col]) for r in cells[arm][b]) for b in budgets]
            style = arm_style(arm, num_layers)
            ax.plot(budgets, _nan(ys), label=_arm_label(arm), ms=4, **style)
        ax.axvline(cap, color="#b23a48", lw=1, ls="--")
        ax.set_title(title)
        ax.set_xticks(budgets)
        ax.set_xlabel("eval budget (tokens)")
        ax.set_ylim(-0.03, 1.03)
    axes[0].text(cap, 0.0, " training cap", color="#b23a48", fontsize=7.5, va="bottom")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), frameon=False,
               bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    return _png(fig)


def training_chart(rows: list[dict], cap: int, num_layers: int) -> tuple[str | None, list[str]]:
    """Reward, mean completion length and truncated share per step, one line
    per arm (mean over seeds, rolling mean)."""
    notes = [f"column {col} missing from training_metrics.csv" for col, _ in TRAINING_METRICS
             if rows and col not in rows[0]]
    if not rows or len(notes) == len(TRAINING_METRICS):
        return None, notes
    series = defaultdict(lambda: defaultdict(list))
    for r in rows:
        series[r["arm"]][int(float(r["step"]))].append(r)
    n_steps = max(len(v) for v in series.values())
    window = max(1, round(n_steps / 15))
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    for ax, (col, title) in zip(axes, TRAINING_METRICS):
        ax.set_title(title)
        ax.set_xlabel("training step")
        if col not in rows[0]:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="#777")
            continue
        for arm in sorted(series, key=arm_sort_key):
            steps = sorted(series[arm])
            ys = [_mean(_f(r[col]) for r in series[arm][s]) for s in steps]
            smooth = [_mean(ys[max(0, i - window + 1): i + 1]) for i in range(len(ys))]
            ax.plot(steps, _nan(smooth), label=_arm_label(arm), **{**arm_style(arm, num_layers), "marker": None})
        if col == "completions/mean_length":
            ax.axhline(cap, color="#b23a48", lw=1, ls="--")
            ax.text(0, cap, "cap", color="#b23a48", fontsize=7.5, va="bottom")
        if col in ("rollouts/truncated_share", "reward"):
            ax.set_ylim(-0.03, 1.03)
    handles, labels = next(ax for ax in axes if ax.lines).get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), frameon=False,
               bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    notes.append(f"mean over seeds, rolling mean over {window} step{'s' if window > 1 else ''}")
    return _png(fig), notes


def decomposition_chart(rows: list[dict]) -> str | None:
    """Per budget and arm: problems gained because they now finish, gained
    while finishing before, and lost (counts, mean over seeds)."""
    by_budget = defaultdict(list)
    for r in rows:
        by_budget[int(r["budget"])].append(r)
    if not by_budget:
        return None
    plt = _plt()
    budgets = sorted(by_budget)
    arms = sorted({r["arm"] for r in rows}, key=arm_sort_key)
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.7 * len(budgets), 0.5 + 0.32 * len(arms) + 0.6),
                             sharey=True, sharex=True, squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        rows_b = {r["arm"]: r for r in by_budget[budget]}
        ys = list(range(len(arms)))[::-1]
        for y, arm in zip(ys, arms):
            r = rows_b.get(arm)
            if r is None:
                continue
            trunc = _f(r["now_right_was_truncated"]) or 0
            wrong = _f(r["now_right_was_wrong_finished"]) or 0
            lost = _f(r["lost"]) or 0
            ax.barh(y, trunc, color="#e9a23b", label="now right, was truncated")
            ax.barh(y, wrong, left=trunc, color="#3b7dd8", label="now right, was wrong (finished)")
            ax.barh(y, -lost, color="#b23a48", label="lost (was right)")
        ax.axvline(0, color="#333", lw=0.8)
        ax.set_title(f"budget {budget}")
        ax.set_xlabel("problems (mean over seeds)")
        ax.grid(axis="y", visible=False)
    axes[0][0].set_yticks(list(range(len(arms)))[::-1])
    axes[0][0].set_yticklabels([_arm_label(a) for a in arms])
    handles, labels = axes[0][0].get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------
# tables and summaries
# --------------------------------------------------------------------------
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
            cells.append({
                "accuracy": _mean(_f(r["accuracy"]) for r in sel),
                "truncated": _mean(_f(r["truncated_rate"]) for r in sel),
                "finished": _mean(_f(r["finished_accuracy"]) for r in sel),
                "tokens": _mean(_f(r.get("mean_tokens")) for r in sel),
            })
        rows.append({"arm": arm, "label": _arm_label(arm), "cells": cells})
    return budgets, rows


def per_seed_scores(scores: list[dict]) -> dict:
    """{(arm, budget): {seed: {"accuracy": S, "truncated": share}}}, S = mean over tasks."""
    cells = defaultdict(lambda: defaultdict(list))
    for r in scores:
        cells[(r["arm"], int(r["budget"]))][r["seed"]].append(r)
    return {key: {seed: {"accuracy": _mean(_f(r["accuracy"]) for r in rs),
                         "truncated": _mean(_f(r["truncated_rate"]) for r in rs)}
                  for seed, rs in by_seed.items()}
            for key, by_seed in cells.items()}


def _verdict(c: float, lo: float | None, hi: float | None) -> str:
    """beats / matches / short of full RL, or unclear when the interval
    reaches both the base (0) and full RL (1)."""
    if lo is None or hi is None:
        return "matches" if c >= 1 else "short"
    if lo > 1:
        return "beats"
    if hi < 1:
        return "short"
    return "unclear" if lo <= 0 else "matches"


def headline(contributions: list[dict], budgets: list[int], cap: int) -> dict:
    """Best single layer per budget and one sentence: does it match full RL?"""
    per_budget = []
    for budget in budgets:
        rows = [r for r in contributions if int(r["budget"]) == budget and r["arm"].startswith("layer:")]
        defined = [r for r in rows if _f(r["C"]) is not None]
        if not defined:
            reason = next((r["reason"] for r in rows if r["reason"]), "no single-layer arm has a C")
            per_budget.append({"budget": budget, "arm": None, "reason": reason, "verdict": "undefined"})
            continue
        best = max(defined, key=lambda r: float(r["C"]))
        c, lo, hi = float(best["C"]), _f(best["ci_low"]), _f(best["ci_high"])
        per_budget.append({"budget": budget, "arm": best["arm"], "C": c, "lo": lo, "hi": hi,
                           "verdict": _verdict(c, lo, hi)})

    def where(b):
        return f"the {b['budget']}-token training cap" if b["budget"] == cap else f"{b['budget']} tokens"

    def part(b, first):
        ci = "no CI" if b["lo"] is None else f"{'95% CI ' if first else ''}{b['lo']:.2f} to {b['hi']:.2f}"
        spans = ", spanning both base and full RL" if b["verdict"] == "unclear" else ""
        return f"{_arm_label(b['arm'])} at {where(b)} (C = {b['C']:.2f}, {ci}{spans})"

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
                    f"{_join([str(b['budget']) for b in good])} tokens but {'not' if all_short else 'not clearly'} "
                    f"at {_join([str(b['budget']) for b in rest])}")
        sentence = (f"{lead}: " + _join([part(b, i == 0) for i, b in enumerate(defined)])
                    + (f"; {undefined}" if undefined else "") + ".")
    return {"answer": answer, "sentence": sentence, "best": {b["budget"]: b["arm"] for b in defined}}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def contribution_matrix(contributions: list[dict]) -> tuple[list[int], list[dict], list[str]]:
    """Arms x budgets of C with intervals, and one note per distinct reason a C is undefined."""
    budgets = sorted({int(r["budget"]) for r in contributions})
    cells = {(r["arm"], int(r["budget"])): r for r in contributions}
    notes = defaultdict(set)
    for r in contributions:
        if _f(r["C"]) is None:
            notes[r["reason"] or "no reason given"].add(int(r["budget"]))
    rows = []
    for arm in sorted({r["arm"] for r in contributions}, key=arm_sort_key):
        row = []
        for b in budgets:
            r = cells.get((arm, b))
            if r is None:
                row.append(None)
                continue
            c = _f(r["C"])
            row.append({"C": c, "lo": _f(r["ci_low"]), "hi": _f(r["ci_high"]),
                        "verdict": None if c is None else _verdict(c, _f(r["ci_low"]), _f(r["ci_high"]))})
        rows.append({"arm": arm, "label": _arm_label(arm), "cells": row})
    return budgets, rows, [f"Undefined at budget{'s' if len(bs) > 1 else ''} {_join(list(map(str, sorted(bs))))}: "
                           f"{reason}" for reason, bs in notes.items()]


def decomposition_table(rows: list[dict]) -> list[dict]:
    out = []
    for r in sorted(rows, key=lambda r: (int(r["budget"]), arm_sort_key(r["arm"]))):
        trunc, wrong = _f(r["now_right_was_truncated"]), _f(r["now_right_was_wrong_finished"])
        gross = (trunc or 0) + (wrong or 0)
        out.append({**{k: _f(v) for k, v in r.items() if k not in ("arm", "budget")},
                    "arm": r["arm"], "label": _arm_label(r["arm"]), "budget": int(r["budget"]),
                    "from_finishing": trunc / gross if gross else None})
    return out


def pairing_summary(rows: list[dict]) -> dict:
    """Per seed: how many arms, how many distinct step-0 rollout hashes; the
    verdict is integrity.check_pairing's (same seed: identical, seeds: different)."""
    from layerbench.stages.checks import IntegrityError, check_pairing

    by_seed = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_seed[int(r["seed"])][r["step0_rollout_sha256"]].append(r["arm"])
    seeds = []
    for seed, groups in sorted(by_seed.items()):
        majority = max(groups, key=lambda h: len(groups[h]))
        seeds.append({"seed": seed, "arms": sum(map(len, groups.values())), "distinct": len(groups),
                      "sha": majority[:16], "odd": sorted((a for h, arms in groups.items() if h != majority
                                                           for a in arms), key=arm_sort_key)})
    try:
        check_pairing(rows)
        problems = []
    except IntegrityError as exc:
        problems = [line.strip() for line in str(exc).splitlines()[1:]]
    return {"seeds": seeds, "problems": problems, "ok": not problems,
            "rows": sorted(rows, key=lambda r: (int(r["seed"]), arm_sort_key(r["arm"])))}


def param_audit(rows: list[dict]) -> dict:
    """Matrix arm x part: changed in any seed, largest relative change; the
    verdict is integrity.check_audit's (a layer arm moves its layers, nothing else)."""
    from layerbench.stages.checks import IntegrityError, _part_order, check_audit

    parts = sorted({r["part"] for r in rows}, key=_part_order)
    cells, by_run = defaultdict(list), defaultdict(list)
    for r in rows:
        r = {**r, "changed": int(float(r["changed"]))}
        cells[(r["arm"], r["part"])].append(r)
        by_run[(r["arm"], int(r["seed"]))].append(r)
    problems = []
    for (arm, seed), run_rows in sorted(by_run.items(), key=lambda kv: (arm_sort_key(kv[0][0]), kv[0][1])):
        try:
            check_audit(Arm.parse(arm), seed, run_rows)
        except IntegrityError as exc:
            problems += [line.strip() for line in str(exc).splitlines()[1:]]
    table = []
    for arm in sorted({r["arm"] for r in rows}, key=arm_sort_key):
        a = Arm.parse(arm)
        row = []
        for part in parts:
            sel = cells.get((arm, part))
            if not sel:
                row.append(None)
                continue
            changed = any(r["changed"] for r in sel)
            trained = a.kind == "full" or part in {f"layers.{k}" for k in a.layers or ()}
            row.append({"changed": changed, "rel": max(_f(r["rel_change"]) or 0.0 for r in sel),
                        "status": "error" if a.kind != "full" and changed != trained else "ok"})
        table.append({"arm": arm, "label": _arm_label(arm), "cells": row})
    return {"parts": parts, "rows": table, "problems": problems, "ok": not problems}


def repro_rows(obj) -> list[dict]:
    records = obj if isinstance(obj, list) else [obj]
    keys = ("arm", "seed", "bitwise_equal", "metrics_equal", "rollouts_equal", "max_abs_weight_diff",
            "max_abs_metric_diff", "device", "note")
    return [{**{k: r.get(k) for k in keys}, "ok": bool(r.get("bitwise_equal")) and r.get("metrics_equal") is not False}
            for r in records]


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


PROVENANCE_KEYS = (
    ("git_commit", "git commit"), ("git_dirty", "uncommitted changes"),
    ("environment_lock_sha256", "environment.lock sha256"), ("config_sha256", "config sha256"),
    ("python", "Python"), ("os", "OS"), ("cpu_model", "CPU"), ("cpu_count", "CPU cores"),
    ("gpu_model", "GPU"), ("gpu_count", "GPUs"), ("cuda", "CUDA"), ("driver", "driver"), ("seeds", "seeds"),
)


def provenance_view(record: dict) -> dict:
    def show(v):
        if v is None:
            return "none"
        if isinstance(v, (list, tuple)):
            return ", ".join(map(str, v))
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)

    known = {k for k, _ in PROVENANCE_KEYS} | {"versions", "container", "config", "study"}
    facts = [(label, show(record.get(k))) for k, label in PROVENANCE_KEYS if k in record]
    facts += [(f"container {k}", show(v)) for k, v in (record.get("container") or {}).items()]
    facts += [(k, show(v)) for k, v in sorted(_flatten({k: v for k, v in record.items() if k not in known}).items())]
    versions = sorted((k, show(v)) for k, v in (record.get("versions") or {}).items())
    config = record.get("config")
    return {"facts": facts, "versions": versions,
            "config": yaml.safe_dump(config, sort_keys=True, default_flow_style=False) if config else None,
            "dirty": bool(record.get("git_dirty")), "numerics": (record.get("numerics") or {}).get("mode")}


def compute_view(timings: list[dict] | None, wall: dict | None) -> dict | None:
    """Job seconds and peak memory by stage, and the run's wall time
    (``timing.latest_wall_time``)."""
    if timings is None and wall is None:
        return None
    stages = defaultdict(lambda: {"jobs": 0, "seconds": 0.0, "rss": 0.0})
    for r in timings or []:
        stage = r["job"].split("/")[0] if "/" in r["job"] else r["job"]
        s = stages[stage]
        s["jobs"] += 1
        s["seconds"] += _f(r["seconds"]) or 0
        s["rss"] = max(s["rss"], _f(r["max_rss_mb"]) or 0)
    return {"wall": wall, "stages": sorted(stages.items())}


# --------------------------------------------------------------------------
# sample browser
# --------------------------------------------------------------------------
def sample_browser(paths: StudyPaths, tasks: list[str], budgets: list[int], opened: set[str]) -> dict:
    """A few answers per arm (same problems for every arm, first seed), with
    the outcome at each budget and truncated answers marked where each budget
    cut them off. Arms in ``opened`` are shown expanded."""
    seed = paths.study.seeds[0]
    notes, answers = [], {}
    decode = _decoder(paths)
    for arm in sorted(paths.study.arms, key=lambda a: arm_sort_key(a.name)):
        d = paths.eval_dir(arm, seed)
        per_sample = d / "per_sample.csv"
        if not per_sample.exists():
            notes.append(missing(per_sample.relative_to(paths.results)))
            continue
        texts = {}
        for task in tasks:
            for name in (f"samples_{task}.jsonl", f"generations_{task}.jsonl"):
                if not (d / name).exists():
                    notes.append(missing((d / name).relative_to(paths.results)))
            texts |= _texts(d, task)
        answers[arm.name] = (_outcomes(per_sample), texts)
    if not answers:
        return {"notes": notes, "problems": [], "arms": [], "seed": seed, "marked": False}
    problems = _pick_problems(answers, budgets)
    arms = []
    for arm, (outcome, texts) in sorted(answers.items(), key=lambda kv: arm_sort_key(kv[0])):
        items = []
        for key in problems:
            t, o = texts.get(key, {}), outcome.get(key, {})
            results = [{"budget": b, **o[b]} for b in budgets if b in o]
            cut = [r["budget"] for r in results if r["truncated"]]
            items.append({"task": key[0], "doc_id": key[1], "results": results, "cut": cut,
                          "text": t.get("text"), "extracted": t.get("extracted"), "target": t.get("target"),
                          "prompt": _prompt(t["doc"]) if "doc" in t else None,
                          "segments": _segments(t.get("text"), t.get("ids"), cut, decode),
                          "n_tokens": max((r["n_tokens"] or 0 for r in results), default=None)})
        arms.append({"arm": arm, "label": _arm_label(arm), "answers": items, "open": arm in opened,
                     "n_cut": sum(1 for i in items if i["cut"])})
    return {"notes": notes, "arms": arms, "seed": seed, "problems": problems, "marked": decode is not None}


def _outcomes(per_sample: Path) -> dict:
    """{(task, doc_id): {budget: {correct, truncated, n_tokens}}} for repeat 0."""
    outcome = defaultdict(dict)
    for r in read_csv(per_sample):
        if int(r["repeat"]) == 0:
            outcome[(r["task"], int(r["doc_id"]))][int(r["budget"])] = {
                "correct": _f(r["correct"]) == 1.0, "truncated": r["truncated"] in ("1", "True"),
                "n_tokens": int(float(r["n_tokens"])) if r["n_tokens"] else None}
    return outcome


def _texts(eval_dir: Path, task: str) -> dict:
    """{(task, doc_id): answer text, doc, target, token ids} from lm-eval's
    samples and layerbench's generations, the run at the largest budget."""
    out: dict = {}
    samples, generations = eval_dir / f"samples_{task}.jsonl", eval_dir / f"generations_{task}.jsonl"
    for s in read_jsonl(samples) if samples.exists() else []:
        key, run_budget = (task, int(s["doc_id"])), _max_gen_toks(s)
        if key in out and run_budget < out[key]["run_budget"]:
            continue
        resps = s.get("resps") or [[""]]
        out[key] = {"run_budget": run_budget, "doc": s.get("doc") or {},
                    "text": str(resps[0][0] if resps and resps[0] else ""),
                    "extracted": str((s.get("filtered_resps") or [""])[0]), "target": str(s.get("target", ""))}
    best: dict = {}
    for g in read_jsonl(generations) if generations.exists() else []:
        key = (task, int(g["doc_id"]))
        if int(g.get("repeat", 0)) == 0 and key in out and g.get("run_budget", 0) >= best.get(key, -1):
            best[key] = g.get("run_budget", 0)
            out[key]["ids"] = g.get("token_ids")
    return out


def _decoder(paths: StudyPaths):
    """The study's tokenizer decode (``tokenizers`` only, no model load), or
    None when no tokenizer.json is at hand."""
    path = paths.base_model / "tokenizer.json"
    if not path.exists():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)


def _segments(text: str | None, ids: list[int] | None, cut: list[int], decode) -> list[dict] | None:
    """The answer split where each budget that cut it ran out: [{"text",
    "mark": budget ending after this piece, "beyond": past the first cut}].
    None when the cut points cannot be placed exactly on the text."""
    if text is None or not cut or ids is None or decode is None:
        return None
    ends = []
    for budget in sorted(cut):
        prefix = decode(ids[:budget])
        if not text.startswith(prefix) and len(ids) > budget:
            return None
        ends.append((min(len(prefix), len(text)), budget))
    pieces, start = [], 0
    for i, (end, budget) in enumerate(ends):
        pieces.append({"text": text[start:end], "mark": budget, "beyond": i > 0})
        start = end
    pieces.append({"text": text[start:], "mark": None, "beyond": True})
    return pieces


def _max_gen_toks(sample: dict) -> int:
    try:
        return int(sample["arguments"][0][1]["max_gen_toks"])
    except (KeyError, IndexError, TypeError, ValueError):
        return 0


def _prompt(doc: dict) -> str:
    for key in ("prompt", "question", "problem", "input"):
        if key in doc:
            return str(doc[key])
    return json.dumps(doc, sort_keys=True)[:300]


def _pick_problems(answers: dict, budgets: list[int]) -> list[tuple]:
    """Up to SAMPLES_PER_ARM problems, the same for every arm: first where the
    base is cut at the smallest budget, then where arms disagree, then the rest."""
    keys = sorted(set.intersection(*(set(o) for o, _ in answers.values())))
    low, high = budgets[0], budgets[-1]
    base = answers.get("base", next(iter(answers.values())))[0]

    def cut_low(k):
        return base.get(k, {}).get(low, {}).get("truncated", False)

    def disagree(k):
        return len({o.get(k, {}).get(high, {}).get("correct") for o, _ in answers.values()}) > 1

    picked = [k for k in keys if cut_low(k)][: SAMPLES_PER_ARM // 2]
    for rule in (disagree, lambda k: True):
        picked += [k for k in keys if k not in picked and rule(k)][: SAMPLES_PER_ARM - len(picked)]
    return picked


# --------------------------------------------------------------------------
# one study's view, the page
# --------------------------------------------------------------------------
def study_view(paths: StudyPaths, label: str | None = None) -> dict:
    """Everything the template shows for one study."""
    study = paths.study
    cap = study.limits.max_completion_tokens
    num_layers = study.num_layers
    scores = _csv(paths, "scores.csv")
    contributions = _csv(paths, "contributions.csv")
    v: dict = {"study": study, "label": label or study.name, "cap": cap,
               "algorithm": study.rl.algorithm, "model": _model_name(study)}
    budgets = sorted({int(r["budget"]) for r in scores}) if scores else list(study.limits.eval_budgets)
    v["budgets"] = budgets
    v["tasks"] = sorted({r["task"] for r in scores}) if scores else [s.task for s in study.eval.suites]

    # headline + C(k)
    if contributions is not None:
        contributions = sorted(contributions, key=lambda r: (int(r["budget"]), arm_sort_key(r["arm"])))
        v["headline"] = headline(contributions, budgets, cap)
        v["c_chart"] = contribution_chart(contributions)
        v["c_budgets"], v["c_rows"], v["c_notes"] = contribution_matrix(contributions)
    v["contributions"] = contributions
    v["headline_chart"] = (headline_chart(per_seed_scores(scores), v["headline"]["best"] if contributions else {},
                                          budgets, cap) if scores else None)
    # scores
    v["scores"] = scores
    if scores:
        v["score_budgets"], v["score_rows"] = score_table(scores)
        v["per_task"] = ([(t, *score_table([r for r in scores if r["task"] == t])) for t in v["tasks"]]
                         if len(v["tasks"]) > 1 else [])
        v["budget_chart"] = budget_chart(scores, cap, num_layers)
    # training
    training = _csv(paths, "training_metrics.csv")
    v["training"] = training
    if training is not None:
        v["training_chart"], v["training_notes"] = training_chart(training, cap, num_layers)
        v["training_window"], v["training_summary"] = _training_summary(training)
    # truncation audit
    decomposition = _csv(paths, "decomposition.csv")
    v["decomposition"] = decomposition_table(decomposition) if decomposition is not None else None
    v["decomposition_chart"] = decomposition_chart(decomposition) if decomposition else None
    ranking = _csv(paths, "ranking_correlation.csv")
    v["ranking"] = ([{**r, "spearman": _f(r["spearman"])} for r in ranking] if ranking is not None else None)
    # checks
    v["preflight"] = _json(paths, "preflight.json")
    pairing = _csv(paths, "pairing.csv")
    v["pairing"] = pairing_summary(pairing) if pairing is not None else None
    audit = _csv(paths, "param_audit.csv")
    v["param_audit"] = param_audit(audit) if audit is not None else None
    repro = _json(paths, "repro.json")
    v["repro"] = repro_rows(repro) if repro is not None else None
    # provenance
    prov = _json(paths, "provenance.json")
    v["provenance"] = provenance_view(prov) if prov is not None else None
    v["compute"] = compute_view(_csv(paths, "timings.csv"), latest_wall_time(paths.results))
    v["config_yaml"] = yaml.safe_dump(study.raw, sort_keys=True)
    # samples
    best = set(v["headline"]["best"].values()) if contributions else set()
    v["samples"] = sample_browser(paths, v["tasks"], budgets, {"base", "full"} | best)
    return v


def _model_name(study: Study) -> str:
    m = study.model
    if m.get("source") == "build":
        b = m.get("build", {})
        return f"tiny Qwen2 built here ({b.get('num_layers')} layers, hidden {b.get('hidden_size')})"
    return f"{m.get('id')} ({study.num_layers} layers)"


def _training_summary(rows: list[dict]) -> tuple[int, list[dict]]:
    """Mean of the first and of the last few logged steps per arm (and seeds)."""
    by_arm = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_arm[r["arm"]][int(float(r["step"]))].append(r)
    window = max(1, round(max(len(v) for v in by_arm.values()) / 10))
    out = []
    for arm in sorted(by_arm, key=arm_sort_key):
        steps = sorted(by_arm[arm])
        first = [r for s in steps[:window] for r in by_arm[arm][s]]
        last = [r for s in steps[-window:] for r in by_arm[arm][s]]
        cell = {col: (_mean(_f(r.get(col)) for r in first), _mean(_f(r.get(col)) for r in last))
                for col, _ in TRAINING_METRICS}
        out.append({"arm": arm, "label": _arm_label(arm), "steps": steps[-1], "cells": cell})
    return window, out


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("layerbench", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["missing"] = missing
    env.filters["pct"] = _pct
    env.filters["arm_label"] = _arm_label
    env.filters["num"] = lambda x, d=2: "n/a" if x is None else f"{x:.{d}f}"
    env.filters["signed"] = lambda x, d=2: "n/a" if x is None else f"{x:+.{d}f}"
    return env


def render_page(views: list[dict], title: str, comparison: dict | None = None) -> str:
    return _environment().get_template("report.html.j2").render(views=views, title=title, comparison=comparison)


def render_study_report(paths: StudyPaths, out: Path) -> Path:
    view = study_view(paths)
    return atomic_write_text(out, render_page([view], f"layerbench: {paths.study.name}"))


# --------------------------------------------------------------------------
# two studies side by side
# --------------------------------------------------------------------------
def _tasks(paths: StudyPaths) -> set[str] | None:
    scores = _csv(paths, "scores.csv")
    return None if scores is None else {r["task"] for r in scores}


def config_differences(a: Study, b: Study) -> list[tuple[str, str, str]]:
    fa, fb = _flatten(a.raw), _flatten(b.raw)
    return [(k, _show(fa.get(k)), _show(fb.get(k))) for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k)]


def _show(value) -> str:
    return "(not set)" if value is None else json.dumps(value) if not isinstance(value, str) else value


def comparison_notes(a: Study, b: Study) -> list[str]:
    notes = []
    ra, rb = a.rl_for(Arm("full")), b.rl_for(Arm("full"))
    cap_a, cap_b = a.limits.max_completion_tokens, b.limits.max_completion_tokens
    if cap_a != cap_b:
        notes.append(f"Training caps differ ({cap_a} vs {cap_b} tokens): rewards, lengths and truncated shares"
                     " during training are not on the same scale.")
        if "dr_grpo" in (ra.algorithm, rb.algorithm):
            notes.append("Dr. GRPO normalises the loss by the completion cap, so changing the cap also rescales"
                         " the loss (and the effective learning rate).")
    if ra.algorithm != rb.algorithm:
        notes.append(f"RL algorithms differ ({ra.algorithm} vs {rb.algorithm}).")
    if set(a.limits.eval_budgets) != set(b.limits.eval_budgets):
        shared = sorted(set(a.limits.eval_budgets) & set(b.limits.eval_budgets))
        notes.append("Eval budgets differ; compare numbers at the same budget only"
                     + (f" (shared: {', '.join(map(str, shared))})." if shared else " (none shared)."))
    if a.seeds != b.seeds:
        notes.append("Seeds differ between the studies: arms are paired within a study, not across them.")
    return notes


def compare_command(study_a: Path, study_b: Path, out: Path | None, force: bool) -> int:
    """Render two studies side by side; refuse (exit 2) when their eval suites
    differ, unless ``force``. STUDY_DIRs are ``results/<study>/`` folders."""
    loaded = []
    for folder in (Path(study_a), Path(study_b)):
        study_file = folder / "study.yaml"
        if not study_file.exists():
            print(f"layerbench compare: {folder} is not a study folder (no study.yaml; expected results/<study>/)",
                  file=sys.stderr)
            return 2
        try:
            paths = StudyPaths.from_study_file(study_file)
        except ConfigError as exc:
            print(f"layerbench compare: {study_file}: {exc}", file=sys.stderr)
            return 2
        loaded.append(StudyFolder(paths.study, paths.root, folder))
    pa, pb = loaded
    tasks_a, tasks_b = _tasks(pa), _tasks(pb)
    problem = None
    if tasks_a is None or tasks_b is None:
        absent = pa if tasks_a is None else pb
        problem = f"cannot check that they use the same eval suite: {absent.scores} missing"
    elif tasks_a != tasks_b:
        problem = (f"different eval suites: {pa.study.name} has tasks {', '.join(sorted(tasks_a))}; "
                   f"{pb.study.name} has tasks {', '.join(sorted(tasks_b))}")
    if problem and not force:
        print(f"layerbench compare: not comparable: {problem}. Use --force to render them side by side anyway.",
              file=sys.stderr)
        return 2
    label_a, label_b = pa.study.name, pb.study.name
    if label_a == label_b:
        label_a, label_b = str(pa.results), str(pb.results)
    views = [study_view(pa, label_a), study_view(pb, label_b)]
    comparison = {"problem": problem, "differences": config_differences(pa.study, pb.study),
                  "notes": comparison_notes(pa.study, pb.study), "labels": (label_a, label_b)}
    if out is None:
        out = Path("reports") / f"compare-{pa.study.name}-{pb.study.name}" / "index.html"
    atomic_write_text(out, render_page(views, f"layerbench: {pa.study.name} vs {pb.study.name}", comparison))
    print(out)
    return 0
