"""The report's charts: matplotlib figures as PNG data URIs, so the page needs no files.

Each function takes rows of collect's tidy tables (strings, as read from the
CSV) and returns a data URI, or None when there is nothing to draw. Arms
keep one colour and line style across every chart (``arm_style``).
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict

from layerbench.analysis.verdicts import number
from layerbench.config import Arm

TRAINING_METRICS = (
    ("reward", "reward (mean)"),
    ("completions/mean_length", "completion length (tokens)"),
    ("rollouts/truncated_share", "truncated rollouts (share)"),
)


def mean(values) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _nan(values) -> list[float]:
    """None as NaN, so that matplotlib leaves a gap."""
    return [float("nan") if v is None else v for v in values]


def pyplot():
    """matplotlib's pyplot, headless, in the report's one style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9.5, "axes.titlesize": 10, "axes.labelsize": 9.5, "legend.fontsize": 8.5,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
        "figure.dpi": 100,
    })
    return plt


def png_data_uri(fig) -> str:
    """``fig`` as an inline PNG (a data URI: the report is one file); closes it."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def arm_style(name: str, num_layers: int) -> dict:
    """One colour and line style per arm, the same in every chart."""
    import matplotlib

    arm = Arm.parse(name)
    if arm.control:  # a control arm: its plain arm's colour, dotted, a hollow marker of its reward's own shape
        plain = arm_style(arm.plain.name, num_layers)
        return {**plain, "ls": ":", "marker": {"finish_only": "^", "random": "x", "none": "s"}[arm.reward], "mfc": "none"}
    if arm.kind == "base":
        return {"color": "#8a8a8a", "ls": ":", "lw": 1.8, "marker": "s"}
    if arm.kind == "full":
        return {"color": "#111111", "ls": "-", "lw": 2.2, "marker": "D"}
    if arm.kind == "lora":
        return {"color": "#c2185b", "ls": "-.", "lw": 1.6, "marker": "v"}
    x = sum(arm.layers) / len(arm.layers) / max(1, num_layers - 1)
    color = matplotlib.colormaps["viridis"](0.05 + 0.8 * x)
    return {"color": color, "ls": {"layer": "-", "layers": "--"}.get(arm.kind, "-."), "lw": 1.4, "marker": "o"}


def headline_chart(per_seed: dict, best: dict[int, str], budgets: list[int], cap: int) -> str:
    """S for base, full RL and the best single layer at each budget; dots are seeds."""
    plt = pyplot()
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
            name = {"base": "base", "full": "full"}.get(role, Arm.label_of(arm))
            ax.text(x, 0.02, name, rotation=90, ha="center", va="bottom", fontsize=7.5,
                    color="white" if role != "base" else "#222")
            cut = mean([v["truncated"] for v in seeds.values()])
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
    return png_data_uri(fig)


def budget_chart(scores: list[dict], cap: int, num_layers: int) -> str | None:
    """Accuracy, finished-only accuracy and truncated share vs budget, per arm."""
    if not scores:
        return None
    cells = defaultdict(lambda: defaultdict(list))
    for r in scores:
        cells[r["arm"]][int(r["budget"])].append(r)
    budgets = sorted({int(r["budget"]) for r in scores})
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    panels = (("accuracy", "accuracy"), ("finished_accuracy", "accuracy on finished answers"),
              ("truncated_rate", "truncated answers (share)"))
    for ax, (col, title) in zip(axes, panels):
        for arm in sorted(cells, key=Arm.sort_key_of):
            ys = [mean(number(r[col]) for r in cells[arm][b]) for b in budgets]
            style = arm_style(arm, num_layers)
            ax.plot(budgets, _nan(ys), label=Arm.label_of(arm), ms=4, **style)
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
    return png_data_uri(fig)


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
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    for ax, (col, title) in zip(axes, TRAINING_METRICS):
        ax.set_title(title)
        ax.set_xlabel("training step")
        if col not in rows[0]:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="#777")
            continue
        for arm in sorted(series, key=Arm.sort_key_of):
            steps = sorted(series[arm])
            ys = [mean(number(r[col]) for r in series[arm][s]) for s in steps]
            smooth = [mean(ys[max(0, i - window + 1): i + 1]) for i in range(len(ys))]
            ax.plot(steps, _nan(smooth), label=Arm.label_of(arm), **{**arm_style(arm, num_layers), "marker": None})
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
    return png_data_uri(fig), notes


def decomposition_chart(rows: list[dict]) -> str | None:
    """Per budget and arm: problems gained because they now finish, gained
    while finishing before, and lost (counts, mean over seeds)."""
    by_budget = defaultdict(list)
    for r in rows:
        by_budget[int(r["budget"])].append(r)
    if not by_budget:
        return None
    plt = pyplot()
    budgets = sorted(by_budget)
    arms = sorted({r["arm"] for r in rows}, key=Arm.sort_key_of)
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.7 * len(budgets), 0.5 + 0.32 * len(arms) + 0.6),
                             sharey=True, sharex=True, squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        rows_b = {r["arm"]: r for r in by_budget[budget]}
        ys = list(range(len(arms)))[::-1]
        for y, arm in zip(ys, arms):
            r = rows_b.get(arm)
            if r is None:
                continue
            trunc = number(r["now_right_was_truncated"]) or 0
            wrong = number(r["now_right_was_wrong_finished"]) or 0
            lost = number(r["lost"]) or 0
            ax.barh(y, trunc, color="#e9a23b", label="now right, was truncated")
            ax.barh(y, wrong, left=trunc, color="#3b7dd8", label="now right, was wrong (finished)")
            ax.barh(y, -lost, color="#b23a48", label="lost (was right)")
        ax.axvline(0, color="#333", lw=0.8)
        ax.set_title(f"budget {budget}")
        ax.set_xlabel("problems (mean over seeds)")
        ax.grid(axis="y", visible=False)
    axes[0][0].set_yticks(list(range(len(arms)))[::-1])
    axes[0][0].set_yticklabels([Arm.label_of(a) for a in arms])
    handles, labels = axes[0][0].get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    return png_data_uri(fig)



def update_chart(update: dict, contributions: list[dict] | None, cap: int) -> str | None:
    """Left: per decoder layer, the full arm's relative update norm (bars) and,
    on a second axis, its share of elements changed and effective rank over
    full rank. Right: the single-layer scan's C(k) at the training cap."""
    from layerbench.analysis.update import c_at_cap, layer_profile

    layers = layer_profile(update)
    if not layers:
        return None
    ks = [p["layer"] for p in layers]
    plt = pyplot()
    fig, (ax, ax_c) = plt.subplots(1, 2, figsize=(11, 3.3))
    ax.bar(ks, _nan(p["rel_frobenius"] for p in layers), 0.6, color="#9db8d9", label="||ΔW||_F / ||W||_F (left axis)")
    ax.set_ylabel("relative update norm")
    ax.set_xlabel("decoder layer")
    ax.set_xticks(ks)
    ax.set_title("full RL: where the update lives")
    share = ax.twinx()
    share.plot(ks, _nan(p["frac_changed"] for p in layers), "o-", color="#111111", label="share of elements changed")
    share.plot(ks, _nan(p["erank_ratio"] for p in layers), "s--", color="#2a9d8f", label="effective rank / full rank")
    share.set_ylim(0, 1.05)
    share.set_ylabel("share of elements / of full rank")
    share.grid(False)
    share.spines["right"].set_visible(True)
    handles = ax.get_legend_handles_labels()[0] + share.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="lower center", bbox_to_anchor=(0.5, -0.42), ncol=3,
              frameon=False, fontsize=7.5)
    c = c_at_cap(contributions, cap)
    ax_c.set_title(f"single layers: C(k) at the {cap}-token cap")
    ax_c.set_xlabel("trained decoder layer k")
    ax_c.set_xticks(ks)
    if c:
        kc = sorted(c)
        ys = [c[k]["C"] for k in kc]
        err = [[y - (c[k]["lo"] if c[k]["lo"] is not None else y) for k, y in zip(kc, ys)],
               [(c[k]["hi"] if c[k]["hi"] is not None else y) - y for k, y in zip(kc, ys)]]
        ax_c.errorbar(kc, ys, yerr=err, fmt="o-", ms=5, lw=1, capsize=3, color="#2a9d8f")
        ax_c.axhline(1.0, color="#444", ls="--", lw=1)
        ax_c.axhline(0.0, color="#444", ls=":", lw=1)
        ax_c.set_ylabel("C(k)")
    else:
        ax_c.text(0.5, 0.5, "no defined C(k) at the cap", transform=ax_c.transAxes, ha="center", color="#777")
    fig.tight_layout()
    return png_data_uri(fig)
