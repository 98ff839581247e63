"""Two studies on one page, side by side (``layerbench compare``).

Refuses (exit 2) when the studies were scored on different eval suites,
since their numbers are then not on the same problems, unless forced; and
lists the config keys that differ, with notes on what makes numbers
incomparable (caps, algorithms, budgets, seeds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from layerbench.config import Arm, ConfigError, Study
from layerbench.paths import StudyFolder, StudyPaths
from layerbench.runtime.io import atomic_write_text
from layerbench.stages.report import render_page
from layerbench.stages.report.gather import csv_or_none, flatten, study_view


def _tasks(paths: StudyPaths) -> set[str] | None:
    scores = csv_or_none(paths.scores)
    return None if scores is None else {r["task"] for r in scores}


def config_differences(a: Study, b: Study) -> list[tuple[str, str, str]]:
    fa, fb = flatten(a.raw), flatten(b.raw)
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
        study_file = StudyFolder.files_in(folder).study_file
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
    if out is None:  # next to the studies' own reports, under ./reports/
        page = StudyPaths(pa.study).report
        out = page.parent.with_name(f"compare-{pa.study.name}-{pb.study.name}") / page.name
    atomic_write_text(out, render_page(views, f"layerbench: {pa.study.name} vs {pb.study.name}", comparison))
    print(out)
    return 0
