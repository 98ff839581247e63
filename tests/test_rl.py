"""RL arms with TRL's GRPOTrainer, for real, on the session's tiny model."""

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerbench.config import Arm
from layerbench.paths import CheckpointFolder, RunFolder
from layerbench.runtime.checkpoints import materialized
from layerbench.runtime.io import read_csv
from layerbench.stages.train import (
    RecordingReward,
    freeze_for_arm,
    train_arm,
    truncation_by_step,
)


def test_freezing_leaves_exactly_the_arm_trainable(small_base):
    model = AutoModelForCausalLM.from_pretrained(small_base["model"])
    total = sum(p.numel() for p in model.parameters())
    assert freeze_for_arm(model, Arm("full")) == total
    per_layer = sum(p.numel() for p in model.model.layers[1].parameters())
    assert freeze_for_arm(model, Arm("layer", (1,))) == per_layer
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.1.") for n in trainable)
    assert any("norm" in n for n in trainable) and any("mlp" in n for n in trainable)
    assert freeze_for_arm(model, Arm("layers", (0, 1))) == 2 * per_layer


def test_recording_reward_flags_truncation_and_scores_answers():
    class Tok:
        def __call__(self, text):
            return {"input_ids": [ord(c) for c in text]}

    reward = RecordingReward(Tok(), eos_ids=[0])
    values = reward(["Q: 1+1=? A:"] * 3, [" 1+1=2. #### 2", " 1+1=2. ####", " #### 3"],
                    [[5, 6, 0], [5, 6, 7], [8, 0]], ["2", "2", "2"])
    assert values == [1.0, 0.0, 0.0]
    assert [r["truncated"] for r in reward.rows] == [0, 1, 0]
    stats = truncation_by_step(reward.rows)[0]
    assert stats["rollouts/truncated_share"] == pytest.approx(1 / 3)
    assert stats["rollouts/truncated_reward_mean"] == 0.0
    assert reward.step0_sha256 is not None


def test_control_rewards_reward_finishing_or_chance_and_record_correctness():
    """finish_only rewards every rollout that ends inside the cap, right or
    wrong; random draws with the step-0 batch's correctness as its mean, the
    same draws after a resume; both record what was actually right."""
    class Tok:
        def __call__(self, text):
            return {"input_ids": [ord(c) for c in text]}

    state = type("State", (), {"global_step": 0})
    batch = (["Q: 1+1=? A:"] * 4, [" #### 2", " #### 3", " 1+1=2 ####", " #### 2"],
             [[5, 0], [8, 0], [5, 6, 7], [9, 9]], ["2"] * 4)
    finish = RecordingReward(Tok(), eos_ids=[0], reward="finish_only")
    assert finish(*batch, trainer_state=state) == [1.0, 1.0, 0.0, 0.0]  # the last is right but cut off
    assert [r["correct"] for r in finish.rows] == [1.0, 0.0, 0.0, 1.0]
    assert finish.__name__ == "finish_only"  # TRL's metric: rewards/finish_only/mean

    draws = {}
    for seed in (1, 2):
        chance = RecordingReward(Tok(), eos_ids=[0], reward="random", seed=seed)
        prompts, completions, ids, answers = batch
        draws[seed] = [chance(prompts * 50, completions * 50, ids * 50, answers * 50, trainer_state=state)]
        assert chance.random_mean == 0.5  # two of the four step-0 rollouts are right
        assert set(draws[seed][0]) == {0.0, 1.0} and abs(sum(draws[seed][0]) / 200 - 0.5) < 0.15
        later = type("State", (), {"global_step": 3})
        draws[seed].append(chance(*batch, trainer_state=later))
        resumed = RecordingReward(Tok(), eos_ids=[0], reward="random", seed=seed)
        resumed.load(json.loads(json.dumps(chance.state())))
        assert resumed(*batch, trainer_state=later) == draws[seed][1] and resumed.random_mean == 0.5
    assert draws[1] != draws[2]


@pytest.fixture(scope="module")
def trained(small_base, tmp_path_factory):
    study = small_base["study"]
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for arm, seed in ((Arm("full"), 1), (Arm("layer", (1,)), 1), (Arm("layer", (1,)), 2)):
        runs[(arm.name, seed)] = out / f"{arm.slug}_{seed}"
        train_arm(small_base["model"], small_base["data"] / "train.jsonl", arm, seed, study.rl_for(arm),
                  study.limits.max_completion_tokens, RunFolder(runs[(arm.name, seed)]))
    return runs


def test_arms_of_a_seed_share_step0_rollouts(trained):
    summary = {k: json.loads((v / "summary.json").read_text()) for k, v in trained.items()}
    assert summary[("full", 1)]["step0_rollout_sha256"] == summary[("layer:1", 1)]["step0_rollout_sha256"]
    assert summary[("layer:1", 1)]["step0_rollout_sha256"] != summary[("layer:1", 2)]["step0_rollout_sha256"]


def test_layer_arm_changes_only_its_layer(trained, small_base, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(small_base["model"]).state_dict()
    with materialized(trained[("layer:1", 1)] / "checkpoint", small_base["model"], tmp_path) as m:
        tuned = AutoModelForCausalLM.from_pretrained(m).state_dict()
    changed = {n for n in base if not torch.equal(base[n], tuned[n])}
    assert changed and all(n.startswith("model.layers.1.") for n in changed)
    full = AutoModelForCausalLM.from_pretrained(trained[("full", 1)] / "checkpoint").state_dict()
    assert any(not torch.equal(base[n], full[n]) for n in base if n.startswith("model.layers.0."))
    saved = {k: json.loads((v / "summary.json").read_text())["checkpoint"]["format"] for k, v in trained.items()}
    assert saved == {("full", 1): "full", ("layer:1", 1): "delta", ("layer:1", 2): "delta"}


def test_metrics_and_rollouts_are_recorded_per_step(trained, small_base):
    study = small_base["study"]
    metrics = read_csv(trained[("full", 1)] / "metrics.csv")
    assert [int(r["step"]) for r in metrics] == list(range(1, study.rl.steps + 1))
    for column in ("reward", "completions/clipped_ratio", "rollouts/truncated_share", "completions/mean_length"):
        assert all(r[column] != "" for r in metrics), column
    # our truncation definition and TRL's clipped_ratio agree on every step
    for r in metrics:
        assert float(r["rollouts/truncated_share"]) == pytest.approx(float(r["completions/clipped_ratio"]))
    rollouts = read_csv(trained[("full", 1)] / "rollouts.csv")
    per_step = study.rl.prompts_per_step * study.rl.num_generations
    assert len(rollouts) == study.rl.steps * per_step
    assert all(int(r["length"]) <= study.limits.max_completion_tokens for r in rollouts)


def test_cost_is_recorded_and_backward_stops_at_the_trained_layer(trained):
    """summary.json's ``cost``: phase times that add up, optimizer state of
    the trainable parameters only, and backward only from the trained layer
    up (embeddings and layer 0 are frozen for layer:1)."""
    cost = {k: json.loads((v / "summary.json").read_text())["cost"] for k, v in trained.items()}
    assert cost[("layer:1", 1)]["backward_layers"] == [1] and cost[("layer:1", 2)]["backward_layers"] == [1]
    assert cost[("full", 1)]["backward_layers"] == [0, 1]
    for c in cost.values():
        assert c["device"] == "cpu" and c["peak_gpu_mb"] is None and c["peak_rss_mb"] > 0
        assert all(c["seconds"][p] > 0 for p in ("generation", "scoring", "forward_backward", "optimizer"))
        assert sum(c["seconds"].values()) == pytest.approx(c["train_seconds"], abs=1e-3)
        split = c["forward_backward_split"]  # the loss forward, then backward, clipping and zeroing
        assert split["loss_forward"] > 0 and split["backward"] > 0
        assert sum(split.values()) == pytest.approx(c["seconds"]["forward_backward"], abs=1e-3)
        assert c["rollouts"] == c["optimizer_steps"]  # the small study makes one update per rollout batch
        # AdamW: two fp32 moments per trainable parameter (plus a step counter per tensor)
        assert 8 * c["trainable_parameters"] <= c["optimizer_state_bytes"] < 8.01 * c["trainable_parameters"]
        assert c["input_grads_blocked"] is False  # no gradient checkpointing: nothing to block
    assert cost[("layer:1", 1)]["optimizer_state_bytes"] < cost[("full", 1)]["optimizer_state_bytes"] / 2


def test_gradient_checkpointing_does_not_pull_frozen_layers_into_backward(trained, small_base, tmp_path, monkeypatch):
    """With gradient checkpointing transformers makes the embeddings' output
    require grad, so backward would run through every frozen layer below the
    trained one; train_arm blocks that and gets the same weights."""
    import layerbench.stages.train.cost as train_cost

    study, arm = small_base["study"], Arm("layer", (1,))
    rl = dataclasses.replace(study.rl_for(arm), gradient_checkpointing=True)

    def train(name):
        out = tmp_path / name
        train_arm(small_base["model"], small_base["data"] / "train.jsonl", arm, 1, rl,
                  study.limits.max_completion_tokens, RunFolder(out))
        return out, json.loads((out / "summary.json").read_text())["cost"]

    blocked, cost = train("blocked")
    assert cost["backward_layers"] == [1] and cost["input_grads_blocked"] is True
    same = CheckpointFolder(trained[("layer:1", 1)] / "checkpoint").delta
    assert CheckpointFolder(blocked / "checkpoint").delta.read_bytes() == same.read_bytes()
    monkeypatch.setattr(train_cost, "stop_backward_at_arm", lambda *args, **kwargs: False)
    _, unblocked = train("unblocked")
    assert unblocked["backward_layers"] == [0, 1]  # what transformers does on its own


def test_lora_arm_trains_its_adapters_only_pairs_with_the_others_and_is_saved_as_the_adapter(trained, small_base,
                                                                                             tmp_path):
    """lora:1 (PEFT) starts from the base model's outputs (same step-0
    rollouts as full RL), trains exactly the adapter's parameters (as many
    as the memory estimate counts), saves PEFT's adapter files, and merged
    into the base by PEFT changes every adapted weight and nothing else."""
    from safetensors.torch import load_file

    from layerbench.config.memory import study_shape
    from layerbench.runtime.checkpoints import load_state
    from layerbench.stages.checks import audit_parameters, check_param_audit

    study, arm = small_base["study"], Arm.parse("lora:1")
    out = tmp_path / "lora"
    summary = train_arm(small_base["model"], small_base["data"] / "train.jsonl", arm, 1, study.rl_for(arm),
                        study.limits.max_completion_tokens, RunFolder(out))
    full = json.loads((trained[("full", 1)] / "summary.json").read_text())
    assert summary["step0_rollout_sha256"] == full["step0_rollout_sha256"]
    assert summary["trainable_parameters"] == study_shape(study, small_base["model"]).lora_parameters(1)
    assert summary["checkpoint"]["format"] == "adapter"
    assert summary["cost"]["backward_layers"] == [0, 1]  # adapters in every layer
    files = {p.name for p in (out / "checkpoint").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "adapter.json"} <= files
    assert not any(name.startswith("model") for name in files)
    adapter = load_file(out / "checkpoint" / "adapter_model.safetensors")
    assert sum(t.numel() for t in adapter.values()) == summary["trainable_parameters"]

    base = load_file(small_base["model"] / "model.safetensors")
    rows = audit_parameters(small_base["model"], out / "checkpoint")
    assert {r["matrix"] for r in rows if r["frac_changed"]} == {n for n in base if arm.trains_tensor(n)}
    assert len({n for n in base if arm.trains_tensor(n)}) == 7 * study.model.decoder_layer_count
    check_param_audit(arm, 1, rows)
    merged = load_state(out / "checkpoint", small_base["model"])
    with materialized(out / "checkpoint", small_base["model"], tmp_path) as folder:
        loaded = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    assert all(torch.equal(loaded[n], merged[n]) for n in merged)


def test_a_duplicated_layer_is_the_base_model_when_skipped_and_says_how_far_it_is_when_not(small_base):
    """dup:K's model applies layer K twice, so its step-0 output is not the
    base model's. The surgery itself is exact: skipping the copy, or zeroing
    its two residual branches, gives the base model's logits bit for bit,
    with and without the KV cache."""
    from layerbench.runtime.duplicate import copy_skipped, duplicate_layer, step0_difference

    base = AutoModelForCausalLM.from_pretrained(small_base["model"])
    ids = torch.tensor([[5, 17, 42, 8, 99, 3, 12]])
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        expected_greedy = base.generate(ids, max_new_tokens=6, do_sample=False)
    for k in range(small_base["study"].model.decoder_layer_count):
        dup = duplicate_layer(AutoModelForCausalLM.from_pretrained(small_base["model"]), k)
        assert dup.config.num_hidden_layers == base.config.num_hidden_layers + 1
        assert [layer.self_attn.layer_idx for layer in dup.model.layers] == list(range(len(dup.model.layers)))
        with torch.no_grad():
            with copy_skipped(dup, k):
                assert torch.equal(dup(input_ids=ids).logits, expected)
            differs = dup(input_ids=ids).logits
            copy = dup.model.layers[k + 1]
            copy.self_attn.o_proj.weight.zero_()
            copy.mlp.down_proj.weight.zero_()
            assert torch.equal(dup(input_ids=ids).logits, expected)
            assert torch.equal(dup.generate(ids, max_new_tokens=6, do_sample=False), expected_greedy)  # cached
        assert not torch.equal(differs, expected)
    dup = duplicate_layer(AutoModelForCausalLM.from_pretrained(small_base["model"]), 0)
    far = step0_difference(dup, 0, ids, torch.ones_like(ids))
    assert far["max_abs_logit_diff"] > 0 and 0 <= far["next_token_agreement"] <= 1 and far["prompts"] == 1


def test_dup_arm_trains_only_the_copy_pairs_on_prompts_and_records_its_step0_distance(trained, small_base, tmp_path):
    from layerbench.runtime.checkpoints import load_state, reference_state
    from layerbench.stages.checks import audit_parameters, check_param_audit, pairing_problems

    study, arm = small_base["study"], Arm.parse("dup:0")
    out = tmp_path / "dup"
    summary = train_arm(small_base["model"], small_base["data"] / "train.jsonl", arm, 1, study.rl_for(arm),
                        study.limits.max_completion_tokens, RunFolder(out))
    full = json.loads((trained[("full", 1)] / "summary.json").read_text())
    assert summary["step0_prompt_sha256"] == full["step0_prompt_sha256"] is not None
    assert summary["step0_rollout_sha256"] != full["step0_rollout_sha256"]  # another model: other completions
    rows = [{"seed": 1, "arm": a, "step0_rollout_sha256": s["step0_rollout_sha256"],
             "step0_prompt_sha256": s["step0_prompt_sha256"]} for a, s in (("full", full), ("dup:0", summary))]
    assert pairing_problems(rows) == []
    rows[1]["step0_prompt_sha256"] = "0" * 64
    assert "dup:0 started from different prompts" in pairing_problems(rows)[0]
    assert summary["dup_step0_vs_base"]["max_abs_logit_diff"] > 0
    per_layer = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(small_base["model"]).model.layers[0]
                    .parameters())
    assert summary["trainable_parameters"] == per_layer and summary["checkpoint"]["format"] == "delta"

    audit = audit_parameters(small_base["model"], out / "checkpoint")
    assert {r["part"] for r in audit if r["changed"]} == {"layers.1"}  # the copy, layer 1 of the deeper model
    check_param_audit(arm, 1, audit)
    start, tuned = reference_state(out / "checkpoint", small_base["model"]), load_state(out / "checkpoint",
                                                                                       small_base["model"])
    assert all(torch.equal(start[f"model.layers.0.{n}"], start[f"model.layers.1.{n}"])
               for n in (k.split("model.layers.0.", 1)[1] for k in start if k.startswith("model.layers.0.")))
    with materialized(out / "checkpoint", small_base["model"], tmp_path) as folder:
        model = AutoModelForCausalLM.from_pretrained(folder)
    assert len(model.model.layers) == study.model.decoder_layer_count + 1
    assert all(torch.equal(model.state_dict()[n], tuned[n]) for n in tuned)
