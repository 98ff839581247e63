"""Evaluate a checkpoint with lm-eval at every generation budget.

lm-eval does the work (task loading, prompting, generation, filters,
metric); layerbench adds what lm-eval drops: per-sample generated-token
count and finish reason, recorded by ``RecordingHFLM`` (registered with
lm-eval as ``layerbench-hf``) or, with ``eval.backend: vllm``, by
``RecordingVLLM`` (``layerbench-vllm``, a subclass of lm-eval's own vLLM
model that keeps each vLLM output's token ids and ``finish_reason``; it is
defined on first use, so installs without vLLM never import it).

Budget sweep (``eval.derive_budgets``, default true): one lm-eval run at the
largest budget gives every smaller budget: each answer is cut at ``b``
tokens and re-scored with the task's own filters and metric. Under greedy
decoding the cut answer *is* the answer at ``b``. Under sampling it is too,
in distribution: the first ``b`` tokens of a sample do not depend on the cap,
so the cut answer is a sample of the run at ``b``, paired across budgets.
With lm-eval's seeded HF sampling (one random stream per run, consumed step
by step for the whole batch) it is even the same sample, token for token:
``tests/test_evaluate.py`` checks both. vLLM seeds its engine, not each
request, so there only the distribution is the same. ``derive_budgets:
false`` generates every budget for real (one lm-eval run per budget).

Finish reasons: ``eos`` (end-of-text token), ``stop`` (a task stop sequence)
or ``length`` (the budget ran out: *truncated*).

With ``eval.probe_budget``, answers still cut off at the largest budget are
continued up to it (``continuation``) and written to ``continued.csv``:
what each arm would have scored if allowed to finish.
"""

from __future__ import annotations

import json
from pathlib import Path

from layerbench.config import Arm, EvalConfig, Study
from layerbench.lmeval import (
    filter_ensemble,
    score_response,
    score_responses,
    suite_tasks,
    task_manager,
)
from layerbench.paths import EvalFolder, RunFolder
from layerbench.runtime.checkpoints import materialized, materialized_duplicate
from layerbench.runtime.io import (
    atomic_directory,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_jsonl,
)
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths
from layerbench.stages.evaluate.backends import (
    Generation,
    decoding_kwargs,
    make_lm,
    response_text,
)
from layerbench.stages.evaluate.continuation import continue_generations

PER_SAMPLE_COLUMNS = ["task", "doc_id", "repeat", "budget", "correct", "truncated", "n_tokens", "finish_reason"]
CONTINUED_COLUMNS = [*PER_SAMPLE_COLUMNS, "extra_tokens"]


def evaluate_arm(study: Study, model: Path, base: Path, seed: int, out: Path, arm: Arm | None = None) -> dict:
    """Evaluate one arm: the base model, or a trained arm's run folder (a
    layer arm's checkpoint holds only its layers, a lora arm's its adapter:
    it is put together with ``base`` in a scratch folder beside ``out`` for
    lm-eval and vLLM), or for ``dup:K+none`` the base model with layer K
    duplicated; with the study's eval settings, budgets, context length and GPUs."""
    if RunFolder(model).checkpoint.is_dir():
        model = RunFolder(model).checkpoint
    out_folder = EvalFolder(out)
    untrained_duplicate = arm is not None and not arm.trains and arm.duplicated_layer is not None
    with (materialized_duplicate(base, arm.duplicated_layer, beside=out_folder.path) if untrained_duplicate
          else materialized(model, base, beside=out_folder.path)) as model_dir:
        context, _ = study.model.context(model_dir)
        return evaluate_model(model_dir, study.eval, study.limits.eval_budgets, seed, out_folder,
                              context_length=context, gpus=study.resources.gpu)


def evaluate_model(model_dir: Path, ev: EvalConfig, budgets: tuple[int, ...], seed: int, out: EvalFolder,
                   derive_budgets: bool | None = None, context_length: int | None = None, gpus: int = 1) -> dict:
    """Run lm-eval on ``model_dir`` and write, atomically into ``out``:
    lm-eval's samples (``samples_<task>.jsonl``), our per-generation records
    (``generations_<task>.jsonl``), ``per_sample.csv`` (every sample at every
    budget) and ``scores.json`` (per task and budget).

    ``seed`` is the arm's seed; sampling uses ``eval.seed`` when set (the same
    for every checkpoint, as in the authors' scripts), else ``seed``."""
    import lm_eval

    from layerbench.runtime.numerics import start_job

    numerics = start_job(ev.threads)
    derive = ev.derive_budgets if derive_budgets is None else derive_budgets
    sampling_seed = seed if ev.seed is None else ev.seed
    lm = make_lm(model_dir, ev, sampling_seed, context_length, gpus)
    manager = task_manager(ev.suites)
    decoding = decoding_kwargs(ev)

    runs = [max(budgets)] if derive else sorted(budgets)
    rows, scores, lm_samples, gen_records = [], {}, {}, {}
    probe = Probe(ev.probe_budget, decoding, sampling_seed) if ev.probe_budget else None
    for run_budget in runs:
        by_suite = suite_tasks(ev.suites, manager)
        tasks = {name: task for _, leaves in by_suite for name, task in leaves.items()}
        scoring = {name: (suite.filter, suite.metric) for suite, leaves in by_suite for name in leaves}
        lm.generations.clear()
        result = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks.values()),
            task_manager=manager,
            gen_kwargs={"max_gen_toks": run_budget, **decoding},
            log_samples=True,
            limit=ev.limit,
            random_seed=sampling_seed,
            numpy_random_seed=sampling_seed,
            torch_random_seed=sampling_seed,
            fewshot_random_seed=sampling_seed,
            bootstrap_iters=0,
            **({"num_fewshot": ev.num_fewshot} if ev.num_fewshot is not None else {}),
        )
        repeat_of: dict[tuple, int] = {}
        by_doc = {}
        for request, gen in lm.generations:
            key = (request.task_name, request.doc_id)
            repeat_of[key] = repeat_of.get(key, -1) + 1
            by_doc[(*key, repeat_of[key])] = (request, gen)
        repeats_of_doc: dict[tuple, list[Generation]] = {}
        for (t, d, _), (_, gen) in sorted(by_doc.items()):
            repeats_of_doc.setdefault((t, d), []).append(gen)
        for task_name, task in tasks.items():
            filter_name, metric = scoring[task_name]
            samples = result["samples"][task_name]
            lm_samples.setdefault(task_name, []).extend(samples)
            checked_filter = filter_ensemble(task, filter_name).name
            for sample in samples:
                if sample.get("filter", checked_filter) != checked_filter:
                    continue
                _check_against_lm_eval(task, sample, repeats_of_doc[(task_name, sample["doc_id"])], lm.tok_decode,
                                       filter_name, metric)
            for (t, doc_id, repeat), (request, gen) in sorted(by_doc.items(), key=lambda kv: kv[0][1:]):
                if t != task_name:
                    continue
                gen_records.setdefault(task_name, []).append(
                    {"doc_id": doc_id, "repeat": repeat, "run_budget": run_budget,
                     "n_tokens": len(gen.token_ids), "finish_reason": gen.finish_reason,
                     "token_ids": list(gen.token_ids)}
                )
                for budget in (budgets if derive else (run_budget,)):
                    at_b = gen.at_budget(budget)
                    _, value = score_response(task, request.doc, response_text(at_b, lm.tok_decode),
                                              filter_name, metric)
                    rows.append({"task": task_name, "doc_id": doc_id, "repeat": repeat, "budget": budget,
                                 "correct": value, "truncated": int(at_b.truncated),
                                 "n_tokens": len(at_b.token_ids), "finish_reason": at_b.finish_reason})
                if probe and run_budget == max(budgets):
                    probe.add(task, task_name, (doc_id, repeat), request, gen, scoring[task_name])
    if probe:
        probe.run(lm)
    for task_name in lm_samples:
        scores[task_name] = summarise(rows, task_name, budgets)

    with atomic_directory(out.path) as tmp:
        folder = EvalFolder(tmp)
        for task_name, samples in lm_samples.items():
            atomic_write_jsonl(folder.samples(task_name), [_jsonable(s) for s in samples])
            atomic_write_jsonl(folder.generations(task_name), gen_records[task_name])
        atomic_write_csv(folder.per_sample, rows, PER_SAMPLE_COLUMNS)
        record = {"budgets": list(budgets), "derived_budgets": derive, "seed": seed, "tasks": scores,
                  "numerics": numerics}
        if probe:
            atomic_write_csv(folder.continued, probe.rows, CONTINUED_COLUMNS)
            record["probe"] = probe.summary()
        if sampling_seed != seed or ev.backend != "hf":
            record.update(sampling_seed=sampling_seed, backend=ev.backend)
        atomic_write_json(folder.scores, record)
    return scores


class Probe:
    """The continuation of every answer cut off at the largest budget, and
    what it cost against a direct generation at the probe budget (every
    answer generated to its end there, which the continued answers tell:
    they are that generation, except HF sampling's, see ``continuation``)."""

    def __init__(self, budget: int, decoding: dict, seed: int):
        self.budget, self.decoding, self.seed = budget, decoding, seed
        self.pending: list[tuple] = []
        self.rows: list[dict] = []
        self.answers = self.extra_tokens = self.direct_tokens = self.replayed = 0
        self.seconds = 0.0

    def add(self, task, task_name: str, key: tuple[int, int], request, gen: Generation, scoring) -> None:
        self.answers += 1
        if gen.truncated:
            self.pending.append((task, task_name, key, request, gen, scoring))
        else:
            self.direct_tokens += len(gen.token_ids)

    def run(self, lm) -> None:
        """Continue the cut-off answers (in one batch where the backend batches) and score them."""
        import time

        start = time.perf_counter()
        continued = continue_generations(lm, [(p[3].args[0], p[4]) for p in self.pending], self.budget,
                                         self.decoding, self.seed)
        self.seconds = time.perf_counter() - start
        for (task, task_name, key, request, _, scoring), done in zip(self.pending, continued):
            whole = done.generation
            _, value = score_response(task, request.doc, response_text(whole, lm.tok_decode), *scoring)
            self.extra_tokens += done.extra_tokens
            self.direct_tokens += len(whole.token_ids)
            self.replayed += done.replayed
            self.rows.append({"task": task_name, "doc_id": key[0], "repeat": key[1], "budget": self.budget,
                              "correct": value, "truncated": int(whole.truncated),
                              "n_tokens": len(whole.token_ids), "finish_reason": whole.finish_reason,
                              "extra_tokens": done.extra_tokens})

    def summary(self) -> dict:
        return {"budget": self.budget, "answers": self.answers, "continued": len(self.rows),
                "replayed": self.replayed, "still_truncated": sum(r["truncated"] for r in self.rows),
                "extra_tokens": self.extra_tokens, "direct_tokens": self.direct_tokens,
                "seconds": round(self.seconds, 3)}


def summarise(rows: list[dict], task: str, budgets) -> dict:
    out = {}
    for budget in budgets:
        sel = [r for r in rows if r["task"] == task and r["budget"] == budget]
        finished = [r for r in sel if not r["truncated"]]
        out[str(budget)] = {
            "accuracy": sum(r["correct"] for r in sel) / len(sel),
            "n": len(sel),
            "truncated_rate": 1 - len(finished) / len(sel),
            "finished_accuracy": (sum(r["correct"] for r in finished) / len(finished)) if finished else None,
            "mean_tokens": sum(r["n_tokens"] for r in sel) / len(sel),
        }
    return out


def _check_against_lm_eval(task, sample: dict, gens: list[Generation], decode, filter_name: str | None = None,
                           metric: str | None = None) -> None:
    """Our reconstruction of the responses (every repeat) and their score
    must equal lm-eval's own; otherwise every derived budget would be suspect."""
    ours = [response_text(gen, decode) for gen in gens]
    theirs = list(sample["resps"][0])
    if ours != theirs:
        diff = next(i for i, (a, b) in enumerate(zip(ours + [None] * len(theirs), theirs + [None] * len(ours)))
                    if a != b)
        raise RuntimeError(f"doc {sample['doc_id']} repeat {diff}: recorded generation "
                           f"{(ours + [None])[diff]!r} != lm-eval's response {(theirs + [None])[diff]!r}")
    name, value, _ = score_responses(task, sample["doc"], ours, filter_name, metric)
    if float(sample[name]) != value:
        raise RuntimeError(f"doc {sample['doc_id']}: re-scored {name}={value} != lm-eval's {sample[name]}")


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage evaluate``."""
    parser = stage_parser("evaluate", first_line(__doc__))
    parser.add_argument("--model", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--base", required=True, help="the base model (a layer arm's checkpoint holds only its layers)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--arm", required=True, help="config or path form: layer:3 or layer-3")
    args = parser.parse_args(argv)
    study, arm = study_paths(args).study, Arm.parse(args.arm)
    if arm in study.screened_out:  # the layer screen did not keep it: nothing to evaluate, and it says so
        with atomic_directory(Path(args.out)) as tmp:
            atomic_write_json(EvalFolder(tmp).scores, {"arm": arm.name, "seed": args.seed, "screened_out": True})
        return
    print(evaluate_arm(study, Path(args.model), Path(args.base), args.seed, Path(args.out), arm))
