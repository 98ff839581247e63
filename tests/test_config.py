import pytest
from conftest import default_raw, small_study_raw, snakemake_in, study_workdir

from layerbench.config import Arm, ConfigError, load_study, study_from_dict
from layerbench.stages.train import trl_loss


def test_default_config_expands_every_layer_and_applies_per_arm_lr():
    study = load_study("config/default.yaml")
    n = study.num_layers
    assert [a.name for a in study.arms] == ["base", "full"] + [f"layer:{k}" for k in range(n)]
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
