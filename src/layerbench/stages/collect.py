"""Gather per-job outputs into a study's tidy tables.

``scores.csv``        one row per (arm, seed, task, budget)
``contributions.csv`` C(k) per (arm, budget), 95% bootstrap CI over seeds and problems
``training_metrics.csv`` per-step TRL metrics plus rollout truncation, per (arm, seed)
``timings.csv``       Snakemake ``benchmark:`` figures per job
``decomposition.csv`` / ``ranking_correlation.csv``  what each gain is made of (truncation.py)
``provenance.json``   code, environment, hardware and config of the study
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from layerbench.config import Arm
from layerbench.runtime.io import atomic_write_csv, read_csv
from layerbench.analysis.stats import contributions_from_samples
from layerbench.paths import StudyPaths

SCORE_COLUMNS = ["arm", "seed", "task", "budget", "accuracy", "n", "truncated_rate", "finished_accuracy",
                 "mean_tokens"]
CONTRIBUTION_COLUMNS = ["arm", "budget", "C", "ci_low", "ci_high", "reason"]


def score_rows(paths: StudyPaths) -> list[dict]:
    rows = []
    for arm in paths.study.arms:
        for seed in paths.study.seeds:
            scores = json.loads((paths.eval_dir(arm, seed) / "scores.json").read_text())
            for task, by_budget in scores["tasks"].items():
                for budget, s in by_budget.items():
                    rows.append({"arm": arm.name, "seed": seed, "task": task, "budget": int(budget),
                                 **{k: _round(v) for k, v in s.items()}})
    return rows


def correctness(paths: StudyPaths) -> dict[int, dict[str, list[np.ndarray]]]:
    """{budget: {arm: [array[seeds, problems] per task]}} from per_sample.csv."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    for arm in paths.study.arms:
        for seed in paths.study.seeds:
            for row in read_csv(paths.eval_dir(arm, seed) / "per_sample.csv"):
                key = (row["task"], int(row["doc_id"]), int(row["repeat"]))
                table[int(row["budget"])][arm.name].setdefault(seed, {})[key] = float(row["correct"])
    out: dict = {}
    for budget, by_arm in table.items():
        out[budget] = {}
        for arm, by_seed in by_arm.items():
            keys = sorted(next(iter(by_seed.values())))
            tasks = sorted({k[0] for k in keys})
            out[budget][arm] = [
                np.array([[by_seed[s][k] for k in keys if k[0] == t] for s in paths.study.seeds]) for t in tasks
            ]
    return out


def contribution_rows(paths: StudyPaths) -> list[dict]:
    rows = []
    for budget, by_arm in sorted(correctness(paths).items()):
        for c in contributions_from_samples(by_arm):
            rows.append({**c.as_row(), "budget": budget})
    return rows


def training_rows(paths: StudyPaths) -> tuple[list[dict], list[str]]:
    rows, columns = [], {"arm", "seed", "step"}
    for arm in paths.study.trained_arms:
        for seed in paths.study.seeds:
            for row in read_csv(paths.run_dir(arm, seed) / "metrics.csv"):
                rows.append({"arm": arm.name, "seed": seed, **row})
                columns |= set(row)
    return rows, ["arm", "seed", "step"] + sorted(columns - {"arm", "seed", "step"})


def timing_rows(paths: StudyPaths) -> list[dict]:
    rows = []
    for tsv in sorted(paths.benchmarks.rglob("*.tsv")):
        lines = tsv.read_text().splitlines()
        if len(lines) < 2:
            continue
        header, values = lines[0].split("\t"), lines[1].split("\t")
        record = dict(zip(header, values))
        rows.append({"job": str(tsv.relative_to(paths.benchmarks).with_suffix("")), "seconds": record.get("s"),
                     "max_rss_mb": record.get("max_rss"), "cpu_time": record.get("cpu_time")})
    return rows


def collect(paths: StudyPaths) -> None:
    from layerbench.runtime.provenance import write_provenance
    from layerbench.analysis.truncation import (DECOMPOSITION_COLUMNS, RANKING_COLUMNS, decomposition_rows,
                                       ranking_rows)

    atomic_write_csv(paths.scores, score_rows(paths), SCORE_COLUMNS)
    contributions = contribution_rows(paths)
    atomic_write_csv(paths.contributions, contributions, CONTRIBUTION_COLUMNS)
    atomic_write_csv(paths.results / "decomposition.csv", decomposition_rows(paths), DECOMPOSITION_COLUMNS)
    atomic_write_csv(paths.results / "ranking_correlation.csv", ranking_rows(contributions), RANKING_COLUMNS)
    write_provenance(paths)
    rows, columns = training_rows(paths)
    atomic_write_csv(paths.results / "training_metrics.csv", rows, columns)
    atomic_write_csv(paths.results / "timings.csv", timing_rows(paths), ["job", "seconds", "max_rss_mb", "cpu_time"])


def _round(value):
    return round(value, 6) if isinstance(value, float) else value


def arm_sort_key(name: str):
    arm = Arm.parse(name)
    return ({"base": 0, "full": 1, "layer": 2, "layers": 3}[arm.kind], arm.layers or ())
