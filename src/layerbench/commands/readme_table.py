"""``layerbench readme-table``: the README's results block, made from a run.

The README quotes the numbers of the default study and of the controls
study (``config/controls.yaml``). Written by hand they drift from what the
code produces; here they are rendered from a study's ``scores.csv``,
``decomposition.csv`` and, for control arms, ``contributions.csv``, and kept
between two markers named after the study, so ``--check`` fails when the
README and the results disagree and ``--write`` replaces the block. Both
studies run under ``numerics: portable``, so a fresh clone on any x86-64
machine with AVX2 reproduces the blocks exactly.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean

import yaml

from layerbench.config import Arm
from layerbench.paths import StudyFolder
from layerbench.runtime.io import read_csv

def markers(study: str) -> tuple[str, str]:
    """The lines that open and close a study's block in the README."""
    return (f"<!-- results of {study}: made by `layerbench readme-table docs/{study}-study --write README.md`; "
            "do not edit -->", f"<!-- /results of {study} -->")


def results_block(results: Path) -> str:
    """Markdown table (mean over seeds, first task) and the full arm's gain
    decomposition at the cap; with control arms, each arm's share of full
    RL's gain at the cap (C, from ``contributions.csv``)."""
    files = StudyFolder.files_in(results)
    study = yaml.safe_load(files.study_file.read_text())
    cap = int(study["limits"]["max_completion_tokens"])
    begin, end = markers(study["study"])
    scores = read_csv(files.scores)
    task = scores[0]["task"]
    top = max(int(r["budget"]) for r in scores)
    cells: dict = defaultdict(list)
    for r in scores:
        if r["task"] == task:
            cells[r["arm"], int(r["budget"]), "accuracy"].append(float(r["accuracy"]))
            cells[r["arm"], int(r["budget"]), "truncated"].append(float(r["truncated_rate"]))
    seeds = sorted({r["seed"] for r in scores})
    arms = sorted({r["arm"] for r in scores}, key=Arm.sort_key_of)
    shares = gain_shares(files.contributions, cap) if any(Arm.parse(a).control for a in arms) else None
    header = f"| arm | accuracy @{cap} (cap) | truncated @{cap} | accuracy @{top} |"
    lines = [header + (" share of full RL's gain @cap |" if shares else ""), "|---|---|---|---|" + ("---|" * bool(shares))]
    for arm in arms:
        lines.append(f"| {arm} | {fmean(cells[arm, cap, 'accuracy']):.3f} | "
                     f"{100 * fmean(cells[arm, cap, 'truncated']):.0f}% | {fmean(cells[arm, top, 'accuracy']):.3f} |"
                     + (f" {shares.get(arm, '')} |" if shares else ""))
    full = next(r for r in read_csv(files.decomposition) if r["arm"] == "full" and int(r["budget"]) == cap)
    lines += ["", f"Mean of {len(seeds)} seeds ({', '.join(seeds)}), {scores[0]['n']} test problems, task `{task}`. "
              f"Full RL's {float(full['gain']):+.3f} at the cap is {float(full['now_right_was_truncated']):g} problems "
              f"that no longer run out of budget, {float(full['now_right_was_wrong_finished']):g} that now finish "
              f"with the right answer, minus {float(full['lost']):g} lost (per seed, from `decomposition.csv`)."]
    if files.how_sure.exists():
        lines += ["", *how_sure_lines(json.loads(files.how_sure.read_text()), cap, top)]
    return "\n".join([begin, *lines, end])


def how_sure_lines(record: dict, cap: int, top: int) -> list[str]:
    """The How-sure figures (``how_sure.json``) as list items: continued answers, variance split, screen."""
    lines = []
    cont = record.get("continuation")
    if cont:
        cost, arms = cont["cost"], {r["arm"]: r for r in cont["arms"]}
        moved = ", ".join(f"{arm} {r['accuracy']:.3f} → {r['accuracy_if_finished']:.3f}"
                          for arm, r in arms.items() if r["accuracy"] != r["accuracy_if_finished"]) or "none"
        lines.append(f"- **If allowed to finish** (`eval.probe_budget: {cont['budget']}`): "
                     f"{cost['continued']:g} of {cost['answers']:g} answers were still cut off at {top} tokens. "
                     f"Continued to {cont['budget']}, accuracy moves for: {moved}; full RL's gain over base "
                     f"{arms['full']['gain']:+.3f} becomes {arms['full']['gain_if_finished']:+.3f}. It cost "
                     f"{cost['extra_tokens']:g} generated tokens, {100 * cost['extra_tokens'] / cost['direct_tokens']:.0f}% "
                     f"of a direct generation of every answer at {cont['budget']}.")
    variance = (record.get("variance") or {}).get(str(cap))
    if variance:
        rows = {r["arm"]: r for r in variance}
        full = rows["full"]["score"]
        shares = _shares(full)
        lines.append(f"- **Variance by source** at the cap, full RL: one seed's SD {full['seed_spread']:.3f}; of the "
                     f"variance of its {record['seeds']}-seed score, {shares}.")
        for arm, r in rows.items():
            if Arm.parse(arm).in_layer_scan and "C" in r:
                c = r["C"]
                lines.append(f"  - {arm}: SD of one seed's C {c['C_spread']:.2f}; seeds to tell C = 0.9 from 1: "
                             f"{c['seeds_for_0.1']}; observed |C − 1| {c['observed_gap']:.2f}, seeds to detect it: "
                             f"{c['seeds_for_observed'] if c['seeds_for_observed'] is not None else '–'}.")
    screen = record.get("screen")
    if screen:
        agree = "; ".join(f"at {b['budget']} tokens Spearman {_num(b['spearman'])}, best layer {b['best']} "
                          f"(screen: {b['screen_best']}; {'kept' if b['best_kept'] else 'dropped'} by a screen "
                          f"keeping {screen['keep']})" for b in screen["budgets"])
        lines.append(f"- **Layer screen** at {screen['screen_steps']} of {screen['steps']} steps ranks "
                     f"{', '.join(screen['ranking'])}: {agree}. Keeping {screen['keep']} saves "
                     f"{100 * screen['steps_saved']:.0f}% of the single-layer training steps.")
    return lines


def _shares(split: dict) -> str:
    of_mean = split["of_mean"]
    total = sum(of_mean.values())
    names = {"seed": "training seed", "problem": "problems", "seed_problem": "seed × problem", "sample": "sampling"}
    return ", ".join(f"{100 * of_mean[k] / total:.0f}% {name}" for k, name in names.items()) if total else "none"


def _num(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def gain_shares(contributions: Path, cap: int) -> dict[str, str]:
    """{arm: "C [low, high]"} at the cap, the 95% interval where there is one."""
    out = {}
    for r in read_csv(contributions):
        if int(r["budget"]) == cap and r["C"] != "":
            out[r["arm"]] = f"{float(r['C']):.2f}" + (f" [{float(r['ci_low']):.2f}, {float(r['ci_high']):.2f}]"
                                                     if r["ci_low"] != "" else "")
    return out


def replace_block(text: str, block: str) -> str:
    begin, end = block.splitlines()[0], block.splitlines()[-1]
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no results block in the README (markers {begin!r} ... {end!r})")
    return text[:start] + block + text[stop + len(end):]


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
