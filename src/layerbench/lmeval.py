"""lm-eval's tasks as layerbench uses them, shared by download, preflight and evaluate.

One place builds a study's eval suites into lm-eval task objects (a registered
task, or a local YAML task with per-study data files and repeats) and scores a
response with the task's own filters and metric, so every stage sees the
prompts, answers and scores lm-eval itself would.
"""

from __future__ import annotations

from pathlib import Path

from layerbench.config import Suite


def filter_ensemble(task, filter_name: str | None):
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
    ensemble = filter_ensemble(task, filter_name)
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

    return [(suite, leaf_tasks(get_task_dict([spec], manager))) for suite, spec in zip(suites, task_specs(suites))]


def task_manager(suites: tuple[Suite, ...]):
    """lm-eval's TaskManager for these suites; lm-eval's own task index
    (thousands of YAMLs, slow to scan) only when a suite needs it."""
    from lm_eval.tasks import TaskManager

    include = [str(Path(s.include_path).resolve()) for s in suites if s.include_path]
    return TaskManager(include_path=include or None,
                       include_defaults=any(not s.include_path for s in suites))


def task_specs(suites: tuple[Suite, ...]) -> list:
    """lm-eval task specs: a registered name, or for a local task its YAML
    config with the study's data files and ``repeats`` merged (lm-eval builds
    a dict spec as a new task, it does not merge). The suite's ``repeats`` is
    always the one in effect, 1 included: a YAML's own (AMC's 32) never
    survives an explicit 1. A registered task keeps its own, which the
    preflight checks against the suite (:func:`repeats_problem`)."""
    specs = []
    for suite in suites:
        if suite.include_path:
            cfg = local_task_config(suite)
            if suite.data_files:
                cfg["dataset_kwargs"] = {"data_files": {"test": str(Path(suite.data_files).resolve())}}
            cfg["repeats"] = suite.repeats
            specs.append(cfg)
        else:
            specs.append(suite.task)
    return specs


def repeats_problem(index: int, suite: Suite, task) -> str | None:
    """Why a built task would generate a different number of samples per
    problem than ``eval.suites[index].repeats`` says, or None."""
    repeats = int(task.config.repeats or 1)
    if repeats == suite.repeats:
        return None
    return (f"key 'eval.suites.{index}.repeats': {suite.repeats}, but lm-eval's task {task.config.task} "
            f"generates {repeats} per problem (a registered task keeps its own repeats; give it through a "
            f"local task under include_path to change it)")
