import pytest
from conftest import ROOT, default_raw, small_study_raw, snakemake_in, study_workdir

from layerbench.config import Arm, ConfigError, load_study, study_from_dict
from layerbench.stages.train import trl_loss


def test_default_config_expands_every_layer_and_applies_per_arm_lr():
    study = load_study("config/default.yaml")
    n = study.model.decoder_layer_count
    assert [a.name for a in study.arms] == ["base", "full"] + [f"layer:{k}" for k in range(n)] + ["full+finish_only"]
    assert study.rl_for(Arm("full")).learning_rate == 3e-5
    assert study.rl_for(Arm("layer", (2,))).learning_rate == 1e-4
    assert study.eval.suites[0].data_files == "results/default/data/test.jsonl"


def test_exact_arm_override_beats_kind_override():
    raw = default_raw()
    raw["rl"]["per_arm"]["layer:2"] = {"learning_rate": 7e-5}
    study = study_from_dict(raw)
    assert study.rl_for(Arm("layer", (2,))).learning_rate == 7e-5
    assert study.rl_for(Arm("layer", (1,))).learning_rate == 1e-4


def test_multi_layer_arm_and_algorithm_switch():
    raw = small_study_raw(arms=["base", "full", {"layers": [1, 0]}])
    raw["rl"]["algorithm"] = "dr_grpo"
    study = study_from_dict(raw)
    arm = study.arms[2]
    assert arm.name == "layers:0,1" and arm.slug == "layers-0-1"
    assert Arm.parse(arm.slug) == arm == Arm.parse(arm.name)
    assert trl_loss(study.rl_for(arm)) == {"loss_type": "dr_grpo", "scale_rewards": "none"}


def test_control_arms_are_spelled_once_and_stay_out_of_the_layer_scan():
    raw = small_study_raw(arms=["base", "full", "layer:all", "full+finish_only", "layer:all+random",
                                {"layers": [1, 0], "reward": "finish_only"}])
    study = study_from_dict(raw)
    names = [a.name for a in study.arms]
    assert names == ["base", "full", "layer:0", "layer:1", "full+finish_only", "layer:0+random", "layer:1+random",
                     "layers:0,1+finish_only"]
    for arm in study.arms:
        assert Arm.parse(arm.slug) == arm == Arm.parse(arm.name)
    control = Arm.parse("layer:1+random")
    assert control.control and not control.in_layer_scan and control.plain == Arm("layer", (1,))
    assert control.slug == "layer-1+random" and control.label == "layer 1, random reward"
    assert study.rl_for(control).learning_rate == study.rl_for(Arm("layer", (1,))).learning_rate  # per_arm: layer
    assert [a.name for a in sorted(study.arms, key=lambda a: a.sort_key)][:4] == names[:4]
    assert study.repro_arm == Arm("layer", (0,))
    for bad in ("base+random", "full+correct", "layer:1+none"):
        raw["arms"] = ["base", "full", bad]
        with pytest.raises(ConfigError, match="'arms.2'"):
            study_from_dict(raw)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: r["rl"].update(algorithm="ppo"), ["'rl.algorithm'", "'grpo'", "'dr_grpo'"]),
        (lambda r: r["limits"].update(prompt_policy="drop"), ["'limits.prompt_policy'", "'error'", "'filter'"]),
        (lambda r: r["rl"].update(learning_rat=1e-3), ["'rl'", "learning_rat", "allowed keys"]),
        (lambda r: r.update(arms=["base", "full", "layer:x"]), ["'arms.2'", "layer:K"]),
        (lambda r: r.update(arms=["base", "full", "layer:9"]), ["'arms.2'", "layer 9", "4 decoder layers"]),
        (lambda r: r.update(arms=["full", "layer:1"]), ["'arms'", "base"]),
        (lambda r: r["limits"].update(eval_budgets=[]), ["'limits.eval_budgets'"]),
        (lambda r: r.update(seeds=[1, 1]), ["'seeds'"]),
    ],
)
def test_bad_values_fail_naming_the_key(mutate, expected):
    raw = default_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        study_from_dict(raw)
    for text in expected:
        assert text in str(info.value)


def test_snakemake_refuses_a_bad_config_before_any_job(tmp_path):
    raw = default_raw()
    raw["rl"]["algorithm"] = "ppo"
    out = snakemake_in(study_workdir(tmp_path, raw), "-n", "--cores", "1")
    assert out.returncode != 0
    assert "algorithm" in out.stderr + out.stdout
    assert "grpo" in out.stderr + out.stdout


def test_context_length_has_one_definition(tmp_path):
    """The preflight, the config checks and the evaluate stage read the
    model's context from ``ModelConfig.context``: the model's own config.json
    when it is at hand (even against a declared value), else the declaration."""
    import json

    from layerbench.stages.preflight import model_context

    study = load_study(ROOT / "config" / "paper" / "qwen3-1.7b-grpo-scripts.yaml")
    assert study.model.context() == (32768, "model.context_length (declared; the model is not at hand)")
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert study.model.context(tmp_path)[0] == model_context(study, tmp_path)[0] == 4096


def test_decoder_layers_have_one_location():
    """A layer arm's tensors (checkpoint deltas, the parameter audit) and the
    layers the train stage freezes are found at one place, DECODER_LAYERS."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from layerbench.stages.train import decoder_layers, freeze_for_arm

    model = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                         num_hidden_layers=3, num_attention_heads=2,
                                                         num_key_value_heads=2))
    arm = Arm.parse("layer:1")
    freeze_for_arm(model, arm)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in model.named_parameters() if n.startswith(arm.tensor_prefixes)} != set()
    assert len(decoder_layers(model)) == 3


def test_a_train_job_refuses_another_world_size(tmp_path, monkeypatch):
    """resources.gpus_per_arm is checked against the processes the job got."""
    from layerbench.config import RLConfig
    from layerbench.paths import RunFolder
    from layerbench.stages.train import train_arm

    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(RuntimeError, match="resources.gpus_per_arm.*2 process.*WORLD_SIZE=1"):
        train_arm(tmp_path, tmp_path / "train.jsonl", Arm.parse("full"), 1, RLConfig.defaults(), 8,
                  RunFolder(tmp_path / "run"), gpus_per_arm=2)


def test_layer_screen_settings_and_the_study_it_leaves():
    """rl.screen_steps alone measures the screen; with rl.screen_keep it prunes:
    Study.after_screen keeps the named layers and lists the rest as screened
    out, and the repro target, which cannot know the kept layers at load, re-runs full RL."""
    measured = study_from_dict(small_study_raw())
    assert measured.rl.screen_steps == 2 and not measured.screens and measured.screen_keep == 1
    assert measured.repro_arm == Arm("layer", (0,))
    raw = small_study_raw()
    raw["rl"]["screen_keep"] = 1
    pruned = study_from_dict(raw)
    assert pruned.screens and pruned.repro_arm == Arm("full")
    after = pruned.after_screen(["layer:1"])
    assert [a.name for a in after.arms] == ["base", "full", "layer:1"]
    assert after.screened_out == (Arm("layer", (0,)),) and after.screen_keep == 1
    assert pruned.rl.identity() == measured.rl.identity()  # no run's bits depend on the screen settings
