"""What JSON Schema cannot check, each problem as "key 'K': value, what is allowed".

Everything here is known from the config alone (the model's shape, the
synthetic task's size, per-arm overrides, batch geometry, token limits
against the model context, the tracking URI, the eval tasks), so a bad value
fails before any job.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING

from layerbench.config.arms import Arm
from layerbench.config.batches import batch_problem
from layerbench.config.memory import memory_problems

if TYPE_CHECKING:
    from layerbench.config import Study


_TASK_NAME = re.compile(r"^(?:task|group|tag):\s*['\"]?([A-Za-z0-9_.-]+)", re.M)


@functools.cache
def lm_eval_task_names() -> frozenset[str]:
    """Task, group and tag names of the installed lm-eval, read from its YAML files."""
    spec = importlib.util.find_spec("lm_eval")
    root = Path(spec.origin).parent / "tasks"
    return frozenset(n for p in root.rglob("*.yaml") for n in _TASK_NAME.findall(p.read_text(errors="replace")))


TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def cross_field_problems(study: Study) -> list[str]:
    """What JSON Schema cannot check, each as "key 'K': value, what is allowed":
    the model's shape, the synthetic task's size, per-arm overrides, token
    limits against the model context, the tracking URI and the eval tasks.
    Everything here is known from the config alone, so it fails before any job."""
    raw, out = study.raw, []
    if study.model.source == "build":
        spec = study.model_spec
        if spec.hidden_size % spec.num_heads:
            out.append(f"key 'model.build.num_heads': {spec.num_heads} does not divide "
                       f"model.build.hidden_size {spec.hidden_size}")
    if study.data_source == "synthetic":
        task = study.task_spec
        if task.min_ops > task.max_ops:
            out.append(f"key 'data.synthetic.min_ops': {task.min_ops} is larger than data.synthetic.max_ops "
                       f"{task.max_ops}")
        elif task.n_train + task.n_test > task.distinct_questions // 2:
            out.append(f"key 'data.synthetic.max_operand': {task.max_operand} with {task.min_ops}..{task.max_ops} "
                       f"operations gives {task.distinct_questions} distinct problems; n_train + n_test "
                       f"({task.n_train + task.n_test}) may be at most half of them (raise max_operand or max_ops, "
                       f"or lower n_train/n_test)")
    engines = [k for k, on in (("rl.use_vllm", any(study.rl_for(a).use_vllm for a in study.trained_arms)),
                               ("eval.backend", study.eval.backend == "vllm")) if on]
    if engines and study.numerics == "portable":
        out.append(f"key 'numerics': portable, but {' and '.join(engines)} run vLLM, whose CPU kernels are chosen "
                   f"by the CPU's own instruction set (and crash under portable's AVX2 caps on AMX machines): set "
                   f"numerics: native; vLLM's bits are machine-specific, and the repro target reports their spread")
    names = {a.name for a in study.arms}
    lora = [a.name for a in study.arms if a.kind == "lora" and study.rl_for(a).use_vllm]
    if lora:
        out.append(f"key 'arms': {', '.join(lora)} with rl.use_vllm: true is not supported yet (layerbench syncs "
                   "the engine tensor by tensor, and vLLM knows no adapter tensors); train lora arms in a study "
                   "with rl.use_vllm: false (one engine for every arm: the pairing needs it)")
    for key in study.per_arm:
        if key not in ("full", "layer", "layers", "lora", "dup") and Arm.parse(key).name not in names:
            out.append(f"key 'rl.per_arm.{key}': arm {key} is not in this study (arms: {', '.join(sorted(names))})")
    context, _ = study.model.context()
    limits = study.limits
    if context:
        if limits.max_prompt_tokens + limits.max_completion_tokens > context:
            out.append(f"key 'limits.max_completion_tokens': prompt cap {limits.max_prompt_tokens} + completion cap "
                       f"{limits.max_completion_tokens} exceed the model context {context}")
        if limits.max_budget >= context:
            out.append(f"key 'limits.eval_budgets': budget {limits.max_budget} does not fit the model context "
                       f"{context} (a budget must leave room for the prompt)")
        if study.eval.probe_budget and study.eval.probe_budget >= context:
            out.append(f"key 'eval.probe_budget': {study.eval.probe_budget} does not fit the model context "
                       f"{context} (it must leave room for the prompt)")
    probe = study.eval.probe_budget
    if probe is not None and probe <= limits.max_budget:
        out.append(f"key 'eval.probe_budget': {probe} must exceed the largest of limits.eval_budgets "
                   f"({limits.max_budget}): it continues the answers cut off there")
    out += _screen_problems(study)
    uri = study.tracking.uri
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if uri and ":" in uri else None
    if uri is not None and scheme not in TRACKING_SCHEMES:
        out.append(f"key 'tracking.uri': {uri!r} is not an MLflow tracking URI; allowed schemes: "
                   f"{', '.join(TRACKING_SCHEMES)} (e.g. sqlite:///mlflow.db, http://127.0.0.1:5000)")
    repro = raw.get("repro", {})
    if "arm" in repro and Arm.parse(repro["arm"]) not in study.trained_arms:
        out.append(f"key 'repro.arm': {repro['arm']} is not a trained arm of this study "
                   f"(arms: {', '.join(a.name for a in study.trained_arms)})")
    if "seed" in repro and repro["seed"] not in study.seeds:
        out.append(f"key 'repro.seed': {repro['seed']} is not one of the study's seeds {list(study.seeds)}")
    for arm in study.trained_arms:
        problem = batch_problem(study.rl_for(arm), study.resources.gpus_per_arm)
        if problem:
            out.append(f"arm {arm.name}: {problem}")
    out += [f"key 'eval.suites.{i}': {p}" for i, p in _suite_problems(study.eval.suites)]
    if study.resources.gpu and study.resources.gpu_memory_gb:
        out += memory_problems(study, study.resources.gpu_memory_gb)
    return out


def _screen_problems(study: Study) -> list[str]:
    """The layer screen ranks at least two single-layer arms, within the run."""
    rl, scanned = study.rl, [a for a in study.arms if a.in_layer_scan]
    if rl.screen_steps is None:
        return []
    out = []
    if rl.screen_steps >= rl.steps:
        out.append(f"key 'rl.screen_steps': {rl.screen_steps} must be fewer than rl.steps ({rl.steps})")
    if len(scanned) < 2 and rl.screen_keep is not None:  # measured only: the report says there is nothing to rank
        out.append(f"key 'rl.screen_steps': the screen ranks single-layer arms (layer:K), and this study has "
                   f"{len(scanned)}; name at least two (arms: layer:all)")
    elif rl.screen_keep is not None and rl.screen_keep > len(scanned):
        out.append(f"key 'rl.screen_keep': {rl.screen_keep} is more than the study's {len(scanned)} single-layer "
                   f"arms")
    chosen = study.raw.get("repro", {}).get("arm")
    if study.screens and chosen and Arm.parse(chosen).in_layer_scan:
        out.append(f"key 'repro.arm': {chosen} may be screened out by the layer screen (rl.screen_keep); "
                   f"re-run an arm that always trains in full, such as full")
    return out


def _suite_problems(suites) -> list[tuple[int, str]]:
    """Local tasks: the include_path exists and one of its YAMLs defines the
    task. lm-eval's own tasks: the name is a task, group or tag of the
    installed lm-eval (read from its YAML files, without importing it)."""
    out = []
    for i, suite in enumerate(suites):
        if suite.include_path:
            folder = Path(suite.include_path)
            if not folder.is_dir():
                out.append((i, f"include_path {suite.include_path!r} is not a folder"))
            elif not any(suite.task in _TASK_NAME.findall(p.read_text()) for p in folder.glob("*.yaml")):
                out.append((i, f"task {suite.task!r} is defined by no YAML in {suite.include_path}"))
        elif suite.task not in lm_eval_task_names():
            out.append((i, f"task {suite.task!r} is not an lm-eval task, group or tag (lm-eval's task list: "
                           f"`lm-eval ls tasks`); a local task needs include_path"))
    return out
