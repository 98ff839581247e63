"""Checkpoints: a layer arm saves only its trained layers over the base model
(``layerbench.runtime.checkpoints``); readers get the whole model back, and
never over another base. Unit tests on a tiny Qwen2 model built in a temp
folder; the last test measures the session study's run folders."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from layerbench.config import Arm
from layerbench.paths import CheckpointFolder
from layerbench.runtime.checkpoints import (
    IntegrityError,
    base_sha256,
    disk_bytes,
    load_state,
    load_weights,
    materialized,
    save_checkpoint,
)

LAYER = Arm("layer", (1,))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tied-embedding Qwen2 base model with its tokenizer on disk, and a
    trainer stand-in holding a copy whose layer 1 and embeddings moved (what
    the accelerator of a one-process run gives save_checkpoint)."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from layerbench.stages.model import EOS, build_model, train_tokenizer

    base_dir = tmp_path_factory.mktemp("base")
    tokenizer = train_tokenizer(["1 + 2 = 3 #### 3", "4 - 9 = -5 #### -5"] * 20, 40)
    spec = SimpleNamespace(architecture="qwen2", num_layers=3, hidden_size=16, intermediate_size=32, num_heads=2,
                           max_positions=32, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = build_model(spec, len(tokenizer), tokenizer.convert_tokens_to_ids(EOS))
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    trained = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if name.startswith(("model.layers.1.", "model.embed_tokens.")):
                p.add_(torch.randn_like(p) * 1e-2)
    trainer = SimpleNamespace(accelerator=Accelerator(cpu=True), model=trained)
    return SimpleNamespace(base=base_dir, tokenizer=tokenizer, trainer=trainer)


def _save(tiny, arm, out, dtype="float32", base=None):
    return save_checkpoint(tiny.trainer, tiny.tokenizer, arm, base or tiny.base, out, dtype)


def _expected(tiny, arm, dtype=torch.float32) -> dict:
    """The base's tensors, with the arm's trained ones (cast) in place."""
    base, trained = load_weights(tiny.base), tiny.trainer.model.state_dict()
    moves = {n for n in base if arm.kind == "full" or n.startswith(tuple(f"model.layers.{k}." for k in arm.layers))}
    return {n: trained[n].to(dtype) if n in moves else t for n, t in base.items()}


def _assert_states_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    assert [n for n in want if not torch.equal(got[n], want[n])] == []


def test_a_layer_delta_holds_its_layer_only_and_reads_back_as_the_trained_state(tiny, tmp_path):
    record = _save(tiny, LAYER, tmp_path / "ckpt")
    folder = CheckpointFolder(tmp_path / "ckpt")
    assert sorted(p.name for p in folder.path.iterdir()) == ["delta.json", "delta.safetensors"]
    delta = json.loads(folder.delta_record.read_text())
    assert delta["format"] == "layerbench-layer-delta" and delta["version"] == 1 and delta["layers"] == [1]
    assert delta["tensors"] == sorted(load_file(folder.delta)) and delta["dtype"] == "float32"
    assert all(n.startswith("model.layers.1.") for n in delta["tensors"])
    assert record == {"format": "delta", "dtype": "float32", "bytes": disk_bytes(folder.path),
                      "base_sha256": base_sha256(tiny.base)} and delta["base_sha256"] == record["base_sha256"]
    _assert_states_equal(load_state(folder.path, tiny.base), _expected(tiny, LAYER))
    assert "lm_head.weight" not in load_state(folder.path, tiny.base)  # tied, as in the base's file


def test_the_full_arm_is_a_whole_model_folder(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    record = _save(tiny, Arm("full"), tmp_path / "full")
    assert record["format"] == "full" and record["bytes"] == disk_bytes(tmp_path / "full")
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in (tmp_path / "full").iterdir()}
    _assert_states_equal(load_state(tmp_path / "full", tiny.base), _expected(tiny, Arm("full")))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    assert torch.equal(reloaded.model.embed_tokens.weight, tiny.trainer.model.model.embed_tokens.weight)


def test_bfloat16_checkpoints_round_trip_at_bf16(tiny, tmp_path):
    _save(tiny, LAYER, tmp_path / "delta", "bfloat16")
    assert {t.dtype for t in load_file(CheckpointFolder(tmp_path / "delta").delta).values()} == {torch.bfloat16}
    _assert_states_equal(load_state(tmp_path / "delta", tiny.base), _expected(tiny, LAYER, torch.bfloat16))
    record = _save(tiny, Arm("full"), tmp_path / "full", "bfloat16")
    assert record["dtype"] == "bfloat16"
    # the tied head stays tied: the base's names, every one in bf16
    _assert_states_equal(load_state(tmp_path / "full", tiny.base), _expected(tiny, Arm("full"), torch.bfloat16))
    full32 = _save(tiny, Arm("full"), tmp_path / "full32")
    assert record["bytes"] < 0.6 * full32["bytes"]


def test_a_delta_over_another_base_is_refused_naming_both_hashes(tiny, tmp_path):
    _save(tiny, LAYER, tmp_path / "ckpt")
    other = tmp_path / "other-base"
    other.mkdir()
    state = load_weights(tiny.base)
    state["model.norm.weight"] = state["model.norm.weight"] + 1
    save_file(state, other / "model.safetensors", metadata={"format": "pt"})
    recorded, actual = base_sha256(tiny.base), base_sha256(other)
    assert recorded != actual
    with pytest.raises(IntegrityError) as refused:
        load_state(tmp_path / "ckpt", other)
    assert recorded in str(refused.value) and actual in str(refused.value) and str(tmp_path / "ckpt") in str(
        refused.value)
    output = tmp_path / "eval" / "seed1"
    with pytest.raises(IntegrityError), materialized(tmp_path / "ckpt", other, output):
        pass
    assert list(output.parent.iterdir()) == []


def test_a_delta_tensor_with_no_place_in_the_base_is_refused(tiny, tmp_path):
    _save(tiny, LAYER, tmp_path / "ckpt")
    folder = CheckpointFolder(tmp_path / "ckpt")
    delta = load_file(folder.delta)
    delta["model.layers.1.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(delta, folder.delta)
    with pytest.raises(IntegrityError, match=r"no same-shaped tensor in the base model .*up_proj"):
        load_state(folder.path, tiny.base)


def test_materialized_is_a_whole_model_that_is_gone_after_the_block(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _save(tiny, LAYER, tmp_path / "ckpt")
    scratch, output = tmp_path / "eval", tmp_path / "eval" / "seed1"
    with materialized(tmp_path / "ckpt", tiny.base, output) as model_dir:
        assert model_dir.parent == scratch and model_dir.name.startswith(".seed1.materialized-")
        assert {p.name for p in model_dir.iterdir()} == {p.name for p in tiny.base.iterdir()}
        loaded = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
        want = _expected(tiny, LAYER)
        _assert_states_equal({n: loaded[n] for n in want}, want)
        assert AutoTokenizer.from_pretrained(model_dir).get_vocab() == tiny.tokenizer.get_vocab()
    assert list(scratch.iterdir()) == []
    with pytest.raises(RuntimeError, match="lm-eval failed"):
        with materialized(tmp_path / "ckpt", tiny.base, output):
            raise RuntimeError("lm-eval failed")
    assert list(scratch.iterdir()) == []
    _save(tiny, Arm("full"), tmp_path / "full")
    for whole in (tmp_path / "full", tiny.base):  # read where they are
        with materialized(whole, tiny.base, output) as model_dir:
            assert model_dir == whole
    assert list(scratch.iterdir()) == []


def test_scratch_a_killed_job_left_is_removed_by_its_rerun_only(tiny, tmp_path):
    """SIGKILL skips every cleanup: the scratch folders of a killed train
    (atomic run folder) or evaluate (materialized delta) job stay behind.
    The rerun of the same job removes them; another job's are left alone."""
    from layerbench.runtime.io import atomic_directory

    _save(tiny, LAYER, tmp_path / "ckpt")
    runs, evals = tmp_path / "runs" / "layer-1", tmp_path / "eval" / "layer-1"
    left = [runs / ".seed1.k1ll3d00.tmp", evals / ".seed1.materialized-k1ll3d00.tmp"]
    other = [runs / ".seed2.k1ll3d00.tmp", evals / ".seed2.materialized-k1ll3d00.tmp"]
    for folder in left + other:
        folder.mkdir(parents=True)
    with atomic_directory(runs / "seed1") as scratch:
        (scratch / "summary.json").write_text("{}")
    with materialized(tmp_path / "ckpt", tiny.base, evals / "seed1"):
        pass
    assert not any(p.exists() for p in left) and all(p.exists() for p in other)
    assert (runs / "seed1" / "summary.json").is_file()


def test_single_layer_checkpoints_of_the_study_are_a_fraction_of_the_full_one(study_runs):
    """The session study's runs: each layer arm's checkpoint is a delta, at
    most 1/L of the full arm's bytes (L decoder layers; the full checkpoint
    also holds embeddings, final norm and tokenizer); for the default study
    (L = 4) that is under 1/3."""
    raw, runs = study_runs
    results = runs["wide"] / "results" / raw["study"]
    layers = raw["model"]["build"]["num_layers"]
    summaries = {p.parent.parent.name: json.loads(p.read_text())
                 for p in sorted(results.glob("runs/*/seed1/summary.json"))}
    saved = {arm: s["checkpoint"] for arm, s in summaries.items()}
    for arm, record in saved.items():
        assert record["bytes"] == disk_bytes(results / "runs" / arm / "seed1" / "checkpoint"), arm
        assert record["format"] == ("full" if arm == "full" else "delta") and record["dtype"] == "float32", arm
        assert record["base_sha256"] == base_sha256(results / "base_model"), arm
    full = saved["full"]["bytes"]
    figures = (f"{layers} decoder layers; full arm {full} bytes; "
               + ", ".join(f"{arm} {r['bytes']} bytes ({r['bytes'] / full:.3f} of full)"
                           for arm, r in sorted(saved.items()) if arm != "full")
               + f"; runs/ {disk_bytes(results / 'runs')} bytes")
    print(figures)
    assert len(saved) == layers + 1, figures
    assert all(r["bytes"] <= full / layers for arm, r in saved.items() if arm != "full"), figures
