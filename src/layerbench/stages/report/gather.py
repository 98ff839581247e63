"""One study's view: collect's and the checks' files, read into what the template shows.

Reads only files that ``StudyPaths`` declares under ``results/<study>/``, each
optional: a section whose file is missing says so. It aggregates and labels
for display (means over seeds and tasks, tables per arm and budget, charts),
but decides nothing: verdicts, the checks' outcomes and the sample answers
come ready-made from ``verdicts.json``, ``checks.json`` and ``samples.json``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import yaml

from layerbench.analysis.update import update_sentence
from layerbench.analysis.verdicts import best_arms, number
from layerbench.config import Arm, Study
from layerbench.paths import StudyPaths
from layerbench.runtime.io import read_csv
from layerbench.runtime.timing import latest_wall_time
from layerbench.stages.report.charts import (
    TRAINING_METRICS,
    budget_chart,
    decomposition_chart,
    headline_chart,
    mean,
    training_chart,
    update_chart,
)
from layerbench.stages.report.contribution import contribution_view
from layerbench.stages.report.cost import cost_view
from layerbench.stages.report.how_sure import how_sure_view


def csv_or_none(path: Path) -> list[dict] | None:
    return read_csv(path) if path.exists() else None


def json_or_none(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def study_view(paths: StudyPaths, label: str | None = None) -> dict:
    """Everything the template shows for one study."""
    study = paths.study
    cap = study.limits.max_completion_tokens
    num_layers = study.model.decoder_layer_count
    scores = csv_or_none(paths.scores)
    contributions = csv_or_none(paths.contributions)
    verdicts = json_or_none(paths.verdicts)
    v: dict = {"study": study, "label": label or study.name, "cap": cap,
               "algorithm": study.rl.algorithm, "model": _model_name(study)}
    budgets = sorted({int(r["budget"]) for r in scores}) if scores else list(study.limits.eval_budgets)
    v["budgets"] = budgets
    v["tasks"] = sorted({r["task"] for r in scores}) if scores else [s.task for s in study.eval.suites]

    # headline + C(k)
    v["headline"] = verdicts["headline"] if verdicts is not None else None
    v.update(contribution_view(contributions, verdicts["cells"] if verdicts is not None else []))
    contributions = v["contributions"]
    best = best_arms(v["headline"]) if v["headline"] is not None else {}
    v["headline_chart"] = headline_chart(per_seed_scores(scores), best, budgets, cap) if scores else None
    # scores
    v["scores"] = scores
    if scores:
        v["score_budgets"], v["score_rows"] = score_table(scores)
        v["per_task"] = ([(t, *score_table([r for r in scores if r["task"] == t])) for t in v["tasks"]]
                         if len(v["tasks"]) > 1 else [])
        v["budget_chart"] = budget_chart(scores, cap, num_layers)
    # training
    training = csv_or_none(paths.training_metrics)
    v["training"] = training
    if training is not None:
        v["training_chart"], v["training_notes"] = training_chart(training, cap, num_layers)
        v["training_window"], v["training_summary"] = _training_summary(training)
    # truncation audit
    decomposition = csv_or_none(paths.decomposition)
    v["decomposition"] = decomposition_table(decomposition) if decomposition is not None else None
    v["decomposition_chart"] = decomposition_chart(decomposition) if decomposition else None
    ranking = csv_or_none(paths.ranking)
    v["ranking"] = [{**r, "spearman": number(r["spearman"])} for r in ranking] if ranking is not None else None
    # checks
    v["preflight"] = json_or_none(paths.preflight)
    checks = json_or_none(paths.checks)
    v["pairing"] = checks["pairing"] if checks is not None else None
    v["param_audit"] = (dict(checks["param_audit"], rows=_labelled(checks["param_audit"]["rows"]))
                        if checks is not None else None)
    v["param_update"] = checks.get("update") if checks is not None else None
    if v["param_update"]:
        v["param_update_chart"] = update_chart(v["param_update"], contributions, cap)
        v["param_update_sentence"] = update_sentence(v["param_update"], contributions, cap)
    repro = json_or_none(paths.repro)
    v["repro"] = repro_rows(repro) if repro is not None else None
    # provenance
    prov = json_or_none(paths.provenance)
    v["provenance"] = provenance_view(prov) if prov is not None else None
    v["compute"] = compute_view(csv_or_none(paths.timings), latest_wall_time(paths.wall_time))
    v["freezing"] = cost_view(csv_or_none(paths.costs), num_layers)
    v["how_sure"] = how_sure_view(json_or_none(paths.how_sure), budgets, cap)
    v["config_yaml"] = yaml.safe_dump(study.raw, sort_keys=True)
    # samples
    samples = json_or_none(paths.samples)
    v["samples"] = dict(samples, arms=_labelled(samples["arms"])) if samples is not None else None
    return v


def _labelled(rows: list[dict]) -> list[dict]:
    """Rows keyed by ``arm``, each with the arm's label added."""
    return [{**r, "label": Arm.label_of(r["arm"])} for r in rows]


def score_table(scores: list[dict]) -> tuple[list[int], list[dict]]:
    """Rows per arm, columns per budget: mean over seeds and tasks."""
    budgets = sorted({int(r["budget"]) for r in scores})
    acc = defaultdict(list)
    for r in scores:
        acc[(r["arm"], int(r["budget"]))].append(r)
    rows = []
    for arm in sorted({r["arm"] for r in scores}, key=Arm.sort_key_of):
        cells = []
        for b in budgets:
            sel = acc[(arm, b)]
            cells.append({
                "accuracy": mean(number(r["accuracy"]) for r in sel),
                "truncated": mean(number(r["truncated_rate"]) for r in sel),
                "finished": mean(number(r["finished_accuracy"]) for r in sel),
                "tokens": mean(number(r.get("mean_tokens")) for r in sel),
            })
        rows.append({"arm": arm, "label": Arm.label_of(arm), "cells": cells})
    return budgets, rows


def per_seed_scores(scores: list[dict]) -> dict:
    """{(arm, budget): {seed: {"accuracy": S, "truncated": share}}}, S = mean over tasks."""
    cells = defaultdict(lambda: defaultdict(list))
    for r in scores:
        cells[(r["arm"], int(r["budget"]))][r["seed"]].append(r)
    return {key: {seed: {"accuracy": mean(number(r["accuracy"]) for r in rs),
                         "truncated": mean(number(r["truncated_rate"]) for r in rs)}
                  for seed, rs in by_seed.items()}
            for key, by_seed in cells.items()}


def decomposition_table(rows: list[dict]) -> list[dict]:
    out = []
    for r in sorted(rows, key=lambda r: (int(r["budget"]), Arm.sort_key_of(r["arm"]))):
        trunc, wrong = number(r["now_right_was_truncated"]), number(r["now_right_was_wrong_finished"])
        gross = (trunc or 0) + (wrong or 0)
        out.append({**{k: number(v) for k, v in r.items() if k not in ("arm", "budget")},
                    "arm": r["arm"], "label": Arm.label_of(r["arm"]), "budget": int(r["budget"]),
                    "from_finishing": trunc / gross if gross else None})
    return out


def repro_rows(obj) -> list[dict]:
    records = obj if isinstance(obj, list) else [obj]
    keys = ("arm", "seed", "bitwise_equal", "metrics_equal", "rollouts_equal", "max_abs_weight_diff",
            "max_abs_metric_diff", "device", "note")
    return [{**{k: r.get(k) for k in keys}, "ok": bool(r.get("bitwise_equal")) and r.get("metrics_equal") is not False}
            for r in records]


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
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
    facts += [(k, show(v)) for k, v in sorted(flatten({k: v for k, v in record.items() if k not in known}).items())]
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
        s["seconds"] += number(r["seconds"]) or 0
        s["rss"] = max(s["rss"], number(r["max_rss_mb"]) or 0)
    return {"wall": wall, "stages": sorted(stages.items())}


def _model_name(study: Study) -> str:
    m = study.model
    if m.source == "build":
        return f"tiny Qwen2 built here ({m.build.num_layers} layers, hidden {m.build.hidden_size})"
    return f"{m.id} ({study.model.decoder_layer_count} layers)"


def _training_summary(rows: list[dict]) -> tuple[int, list[dict]]:
    """Mean of the first and of the last few logged steps per arm (and seeds)."""
    by_arm = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_arm[r["arm"]][int(float(r["step"]))].append(r)
    window = max(1, round(max(len(v) for v in by_arm.values()) / 10))
    out = []
    for arm in sorted(by_arm, key=Arm.sort_key_of):
        steps = sorted(by_arm[arm])
        first = [r for s in steps[:window] for r in by_arm[arm][s]]
        last = [r for s in steps[-window:] for r in by_arm[arm][s]]
        cell = {col: (mean(number(r.get(col)) for r in first), mean(number(r.get(col)) for r in last))
                for col, _ in TRAINING_METRICS}
        out.append({"arm": arm, "label": Arm.label_of(arm), "steps": steps[-1], "cells": cell})
    return window, out
