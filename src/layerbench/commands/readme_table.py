"""``layerbench readme-table``: the README's results block, made from a run.

The README quotes the default study's numbers. Written by hand they drift
from what the code produces; here they are rendered from a study's
``scores.csv`` and ``decomposition.csv`` and kept between two markers, so
``--check`` fails when the README and the results disagree and ``--write``
replaces the block. The default study runs under ``numerics: portable``, so a
fresh clone on any x86-64 machine with AVX2 reproduces the block exactly.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean

import yaml

from layerbench.config import Arm
from layerbench.paths import StudyFolder
from layerbench.runtime.io import read_csv

BEGIN = "<!-- results: made by `layerbench readme-table docs/default-study --write README.md`; do not edit -->"
END = "<!-- /results -->"


def results_block(results: Path) -> str:
    """Markdown table (mean over seeds, first task) and the full arm's gain decomposition at the cap."""
    files = StudyFolder.files_in(results)
    study = yaml.safe_load(files.study_file.read_text())
    cap = int(study["limits"]["max_completion_tokens"])
    scores = read_csv(files.scores)
    task = scores[0]["task"]
    top = max(int(r["budget"]) for r in scores)
    cells: dict = defaultdict(list)
    for r in scores:
        if r["task"] == task:
            cells[r["arm"], int(r["budget"]), "accuracy"].append(float(r["accuracy"]))
            cells[r["arm"], int(r["budget"]), "truncated"].append(float(r["truncated_rate"]))
    seeds = sorted({r["seed"] for r in scores})
    lines = [f"| arm | accuracy @{cap} (cap) | truncated @{cap} | accuracy @{top} |", "|---|---|---|---|"]
    for arm in sorted({r["arm"] for r in scores}, key=Arm.sort_key_of):
        lines.append(f"| {arm} | {fmean(cells[arm, cap, 'accuracy']):.3f} | "
                     f"{100 * fmean(cells[arm, cap, 'truncated']):.0f}% | {fmean(cells[arm, top, 'accuracy']):.3f} |")
    full = next(r for r in read_csv(files.decomposition) if r["arm"] == "full" and int(r["budget"]) == cap)
    lines += ["", f"Mean of {len(seeds)} seeds ({', '.join(seeds)}), {scores[0]['n']} test problems, task `{task}`. "
              f"Full RL's {float(full['gain']):+.3f} at the cap is {float(full['now_right_was_truncated']):g} problems "
              f"that no longer run out of budget, {float(full['now_right_was_wrong_finished']):g} that now finish "
              f"with the right answer, minus {float(full['lost']):g} lost (per seed, from `decomposition.csv`)."]
    return "\n".join([BEGIN, *lines, END])


def replace_block(text: str, block: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no results block in the README (markers {BEGIN!r} ... {END!r})")
    return text[:start] + block + text[end + len(END):]


def readme_table_command(results: Path, check: Path | None, write: Path | None) -> int:
    block = results_block(results)
    target = check or write
    if target is None:
        print(block)
        return 0
    text = target.read_text()
    updated = replace_block(text, block)
    if write:
        write.write_text(updated)
        return 0
    if updated != text:
        print(f"{check}: its results block differs from {results} (run with --write to update it):\n{block}",
              file=sys.stderr)
        return 1
    print(f"{check}: results block matches {results}")
    return 0
