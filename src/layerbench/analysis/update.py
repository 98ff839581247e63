"""Where the full arm's update lives, against where the single layers gain.

The paper under test says RL's gain sits in a few middle layers; Mukherjee et
al. (arXiv 2505.11711) find that RL changes only part of the parameters, but
spread over nearly every matrix, at nearly full rank. The parameter audit
(``layerbench.stages.checks``) measures per weight tensor of every checkpoint
the share of elements that changed (bitwise), the relative Frobenius norm
||dW||_F / ||W_base||_F and the entropy effective rank of dW (Roy & Vetterli,
2007: exp(H(p)), p_i = s_i / sum_j s_j over the singular values s).

``update_summary`` condenses the full arm's rows into ``checks.json``'s
``update`` section; ``update_sentence`` puts it next to the single-layer scan's
C(k) at the training cap, for the report. Neither says more than the numbers:
a rank correlation across a handful of layers is a description, not a test.
"""

from __future__ import annotations

from collections import defaultdict

from layerbench.analysis.stats import spearman
from layerbench.analysis.verdicts import join, number
from layerbench.config import Arm

MEASURES = ("frac_changed", "rel_frobenius", "effective_rank", "erank_ratio", "update_share")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _ratio(row: dict) -> float | None:
    """Effective rank over the most a matrix can have, min(shape)."""
    rank = row.get("effective_rank")
    return None if rank is None or len(row["shape"]) != 2 else rank / min(row["shape"])


def _figures(rows: list[dict], total_sq: float) -> dict:
    """One seed's figures for a group of tensors: frac_changed weighted by
    elements, rel_frobenius of the group as one vector, mean effective rank
    and erank / min(shape) over its 2-D tensors, share of the model's squared
    update norm."""
    numel, base_sq = sum(r["numel"] for r in rows), sum(r["base_sq"] for r in rows)
    delta_sq = sum(r["delta_sq"] for r in rows)
    ranked = [r for r in rows if r.get("effective_rank") is not None]
    return {"frac_changed": sum(r["n_changed"] for r in rows) / numel if numel else 0.0,
            "rel_frobenius": (delta_sq / base_sq) ** 0.5 if base_sq else 0.0,
            "effective_rank": _mean(r["effective_rank"] for r in ranked),
            "erank_ratio": _mean(_ratio(r) for r in ranked),
            "update_share": delta_sq / total_sq if total_sq else 0.0}


def _rounded(figures: dict) -> dict:
    return {k: None if v is None else float(f"{v:.4g}") for k, v in figures.items()}


def update_summary(rows: list[dict], parts: list[str], arm: str = "full") -> dict | None:
    """``checks.json``'s ``update``: the full arm's audit rows (``matrix_measures``
    per tensor, with arm and seed), each figure the mean over its seeds.

    {"arm", "seeds", "overall": figures, "parts": [{part, tensors, matrices
    (2-D), params, **figures}] in ``parts`` order, "matrices": [{part, matrix,
    shape, truncated, **figures}], "truncated": [tensors whose rank comes from a
    truncated SVD: a lower bound]}; figures are ``_figures``'. None when the
    arm has no per-tensor rows."""
    own = [r for r in rows if r["arm"] == arm and "numel" in r]
    if not own:
        return None
    seeds = sorted({int(r["seed"]) for r in own})
    by_seed = defaultdict(list)
    for r in own:
        by_seed[int(r["seed"])].append(r)
    total = {s: sum(r["delta_sq"] for r in rs) for s, rs in by_seed.items()}

    def pooled(select) -> dict:
        per_seed = [_figures(sel, total[s]) for s, rs in sorted(by_seed.items())
                    if (sel := [r for r in rs if select(r)])]
        return _rounded({k: _mean(f[k] for f in per_seed) for k in MEASURES})

    part_rows = []
    for part in parts:
        mine = [r for r in by_seed[seeds[0]] if r["part"] == part]
        if mine:
            part_rows.append({"part": part, "tensors": len(mine), "matrices": sum(len(r["shape"]) == 2 for r in mine),
                              "params": sum(r["numel"] for r in mine),
                              **pooled(lambda r, p=part: r["part"] == p)})
    matrices = []
    for r in sorted(by_seed[seeds[0]], key=lambda r: parts.index(r["part"]) if r["part"] in parts else len(parts)):
        matrices.append({"part": r["part"], "matrix": r["matrix"], "shape": r["shape"],
                         "truncated": bool(r.get("erank_truncated")),
                         **pooled(lambda x, m=r["matrix"]: x["matrix"] == m)})
    return {"arm": arm, "seeds": seeds, "overall": pooled(lambda r: True), "parts": part_rows,
            "matrices": matrices, "truncated": [m["matrix"] for m in matrices if m["truncated"]]}


def layer_profile(update: dict) -> list[dict]:
    """The decoder layers' rows of ``update["parts"]``, each with its index ``layer``."""
    return sorted(({**p, "layer": int(p["part"].split(".")[1])} for p in update["parts"]
                   if p["part"].startswith("layers.")), key=lambda p: p["layer"])


def c_at_cap(contributions: list[dict] | None, cap: int) -> dict[int, dict]:
    """{k: {C, lo, hi}} of the single-layer arms at budget ``cap``, where C is defined."""
    out = {}
    for r in contributions or []:
        arm = Arm.parse(r["arm"])
        if arm.in_layer_scan and int(r["budget"]) == cap and number(r["C"]) is not None:
            out[arm.layers[0]] = {"C": number(r["C"]), "lo": number(r["ci_low"]), "hi": number(r["ci_high"])}
    return out


def top_layers(layers: list[dict], share: float = 0.5) -> tuple[list[int], float]:
    """The fewest decoder layers that together hold at least ``share`` of the
    decoder layers' squared update norm, and the share they hold."""
    total = sum(p["update_share"] or 0.0 for p in layers)
    if not total:
        return [], 0.0
    chosen, held = [], 0.0
    for p in sorted(layers, key=lambda p: (-(p["update_share"] or 0.0), p["layer"])):
        chosen.append(p["layer"])
        held += (p["update_share"] or 0.0) / total
        if held >= share - 1e-12:
            break
    return sorted(chosen), held


def update_sentence(update: dict, contributions: list[dict] | None, cap: int) -> str:
    """One sentence on the full arm's update: how much of the model changed,
    whether every decoder layer moved, which layers hold most of the update
    norm, the mean effective-rank ratio, and the Spearman rank correlation
    across layers of its per-layer rel_frobenius with the single-layer C(k)
    at the training cap."""
    overall, layers = update["overall"], layer_profile(update)
    seeds = len(update["seeds"])
    text = (f"The full arm changed {_pct(overall['frac_changed'])} of its parameters "
            f"(bitwise; mean over {seeds} seed{'s' if seeds != 1 else ''})")
    if layers:
        moved = [p for p in layers if p["frac_changed"]]
        text += ("; every decoder layer moved" if len(moved) == len(layers)
                 else f"; {len(moved)} of {len(layers)} decoder layers moved")
        top, held = top_layers(layers)
        if top:
            names = join([str(k) for k in top])
            text += (f"; layer{'s' if len(top) > 1 else ''} {names} hold{'s' if len(top) == 1 else ''} "
                     f"{_pct(held)} of the decoder layers' squared update norm")
    if overall["erank_ratio"] is not None:
        bound = " (a lower bound: truncated SVD for some matrices)" if update.get("truncated") else ""
        text += f"; mean effective rank of its update matrices: {overall['erank_ratio']:.2f} of full rank{bound}"
    c = c_at_cap(contributions, cap)
    paired = [p for p in layers if p["layer"] in c and p["rel_frobenius"] is not None]
    rho = spearman([p["rel_frobenius"] for p in paired], [c[p["layer"]]["C"] for p in paired]) if paired else None
    if rho is not None:
        text += (f"; rank correlation across {len(paired)} layers of the full arm's relative update "
                 f"with the single-layer C(k) at the {cap}-token cap: Spearman {rho:.2f}")
    elif len(paired) < 2:
        text += f"; no rank correlation with C(k): fewer than two layers have a defined C at the {cap}-token cap"
    else:
        text += "; no rank correlation with C(k): the values are constant across layers"
    return text + "."


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
