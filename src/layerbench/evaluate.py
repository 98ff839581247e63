"""Evaluate a checkpoint with lm-eval at every generation budget.

lm-eval does the work (task loading, prompting, generation, filters,
metric); layerbench adds what lm-eval drops: per-sample generated-token
count and finish reason, recorded by ``RecordingHFLM`` (registered with
lm-eval as ``layerbench-hf``).

Budget sweep: under greedy decoding the output at a smaller budget is a
prefix of the output at a larger one, so one lm-eval run at the largest
budget gives every smaller budget: each answer is cut at ``b`` tokens and
re-scored with the task's own filters and metric. That derivation also holds
*in distribution* for plain temperature/top-p/top-k sampling (the first ``b``
tokens are sampled the same way whatever the cap), but not sample for sample;
with ``derive_budgets: false`` (or any setting where the budget changes what
is generated) every budget gets its own lm-eval run.

Finish reasons: ``eos`` (end-of-text token), ``stop`` (a task stop sequence)
or ``length`` (the budget ran out: *truncated*).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from layerbench.config import EvalConfig, Suite
from layerbench.io import atomic_directory, atomic_write_csv, atomic_write_json, atomic_write_jsonl

FINISH_EOS, FINISH_STOP, FINISH_LENGTH = "eos", "stop", "length"
PER_SAMPLE_COLUMNS = ["task", "doc_id", "repeat", "budget", "correct", "truncated", "n_tokens", "finish_reason"]


@dataclass(frozen=True)
class Generation:
    """One generation trimmed to where it ended, and why it ended."""

    token_ids: tuple[int, ...]
    finish_reason: str
    budget: int
    stop: tuple[str, ...]

    def at_budget(self, budget: int) -> "Generation":
        """What the same greedy generation would have been with a smaller cap."""
        if len(self.token_ids) <= budget:
            return Generation(self.token_ids, self.finish_reason, budget, self.stop)
        return Generation(self.token_ids[:budget], FINISH_LENGTH, budget, self.stop)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == FINISH_LENGTH


def trim_generation(generated: list[int], stop: list[str], eos_ids: set[int], decode, budget: int) -> Generation:
    """Cut raw generated ids (which may run on with padding or past a stop
    sequence) at the end-of-text token or the first completed stop sequence."""
    n_eos = next((i + 1 for i, t in enumerate(generated) if t in eos_ids), None)
    text_ids = generated[: n_eos - 1] if n_eos else generated[:budget]
    stops = [s for s in stop if s]

    def stopped(j: int) -> bool:
        text = decode(text_ids[:j])
        return any(s in text for s in stops)

    if stops and stopped(len(text_ids)):
        lo, hi = 1, len(text_ids)  # smallest prefix that contains a stop sequence
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if stopped(mid) else (mid + 1, hi)
        return Generation(tuple(text_ids[:lo]), FINISH_STOP, budget, tuple(stop))
    if n_eos:
        return Generation(tuple(generated[:n_eos]), FINISH_EOS, budget, tuple(stop))
    return Generation(tuple(generated[:budget]), FINISH_LENGTH, budget, tuple(stop))


@functools.cache
def _recording_model_class():
    """Define and register ``layerbench-hf`` on first use (lm-eval imports are slow)."""
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM

    @register_model("layerbench-hf")
    class RecordingHFLM(HFLM):
        """lm-eval's HF model that also keeps, per request, the generated token
        ids and the finish reason (stock backends keep only the text)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._by_context: dict[tuple[int, ...], list[Generation]] = {}
            self.generations: list[tuple[object, Generation]] = []

        def _model_generate(self, context, max_length, stop, **kwargs):
            out = super()._model_generate(context, max_length, stop, **kwargs)
            width = context.shape[1]
            mask = kwargs.get("attention_mask")
            masks = mask.tolist() if mask is not None else [[1] * width] * len(out)
            for ctx, keep, row in zip(context.tolist(), masks, out.tolist()):
                key = tuple(t for t, k in zip(ctx, keep) if k)
                gen = trim_generation(row[width:], stop, {self.eot_token_id}, self.tok_decode, max_length - width)
                self._by_context.setdefault(key, []).append(gen)
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            self._by_context.clear()
            out = super().generate_until(requests, disable_tqdm)
            for request in requests:
                key = tuple(self.tok_encode(request.args[0])[-self.max_length :])
                self.generations.append((request, self._by_context[key].pop(0)))
            return out

    return RecordingHFLM


def response_text(gen: Generation, decode) -> str:
    """The response lm-eval would keep: decoded, cut at the first stop sequence."""
    from lm_eval.models.utils import postprocess_generated_text

    return postprocess_generated_text(decode(list(gen.token_ids)), list(gen.stop), None)


def score_response(task, doc: dict, text: str) -> tuple[str, float]:
    """Score one response with the task's own first filter pipeline and first
    metric, exactly as lm-eval's evaluator does."""
    ensemble = task._filters[0]
    resps = [[text]]
    for make_filter in ensemble.filters:
        resps = list(make_filter().apply(resps, [doc]))
    metrics = task.process_results(doc, [resps[0]])
    name = next(iter(metrics))
    return name, float(metrics[name])


def local_task_config(suite: Suite) -> dict:
    """The YAML config of a local task (under ``suite.include_path``)."""
    import yaml

    for path in sorted(Path(suite.include_path).glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if isinstance(cfg, dict) and cfg.get("task") == suite.task:
            return cfg
    raise FileNotFoundError(f"eval.suites: no YAML for task {suite.task!r} in {suite.include_path}")


def task_manager(suites: tuple[Suite, ...]):
    """lm-eval's TaskManager for these suites; lm-eval's own task index
    (thousands of YAMLs, slow to scan) only when a suite needs it."""
    from lm_eval.tasks import TaskManager

    include = [str(Path(s.include_path).resolve()) for s in suites if s.include_path]
    return TaskManager(include_path=include or None,
                       include_defaults=any(not s.include_path for s in suites))


def _task_specs(suites: tuple[Suite, ...]) -> list:
    """lm-eval task specs: a registered name, or for a local task with
    per-study data or repeats, its YAML config with those overrides merged
    (lm-eval builds a dict spec as a new task, it does not merge)."""
    specs = []
    for suite in suites:
        if suite.include_path and (suite.data_files or suite.repeats != 1):
            cfg = local_task_config(suite)
            if suite.data_files:
                cfg["dataset_kwargs"] = {"data_files": {"test": str(Path(suite.data_files).resolve())}}
            if suite.repeats != 1:
                cfg["repeats"] = suite.repeats
            specs.append(cfg)
        else:
            specs.append(suite.task)
    return specs


def evaluate_model(model_dir: Path, ev: EvalConfig, budgets: tuple[int, ...], seed: int, out_dir: Path,
                   derive_budgets: bool | None = None) -> dict:
    """Run lm-eval on ``model_dir`` and write, atomically into ``out_dir``:
    lm-eval's samples (``samples_<task>.jsonl``), our per-generation records
    (``generations_<task>.jsonl``), ``per_sample.csv`` (every sample at every
    budget) and ``scores.json`` (per task and budget)."""
    import lm_eval
    import torch
    from lm_eval.tasks import get_task_dict

    torch.set_num_threads(ev.threads)
    derive = ev.greedy if derive_budgets is None else derive_budgets
    model_cls = _recording_model_class()
    lm = model_cls(
        pretrained=str(model_dir),
        batch_size=ev.batch_size,
        device="cuda" if torch.cuda.is_available() else "cpu",
        dtype="float32",
    )
    specs = _task_specs(ev.suites)
    manager = task_manager(ev.suites)
    decoding = {"temperature": ev.temperature}
    if not ev.greedy:
        decoding.update(do_sample=True, top_p=ev.top_p, top_k=ev.top_k)

    runs = [max(budgets)] if derive else sorted(budgets)
    rows, scores, lm_samples, gen_records = [], {}, {}, {}
    for run_budget in runs:
        tasks = get_task_dict(specs, manager)
        lm.generations.clear()
        result = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks.values()),
            task_manager=manager,
            gen_kwargs={"max_gen_toks": run_budget, **decoding},
            log_samples=True,
            limit=ev.limit,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            bootstrap_iters=0,
        )
        repeat_of: dict[tuple, int] = {}
        by_doc = {}
        for request, gen in lm.generations:
            key = (request.task_name, request.doc_id)
            repeat_of[key] = repeat_of.get(key, -1) + 1
            by_doc[(*key, repeat_of[key])] = (request, gen)
        for task_name, task in tasks.items():
            samples = result["samples"][task_name]
            lm_samples.setdefault(task_name, []).extend(samples)
            for sample in samples:
                request, gen = by_doc[(task_name, sample["doc_id"], 0)]
                _check_against_lm_eval(task, sample, gen, lm.tok_decode)
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
                    _, value = score_response(task, request.doc, response_text(at_b, lm.tok_decode))
                    rows.append({"task": task_name, "doc_id": doc_id, "repeat": repeat, "budget": budget,
                                 "correct": value, "truncated": int(at_b.truncated),
                                 "n_tokens": len(at_b.token_ids), "finish_reason": at_b.finish_reason})
    for task_name in lm_samples:
        scores[task_name] = summarise(rows, task_name, budgets)

    with atomic_directory(out_dir) as tmp:
        for task_name, samples in lm_samples.items():
            atomic_write_jsonl(tmp / f"samples_{task_name}.jsonl", [_jsonable(s) for s in samples])
            atomic_write_jsonl(tmp / f"generations_{task_name}.jsonl", gen_records[task_name])
        atomic_write_csv(tmp / "per_sample.csv", rows, PER_SAMPLE_COLUMNS)
        atomic_write_json(tmp / "scores.json", {"budgets": list(budgets), "derived_budgets": derive,
                                                "seed": seed, "tasks": scores})
    return scores


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


def _check_against_lm_eval(task, sample: dict, gen: Generation, decode) -> None:
    """Our reconstruction of the response and its score must equal lm-eval's
    own; otherwise every derived budget would be suspect."""
    ours = response_text(gen, decode)
    theirs = sample["resps"][0][0]
    if ours != theirs:
        raise RuntimeError(f"doc {sample['doc_id']}: recorded generation {ours!r} != lm-eval's response {theirs!r}")
    name, value = score_response(task, sample["doc"], ours)
    if float(sample[name]) != value:
        raise RuntimeError(f"doc {sample['doc_id']}: re-scored {name}={value} != lm-eval's {sample[name]}")


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
