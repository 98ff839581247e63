"""Bad input stops before any compute, with a message that names the key.

Every case is one edit of the default study. The loader is the one the
Snakefile runs while it parses (before Snakemake schedules a job) and every
``layerbench`` command runs, so a ConfigError here is a failure before any
training job; a few cases go through a real Snakemake invocation as well."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import default_raw, snakemake_in, study_workdir

from layerbench.config import ConfigError, study_from_dict


def _set(path: str, value):
    def edit(raw):
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


_DELETE = object()
HUB_TASK = {"task": "not_a_real_lm_eval_task"}

CASES = [  # (edit, text the message must hold: the key, and what makes it wrong)
    (_set("study", _DELETE), "'study' is a required property"),
    (_set("study", "my study"), "key 'study'"),
    (_set("model", _DELETE), "'model' is a required property"),
    (_set("model.source", "url"), "key 'model.source'"),
    (_set("model.source", "hub"), "key 'model.num_layers' is required"),
    (_set("model.build.num_layers", 0), "key 'model.build.num_layers'"),
    (_set("model.build.hidden_size", "big"), "key 'model.build.hidden_size'"),
    (_set("model.build.num_heads", 3), "key 'model.build.num_heads': 3 does not divide"),
    (_set("model.build.threads", 0), "key 'model.build.threads'"),
    (_set("model.build.dropout", 0.1), "key 'model.build'"),
    (_set("model.build.max_positions", 64), "key 'limits.eval_budgets': budget 96 does not fit the model context 64"),
    (_set("data.source", "csv"), "key 'data.source'"),
    (_set("data.synthetic.min_ops", 4), "key 'data.synthetic.min_ops': 4 is larger than"),
    (_set("data.synthetic.max_operand", 2), "key 'data.synthetic.max_operand'"),
    (_set("data.synthetic.verbose_share", 1.5), "key 'data.synthetic.verbose_share'"),
    (_set("data.synthetic.n_test", 0), "key 'data.synthetic.n_test'"),
    (_set("arms", ["full", "layer:0"]), "key 'arms' must include 'base' and 'full'"),
    (_set("arms", ["base", "full", "layer:9"]), "key 'arms.2': layer 9 does not exist"),
    (_set("arms", ["base", "full", "layr:1"]), "key 'arms.2'"),
    (_set("seeds", ["one"]), "key 'seeds.0'"),
    (_set("seeds", _DELETE), "'seeds' is a required property"),
    (_set("rl.algorithm", "ppo"), "key 'rl.algorithm'"),
    (_set("rl.learning_rate", -1), "key 'rl.learning_rate'"),
    (_set("rl.steps", 0), "key 'rl.steps'"),
    (_set("rl.temperature", -1), "key 'rl.temperature'"),
    (_set("rl.threads", 0), "key 'rl.threads'"),
    (_set("rl.per_arm.layer:7", {"learning_rate": 1e-4}), "key 'rl.per_arm.layer:7': arm layer:7 is not in this study"),
    (_set("rl.per_arm.layer", {"lr": 1e-4}), "key 'rl.per_arm.layer'"),
    (_set("rl.micro_batch_completions", 5), "arm full: rl.micro_batch_completions=5 does not divide"),
    (_set("limits.eval_budgets", _DELETE), "'eval_budgets' is a required property"),
    (_set("limits.eval_budgets", []), "key 'limits.eval_budgets'"),
    (_set("limits.max_completion_tokens", 0), "key 'limits.max_completion_tokens'"),
    (_set("limits.max_prompt_tokens", 240), "key 'limits.max_completion_tokens': prompt cap 240"),
    (_set("limits.prompt_policy", "drop"), "key 'limits.prompt_policy'"),
    (_set("eval.batch_size", "100"), "key 'eval.batch_size'"),
    (_set("eval.batch_size", 0), "key 'eval.batch_size'"),
    (_set("eval.temperature", -0.5), "key 'eval.temperature'"),
    (_set("eval.derive_budgets", True), None),  # valid under greedy decoding: see test_valid_edge_cases
    (lambda raw: raw["eval"].update(temperature=0.7, derive_budgets=True), None),  # derived under sampling too
    (_set("eval.suites.0.include_path", "benchmarks/nope"), "key 'eval.suites.0': include_path 'benchmarks/nope'"),
    (_set("eval.suites.0.task", "nope"), "key 'eval.suites.0': task 'nope' is defined by no YAML"),
    (lambda raw: raw["eval"]["suites"].append(HUB_TASK), "key 'eval.suites.1': task 'not_a_real_lm_eval_task'"),
    (lambda raw: raw.update(numerics="native") or raw["eval"].update(backend="vllm"), None),  # vLLM on CPU too
    (_set("eval.probe_budget", 96), "key 'eval.probe_budget': 96 must exceed the largest of limits.eval_budgets"),
    (_set("eval.probe_budget", 300), "key 'eval.probe_budget': 300 does not fit the model context 256"),
    (_set("rl.screen_steps", 60), "key 'rl.screen_steps': 60 must be fewer than rl.steps (60)"),
    (_set("rl.screen_keep", 5), "key 'rl.screen_keep': 5 is more than the study's 4 single-layer arms"),
    (lambda raw: raw.update(arms=["base", "full", "layer:1"]) or raw["rl"].update(screen_keep=1),
     "key 'rl.screen_steps': the screen ranks"),
    (lambda raw: raw.update(arms=["base", "full", "layer:1"]), None),  # a screen measured only: nothing to rank
    (lambda raw: raw["rl"].update(screen_keep=2) or raw.update(repro={"arm": "layer:1"}),
     "key 'repro.arm': layer:1 may be screened out"),
    (lambda raw: raw.update(numerics="native") or raw["rl"].update(use_vllm=True), None),
    (_set("eval.backend", "vllm"), "key 'numerics': portable, but eval.backend run vLLM"),
    (_set("rl.use_vllm", True), "key 'numerics': portable, but rl.use_vllm run vLLM"),
    (_set("eval.vllm_cpu_kvcache_gb", 0), "key 'eval.vllm_cpu_kvcache_gb'"),
    (_set("rl.vllm_is_mode", "tokens"), "key 'rl.vllm_is_mode'"),
    (_set("tracking.uri", "mlflow.db"), "key 'tracking.uri': 'mlflow.db' is not an MLflow tracking URI"),
    (_set("tracking.uri", "ftp://example.org/store"), "key 'tracking.uri'"),
    (_set("tracking.experiment", 5), "key 'tracking.experiment'"),
    (_set("repro", {"arm": "layer:3"}), None),  # layer:3 exists in the default study
    (lambda raw: raw.update(arms=["base", "full", "layer:0"], repro={"arm": "layer:3"}),
     "key 'repro.arm': layer:3 is not a trained arm"),
    (_set("repro", {"seed": 9}), "key 'repro.seed': 9 is not one of the study's seeds"),
    (_set("numerics", "fast"), "key 'numerics'"),
    (_set("runtime", "podman"), "key 'runtime'"),
    (_set("rll", {}), "key '<top level>': Additional properties are not allowed ('rll' was unexpected)"),
]
BAD = [(edit, text) for edit, text in CASES if text is not None]


def _apply(edit) -> dict:
    raw = copy.deepcopy(default_raw())
    edit(raw)
    return raw


@pytest.mark.parametrize("edit, expected", BAD, ids=[f"case{i:02d}" for i in range(len(BAD))])
def test_bad_config_fails_at_load_naming_the_key(edit, expected):
    with pytest.raises(ConfigError) as info:
        study_from_dict(_apply(edit))
    assert expected in str(info.value)


def test_the_table_is_large_enough():
    assert len(BAD) >= 40


@pytest.mark.parametrize("edit", [edit for edit, text in CASES if text is None])
def test_valid_edge_cases(edit):
    study_from_dict(_apply(edit))


@pytest.mark.parametrize("case", [26, 37, 42])  # per_arm layer, include_path, tracking URI
def test_snakemake_stops_before_any_job(case, tmp_path):
    edit, expected = BAD[case]
    out = snakemake_in(study_workdir(tmp_path, _apply(edit)), "--cores", "1")
    assert out.returncode != 0 and expected in out.stdout + out.stderr
    assert not (tmp_path / "results" / "default" / "data").exists()  # no job ran


def test_a_study_takes_the_schema_defaults_not_the_default_study(tmp_path):
    """A --configfile study stands alone: keys it leaves out come from the
    schema's defaults, never from config/default.yaml."""
    raw = default_raw()
    raw["study"] = "standalone"
    del raw["tracking"], raw["numerics"], raw["rl"]["threads"]
    out = snakemake_in(study_workdir(tmp_path, raw), "-n", "--cores", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    resolved = yaml.safe_load((tmp_path / "results" / "standalone" / "study.yaml").read_text())
    assert resolved["numerics"] == "portable" and resolved["rl"]["threads"] == 1
    assert resolved["tracking"] == {"uri": None, "live": True}  # the schema's defaults; the experiment name follows the study


def test_check_limits_names_the_file_and_line_of_a_yaml_error_or_a_missing_file(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "study.yaml"
    bad.write_text("study: x\nmodel:\n  source: build\n   id: y\n")  # line 4 is indented wrongly
    for path, expected in ((bad, f"{bad}:4:"), (tmp_path / "nope.yaml", "nope.yaml does not exist")):
        out = subprocess.run([sys.executable, "-m", "layerbench", "check-limits", str(path)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and expected in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
