"""``layerbench contribution SCORES.csv``: C(k) from scores made anywhere."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from layerbench.analysis.stats import contributions_from_scores
from layerbench.runtime.io import atomic_write_csv, read_csv


def read_scores(path: Path) -> dict[str, dict[int, float]]:
    rows = read_csv(path)
    missing = {"arm", "seed", "score"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected arm,seed,score")
    scores: dict[str, dict[int, float]] = defaultdict(dict)
    for i, row in enumerate(rows, start=2):
        try:
            scores[row["arm"].strip()][int(row["seed"])] = float(row["score"])
        except ValueError:
            raise ValueError(f"{path}:{i}: seed must be an integer and score a number, got {row}") from None
    for needed in ("base", "full"):
        if needed not in scores:
            raise ValueError(f"{path}: no rows for arm '{needed}' (C(k) needs base and full)")
    return scores


def contribution_command(scores_path: Path, csv_out: Path | None) -> int:
    try:
        results = contributions_from_scores(read_scores(scores_path))
    except (ValueError, FileNotFoundError) as exc:
        print(f"layerbench contribution: {exc}", file=sys.stderr)
        return 2
    print(f"{'arm':<12} {'C':>8} {'95% CI':>20}")
    for c in results:
        value = "undefined" if c.C is None else f"{c.C:.3f}"
        ci = "" if c.ci_low is None else f"[{c.ci_low:.3f}, {c.ci_high:.3f}]"
        print(f"{c.arm:<12} {value:>8} {ci:>20}" + (f"  ({c.reason})" if c.reason else ""))
    if csv_out:
        atomic_write_csv(csv_out, [c.as_row() for c in results], ["arm", "C", "ci_low", "ci_high"])
    return 0
