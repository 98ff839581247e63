"""Gather per-job outputs into a study's tidy files, and decide once what the report shows.

``scores``        one row per (arm, seed, task, budget)
``contributions`` C(k) per (arm, budget), 95% bootstrap CI over seeds and problems
``training``      per-step TRL metrics plus rollout truncation, per (arm, seed)
``timings``       Snakemake ``benchmark:`` figures per job
``costs``         what each training run cost: time per phase, memory, optimizer
                  state, backward depth (``summary.json``'s ``cost``), checkpoint
                  format, dtype and bytes on disk (its ``checkpoint``)
``decomposition`` / ``ranking``  what each gain is made of (analysis.truncation)
``provenance``    code, environment, hardware and config of the study
``verdicts``      the headline and each C(k)'s verdict (analysis.verdicts)
``samples``       the sample browser: a few answers per arm, cut marks placed
                  with the base model's tokenizer
``how_sure``      variance by source, seeds needed, what cut-off answers score
                  when continued (``eval.probe_budget``) and the layer screen
                  (``rl.screen_steps``): ``analysis.sureness``

This is the only stage that reads the runs' and evaluations' folders; the
report reads these files (and the checks'), so it neither decides nor loads
a tokenizer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from layerbench.analysis.per_sample import PerSample, PerSampleTable, read_per_sample
from layerbench.analysis.stats import contributions_from_samples
from layerbench.analysis.sureness import (
    arm_variance,
    continuation_effect,
    screen_agreement,
    pooled_screen_scores,
    screen_ranking,
)
from layerbench.analysis.truncation import (
    DECOMPOSITION_COLUMNS,
    RANKING_COLUMNS,
    decomposition_rows,
    ranking_rows,
)
from layerbench.analysis.verdicts import best_arms, study_verdicts
from layerbench.config import Arm, Study
from layerbench.paths import EvalFolder, ModelFolder, StudyPaths
from layerbench.runtime.io import (
    atomic_write_csv,
    atomic_write_json,
    read_csv,
    read_jsonl,
)
from layerbench.runtime.provenance import write_provenance
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths

SCORE_COLUMNS = ["arm", "seed", "task", "budget", "accuracy", "n", "truncated_rate", "finished_accuracy",
                 "mean_tokens"]
CONTRIBUTION_COLUMNS = ["arm", "budget", "C", "ci_low", "ci_high", "reason"]
TIMING_COLUMNS = ["job", "seconds", "max_rss_mb", "cpu_time"]
COST_PHASES = ("generation", "scoring", "forward_backward", "optimizer", "other")
COST_FIELDS = ("device", "optimizer_steps", "rollouts", "peak_rss_mb", "peak_gpu_mb", "optimizer_state_bytes",
               "gradient_bytes", "input_grads_blocked")
VLLM_FIELDS = ("start_seconds", "syncs", "sync_tensors", "sync_bytes", "sync_seconds_mean")  # summary.json's vllm
COST_COLUMNS = ["arm", "seed", "train_seconds", *(f"{p}_seconds" for p in COST_PHASES), "loss_forward_seconds",
                "backward_seconds", *COST_FIELDS,
                "trainable_parameters", "total_parameters", "backward_layers", "checkpoint_format", "checkpoint_dtype",
                "checkpoint_bytes", "job_seconds", "job_max_rss_mb", *(f"vllm_{k}" for k in VLLM_FIELDS),
                "vllm_logp_gap_mean", "vllm_logp_gap_max", "vllm_is_ratio_min", "vllm_is_ratio_max"]
SAMPLES_PER_ARM = 6


def collect(paths: StudyPaths, *, scores: Path, contributions: Path, training: Path, decomposition: Path,
            ranking: Path, provenance: Path, timings: Path, samples: Path, verdicts: Path, costs: Path,
            how_sure: Path) -> None:
    study = paths.study
    scored = score_rows(paths)
    atomic_write_csv(scores, scored, SCORE_COLUMNS)
    table = {(a.name, s): read_per_sample(paths.eval(a, s).per_sample) for a in study.arms for s in study.seeds}
    c_rows = contribution_rows(study, table)
    atomic_write_csv(contributions, c_rows, CONTRIBUTION_COLUMNS)
    d_rows, r_rows = decomposition_rows(study, table), ranking_rows(c_rows)
    atomic_write_csv(decomposition, d_rows, DECOMPOSITION_COLUMNS)
    atomic_write_csv(ranking, r_rows, RANKING_COLUMNS)
    write_provenance(paths, provenance)
    rows, columns = training_rows(paths)
    atomic_write_csv(training, rows, columns)
    sureness = how_sure_record(paths, table, scored, rows)
    atomic_write_json(how_sure, sureness)
    jobs = timing_rows(paths)
    atomic_write_csv(timings, jobs, TIMING_COLUMNS)
    atomic_write_csv(costs, cost_rows(paths, jobs), COST_COLUMNS)

    budgets = sorted({r["budget"] for r in scored})
    tasks = sorted({r["task"] for r in scored})
    listed = sorted(c_rows, key=lambda r: (r["budget"], Arm.sort_key_of(r["arm"])))  # the report's order
    decided = study_verdicts(listed, budgets, study.limits.max_completion_tokens, scored, d_rows, r_rows,
                             seed_spread_of_c(sureness))
    atomic_write_json(verdicts, decided)
    opened = {"base", "full"} | set(best_arms(decided["headline"]).values())
    atomic_write_json(samples, sample_browser(paths, table, tasks, budgets, opened))


# --------------------------------------------------------------------------
# tidy tables
# --------------------------------------------------------------------------
def score_rows(paths: StudyPaths) -> list[dict]:
    rows = []
    for arm in paths.study.arms:
        for seed in paths.study.seeds:
            scores = json.loads(paths.eval(arm, seed).scores.read_text())
            for task, by_budget in scores["tasks"].items():
                for budget, s in by_budget.items():
                    rows.append({"arm": arm.name, "seed": seed, "task": task, "budget": int(budget),
                                 **{k: _round(v) for k, v in s.items()}})
    return rows


def correctness(study: Study, table: PerSampleTable) -> dict[int, dict[str, list[np.ndarray]]]:
    """{budget: {arm: [array[seeds, problems] of ``correct`` per task]}}."""
    by_budget: dict = defaultdict(lambda: defaultdict(dict))
    for (arm, seed), rows in table.items():
        for r in rows:
            by_budget[r.budget][arm].setdefault(seed, {})[r.problem] = r.correct
    out: dict = {}
    for budget, by_arm in by_budget.items():
        out[budget] = {}
        for arm, by_seed in by_arm.items():
            keys = sorted(next(iter(by_seed.values())))
            tasks = sorted({k[0] for k in keys})
            out[budget][arm] = [
                np.array([[by_seed[s][k] for k in keys if k[0] == t] for s in study.seeds]) for t in tasks
            ]
    return out


def contribution_rows(study: Study, table: PerSampleTable) -> list[dict]:
    rows = []
    for budget, by_arm in sorted(correctness(study, table).items()):
        for c in contributions_from_samples(by_arm):
            rows.append({**c.as_row(), "budget": budget})
    return rows


def samples_by_repeat(study: Study, table: PerSampleTable) -> dict[int, dict[str, np.ndarray]]:
    """{budget: {arm: y[seed, problem, repeat]}}, the problems of every task
    side by side (tasks with different repeats: each problem's mean, one "repeat")."""
    out: dict = defaultdict(dict)
    for budget, by_arm in correctness(study, table).items():
        for arm, mats in by_arm.items():
            rows = [r for r in table[(arm, study.seeds[0])] if r.budget == budget]
            tasks = sorted({r.task for r in rows})
            repeats = [max(r.repeat for r in rows if r.task == t) + 1 for t in tasks]
            shaped = [m.reshape(m.shape[0], -1, k) for m, k in zip(mats, repeats)]
            if len(set(repeats)) > 1:
                shaped = [y.mean(axis=2, keepdims=True) for y in shaped]
            out[budget][arm] = np.concatenate(shaped, axis=1)
    return out


def how_sure_record(paths: StudyPaths, table: PerSampleTable, scored: list[dict], training: list[dict]) -> dict:
    """``how_sure.json``: per budget each arm's variance split and C's, with
    seeds needed; the continued answers' effect; the layer screen's agreement."""
    study = paths.study
    by_budget = samples_by_repeat(study, table)
    record: dict = {"greedy": study.eval.greedy, "seeds": len(study.seeds),
                    "variance": {str(b): arm_variance(by_arm, study.eval.greedy)
                                 for b, by_arm in sorted(by_budget.items())} if len(study.seeds) > 1 else None}
    if study.eval.probe_budget:
        record["continuation"] = continuation_record(paths, table)
    if study.rl.screen_steps and (study.screens or sum(a.in_layer_scan for a in study.arms) > 1):
        record["screen"] = screen_record(paths, scored, training)
    return record


def seed_spread_of_c(sureness: dict) -> dict[tuple[str, int], float]:
    """(arm, budget) -> the SD of one training seed's C, for the headline's wording."""
    return {(row["arm"], int(b)): row["C"]["C_spread"] for b, rows in (sureness["variance"] or {}).items()
            for row in rows if "C" in row}


def continuation_record(paths: StudyPaths, table: PerSampleTable) -> dict:
    """Accuracy at the largest budget and if allowed to finish (the cut-off
    answers continued to the probe budget), pooled over seeds and tasks, and
    what the continuation cost against a direct run at the probe budget."""
    study, top = paths.study, paths.study.limits.max_budget
    at_max, finished, cut, still, cost = {}, {}, {}, {}, defaultdict(float)
    for arm in study.arms:
        per_seed = []
        for seed in study.seeds:
            folder = paths.eval(arm, seed)
            later = {(r["task"], int(r["doc_id"]), int(r["repeat"])): r for r in read_csv(folder.continued)}
            rows = [r for r in table[(arm.name, seed)] if r.budget == top]
            probe = json.loads(folder.scores.read_text())["probe"]
            for k in ("continued", "extra_tokens", "direct_tokens", "answers", "seconds"):
                cost[k] += probe[k]
            per_seed.append([(r.task, r.correct, r.truncated,
                              float(later[r.problem]["correct"]) if r.problem in later else r.correct,
                              later[r.problem]["truncated"] == "1" if r.problem in later else r.truncated)
                             for r in rows])
        at_max[arm.name], cut[arm.name], finished[arm.name], still[arm.name] = (
            float(np.mean([_task_mean(rows, i) for rows in per_seed])) for i in (1, 2, 3, 4))
    return {"budget": study.eval.probe_budget, "largest_budget": top, "cost": dict(cost),
            "arms": continuation_effect(at_max, finished, still, cut)}


def _task_mean(rows: list[tuple], column: int) -> float:
    """Mean over tasks of the task's mean of ``column``."""
    tasks = sorted({r[0] for r in rows})
    return float(np.mean([np.mean([float(r[column]) for r in rows if r[0] == t]) for t in tasks]))


def screen_record(paths: StudyPaths, scored: list[dict], training: list[dict]) -> dict:
    """The layer screen against the full runs' eval scores at the training
    cap and the largest budget. A study that screens (``Study.screens``):
    its screen runs' ranking (``screen.json``), compared among the kept arms,
    the only ones trained in full. A screen measured only: every layer's
    first ``rl.screen_steps`` steps, the same numbers a screen run makes."""
    study, steps = paths.study, paths.study.rl.screen_steps
    if study.screens:
        screen = json.loads(paths.screen.read_text())["scores"]
    else:
        screen = pooled_screen_scores({(a.name, seed): [r for r in training if r["arm"] == a.name and r["seed"] == seed]
                                       for a in study.arms if a.in_layer_scan for seed in study.seeds}, steps)
    trained = [a.name for a in study.arms if a.in_layer_scan]
    budgets = sorted({study.limits.max_completion_tokens, study.limits.max_budget} & {r["budget"] for r in scored})
    full_runs = {b: {arm: float(np.mean([r["accuracy"] for r in scored if r["arm"] == arm and r["budget"] == b]))
                     for arm in trained} for b in budgets}
    out = {**screen_agreement({a: screen[a] for a in trained}, full_runs, study.rl.steps, steps, study.screen_keep),
           "pruned": False, "screened_out": []}
    if study.screens:  # the ranking and savings of every arm the screen saw, not only the kept ones
        out.update(screen_ranking(screen, study.screen_keep), screen_scores=screen, pruned=True,
                   screened_out=[a.name for a in study.screened_out],
                   steps_saved=1 - (len(screen) * steps + len(trained) * (study.rl.steps - steps))
                   / (len(screen) * study.rl.steps))
    return out


def training_rows(paths: StudyPaths) -> tuple[list[dict], list[str]]:
    rows, columns = [], {"arm", "seed", "step"}
    for arm in paths.study.trained_arms:
        for seed in paths.study.seeds:
            for row in read_csv(paths.run(arm, seed).metrics):
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


def cost_rows(paths: StudyPaths, jobs: list[dict]) -> list[dict]:
    """One row per trained (arm, seed): ``summary.json``'s ``cost`` and
    ``checkpoint`` (blank for a run trained before they were recorded) and the train job's benchmark
    (rule train's ``runs/<arm>_seed<s>``)."""
    by_job = {r["job"]: r for r in jobs}
    rows = []
    for arm in paths.study.trained_arms:
        for seed in paths.study.seeds:
            summary = json.loads(paths.run(arm, seed).summary.read_text())
            cost, job = summary.get("cost") or {}, by_job.get(f"runs/{arm.slug}_seed{seed}", {})
            checkpoint = summary.get("checkpoint") or {}
            layers = cost.get("backward_layers")
            rows.append({"arm": arm.name, "seed": seed, "train_seconds": summary.get("train_seconds"),
                         **{f"{p}_seconds": (cost.get("seconds") or {}).get(p) for p in COST_PHASES},
                         **{f"{p}_seconds": v for p, v in (cost.get("forward_backward_split") or {}).items()},
                         **{k: cost.get(k) for k in COST_FIELDS},
                         "trainable_parameters": summary.get("trainable_parameters"),
                         "total_parameters": summary.get("total_parameters"),
                         "backward_layers": None if layers is None else " ".join(map(str, layers)),
                         **{f"checkpoint_{k}": checkpoint.get(k) for k in ("format", "dtype", "bytes")},
                         "job_seconds": job.get("seconds"), "job_max_rss_mb": job.get("max_rss_mb"),
                         **{f"vllm_{k}": (summary.get("vllm") or {}).get(k) for k in VLLM_FIELDS},
                         **engine_gap(read_csv(paths.run(arm, seed).metrics))})
    return rows


def engine_gap(metrics: list[dict]) -> dict:
    """Over a run's steps: mean and largest trainer/engine log-prob gap, and
    the extremes of the importance-sampling ratio (blank without vLLM)."""
    def values(col):
        return [float(r[col]) for r in metrics if r.get(col) not in (None, "")]

    gap_mean, gap_max = values("vllm/logp_gap/mean"), values("vllm/logp_gap/max")
    low, high = values("vllm/is_ratio/min"), values("vllm/is_ratio/max")
    return {"vllm_logp_gap_mean": sum(gap_mean) / len(gap_mean) if gap_mean else None,
            "vllm_logp_gap_max": max(gap_max, default=None), "vllm_is_ratio_min": min(low, default=None),
            "vllm_is_ratio_max": max(high, default=None)}


def _round(value):
    return round(value, 6) if isinstance(value, float) else value


# --------------------------------------------------------------------------
# sample browser
# --------------------------------------------------------------------------
def sample_browser(paths: StudyPaths, table: PerSampleTable, tasks: list[str], budgets: list[int],
                   opened: set[str]) -> dict:
    """A few answers per arm (same problems for every arm, first seed), with
    the outcome at each budget and, for truncated answers, the text split
    where each budget cut it off. Arms in ``opened`` are shown expanded.

    {"seed", "problems": [[task, doc_id]], "marked": cut marks placed,
    "missing": [answer files not found, relative to results/<study>/],
    "arms": [{"arm", "open", "n_cut", "answers": [{"task", "doc_id", "prompt",
    "target", "text", "extracted", "n_tokens", "cut": [budgets that cut it],
    "segments", "results": [{"budget", "solved", "truncated", "n_tokens"}]}]}]}"""
    seed = paths.study.seeds[0]
    missing, answers = [], {}
    decode = _decoder(ModelFolder(paths.base_model).tokenizer)
    for arm in sorted(paths.study.arms, key=lambda a: Arm.sort_key_of(a.name)):
        folder = paths.eval(arm, seed)
        texts = {}
        for task in tasks:
            missing += [str(f.relative_to(paths.results)) for f in (folder.samples(task), folder.generations(task))
                        if not f.exists()]
            texts |= _texts(folder, task)
        answers[arm.name] = (_outcomes(table[(arm.name, seed)]), texts)
    problems = _pick_problems(answers, budgets)
    arms = []
    for arm, (outcome, texts) in answers.items():
        items = []
        for key in problems:
            t, o = texts.get(key, {}), outcome.get(key, {})
            results = [{"budget": b, **o[b]} for b in budgets if b in o]
            cut = [r["budget"] for r in results if r["truncated"]]
            items.append({"task": key[0], "doc_id": key[1], "results": results, "cut": cut,
                          "text": t.get("text"), "extracted": t.get("extracted"), "target": t.get("target"),
                          "prompt": _prompt(t["doc"]) if "doc" in t else None,
                          "segments": segments(t.get("text"), t.get("ids"), cut, decode),
                          "n_tokens": max((r["n_tokens"] or 0 for r in results), default=None)})
        arms.append({"arm": arm, "answers": items, "open": arm in opened, "n_cut": sum(1 for i in items if i["cut"])})
    return {"missing": missing, "arms": arms, "seed": seed, "problems": problems, "marked": decode is not None}


def _outcomes(rows: list[PerSample]) -> dict:
    """{(task, doc_id): {budget: {solved, truncated, n_tokens}}} for repeat 0."""
    outcome = defaultdict(dict)
    for r in rows:
        if r.repeat == 0:
            outcome[(r.task, r.doc_id)][r.budget] = {"solved": r.solved, "truncated": r.truncated,
                                                     "n_tokens": r.n_tokens}
    return outcome


def _texts(folder: EvalFolder, task: str) -> dict:
    """{(task, doc_id): answer text, doc, target, token ids} from lm-eval's
    samples and layerbench's generations, the run at the largest budget."""
    out: dict = {}
    samples, generations = folder.samples(task), folder.generations(task)
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


def _decoder(tokenizer: Path):
    """The study's tokenizer decode (``tokenizers`` only, no model load), or
    None when the base model has no tokenizer.json."""
    if not tokenizer.exists():
        return None
    from tokenizers import Tokenizer

    loaded = Tokenizer.from_file(str(tokenizer))
    return lambda ids: loaded.decode(list(ids), skip_special_tokens=True)


def segments(text: str | None, ids: list[int] | None, cut: list[int], decode) -> list[dict] | None:
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
        return len({o.get(k, {}).get(high, {}).get("solved") for o, _ in answers.values()}) > 1

    picked = [k for k in keys if cut_low(k)][: SAMPLES_PER_ARM // 2]
    for rule in (disagree, lambda k: True):
        picked += [k for k in keys if k not in picked and rule(k)][: SAMPLES_PER_ARM - len(picked)]
    return picked


OUTPUTS = ("scores", "contributions", "training", "decomposition", "ranking", "provenance", "timings", "samples",
           "verdicts", "costs", "how_sure")  # collect's files, one flag each


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage collect``: every output given as a flag."""
    parser = stage_parser("collect", first_line(__doc__))
    for name in OUTPUTS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True)
    args = parser.parse_args(argv)
    collect(study_paths(args), **{name: Path(getattr(args, name)) for name in OUTPUTS})
