"""The token-budget preflight catches each problem, naming it."""

import json

import pytest
import yaml
from conftest import ROOT, small_study_raw

from layerbench.config import ConfigError, study_from_dict
from layerbench.paths import StudyPaths, markdown_of
from layerbench.stages.preflight import PreflightError, run_preflight


def _run(small_base, tmp_path, mutate=None, model_dir=None):
    raw = small_study_raw()
    raw["eval"]["suites"][0]["data_files"] = str(small_base["data"] / "test.jsonl")
    if mutate:
        mutate(raw)
    study = study_from_dict(raw)
    model = small_base["model"] if model_dir is None else model_dir
    return run_preflight(study, model, small_base["data"] / "train.jsonl", StudyPaths(study, tmp_path))


def _files(tmp_path) -> StudyPaths:
    """Where ``_run`` wrote the preflight's tables."""
    return StudyPaths(study_from_dict(small_study_raw()), tmp_path)


def _check(report, name):
    return [c for c in report.checks if c["check"] == name]


def test_clean_study_passes_and_writes_its_outputs(small_base, tmp_path):
    report = _run(small_base, tmp_path)
    assert report.status == "ok"
    saved = json.loads(_files(tmp_path).preflight.read_text())
    assert saved["status"] == "ok" and len(saved["checks"]) == len(report.checks)
    assert "| ok | train prompt cap |" in markdown_of(_files(tmp_path).preflight).read_text()
    assert _files(tmp_path).train_checked.read_text() == (small_base["data"] / "train.jsonl").read_text()


def test_prompt_over_cap_errors_naming_key_and_numbers(small_base, tmp_path):
    with pytest.raises(PreflightError) as info:
        _run(small_base, tmp_path, lambda r: r["limits"].update(max_prompt_tokens=8))
    text = str(info.value)
    assert "limits.max_prompt_tokens=8" in text and "longest 13" in text
    assert not _files(tmp_path).train_checked.exists()


@pytest.mark.parametrize("policy", ["filter", "truncate_left"])
def test_prompt_policies_count_what_they_did(small_base, tmp_path, policy):
    report = _run(small_base, tmp_path, lambda r: r["limits"].update(max_prompt_tokens=10, prompt_policy=policy))
    [check] = _check(report, "train prompt cap")
    over = check["numbers"]["over_cap"]
    assert check["status"] == "warn" and over > 0
    kept = _files(tmp_path).train_checked.read_text().splitlines()
    total = len((small_base["data"] / "train.jsonl").read_text().splitlines())
    assert len(kept) == (total - over if policy == "filter" else total)


def _declare_context(raw, context=1024):
    """The config declares a larger context than the built model has, so the
    load-time check passes and the preflight, which reads the model, must catch it."""
    raw["model"]["build"]["max_positions"] = context


def test_caps_over_model_context(small_base, tmp_path):
    with pytest.raises(PreflightError) as info:
        _run(small_base, tmp_path, lambda r: (_declare_context(r), r["limits"].update(max_completion_tokens=250)))
    assert "max_completion_tokens=250" in str(info.value) and "context 256" in str(info.value)


def test_eval_context_plus_budget_over_model_context(small_base, tmp_path):
    with pytest.raises(PreflightError) as info:
        _run(small_base, tmp_path, lambda r: (_declare_context(r), r["limits"].update(eval_budgets=[40, 250]),
                                                    r["eval"].pop("probe_budget")))
    assert "left-truncate" in str(info.value) and "budget 250" in str(info.value)


def test_task_without_max_gen_toks_is_flagged(small_base, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    cfg = yaml.safe_load((ROOT / "benchmarks" / "arith" / "arith.yaml").read_text())
    del cfg["generation_kwargs"]["max_gen_toks"]
    (tasks / "arith.yaml").write_text(yaml.safe_dump(cfg))
    report = _run(small_base, tmp_path / "out",
                  lambda r: r["eval"]["suites"][0].update(include_path=str(tasks)))
    [check] = _check(report, "explicit max_gen_toks")
    assert check["status"] == "warn" and "256" in check["message"]


def test_only_budget_at_training_cap_warns(small_base, tmp_path):
    report = _run(small_base, tmp_path, lambda r: r["limits"].update(eval_budgets=[40]))
    [check] = _check(report, "eval budgets vs training cap")
    assert check["status"] == "warn" and "at or below the training cap 40" in check["message"]


def test_dr_grpo_cap_normalisation_is_flagged(small_base, tmp_path):
    report = _run(small_base, tmp_path, lambda r: r["rl"].update(algorithm="dr_grpo"))
    [check] = _check(report, "dr_grpo normalisation")
    assert check["status"] == "warn" and "max_completion_length (40)" in check["message"]


def test_declared_context_when_model_is_not_offline(small_base, tmp_path):
    """Without the model at hand the declared context is the one
    (``ModelConfig.context``): caps over it fail, at load already."""
    def declare(raw):
        raw["model"]["context_length"] = 32

    with pytest.raises((ConfigError, PreflightError)) as info:
        _run(small_base, tmp_path, declare, model_dir=tmp_path / "not-downloaded")
    assert "declared" in str(info.value) or "context 32" in str(info.value)
