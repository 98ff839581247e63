"""Evaluate a checkpoint with lm-eval at every generation budget.

lm-eval does the work (task loading, prompting, generation, filters,
metric); layerbench adds what lm-eval drops: per-sample generated-token
count and finish reason, recorded by ``RecordingHFLM`` (registered with
lm-eval as ``layerbench-hf``) or, with ``eval.backend: vllm``, by
``RecordingVLLM`` (``layerbench-vllm``, a subclass of lm-eval's own vLLM
model that keeps each vLLM output's token ids and ``finish_reason``; it is
defined on first use, so installs without vLLM never import it).

Budget sweep: under greedy decoding the output at a smaller budget is a
prefix of the output at a larger one, so one lm-eval run at the largest
budget gives every smaller budget: each answer is cut at ``b`` tokens and
re-scored with the task's own filters and metric. Under sampling that holds
at best in distribution, not sample for sample, so layerbench does not do it:
``eval.derive_budgets`` defaults to true under greedy decoding and false
otherwise (true with sampling is a config error), and then every budget gets
its own lm-eval run.

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
    text: str | None = None  # the backend's own text, when it has one (vLLM)

    def at_budget(self, budget: int) -> "Generation":
        """What the same greedy generation would have been with a smaller cap."""
        if len(self.token_ids) <= budget:
            return Generation(self.token_ids, self.finish_reason, budget, self.stop, self.text)
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


def vllm_finish(finish_reason: str | None, stop_reason) -> str:
    """layerbench's finish reason from a vLLM completion: ``length`` when the
    budget ran out; ``stop`` for a stop string; ``eos`` for the end-of-text
    token (vLLM: finish_reason ``stop`` with no stop_reason, or a stop token id)."""
    if finish_reason == "length":
        return FINISH_LENGTH
    if isinstance(stop_reason, str):
        return FINISH_STOP
    return FINISH_EOS


def generation_from_vllm(completion, stop, budget: int) -> Generation:
    """A :class:`Generation` from one vLLM ``CompletionOutput`` (token ids,
    finish reason and vLLM's own text, which lm-eval post-processes)."""
    return Generation(tuple(completion.token_ids), vllm_finish(completion.finish_reason, completion.stop_reason),
                      budget, tuple(stop or ()), completion.text)


@functools.cache
def _recording_vllm_class():
    """Define and register ``layerbench-vllm`` on first use. Importing it
    needs vLLM (GPU machines only); nothing else in layerbench does."""
    from lm_eval.api.registry import register_model
    from lm_eval.models.vllm_causallms import VLLM

    @register_model("layerbench-vllm")
    class RecordingVLLM(VLLM):
        """lm-eval's vLLM model that also keeps, per request, the generated
        token ids and the finish reason (vLLM has both; lm-eval drops them)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._by_context: dict[tuple[int, ...], list[Generation]] = {}
            self.generations: list[tuple[object, Generation]] = []

        def tok_decode(self, tokens, skip_special_tokens: bool = True):
            return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

        def _model_generate(self, requests, generate=False, sampling_params=None):
            outputs = super()._model_generate(requests, generate=generate, sampling_params=sampling_params)
            if generate:
                params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(requests)
                for ctx, sp, output in zip(requests, params, outputs):
                    gen = generation_from_vllm(output.outputs[0], sp.stop, sp.max_tokens)
                    self._by_context.setdefault(tuple(ctx), []).append(gen)
            return outputs

        def generate_until(self, requests, disable_tqdm: bool = False):
            self._by_context.clear()
            out = super().generate_until(requests, disable_tqdm)
            for request in requests:
                key = tuple(self.tok_encode(request.args[0]))
                if key not in self._by_context:
                    raise RuntimeError(
                        f"no recorded generation for doc {request.doc_id} of {request.task_name}: lm-eval "
                        f"truncated its context (the preflight's eval-context check should have caught it)")
                self.generations.append((request, self._by_context[key].pop(0)))
            return out

    return RecordingVLLM


def vllm_model_args(model_dir: Path, ev: EvalConfig, seed: int, context_length: int | None) -> dict:
    """Constructor arguments of ``layerbench-vllm`` (lm-eval's VLLM): the
    engine seed is the study's sampling seed (per-request seeds would make
    the repeats of one problem identical); max_model_len is ``eval.max_model_len``,
    else the declared ``model.context_length``."""
    args = {
        "pretrained": str(model_dir),
        "dtype": ev.dtype,
        "seed": int(seed),
        "gpu_memory_utilization": ev.gpu_memory_utilization,
        "batch_size": ev.batch_size,
        "tensor_parallel_size": 1,
        "data_parallel_size": 1,
    }
    max_len = ev.max_model_len or context_length
    if max_len:
        args["max_model_len"] = int(max_len)
    return args


def decoding_kwargs(ev: EvalConfig) -> dict:
    """lm-eval gen_kwargs from the study's decoding settings (the budget is added per run)."""
    decoding = {"temperature": ev.temperature}
    if not ev.greedy:
        decoding.update(do_sample=True, top_p=ev.top_p, top_k=ev.top_k)
    return decoding


def response_text(gen: Generation, decode) -> str:
    """The response lm-eval would keep: decoded (or the backend's own text),
    cut at the first stop sequence."""
    from lm_eval.models.utils import postprocess_generated_text

    text = gen.text if gen.text is not None else decode(list(gen.token_ids))
    return postprocess_generated_text(text, list(gen.stop), None)


def _filter_ensemble(task, filter_name: str | None):
    if filter_name is None:
        return task._filters[0]
    for ensemble in task._filters:
        if ensemble.name == filter_name:
            return ensemble
    raise ValueError(f"task {task.config.task}: no filter named {filter_name!r} "
                     f"(it has {', '.join(e.name for e in task._filters)})")


def score_responses(task, doc: dict, texts: list[str], filter_name: str | None = None,
                    metric: str | None = None) -> tuple[str, float, str]:
    """Score the responses of one doc with the task's filter pipeline and
    metric, exactly as lm-eval's evaluator does: (metric, value, filter)."""
    ensemble = _filter_ensemble(task, filter_name)
    resps = [list(texts)]
    for make_filter in ensemble.filters:
        resps = list(make_filter().apply(resps, [doc]))
    metrics = task.process_results(doc, [resps[0]])  # one generate_until instance per doc
    name = metric or next(iter(metrics))
    if name not in metrics:
        raise ValueError(f"task {task.config.task}: no metric {name!r} (it reports {', '.join(metrics)})")
    return name, float(metrics[name]), ensemble.name


def score_response(task, doc: dict, text: str, filter_name: str | None = None,
                   metric: str | None = None) -> tuple[str, float]:
    """Score one response with the task's filter pipeline (default the first)
    and metric (default the first), exactly as lm-eval's evaluator does."""
    name, value, _ = score_responses(task, doc, [text], filter_name, metric)
    return name, value


def local_task_config(suite: Suite) -> dict:
    """The YAML config of a local task (under ``suite.include_path``), read
    by lm-eval's own loader, so ``!function utils.f`` hooks resolve."""
    import yaml
    from lm_eval.tasks._yaml_loader import load_yaml

    class _Peek(yaml.SafeLoader):
        """Reads a task name without importing the YAML's !function hooks."""

    _Peek.add_multi_constructor("!", lambda loader, suffix, node: None)
    for path in sorted(Path(suite.include_path).glob("*.yaml")):
        cfg = yaml.load(path.read_text(), Loader=_Peek)  # noqa: S506 - SafeLoader subclass
        if isinstance(cfg, dict) and cfg.get("task") == suite.task:
            return load_yaml(path, resolve_func=True)
    raise FileNotFoundError(f"eval.suites: no YAML for task {suite.task!r} in {suite.include_path}")


def leaf_tasks(task_dict: dict) -> dict:
    """{task name: Task} with groups (e.g. minerva_math) flattened into their subtasks."""
    out = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            out.update(leaf_tasks(value))
        else:
            out[key if isinstance(key, str) else value.config.task] = value
    return out


def suite_tasks(suites: tuple[Suite, ...], manager) -> list[tuple[Suite, dict]]:
    """Each suite with its leaf tasks, built by lm-eval."""
    from lm_eval.tasks import get_task_dict

    return [(suite, leaf_tasks(get_task_dict([spec], manager))) for suite, spec in zip(suites, _task_specs(suites))]


def cache_eval_tasks(suites: tuple[Suite, ...], out: Path) -> dict:
    """Build every lm-eval Hub task of ``suites`` once (their datasets land in
    the HF cache, so evaluate jobs need no network) and record what was built."""
    hub_suites = tuple(s for s in suites if not s.include_path)
    record = {}
    for suite, tasks in suite_tasks(hub_suites, task_manager(hub_suites)):
        for name, task in tasks.items():
            docs = task.eval_docs
            record[name] = {"suite": suite.task, "dataset_path": task.config.dataset_path,
                            "dataset_name": task.config.dataset_name, "test_split": task.config.test_split,
                            "docs": len(docs), "fingerprint": getattr(docs, "_fingerprint", None)}
    atomic_write_json(out, record)
    return record


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


def make_lm(model_dir: Path, ev: EvalConfig, seed: int, context_length: int | None = None):
    """The recording lm-eval model of ``eval.backend``."""
    if ev.backend == "vllm":
        return _recording_vllm_class()(**vllm_model_args(model_dir, ev, seed, context_length))
    import torch

    return _recording_model_class()(
        pretrained=str(model_dir),
        batch_size=ev.batch_size,
        device="cuda" if torch.cuda.is_available() else "cpu",
        dtype=ev.dtype,
    )


def evaluate_model(model_dir: Path, ev: EvalConfig, budgets: tuple[int, ...], seed: int, out_dir: Path,
                   derive_budgets: bool | None = None, context_length: int | None = None) -> dict:
    """Run lm-eval on ``model_dir`` and write, atomically into ``out_dir``:
    lm-eval's samples (``samples_<task>.jsonl``), our per-generation records
    (``generations_<task>.jsonl``), ``per_sample.csv`` (every sample at every
    budget) and ``scores.json`` (per task and budget).

    ``seed`` is the arm's seed; sampling uses ``eval.seed`` when set (the same
    for every checkpoint, as in the authors' scripts), else ``seed``."""
    import lm_eval
    import torch

    torch.set_num_threads(ev.threads)
    derive = ev.derive if derive_budgets is None else derive_budgets
    sampling_seed = seed if ev.seed is None else ev.seed
    lm = make_lm(model_dir, ev, sampling_seed, context_length)
    manager = task_manager(ev.suites)
    decoding = decoding_kwargs(ev)

    runs = [max(budgets)] if derive else sorted(budgets)
    rows, scores, lm_samples, gen_records = [], {}, {}, {}
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
            checked_filter = _filter_ensemble(task, filter_name).name
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
    for task_name in lm_samples:
        scores[task_name] = summarise(rows, task_name, budgets)

    with atomic_directory(out_dir) as tmp:
        for task_name, samples in lm_samples.items():
            atomic_write_jsonl(tmp / f"samples_{task_name}.jsonl", [_jsonable(s) for s in samples])
            atomic_write_jsonl(tmp / f"generations_{task_name}.jsonl", gen_records[task_name])
        atomic_write_csv(tmp / "per_sample.csv", rows, PER_SAMPLE_COLUMNS)
        record = {"budgets": list(budgets), "derived_budgets": derive, "seed": seed, "tasks": scores}
        if sampling_seed != seed or ev.backend != "hf":
            record.update(sampling_seed=sampling_seed, backend=ev.backend)
        atomic_write_json(tmp / "scores.json", record)
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
