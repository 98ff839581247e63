"""The paper studies (config/paper/): configs, DAG plans, offline preflight,
and the TRL/vLLM/lm-eval arguments layerbench builds for them.

What runs here and what does not: this machine has no GPU and no network
beyond the package index, so no Hub model, dataset or vLLM can run (vLLM has
no CPU wheel, and its ~320 MB wheel cannot be carried to the GPU machine
lent to some sessions). The vLLM paths are therefore covered by the
arguments layerbench builds: GRPOConfig fields, the engine arguments TRL's
real GRPOTrainer passes on (tests/test_paper_backends.py, with a stand-in
engine) and lm-eval's vLLM model arguments. config/paper/README.md states
that the GPU path is unverified end to end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from conftest import OFFLINE, ROOT, job_stats, snakemake_in, study_workdir

from layerbench.config import Arm, ConfigError, RLConfig, load_study, study_from_dict
from layerbench.config.batches import batch_geometry, optimizer_steps
from layerbench.paths import StudyPaths
from layerbench.stages.train import trl_loss

PAPER = sorted((ROOT / "config" / "paper").glob("*.yaml"))
QWEN3 = [p for p in PAPER if p.name.startswith("qwen3-")]


def _study(name: str):
    return load_study(ROOT / "config" / "paper" / name)


# --- configs -----------------------------------------------------------------

def test_there_is_a_paper_and_a_scripts_variant_per_qwen3_size_and_a_dr_grpo_study():
    names = {p.stem for p in PAPER}
    for size in ("1.7b", "4b", "8b"):
        assert {f"qwen3-{size}-grpo-paper", f"qwen3-{size}-grpo-scripts"} <= names
    assert "qwen2.5-math-1.5b-drgrpo" in names
    assert "qwen3-1.7b-grpo-scripts-greedy" in names


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_every_paper_config_validates_and_covers_every_layer(path):
    study = load_study(path)
    assert study.name == path.stem
    assert study.model.source == "hub" and study.data_source == "hub"
    assert [a.name for a in study.arms] == ["base", "full"] + [f"layer:{k}" for k in range(study.model.decoder_layer_count)]
    assert study.model.decoder_layer_count == {"Qwen/Qwen3-1.7B-Base": 28, "Qwen/Qwen3-4B-Base": 36, "Qwen/Qwen3-8B-Base": 36,
                                "Qwen/Qwen2.5-Math-1.5B": 28}[study.model.id]
    assert study.resources.gpu == 1 and study.eval.backend == "vllm" and study.verifier == "math_verify"
    assert all(study.rl_for(a).use_vllm for a in study.trained_arms)
    assert study.tracking.experiment == f"layerbench-{study.name}"
    tasks = {s.task for s in study.eval.suites}
    assert {"minerva_math500", "gsm8k", "layerbench_olympiadbench", "layerbench_amc"} <= tasks
    amc = next(s for s in study.eval.suites if s.task == "layerbench_amc")
    assert amc.repeats == (1 if study.eval.greedy else 32)  # avg@32 under sampling


@pytest.mark.parametrize("path", QWEN3, ids=lambda p: p.stem)
def test_qwen3_studies_share_the_paper_setting(path):
    study = load_study(path)
    hub = study.data.hub
    assert (hub.id, hub.sample, hub.seed) == ("AI-MO/NuminaMath-CoT", 50000, 42)
    assert hub.prompt_suffix == " Let's think step by step and output the final answer within \\boxed{}."
    assert (study.limits.max_prompt_tokens, study.limits.max_completion_tokens) == (1024, 3072)
    assert study.limits.eval_budgets == (3072, 8192)
    assert study.model.context_length == 32768
    for arm in (Arm("full"), Arm("layer", (0,))):
        rl = study.rl_for(arm)
        assert (rl.prompts_per_step, rl.mini_batch_prompts, rl.beta, rl.epsilon) == (512, 128, 0.001, 0.2)
        assert rl.algorithm == "grpo"
    assert study.eval.derive_budgets  # 3072 tokens cut from the 8192-token answers, greedy or sampled
    if not study.eval.greedy:
        assert (study.eval.temperature, study.eval.top_p, study.eval.top_k, study.eval.seed) == (0.6, 0.95, 20, 42)


@pytest.mark.parametrize("size", ["1.7b", "4b", "8b"])
def test_paper_and_scripts_variants_differ_exactly_where_the_sources_do(size):
    paper, scripts = _study(f"qwen3-{size}-grpo-paper.yaml"), _study(f"qwen3-{size}-grpo-scripts.yaml")
    expected = {
        # field: (paper, scripts), per arm kind
        "learning_rate": {"full": (5e-6, 1e-6), "layer": (5e-6, 5e-6)},
        "num_generations": (4, 5),
        "epochs": (4, 2),
        "temperature": (1.0, 0.9),
        "top_k": (0, 20),
        "top_p": (1.0, 0.95),
        "epsilon_high": (0.2, 0.28),
        "loss_type": (None, "dapo"),
    }
    for arm in (Arm("full"), Arm("layer", (5,))):
        a, b = paper.rl_for(arm), scripts.rl_for(arm)
        for f in fields(RLConfig):
            want = expected.get(f.name)
            if isinstance(want, dict):
                want = want[arm.kind]
            got = (getattr(a, f.name), getattr(b, f.name))
            if want is None:
                assert got[0] == got[1], f.name
            else:
                assert got == want, f.name
    assert paper.eval == scripts.eval and paper.limits == scripts.limits and paper.data == scripts.data


def test_dr_grpo_study_follows_its_row():
    study = _study("qwen2.5-math-1.5b-drgrpo.yaml")
    rl = study.rl_for(Arm("layer", (3,)))
    assert trl_loss(rl) == {"loss_type": "dr_grpo", "scale_rewards": "none"}
    assert (rl.num_generations, rl.prompts_per_step, rl.epochs, rl.temperature, rl.beta) == (8, 128, 5, 1.0, 0.0)
    assert study.limits.max_completion_tokens == 3000
    assert study.model.context_length == 4096
    assert max(study.limits.eval_budgets) + study.limits.max_prompt_tokens <= 4096
    assert {"aime24", "aime25", "minerva_math"} <= {s.task for s in study.eval.suites}
    assert optimizer_steps(rl, 12000) == 5 * (12000 // 128)


def test_optimizer_steps_follow_epochs_and_batch_geometry():
    rl = _study("qwen3-1.7b-grpo-scripts.yaml").rl_for(Arm("full"))
    # 50,000 prompts / 512 per rollout batch = 97 batches; 4 updates of 128 prompts each; 2 epochs
    assert optimizer_steps(rl, 50000) == 2 * 97 * 4
    batch = batch_geometry(rl)
    assert (batch.per_rollout, batch.mini, batch.micro) == (2560, 640, 8)
    with pytest.raises(ValueError, match="fewer than"):
        optimizer_steps(rl, 100)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["eval"].update(vllm_cpu_kvcache_gb=0.5), "vllm_cpu_kvcache_gb"),
    (lambda r: r["rl"].update(mini_batch_prompts=100), "mini_batch_prompts"),
    (lambda r: r["rl"].update(micro_batch_completions=7), "micro_batch_completions"),
    (lambda r: r["data"]["hub"].update(answer_extract="last"), "answer_extract"),
])
def test_bad_paper_values_fail_naming_the_key(mutate, message):
    raw = yaml.safe_load((ROOT / "config" / "paper" / "qwen3-1.7b-grpo-scripts.yaml").read_text())
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        study_from_dict(raw)


def test_default_study_keeps_its_meaning_and_fingerprints():
    """New RL fields stay out of the default study's identity (same fingerprints,
    same GRPOConfig as before they existed)."""
    study = load_study(ROOT / "config" / "default.yaml")
    assert study.resources.gpu == 0 and study.verifier == "arith" and study.eval.derive_budgets and study.eval.backend == "hf"
    legacy = {"algorithm", "steps", "learning_rate", "prompts_per_step", "num_generations", "temperature", "top_p",
              "top_k", "beta", "epsilon", "epsilon_high", "num_iterations", "threads", "use_vllm",
              "bf16"}  # set on purpose: fp32 on CPU (config/default.yaml)
    for arm in study.trained_arms:
        assert set(study.rl_for(arm).identity()) == legacy
    assert optimizer_steps(study.rl_for(Arm("full"))) == study.rl.steps


def test_default_grpo_config_is_unchanged(tmp_path):
    from trl import GRPOConfig

    from layerbench.stages.train import grpo_args

    study = load_study(ROOT / "config" / "default.yaml")
    rl = study.rl_for(Arm("layer", (1,)))
    new = grpo_args(rl, 40, 1, tmp_path, use_cpu=True).to_dict()
    old = GRPOConfig(
        output_dir=str(tmp_path), max_steps=rl.steps, per_device_train_batch_size=rl.prompts_per_step * rl.num_generations,
        num_generations=rl.num_generations, max_completion_length=40, learning_rate=rl.learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, temperature=rl.temperature, top_p=rl.top_p, top_k=rl.top_k,
        beta=rl.beta, epsilon=rl.epsilon, epsilon_high=rl.epsilon_high, num_iterations=rl.num_iterations, seed=1,
        data_seed=1, use_cpu=True, use_vllm=False, gradient_checkpointing=False, logging_steps=1, save_strategy="no",
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, loss_type="grpo", scale_rewards="group",
    ).to_dict()
    # the one change on purpose: fp32 instead of TRL's bf16 autocast on CPU (config/default.yaml)
    assert {k: (v, old.get(k)) for k, v in new.items() if v != old.get(k)} == {"bf16": (False, True)}


# --- the DAG -------------------------------------------------------------------

def _dry_run(workdir: Path, configfile: Path | None, *targets: str) -> str:
    """Plan a study (None: the default study) in an empty study folder."""
    out = snakemake_in(study_workdir(workdir), *targets, "-n", "-p", "--cores", "8", configfile=configfile,
                       env=OFFLINE, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _jobs(text: str, rule: str) -> list[str]:
    return [block for block in re.split(r"\n\[[^\]]+\]\n", text) if block.startswith(f"rule {rule}:")]


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_dry_run_plans_the_complete_dag_with_gpu_resources(path, tmp_path):
    study = load_study(path)
    text = _dry_run(tmp_path, path)
    seeds, layers = len(study.seeds), study.model.decoder_layer_count
    stats = job_stats(text)
    assert stats["train"] == (layers + 1) * seeds  # full + every layer, per seed
    assert stats["evaluate"] == (layers + 2) * seeds  # + base; each job scores every budget
    once = ("download_model", "download_data", "data", "preflight_train", "preflight_eval", "download_eval_tasks",
            "checks", "collect", "report", "track")
    assert {k: stats.get(k) for k in once} == dict.fromkeys(once, 1)
    assert stats["download_benchmark"] == 2  # amc, olympiadbench
    assert "model" not in stats
    for rule, gpus in (("train", study.resources.gpus_per_arm), ("evaluate", study.resources.gpu)):
        jobs = _jobs(text, rule)
        assert len(jobs) == stats[rule]
        for job in jobs:
            assert re.search(rf"resources: .*\bgpu={gpus}\b", job), job
            assert "mem_mb=" in job and "runtime=" in job
            assert (f"layerbench.runtime.launch --gpus-per-arm {gpus}" in job) == (rule == "train" and gpus > 1)
    for rule in ("download_model", "download_data", "data", "collect"):
        assert all("gpu=" not in job for job in _jobs(text, rule))
    # nothing was downloaded or built by planning
    assert not (tmp_path / "results" / study.name / "base_model").exists()
    # the study Snakemake resolved (its --configfile deep-merged over config/default.yaml) is the file's
    resolved = load_study(tmp_path / "results" / study.name / "study.yaml")
    assert resolved.raw == study.raw
    assert all(resolved.rl_for(a) == study.rl_for(a) for a in study.trained_arms)


def test_gpu_jobs_run_inside_a_gpu_slot_and_cpu_studies_do_not(tmp_path):
    path = ROOT / "config" / "paper" / "qwen3-1.7b-grpo-scripts.yaml"
    gpu = _dry_run(tmp_path / "gpu", path, "results/qwen3-1.7b-grpo-scripts/runs/layer-10/seed1")
    assert "-m layerbench.runtime.gpuslots --gpus 1 -- " in gpu
    default = _dry_run(tmp_path / "default", None)
    assert "gpuslots" not in default and not re.search(r"resources: .*\bgpu=", default)
    assert "model" in job_stats(default) and "download_model" not in job_stats(default)


# --- offline preflight ----------------------------------------------------------

@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_preflight_accepts_the_paper_limits_offline_without_downloading(path, tmp_path, monkeypatch):
    import datasets

    from layerbench.stages.preflight import run_preflight

    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)

    def no_download(*args, **kwargs):
        raise AssertionError(f"the offline preflight tried to load a dataset: {args}")

    monkeypatch.setattr(datasets, "load_dataset", no_download)
    study = load_study(path)
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"prompt": "What is 1+1?" + study.data.hub.prompt_suffix, "answer": "2"}) + "\n")
    report = run_preflight(study, None, train, StudyPaths(study, tmp_path / "out"))
    assert report.status == "warn"  # warnings only: unmeasured prompts and unchecked suites
    by_check = {}
    for check in report.checks:
        by_check.setdefault(check["check"], []).append(check)
    [context] = by_check["model context"]
    assert context["numbers"]["context"] == study.model.context_length and "declared" in context["message"]
    assert by_check["train context"][0]["status"] == "ok"
    [engine] = by_check["vllm max_model_len"]
    assert engine["numbers"]["max_model_len"] == study.limits.max_prompt_tokens + study.limits.max_completion_tokens
    assert by_check["eval budget vs context"][0]["status"] == "ok"
    unchecked = {c["subject"] for c in by_check["eval context"] if "not checked offline" in c["message"]}
    assert unchecked == {s.task for s in study.eval.suites}


def test_8192_tokens_for_qwen25_math_context_fail_at_load():
    """Declared context known from the config: refused before the preflight, before any job."""
    raw = yaml.safe_load((ROOT / "config" / "paper" / "qwen2.5-math-1.5b-drgrpo.yaml").read_text())
    raw["limits"]["eval_budgets"] = [3072, 8192]
    with pytest.raises(ConfigError, match="key 'limits.eval_budgets': budget 8192 does not fit the model context 4096"):
        study_from_dict(raw)


def test_check_limits_command_runs_offline():
    out = subprocess.run([sys.executable, "-m", "layerbench", "check-limits",
                          "config/paper/qwen2.5-math-1.5b-drgrpo.yaml"],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4024 fits the model context 4096" in out.stdout


# --- arguments layerbench builds for TRL and lm-eval (vLLM cannot run here) ------

@pytest.mark.parametrize("name, arm, expected", [
    ("qwen3-1.7b-grpo-paper.yaml", Arm("full"),
     dict(learning_rate=5e-6, num_generations=4, temperature=1.0, top_k=0, top_p=1.0, epsilon_high=0.2,
          loss_type="grpo", scale_rewards="group", generation_batch_size=2048, max_steps=4 * 97 * 4)),
    ("qwen3-1.7b-grpo-paper.yaml", Arm("layer", (10,)),
     dict(learning_rate=5e-6, num_generations=4, loss_type="grpo")),
    ("qwen3-1.7b-grpo-scripts.yaml", Arm("full"),
     dict(learning_rate=1e-6, num_generations=5, temperature=0.9, top_k=20, top_p=0.95, epsilon_high=0.28,
          loss_type="dapo", scale_rewards="group", generation_batch_size=2560, max_steps=2 * 97 * 4)),
    ("qwen3-1.7b-grpo-scripts.yaml", Arm("layer", (10,)), dict(learning_rate=5e-6, num_generations=5)),
    ("qwen2.5-math-1.5b-drgrpo.yaml", Arm("layer", (3,)),
     dict(learning_rate=1e-6, num_generations=8, temperature=1.0, beta=0.0, epsilon_high=0.2,
          loss_type="dr_grpo", scale_rewards="none", generation_batch_size=1024, max_steps=5 * 93,
          max_completion_length=3000, vllm_max_model_length=1024 + 3000)),
])
def test_grpo_config_for_the_paper_variants(name, arm, expected, tmp_path):
    from layerbench.stages.train import grpo_args

    study = _study(name)
    rl = study.rl_for(arm)
    batch = batch_geometry(rl)
    n_prompts = 12000 if "math-1.5b" in name else 50000
    args = grpo_args(rl, study.limits.max_completion_tokens, 3, tmp_path,
                     max_prompt_tokens=study.limits.max_prompt_tokens, n_prompts=n_prompts, use_cpu=True)
    common = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=rl.vllm_gpu_memory_utilization,
                  vllm_max_model_length=study.limits.max_prompt_tokens + study.limits.max_completion_tokens,
                  max_completion_length=study.limits.max_completion_tokens, beta=rl.beta, epsilon=0.2, seed=3,
                  data_seed=3, bf16=True, gradient_checkpointing=True, weight_decay=0.01,
                  per_device_train_batch_size=batch.micro, gradient_accumulation_steps=batch.mini // batch.micro,
                  steps_per_generation=batch.per_rollout // batch.micro, lr_scheduler_type="constant")
    for key, value in {**common, **expected}.items():
        got = getattr(args, key)
        got = getattr(got, "value", got)  # enums (lr_scheduler_type)
        assert got == value, key
    # one rollout batch is every prompt of the step times the group, spread over the accumulation steps
    assert args.generation_batch_size == rl.prompts_per_step * rl.num_generations
    assert args.model_init_kwargs == ({"dtype": "bfloat16"} if rl.beta else None)  # the KL reference model


def test_vllm_needs_the_prompt_cap_for_its_max_model_len(tmp_path):
    from layerbench.stages.train import grpo_args

    rl = _study("qwen3-1.7b-grpo-scripts.yaml").rl_for(Arm("full"))
    with pytest.raises(ValueError, match="max_model_len"):
        grpo_args(rl, 3072, 1, tmp_path, n_prompts=50000, use_cpu=True)


def test_vllm_engine_seed_patch_matches_trl_and_adds_the_run_seed(monkeypatch):
    """TRL seeds its colocated engine from the process index; layerbench adds
    the run's seed. Fails if TRL stops passing seed= to LLM(...) or stops
    syncing through the method layerbench replaces."""
    import inspect

    import trl.generation.vllm_generation as vg

    from layerbench.stages.train.engine import EngineMeter, seeded_engine

    source = inspect.getsource(vg.VLLMGeneration)
    assert "self.llm = LLM(" in source
    assert "seed=accelerator.process_index // self.tensor_parallel_size" in source
    assert "def sync_weights(self)" in source and "def _iter_named_params(self)" in source
    calls = []
    monkeypatch.setattr(vg, "LLM", lambda **kw: calls.append(kw), raising=False)
    with seeded_engine(42, 1, EngineMeter()):
        vg.LLM(model="m", seed=0)
        vg.LLM(model="m", seed=3)  # a second data-parallel rank keeps its offset
    vg.LLM(model="m", seed=0)  # restored afterwards
    assert [c["seed"] for c in calls] == [42, 45, 0]


def test_lm_eval_vllm_model_args():
    from layerbench.stages.evaluate.backends import decoding_kwargs, vllm_model_args

    study = _study("qwen3-1.7b-grpo-scripts.yaml")
    args = vllm_model_args(Path("results/x/runs/full/seed1/checkpoint"), study.eval, 42, study.model.context_length)
    assert args == {"pretrained": "results/x/runs/full/seed1/checkpoint", "dtype": "bfloat16", "seed": 42,
                    "gpu_memory_utilization": 0.85, "batch_size": "auto", "tensor_parallel_size": 1,
                    "data_parallel_size": 1, "max_model_len": 10240}
    assert decoding_kwargs(study.eval) == {"temperature": 0.6, "do_sample": True, "top_p": 0.95, "top_k": 20}
    dr = _study("qwen2.5-math-1.5b-drgrpo.yaml")
    assert vllm_model_args(Path("m"), dr.eval, 42, 4096)["max_model_len"] == 4096
    assert vllm_model_args(Path("m"), dr.eval, 42, 4096, gpus=4)["tensor_parallel_size"] == 4  # the job's GPUs
    greedy = _study("qwen3-1.7b-grpo-scripts-greedy.yaml")
    assert decoding_kwargs(greedy.eval) == {"do_sample": False, "temperature": 0.0}  # beats a task's do_sample


def test_vllm_finish_reasons_map_to_one_truncation_definition():
    from types import SimpleNamespace

    from layerbench.stages.evaluate.backends import (
        FINISH_EOS,
        FINISH_LENGTH,
        FINISH_STOP,
        generation_from_vllm,
        vllm_finish,
    )

    assert vllm_finish("length", None) == FINISH_LENGTH
    assert vllm_finish("stop", None) == FINISH_EOS  # end-of-text token
    assert vllm_finish("stop", 151643) == FINISH_EOS  # a stop token id
    assert vllm_finish("stop", "Problem:") == FINISH_STOP
    gen = generation_from_vllm(SimpleNamespace(token_ids=[5, 6, 7], text="abc", finish_reason="length",
                                               stop_reason=None), ["Problem:"], 3)
    assert gen.truncated and gen.text == "abc" and gen.token_ids == (5, 6, 7)
    assert gen.at_budget(2).text is None and gen.at_budget(8).text == "abc"


def test_recording_vllm_class_is_lazy():
    """CPU installs have no vLLM: importing layerbench's evaluation never imports it."""
    code = ("import sys, layerbench.stages.evaluate, layerbench.stages.train, layerbench.cli; "
            "assert 'vllm' not in sys.modules and 'lm_eval.models.vllm_causallms' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
