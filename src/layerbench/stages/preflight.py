"""Check every token limit before any compute is spent.

Tokenises every training prompt and every evaluation context (built by
lm-eval itself, few-shot examples included) with the study's tokenizer and
checks them against the study's caps and the model's context. Two stages:
the training checks (``preflight_train.json``, and the prompts that pass the
prompt policy in ``train_checked.jsonl``) gate training; the evaluation
checks gate evaluation and write ``preflight.json`` and ``preflight.md``, the
whole table. Training reads only the first, so an eval-only edit never
retrains (and a failed eval check wastes no training: it stays valid).

Errors stop the DAG, naming the config key and the numbers; warnings go to
the report. TRL has no prompt cap of its own (it removed
``max_prompt_length``) and lm-eval silently left-truncates contexts that do
not fit, so nobody else would notice.

Offline (no model directory, e.g. a Hub model before ``download_model``): the
context length is the config's declared ``model.context_length``, the caps
and budgets are checked against it, and prompt lengths are not measured.
Eval suites are only built when their data is at hand: a local task whose
``data_files`` exist, or an lm-eval Hub task when the Hub is reachable (with
``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` set, one that is not cached is
reported as "not checked offline"). Nothing is downloaded without a network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from layerbench.config import Study
from layerbench.paths import ModelFolder, StudyPaths, markdown_of
from layerbench.runtime.io import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
)
from layerbench.runtime.stage_command import (
    first_line,
    require,
    stage_parser,
    study_paths,
)

LM_EVAL_DEFAULT_MAX_GEN_TOKS = 256


class PreflightError(RuntimeError):
    """A token limit is violated; the message names the key and the numbers."""


@dataclass
class LimitChecks:
    """The preflight's table of token-limit checks (one row per check and
    subject), published as preflight.json and preflight.md."""

    checks: list[dict] = field(default_factory=list)

    def add(self, check: str, subject: str, status: str, message: str, **numbers) -> None:
        self.checks.append({"check": check, "subject": subject, "status": status, "message": message,
                            "numbers": numbers})

    @property
    def status(self) -> str:
        states = {c["status"] for c in self.checks}
        return "error" if "error" in states else "warn" if "warn" in states else "ok"

    def markdown(self) -> str:
        lines = ["| status | check | subject | message |", "|---|---|---|---|"]
        lines += [f"| {c['status']} | {c['check']} | {c['subject']} | {c['message']} |" for c in self.checks]
        return "\n".join(lines) + "\n"


def model_context(study: Study, model_dir: Path | None) -> tuple[int, str]:
    """The model's context length and where it came from (``ModelConfig.context``),
    or a preflight error when it is not known offline."""
    context, source = study.model.context(model_dir)
    if context is None:
        raise PreflightError(f"model is not available offline: {source}")
    return context, source


def check_training(study: Study, report: LimitChecks, tokenizer, records: list[dict], context: int) -> list[dict]:
    """Prompt cap with the configured policy; returns the prompts to train on."""
    limits = study.limits
    cap, policy = limits.max_prompt_tokens, limits.prompt_policy
    kept, over, longest = [], 0, 0
    for record in records:
        ids = tokenizer(record["prompt"])["input_ids"]
        longest = max(longest, len(ids))
        if len(ids) <= cap:
            kept.append(record)
            continue
        over += 1
        if policy == "truncate_left":
            kept.append({**record, "prompt": tokenizer.decode(ids[-cap:])})
    n = len(records)
    numbers = dict(prompts=n, over_cap=over, longest=longest, cap=cap, policy=policy)
    if over == 0:
        report.add("train prompt cap", "training prompts", "ok",
                   f"all {n} prompts fit limits.max_prompt_tokens={cap} (longest {longest})", **numbers)
    elif policy == "error":
        report.add("train prompt cap", "training prompts", "error",
                   f"{over} of {n} prompts exceed limits.max_prompt_tokens={cap} (longest {longest} tokens); "
                   f"raise the cap or set limits.prompt_policy to filter or truncate_left", **numbers)
    else:
        verb = "dropped" if policy == "filter" else "left-truncated"
        report.add("train prompt cap", "training prompts", "warn",
                   f"{over} of {n} prompts exceed limits.max_prompt_tokens={cap} and were {verb} "
                   f"(limits.prompt_policy={policy})", **numbers)
    return kept


def check_caps(study: Study, report: LimitChecks, context: int) -> None:
    """Caps against the model context: needs no tokenizer."""
    limits = study.limits
    cap = limits.max_prompt_tokens
    total = cap + limits.max_completion_tokens
    ok = total <= context
    report.add("train context", "prompt cap + completion cap", "ok" if ok else "error",
               f"limits.max_prompt_tokens={cap} + limits.max_completion_tokens={limits.max_completion_tokens} "
               f"= {total} {'fits' if ok else 'exceeds'} the model context {context}",
               total=total, context=context)
    if study.rl.use_vllm:
        report.add("vllm max_model_len", "vLLM engine", "ok" if ok else "error",
                   f"vLLM max_model_len is set to {total} (prompt cap + completion cap); model context {context}",
                   max_model_len=total, context=context)
    if any(study.rl_for(a).algorithm == "dr_grpo" for a in study.trained_arms):
        report.add("dr_grpo normalisation", "rl.algorithm", "warn",
                   f"Dr. GRPO normalises its loss by max_completion_length ({limits.max_completion_tokens}): "
                   f"comparing studies with different caps also compares different loss scales")


def check_memory(study: Study, report: LimitChecks, model_dir: Path | None) -> None:
    """Each arm's estimated memory per process against the study's GPUs
    (``resources.gpu_memory_gb``, else nvidia-smi), and the study's disk and
    generated tokens (layerbench.config.memory); the shape from the model's
    config.json once it is here, else the declared one. A study that declares its
    GPU memory was already refused when it loaded; this also covers GPUs
    read on the machine."""
    from layerbench.config.memory import describe, study_memory, study_totals
    from layerbench.runtime.gpuslots import gpu_memory_gb

    gpu_gb, source = study.resources.gpu_memory_gb, "resources.gpu_memory_gb"
    if study.resources.gpu and gpu_gb is None:
        gpu_gb, source = gpu_memory_gb(), "nvidia-smi"
    rows = study_memory(study, gpu_gb if study.resources.gpu else None, model_dir)
    if not rows:
        report.add("memory", "model", "warn", f"the shape of {study.model.id} is not known offline: memory and "
                   f"disk not estimated (layerbench.config.memory.KNOWN_SHAPES)")
    for row in rows:
        if not study.resources.gpu:
            against, status = "a CPU study: not compared with a GPU", "ok"
        elif gpu_gb is None:
            against, status = "GPU memory unknown (no resources.gpu_memory_gb, no nvidia-smi): not compared", "warn"
        else:
            against, status = f"GPUs of {gpu_gb:g} GB ({source})", "ok" if row["fits"] else "error"
        fix = ("; give the arm more GPUs (resources.gpus_per_arm), a smaller rl.micro_batch_completions or "
               "rl.gradient_checkpointing: true") if status == "error" else ""
        report.add("memory per process", f"arm {row['arm']}", status,
                   f"{describe(row)}; {against}; checkpoint {row['checkpoint_gb']:g} GB{fix}", **row)
    totals = study_totals(study, model_dir)
    disk = f"{totals['checkpoint_disk_gb']:g} GB" if totals["checkpoint_disk_gb"] is not None else "unknown"
    rollouts = f"{totals['rollout_tokens']:,}" if totals["rollout_tokens"] is not None else "unknown (whole split)"
    report.add("disk and tokens", "study", "ok",
               f"checkpoints {disk}; rollouts generate up to {rollouts} tokens; evaluation up to "
               f"{totals['eval_tokens_per_problem']:,} tokens per eval problem (every arm, seed, repeat and budget)",
               **totals)


def check_budgets(study: Study, report: LimitChecks) -> None:
    cap, budgets = study.limits.max_completion_tokens, study.limits.eval_budgets
    if max(budgets) <= cap:
        report.add("eval budgets vs training cap", "limits.eval_budgets", "warn",
                   f"every eval budget ({', '.join(map(str, budgets))}) is at or below the training cap {cap}: "
                   f"a gain may be the model learning to finish inside the cap; add a larger budget",
                   budgets=list(budgets), cap=cap)
    else:
        report.add("eval budgets vs training cap", "limits.eval_budgets", "ok",
                   f"budgets {', '.join(map(str, budgets))} include one above the training cap {cap}",
                   budgets=list(budgets), cap=cap)


def eval_contexts(study: Study, suites=None) -> dict[str, tuple[list[str], dict, str | None]]:
    """{task: (contexts, generation_kwargs, repeats problem or None)} exactly
    as lm-eval will build them (groups such as minerva_math give one entry per
    subtask). ``contexts`` has one entry per generation: a problem appears
    once per repeat, so the token count below is what the run generates."""
    from layerbench.lmeval import repeats_problem, suite_tasks, task_manager

    suites = study.eval.suites if suites is None else tuple(suites)
    out = {}
    for suite, tasks in suite_tasks(suites, task_manager(suites)):
        index = study.eval.suites.index(suite)
        for name, task in tasks.items():
            if study.eval.num_fewshot is not None:  # as simple_evaluate(num_fewshot=...) does
                task.set_config(key="num_fewshot", value=study.eval.num_fewshot)
            task.build_all_requests(limit=study.eval.limit, rank=0, world_size=1)
            contexts = [inst.args[0] for inst in task.instances for _ in range(int(task.config.repeats or 1))]
            out[name] = (contexts, dict(task.config.generation_kwargs or {}), repeats_problem(index, suite, task))
    return out


def _offline_mode() -> bool:
    import os

    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def suite_data_missing(suite) -> str | None:
    """Why a local suite's data is not at hand, or None. Hub-backed lm-eval
    tasks are not judged here (see :func:`buildable_suites`)."""
    if not suite.include_path:
        return None
    files = suite.data_files
    if not files:
        from layerbench.lmeval import local_task_config

        data = (local_task_config(suite).get("dataset_kwargs") or {}).get("data_files")
        files = list(data.values())[0] if isinstance(data, dict) and data else data
    if isinstance(files, str) and not Path(files).exists():
        return f"data file {files} does not exist (see benchmarks/README.md for its recipe)"
    return None


def buildable_suites(study: Study, report: LimitChecks, reason_offline: str | None = None) -> list:
    """Suites whose contexts can be measured now; the others are reported as
    not checked offline, with the reason. ``reason_offline`` marks every
    suite unchecked (e.g. no tokenizer)."""
    from lm_eval.tasks import get_task_dict

    from layerbench.lmeval import task_manager, task_specs

    out = []
    for suite, spec in zip(study.eval.suites, task_specs(study.eval.suites)):
        missing = suite_data_missing(suite)
        if missing and reason_offline is None:
            report.add("eval data", suite.task, "error", f"eval.suites {suite.task}: {missing}", reason=missing)
            continue
        why = "; ".join(w for w in (reason_offline, missing) if w) or None
        if why is None and not suite.include_path and _offline_mode():
            try:  # cached datasets load offline; others raise at once
                get_task_dict([spec], task_manager((suite,)))
            except Exception as exc:  # noqa: BLE001 - any failure means: not at hand
                why = f"dataset not in the local cache ({type(exc).__name__})"
        if why is None:
            out.append(suite)
        else:
            report.add("eval context", suite.task, "warn", f"not checked offline: {why}", reason=why)
    return out


def check_budget_context(study: Study, report: LimitChecks, context: int) -> None:
    """Without a tokenizer: the largest eval budget (or probe budget) alone must leave room for a prompt."""
    budget = study.generation_budget
    what = "model context"
    if study.eval.backend == "vllm" and study.eval.max_model_len and study.eval.max_model_len < context:
        context, what = study.eval.max_model_len, "eval.max_model_len"
    ok = budget < context
    report.add("eval budget vs context", "limits.eval_budgets", "ok" if ok else "error",
               f"{_budget_name(study)} {budget} leaves {context - budget} tokens of the {what} {context} "
               f"for the prompt (prompt lengths not measured offline)" if ok else
               f"{_budget_name(study)} {budget} does not fit the {what} {context} even with an empty prompt; "
               f"lower {_budget_key(study)}", budget=budget, context=context)


def _budget_name(study: Study) -> str:
    return "the probe budget" if study.eval.probe_budget else "the largest budget"


def _budget_key(study: Study) -> str:
    return "eval.probe_budget" if study.eval.probe_budget else "limits.eval_budgets"


def check_eval(study: Study, report: LimitChecks, tokenizer, context: int, contexts: dict) -> None:
    budget = study.generation_budget
    if study.eval.backend == "vllm" and study.eval.max_model_len:
        context = min(context, study.eval.max_model_len)  # the eval engine's own limit
    for task, (texts, gen_kwargs, repeats_problem) in contexts.items():
        if repeats_problem:
            report.add("repeats", task, "error", repeats_problem)
        if "max_gen_toks" not in gen_kwargs:
            report.add("explicit max_gen_toks", task, "warn",
                       f"the task sets no max_gen_toks: a plain lm-eval run would stop at "
                       f"{LM_EVAL_DEFAULT_MAX_GEN_TOKS} tokens; layerbench passes limits.eval_budgets explicitly",
                       default=LM_EVAL_DEFAULT_MAX_GEN_TOKS)
        else:
            report.add("explicit max_gen_toks", task, "ok",
                       f"the task sets max_gen_toks={gen_kwargs['max_gen_toks']}; layerbench runs it at "
                       f"{budget}", task_max_gen_toks=gen_kwargs["max_gen_toks"])
        lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
        longest = max(lengths)
        over = sum(n + budget > context for n in lengths)
        report.add("eval generations", task, "ok",
                   f"{len(texts)} generations per checkpoint, at most {len(texts) * budget:,} tokens at the "
                   f"largest budget", generations=len(texts), tokens=len(texts) * budget)
        report.add("eval context", task, "error" if over else "ok",
                   f"{over} of {len(texts)} contexts + {_budget_name(study)} {budget} exceed the model context "
                   f"{context} (longest context {longest} tokens); lm-eval would silently left-truncate them"
                   if over else
                   f"all {len(texts)} contexts + budget {budget} fit the context {context} (longest {longest})",
                   contexts=len(texts), over=over, longest=longest, budget=budget, context=context)


def _model(study: Study, model_dir: Path | None) -> tuple[int, str, object | None]:
    """(context, where it came from, tokenizer or None when not available offline)."""
    context, source = model_context(study, model_dir)
    tokenizer = None
    if model_dir is not None and ModelFolder(model_dir).tokenizer_config.exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return context, source, tokenizer


def _publish(report: LimitChecks, path: Path) -> None:
    """Write the checks (json and a markdown table), then stop on any error,
    naming every one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"status": report.status, "checks": report.checks})
    atomic_write_text(markdown_of(path), report.markdown())
    print(report.markdown())
    errors = [c for c in report.checks if c["status"] == "error"]
    if errors:
        raise PreflightError("preflight failed:\n  " + "\n  ".join(f"{c['subject']}: {c['message']}" for c in errors))


def train_preflight(study: Study, model_dir: Path | None, train_file: Path, out: Path, kept_file: Path) -> LimitChecks:
    """The limits training depends on: prompt cap and policy, prompt + completion
    cap against the context. Writes the checks to ``out`` and the prompts to
    train on to ``kept_file``. A rule of its own so that editing eval settings
    never re-runs training."""
    report = LimitChecks()
    context, source, tokenizer = _model(study, model_dir)
    report.add("model context", "model", "ok", f"context {context} tokens from {source}", context=context)
    check_caps(study, report, context)
    check_memory(study, report, model_dir)
    if tokenizer is None:
        report.add("tokenizer", "model", "warn",
                   "tokenizer not available offline: prompt lengths were not measured, only declared limits checked")
        kept = read_jsonl(train_file)
    else:
        kept = check_training(study, report, tokenizer, read_jsonl(train_file), context)
    _publish(report, out)
    atomic_write_jsonl(kept_file, kept)
    return report


def eval_preflight(study: Study, model_dir: Path | None, train_checks_file: Path, out: Path) -> LimitChecks:
    """The evaluation limits (budgets against the training cap and the context,
    every eval context measured as lm-eval builds it), appended to the training
    checks in ``out`` (preflight.json): the one table the report shows."""
    train_checks = json.loads(train_checks_file.read_text())["checks"]
    report = LimitChecks(checks=list(train_checks))
    context, _, tokenizer = _model(study, model_dir)
    check_budgets(study, report)
    if tokenizer is None:
        check_budget_context(study, report, context)
        buildable_suites(study, report, reason_offline="no tokenizer to measure prompts with")
    else:
        suites = buildable_suites(study, report)
        if suites:
            check_eval(study, report, tokenizer, context, eval_contexts(study, suites))
    _publish(report, out)
    return report


def run_preflight(study: Study, model_dir: Path | None, train_file: Path, paths: StudyPaths) -> LimitChecks:
    """Both rules in one call (``layerbench check-limits``, tests), writing
    where the DAG would under ``paths``, stopping with the errors of both."""
    try:
        train_preflight(study, model_dir, train_file, paths.preflight_train, paths.train_checked)
    except PreflightError:
        pass  # its checks are in preflight_train.json, which eval_preflight reports with its own
    return eval_preflight(study, model_dir, paths.preflight_train, paths.preflight)


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage preflight train|eval``."""
    parser = stage_parser("preflight", first_line(__doc__))
    parser.add_argument("part", choices=("train", "eval"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", help="training prompts (train)")
    parser.add_argument("--kept", help="the prompts that pass the prompt policy (train)")
    parser.add_argument("--train-checks", help="preflight_train.json (eval)")
    args = parser.parse_args(argv)
    study = study_paths(args).study
    if args.part == "train":
        require(parser, args, "for part train", "--train", "--kept")
        train_preflight(study, Path(args.model), Path(args.train), Path(args.out), Path(args.kept))
    else:
        require(parser, args, "for part eval", "--train-checks")
        eval_preflight(study, Path(args.model), Path(args.train_checks), Path(args.out))
