"""Pairing check, parameter audit and re-run check."""

import shutil

import pytest
from safetensors.torch import load_file, save_file

from layerbench.config import Arm
from layerbench.stages.checks import IntegrityError, audit_parameters, check_audit, check_pairing


def test_pairing_names_the_diverging_arm():
    rows = [{"seed": 1, "arm": a, "step0_rollout_sha256": "aaa"} for a in ("full", "layer:0", "layer:1")]
    rows += [{"seed": 2, "arm": a, "step0_rollout_sha256": "bbb"} for a in ("full", "layer:0", "layer:1")]
    check_pairing(rows)
    rows[2]["step0_rollout_sha256"] = "zzz"
    with pytest.raises(IntegrityError, match=r"seed 1: arms layer:1 started from different rollouts"):
        check_pairing(rows)
    same = [dict(r, step0_rollout_sha256="aaa") for r in rows]
    with pytest.raises(IntegrityError, match="identical first rollouts"):
        check_pairing(same)


def _leaky_copy(model_dir, out, layer):
    """A checkpoint in which layer ``layer`` also moved: what a second layer
    left trainable would produce."""
    shutil.copytree(model_dir, out)
    weights = out / "model.safetensors"
    state = load_file(weights)
    name = next(n for n in state if n.startswith(f"model.layers.{layer}.") and n.endswith("weight"))
    state[name] = state[name] + 1e-3
    save_file(state, weights)
    return out


def test_parameter_audit_catches_a_leaked_layer(small_base, tmp_path):
    base = small_base["model"]
    trained_only_1 = _leaky_copy(base, tmp_path / "ok", 1)
    rows = audit_parameters(base, trained_only_1)
    assert [r["part"] for r in rows if r["changed"]] == ["layers.1"]
    assert {r["part"] for r in rows} == {"embed", "layers.0", "layers.1", "final_norm", "lm_head"}
    check_audit(Arm("layer", (1,)), 1, rows)
    leaky = _leaky_copy(trained_only_1, tmp_path / "leak", 0)
    with pytest.raises(IntegrityError, match=r"layer:1 seed 1: frozen parts changed: layers.0"):
        check_audit(Arm("layer", (1,)), 1, audit_parameters(base, leaky))
    with pytest.raises(IntegrityError, match="did not change: layers.1"):
        check_audit(Arm("layer", (1,)), 1, audit_parameters(base, base))
