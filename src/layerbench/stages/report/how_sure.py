"""The report's "How sure" section, from ``how_sure.json`` (``analysis.sureness``):
tables per budget, labelled for display; nothing is decided here."""

from __future__ import annotations

from layerbench.config import Arm

SOURCES = ("seed", "problem", "seed_problem", "sample")


def how_sure_view(record: dict | None, budgets: list[int], cap: int) -> dict | None:
    """{"variance": [{budget, rows}], "continuation", "screen", "greedy", "seeds"} or None without the file."""
    if record is None:
        return None
    shown = sorted({b for b in (cap, max(budgets)) if str(b) in (record.get("variance") or {})})
    variance = [{"budget": b, "rows": [_variance_row(r) for r in sorted(record["variance"][str(b)],
                                                                          key=lambda r: Arm.sort_key_of(r["arm"]))]}
                for b in shown]
    continuation = record.get("continuation")
    if continuation:
        continuation = {**continuation, "arms": [{**r, "label": Arm.label_of(r["arm"])} for r in
                                                 sorted(continuation["arms"], key=lambda r: Arm.sort_key_of(r["arm"]))],
                        "share": continuation["cost"]["extra_tokens"] / continuation["cost"]["direct_tokens"]
                        if continuation["cost"]["direct_tokens"] else None}
    screen = record.get("screen")
    if screen:
        screen = {**screen, "ranking": [Arm.label_of(a) for a in screen["ranking"]],
                  "kept": [Arm.label_of(a) for a in screen["kept"]],
                  "screened_out": [Arm.label_of(a) for a in screen.get("screened_out", [])],
                  "budgets": [{**b, "best": Arm.label_of(b["best"]), "screen_best": Arm.label_of(b["screen_best"])}
                              for b in screen["budgets"]]}
    return {"variance": variance, "continuation": continuation, "screen": screen, "greedy": record["greedy"],
            "seeds": record["seeds"], "cap": cap}


def _variance_row(row: dict) -> dict:
    score = row["score"]
    total = sum(score["of_mean"].values())
    shares = {k: (score["of_mean"][k] / total if total else None) for k in SOURCES}
    c = row.get("C")
    return {"arm": row["arm"], "label": Arm.label_of(row["arm"]), "spread": score["seed_spread"], "shares": shares,
            "sample_separate": score["sample"] is not None, "C": c}
