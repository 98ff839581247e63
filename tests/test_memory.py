"""The memory and disk estimator (layerbench.config.memory): exact
parameter counts against transformers' own Qwen2/Qwen3 models, the paper
models' sizes, the refusal of a plan that cannot fit, and the estimate
against the peak memory measured on CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import OFFLINE, ROOT
from memory_calibration import ARMS, CAPS, RL, run_folder

from layerbench.config import load_study
from layerbench.config.memory import (
    KNOWN_SHAPES,
    ModelShape,
    TrainingPlan,
    arm_memory,
    checkpoint_gb,
    study_memory,
)


@pytest.mark.parametrize("model_type,tied", [("qwen2", False), ("qwen2", True), ("qwen3", False), ("qwen3", True)])
def test_parameter_count_is_exact_for_qwen_decoders(model_type, tied):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=300, hidden_size=64, intermediate_size=96,
                                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                                  tie_word_embeddings=tied)
    model = AutoModelForCausalLM.from_config(config)
    shape = ModelShape.from_config_json(config.to_dict())
    assert shape.parameters() == sum(p.numel() for p in model.parameters())
    assert shape.layer_parameters() == sum(p.numel() for p in model.model.layers[0].parameters())


def test_paper_models_have_their_published_sizes():
    sizes = {name: shape.parameters() / 1e9 for name, shape in KNOWN_SHAPES.items()}
    assert sizes["Qwen/Qwen3-1.7B-Base"] == pytest.approx(1.72, abs=0.02)
    assert sizes["Qwen/Qwen3-4B-Base"] == pytest.approx(4.02, abs=0.03)
    assert sizes["Qwen/Qwen3-8B-Base"] == pytest.approx(8.19, abs=0.03)
    assert sizes["Qwen/Qwen2.5-Math-1.5B"] == pytest.approx(1.54, abs=0.02)


def test_the_8b_full_arm_needs_several_gpus_and_a_layer_arm_a_fraction_of_its_state():
    shape = KNOWN_SHAPES["Qwen/Qwen3-8B-Base"]
    common = dict(policy_dtype="float32", ref_dtype="bfloat16", beta=0.001, bf16=True, micro_batch=1,
                  generation_batch=8, prompt=1024, completion=3072, gradient_checkpointing=True, vllm_share_gb=24.0)
    full = arm_memory(shape, TrainingPlan(trained_layers=None, **common))
    layer = arm_memory(shape, TrainingPlan(trained_layers=1, **common))
    assert full["total"] > 80 and layer["total"] < full["total"] / 2
    assert layer["optimizer"] < full["optimizer"] / 36
    assert arm_memory(shape, TrainingPlan(trained_layers=None, gpus_per_arm=8, **common))["total"] < 80
    assert checkpoint_gb(shape, 1) < checkpoint_gb(shape, None) / 36


def test_check_limits_refuses_the_8b_full_arm_on_one_gpu_and_passes_as_shipped(tmp_path):
    """Before anything runs: the study is refused when it loads, naming the
    arm, its estimate and the fix; as shipped it passes and the preflight
    table holds every arm's estimate."""
    config = ROOT / "config" / "paper" / "qwen3-8b-grpo-scripts.yaml"
    raw = yaml.safe_load(config.read_text())
    shipped_gpus = raw["resources"]["gpus_per_arm"]
    assert shipped_gpus > 1 and raw["resources"]["gpu_memory_gb"] == 80
    raw["resources"]["gpus_per_arm"] = 1
    forced = tmp_path / "one-gpu.yaml"
    forced.write_text(yaml.safe_dump(raw))
    refused = run_check_limits(forced, tmp_path / "refused")
    assert refused.returncode != 0
    message = re.search(r"arm full needs about ([0-9.]+) GB per process on 1 process", refused.stderr)
    assert message and float(message.group(1)) > 80, refused.stderr
    assert "resources.gpus_per_arm" in refused.stderr and "80 GB" in refused.stderr
    assert "arm layer:" not in refused.stderr  # a layer arm fits one GPU
    assert not (tmp_path / "refused").exists()  # nothing was written

    shipped = run_check_limits(config, tmp_path / "shipped")
    assert shipped.returncode == 0, shipped.stderr
    table = json.loads((tmp_path / "shipped" / "results" / raw["study"] / "preflight.json").read_text())
    memory = {c["subject"]: c for c in table["checks"] if c["check"] == "memory per process"}
    assert set(memory) == {"arm full", "arm layer:0"}
    assert all(c["status"] == "ok" and c["numbers"]["total"] <= 80 for c in memory.values())
    assert memory["arm full"]["numbers"]["processes"] == shipped_gpus


def run_check_limits(config, out):
    return subprocess.run([sys.executable, "-m", "layerbench", "check-limits", str(config), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, **OFFLINE}, timeout=300)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "config" / "paper").glob("*.yaml")))
def test_every_paper_config_fits_80gb_gpus(name):
    study = load_study(ROOT / "config" / "paper" / f"{name}.yaml")
    rows = study_memory(study, gpu_memory_gb=80)
    assert rows and all(r["fits"] for r in rows), [(r["arm"], r["total"]) for r in rows]


def test_estimate_is_within_its_margin_of_the_peak_measured_on_cpu(memory_calibration):
    """Measured: peak RSS above the RSS just before the model loaded, for each
    arm kind of the calibration's 57M-parameter model; estimated: arm_memory
    for the same plan."""
    from layerbench.config.memory import MARGIN

    shape = ModelShape.from_config_json(memory_calibration["config"])
    figures = {}
    for arm, job in memory_calibration["jobs"].items():
        _, err = job.communicate(timeout=1500)
        assert job.returncode == 0, err[-3000:]
        summary = run_folder(memory_calibration["folder"], arm) / "summary.json"
        cost = json.loads(summary.read_text())["cost"]
        measured = (cost["peak_rss_mb"] - cost["rss_before_model_mb"]) / 1000
        plan = TrainingPlan(trained_layers=ARMS[arm], policy_dtype="float32", ref_dtype=None, beta=0.0, bf16=False,
                            micro_batch=RL["micro_batch_completions"],
                            generation_batch=RL["prompts_per_step"] * RL["num_generations"],
                            prompt=CAPS["max_prompt_tokens"], completion=CAPS["max_completion_tokens"],
                            gradient_checkpointing=True, device="cpu")
        estimate = arm_memory(shape, plan)["total"]
        figures[arm] = (round(estimate, 3), round(measured, 3))
    print("estimate vs measured GB:", figures)
    for arm, (estimate, measured) in figures.items():
        assert abs(estimate - measured) <= MARGIN * measured, figures


def test_check_limits_sizes_every_control_arm_of_a_paper_config():
    """A paper config naming every arm kind loads (lora off vLLM, which has no
    adapter tensors) and is sized: a lora arm trains its adapter only, a dup
    arm one layer of a model one layer deeper; each checkpoint's disk follows."""
    from layerbench.config import study_from_dict
    from layerbench.config.schema import ConfigError

    raw = yaml.safe_load((ROOT / "config" / "paper" / "qwen3-1.7b-grpo-scripts.yaml").read_text())
    raw["arms"] = ["base", "full", "layer:14", "full+finish_only", "layer:14+random", "lora:1", "dup:14", "dup:14+none"]
    with pytest.raises(ConfigError, match="lora:1 with rl.use_vllm: true is not supported"):
        study_from_dict(raw)
    raw["rl"]["use_vllm"] = False
    raw["resources"].pop("gpu_memory_gb", None)  # without vLLM, HF generation's cache would not fit: size it all the same
    study = study_from_dict(raw)
    rows = {r["arm"]: r for r in study_memory(study, 80.0)}
    assert set(rows) == {"full", "layer:14", "lora:1", "dup:14"}  # controls cost what their plain arm costs
    shape = KNOWN_SHAPES["Qwen/Qwen3-1.7B-Base"]
    assert rows["lora:1"]["checkpoint_gb"] == round(shape.lora_parameters(1) * 4 / 1e9, 4)
    assert rows["lora:1"]["optimizer"] < rows["layer:14"]["optimizer"] < rows["full"]["optimizer"]
    assert rows["dup:14"]["checkpoint_gb"] == rows["layer:14"]["checkpoint_gb"]
    assert rows["dup:14"]["weights"] == pytest.approx(
        rows["layer:14"]["weights"] * (shape.parameters() + shape.layer_parameters()) / shape.parameters(), abs=0.01)
