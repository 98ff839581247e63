"""Pairing check, parameter audit and re-run check."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from layerbench.config import Arm
from layerbench.runtime.io import read_csv
from layerbench.stages.checks import (
    IntegrityError,
    audit_parameters,
    check_audit,
    check_pairing,
    write_audits,
)


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


def test_checks_json_holds_what_the_report_shows_even_when_a_check_fails(tmp_path):
    """The pairing summary and the arm x part matrix go to checks.json before
    the violation is raised, so the report can show what went wrong."""
    pairing = [{"seed": s, "arm": a, "step0_rollout_sha256": f"{s}" * 64} for s in (1, 2)
               for a in ("full", "layer:0", "layer:1")]
    pairing[2]["step0_rollout_sha256"] = "f" * 64  # layer:1 seed 1 started elsewhere
    parts = ("embed", "layers.0", "layers.1", "final_norm", "lm_head")
    moved = {"full": set(parts), "layer:0": {"layers.0"}, "layer:1": {"layers.1", "embed"}}  # layer:1 leaks
    audit = [{"arm": a, "seed": s, "part": p, "changed": int(p in moved[a]), "rel_change": 0.0123456 * (p in moved[a])}
             for a in moved for s in (1, 2) for p in reversed(parts)]
    out = {name: tmp_path / name for name in ("pairing.csv", "param_audit.csv", "checks.json")}
    with pytest.raises(IntegrityError, match=r"(?s)parameter audit failed.*pairing check failed"):
        write_audits(pairing, audit, out["pairing.csv"], out["param_audit.csv"], out["checks.json"])
    checks = json.loads(out["checks.json"].read_text())

    p = checks["pairing"]
    assert not p["ok"] and p["problems"] == [
        "seed 1: arms layer:1 started from different rollouts than full, layer:0 (different weights, prompt order "
        "or sampling settings)"]
    assert [(s["seed"], s["arms"], s["distinct"], s["sha"], s["odd"]) for s in p["seeds"]] == [
        (1, 3, 2, "1" * 16, ["layer:1"]), (2, 3, 1, "2" * 16, [])]
    assert [(r["seed"], r["arm"]) for r in p["rows"]] == [(s, a) for s in (1, 2) for a in ("full", "layer:0", "layer:1")]

    a = checks["param_audit"]
    assert a["parts"] == ["embed", "layers.0", "layers.1", "final_norm", "lm_head"]
    assert not a["ok"] and a["problems"] == ["layer:1 seed 1: frozen parts changed: embed",
                                             "layer:1 seed 2: frozen parts changed: embed"]
    matrix = {r["arm"]: [c["status"] if c["changed"] else "." for c in r["cells"]] for r in a["rows"]}
    assert matrix == {"full": ["ok"] * 5, "layer:0": [".", "ok", ".", ".", "."],
                      "layer:1": ["error", ".", "ok", ".", "."]}
    assert a["rows"][0]["cells"][0]["rel"] == 0.01235  # as in param_audit.csv: four digits
    assert read_csv(out["param_audit.csv"])[0]["rel_change"] == "1.235e-02"
