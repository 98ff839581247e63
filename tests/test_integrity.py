"""Pairing check, parameter audit and re-run check."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from layerbench.config import Arm
from layerbench.runtime.io import read_csv
from layerbench.stages import checks
from layerbench.stages.checks import (
    IntegrityError,
    audit_parameters,
    check_pairing,
    check_param_audit,
    effective_rank,
    param_audit_summary,
    write_checks,
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
    assert {r["part"] for r in rows if r["changed"]} == {"layers.1"}  # the part's flag, on each of its tensors
    names = load_file(base / "model.safetensors")
    assert [r["matrix"] for r in rows if r["frac_changed"]] == [
        next(n for n in names if n.startswith("model.layers.1.") and n.endswith("weight"))]
    assert {r["part"] for r in rows} == {"embed", "layers.0", "layers.1", "final_norm", "lm_head"}
    check_param_audit(Arm("layer", (1,)), 1, rows)
    leaky = _leaky_copy(trained_only_1, tmp_path / "leak", 0)
    with pytest.raises(IntegrityError, match=r"layer:1 seed 1: frozen parts changed: layers.0"):
        check_param_audit(Arm("layer", (1,)), 1, audit_parameters(base, leaky))
    with pytest.raises(IntegrityError, match="did not change: layers.1"):
        check_param_audit(Arm("layer", (1,)), 1, audit_parameters(base, base))


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
        write_checks(pairing, audit, out["pairing.csv"], out["param_audit.csv"], out["checks.json"])
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
    first = read_csv(out["param_audit.csv"])[0]
    assert first["rel_change"] == "1.235e-02"
    # part-level rows (no per-tensor measures): empty cells, and no update section
    assert (first["matrix"], first["frac_changed"], first["rel_frobenius"], first["effective_rank"]) == ("",) * 4
    assert checks["update"] is None


# --------------------------------------------------------------------------
# where the update lives: per-tensor measures on hand-made state dicts
# --------------------------------------------------------------------------
def _save(state: dict, folder):
    folder.mkdir(parents=True)
    save_file({n: t.contiguous() for n, t in state.items()}, str(folder / "model.safetensors"))
    return folder


def _tiny_base() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"model.embed_tokens.weight": torch.randn(6, 4, generator=g),
            "model.layers.0.input_layernorm.weight": torch.ones(4),
            "model.layers.0.self_attn.q_proj.weight": torch.full((5, 5), 2.0),
            "model.layers.0.mlp.down_proj.weight": torch.randn(4, 12, generator=g),
            "model.layers.1.self_attn.q_proj.weight": torch.randn(16, 16, generator=g),
            "model.norm.weight": torch.ones(4), "lm_head.weight": torch.randn(6, 4, generator=g)}


def _tuned(base: dict) -> dict:
    """q_proj of layer 0: 6 of 25 elements +0.5 (rows 0, 2 x columns 1, 3, 4:
    rank 1); down_proj of layer 0: a dense rank-1 update; layer 1's q_proj: an orthogonal (full-rank) update; the
    layer-0 norm weight: 1 of 4 elements; embed, final norm, lm_head as is."""
    g = torch.Generator().manual_seed(1)
    t = {n: x.clone() for n, x in base.items()}
    t["model.layers.0.self_attn.q_proj.weight"][[[0], [2]], [1, 3, 4]] += 0.5
    t["model.layers.0.mlp.down_proj.weight"] += 0.1 * torch.randn(4, 1, generator=g) @ torch.randn(1, 12, generator=g)
    t["model.layers.0.input_layernorm.weight"][2] = 1.25
    t["model.layers.1.self_attn.q_proj.weight"] += 0.05 * torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
    return t


def test_update_measures_per_tensor_are_exact(tmp_path):
    base = _tiny_base()
    tuned = _tuned(base)
    rows = audit_parameters(_save(base, tmp_path / "base"), _save(tuned, tmp_path / "tuned"))
    by = {r["matrix"]: r for r in rows}
    assert sorted(by) == sorted(base)  # one row per tensor, parts in order
    assert list(dict.fromkeys(r["part"] for r in rows)) == ["embed", "layers.0", "layers.1", "final_norm", "lm_head"]
    q = by["model.layers.0.self_attn.q_proj.weight"]
    assert q["frac_changed"] == 6 / 25 and q["n_changed"] == 6
    assert q["rel_frobenius"] == pytest.approx(0.5 * 6 ** 0.5 / 10, rel=1e-12)  # ||W|| = 2 * 5
    assert q["effective_rank"] == pytest.approx(1.0, abs=1e-6)  # a sparse rank-1 update
    assert by["model.layers.0.mlp.down_proj.weight"]["effective_rank"] == pytest.approx(1.0, abs=1e-4)  # rank 1
    assert by["model.layers.1.self_attn.q_proj.weight"]["effective_rank"] == pytest.approx(16.0, rel=1e-3)
    norm = by["model.layers.0.input_layernorm.weight"]
    assert norm["frac_changed"] == 0.25 and norm["effective_rank"] is None  # 1-D: no rank
    assert norm["rel_frobenius"] == pytest.approx(0.25 / 2, rel=1e-12)
    embed = by["model.embed_tokens.weight"]
    assert (embed["frac_changed"], embed["rel_frobenius"], embed["effective_rank"], embed["changed"]) == (0, 0, 0, 0)
    # part level, repeated on each of the part's rows: changed and rel_change over the part as one vector
    layer0 = [r for r in rows if r["part"] == "layers.0"]
    delta = sum(float((tuned[r["matrix"]].double() - base[r["matrix"]].double()).pow(2).sum()) for r in layer0)
    size = sum(float(base[r["matrix"]].double().pow(2).sum()) for r in layer0)
    assert {(r["changed"], r["rel_change"]) for r in layer0} == {(1, (delta / size) ** 0.5)}

    out = {name: tmp_path / name for name in ("pairing.csv", "param_audit.csv", "checks.json")}
    write_checks([], [{"arm": "full", "seed": 1, **r} for r in rows], *out.values())
    csv = {r["matrix"]: r for r in read_csv(out["param_audit.csv"])}
    assert list(read_csv(out["param_audit.csv"])[0]) == checks.PARAM_AUDIT_COLUMNS
    assert csv["model.layers.0.self_attn.q_proj.weight"]["frac_changed"] == "0.2400"
    assert csv["model.layers.0.self_attn.q_proj.weight"]["rel_frobenius"] == f"{0.05 * 6 ** 0.5:.3e}"
    assert csv["model.layers.1.self_attn.q_proj.weight"]["effective_rank"] == "16.00"
    assert csv["model.layers.0.input_layernorm.weight"]["effective_rank"] == ""


def test_effective_rank_of_known_spectra():
    g = torch.Generator().manual_seed(2)
    assert effective_rank(torch.zeros(4, 3)) == 0.0
    rank_one = torch.randn(20, 1, generator=g) @ torch.randn(1, 30, generator=g)
    assert effective_rank(rank_one) == pytest.approx(1, abs=1e-4)
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(2.0)
    # p = (3/4, 1/4): exp(H) = exp(-(3/4 ln 3/4 + 1/4 ln 1/4))
    import math

    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(
        math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-12)
    n = 64
    square = effective_rank(torch.randn(n, n, generator=g))
    assert 0.75 * n < square <= n  # a random full-rank square update: close to its dimension
    assert effective_rank(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]])) is None


def test_large_matrices_use_a_truncated_svd_whose_rank_is_a_lower_bound(monkeypatch):
    g = torch.Generator().manual_seed(3)
    delta = torch.randn(40, 30, generator=g)
    full = effective_rank(delta)
    calls = []
    real = torch.svd_lowrank
    monkeypatch.setattr(torch, "svd_lowrank",
                        lambda a, q, **kw: calls.append((tuple(a.shape), q)) or real(a, q=q, **kw))
    assert effective_rank(delta) == full and not calls  # smaller side 30 <= 1024: exact svdvals
    monkeypatch.setattr(checks, "LOWRANK_ABOVE", 16)
    monkeypatch.setattr(checks, "LOWRANK_Q", 8)
    state = torch.get_rng_state()
    truncated = effective_rank(delta)
    assert calls == [((40, 30), 8)]
    assert truncated <= 8 < full  # top-8 spectrum only: a lower bound
    assert torch.equal(torch.get_rng_state(), state)  # seeded in a fork: the global stream is untouched
    assert effective_rank(delta) == truncated  # and reproducible
    low_rank = torch.randn(40, 3, generator=g) @ torch.randn(3, 30, generator=g)
    monkeypatch.setattr(checks, "LOWRANK_Q", 10)
    assert effective_rank(low_rank) == pytest.approx(_exact(low_rank), rel=1e-6)  # rank 3 < q: nothing dropped


def test_the_audit_says_which_ranks_come_from_a_truncated_svd(monkeypatch, tmp_path):
    monkeypatch.setattr(checks, "LOWRANK_ABOVE", 8)  # stands in for 1024: only layer 1's 16 x 16 q_proj is above
    monkeypatch.setattr(checks, "LOWRANK_Q", 8)  # and for 256
    base = _tiny_base()
    rows = audit_parameters(_save(base, tmp_path / "base"), _save(_tuned(base), tmp_path / "tuned"))
    assert [r["matrix"] for r in rows if r["erank_truncated"]] == ["model.layers.1.self_attn.q_proj.weight"]
    out = [tmp_path / name for name in ("pairing.csv", "param_audit.csv", "checks.json")]
    update = write_checks([], [{"arm": "full", "seed": 1, **r} for r in rows], *out)["update"]
    assert update["truncated"] == ["model.layers.1.self_attn.q_proj.weight"]
    # an orthogonal update has a flat spectrum: its top-8 erank is 8 of 16, a lower bound
    truncated = next(m for m in update["matrices"] if m["truncated"])
    assert truncated["effective_rank"] == pytest.approx(8, rel=1e-2)


def _exact(matrix) -> float:
    s = torch.linalg.svdvals(matrix.double())
    s = s[s > 1e-9 * s[0]]
    p = s / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def test_checks_json_update_section_pools_the_full_arm_over_seeds(tmp_path):
    """Element-weighted share changed, part-level relative norm, mean
    effective rank and its ratio to full rank; means over seeds. The
    part-level audit is the same whether its rows are per part or per tensor."""
    base = _tiny_base()
    base_dir = _save(base, tmp_path / "base")
    rows = []
    for seed in (1, 2):
        tuned = _tuned(base)
        if seed == 2:  # seed 2 also moves every element of the embedding
            tuned["model.embed_tokens.weight"] += 0.01
        rows += [{"arm": "full", "seed": seed, **r}
                 for r in audit_parameters(base_dir, _save(tuned, tmp_path / f"s{seed}"))]
        only0 = {n: (tuned if n.startswith("model.layers.0.") else base)[n] for n in base}
        rows += [{"arm": "layer:0", "seed": seed, **r}
                 for r in audit_parameters(base_dir, _save(only0, tmp_path / f"l{seed}"))]
    out = {name: tmp_path / name for name in ("pairing.csv", "param_audit.csv", "checks.json")}
    summary = write_checks([], rows, *out.values())
    assert json.loads(out["checks.json"].read_text()) == json.loads(json.dumps(summary))
    u = summary["update"]
    assert u["arm"] == "full" and u["seeds"] == [1, 2] and u["truncated"] == []
    parts = {p["part"]: p for p in u["parts"]}
    assert list(parts) == ["embed", "layers.0", "layers.1", "final_norm", "lm_head"]
    # layers.0: 6 + 48 + 1 changed of 25 + 48 + 4 elements (element-weighted, not a mean of fractions)
    assert parts["layers.0"]["frac_changed"] == pytest.approx(55 / 77, rel=1e-3)
    assert parts["embed"]["frac_changed"] == 0.5  # 0 in seed 1, 1 in seed 2
    assert (parts["layers.0"]["tensors"], parts["layers.0"]["matrices"], parts["layers.0"]["params"]) == (3, 2, 77)
    assert parts["layers.0"]["effective_rank"] == pytest.approx(1.0, abs=1e-3)  # two rank-1 updates
    assert parts["layers.0"]["erank_ratio"] == pytest.approx((1 / 5 + 1 / 4) / 2, rel=1e-3)
    assert parts["layers.1"]["erank_ratio"] == pytest.approx(1.0, rel=1e-3)
    assert parts["final_norm"]["effective_rank"] is None and parts["final_norm"]["frac_changed"] == 0
    by_row = {(r["seed"], r["part"]): r["rel_change"] for r in rows if r["arm"] == "full"}
    assert parts["layers.1"]["rel_frobenius"] == pytest.approx((by_row[1, "layers.1"] + by_row[2, "layers.1"]) / 2,
                                                               rel=1e-3)
    assert sum(p["update_share"] for p in u["parts"]) == pytest.approx(1.0, rel=1e-3)
    matrices = {m["matrix"]: m for m in u["matrices"]}
    assert sorted(matrices) == sorted(base) and matrices["model.layers.0.mlp.down_proj.weight"]["shape"] == [4, 12]
    assert [m["part"] for m in u["matrices"]][:4] == ["embed", "layers.0", "layers.0", "layers.0"]
    assert matrices["model.layers.0.input_layernorm.weight"]["effective_rank"] is None
    # overall: every element, weighted; erank ratio over the 2-D matrices
    changed = {1: 6 + 48 + 1 + 256, 2: 6 + 48 + 1 + 256 + 24}
    size = sum(t.numel() for t in base.values())
    assert u["overall"]["frac_changed"] == pytest.approx((changed[1] + changed[2]) / 2 / size, rel=1e-3)
    # the part-level audit does not depend on the rows being per tensor
    collapsed = list({(r["arm"], r["seed"], r["part"]): {k: r[k] for k in ("arm", "seed", "part", "changed")}
                      | {"rel_change": f"{r['rel_change']:.3e}"} for r in rows}.values())
    assert summary["param_audit"] == param_audit_summary(collapsed)
    assert summary["param_audit"]["ok"]
    assert [c["changed"] for c in summary["param_audit"]["rows"][1]["cells"]] == [False, True, False, False, False]


def test_update_sentence_says_no_more_than_the_numbers():
    from layerbench.analysis.update import update_sentence

    parts = [{"part": f"layers.{k}", "frac_changed": f, "rel_frobenius": rel, "update_share": share}
             for k, (f, rel, share) in enumerate(zip((1, 1, 0, 1), (1, 2, 3, 4), (0.1, 0.2, 0.3, 0.4)))]
    update = {"seeds": [1, 2], "overall": {"frac_changed": 0.5, "erank_ratio": 0.8}, "truncated": [],
              "parts": [{"part": "embed", "frac_changed": 0, "rel_frobenius": 9, "update_share": 0}] + parts}
    c = [{"arm": f"layer:{k}", "budget": b, "C": str(x), "ci_low": "", "ci_high": ""}
         for b in (40, 96) for k, x in enumerate((0.1, 0.2, 0.4, 0.3) if b == 40 else (0.4, 0.3, 0.2, 0.1))]
    c += [{"arm": "full", "budget": 40, "C": "1", "ci_low": "", "ci_high": ""}]
    assert update_sentence(update, c, 40) == (
        "The full arm changed 50.0% of its parameters (bitwise; mean over 2 seeds); 3 of 4 decoder layers moved; "
        "layers 2 and 3 hold 70.0% of the decoder layers' squared update norm; mean effective rank of its update "
        "matrices: 0.80 of full rank; rank correlation across 4 layers of the full arm's relative update with the "
        "single-layer C(k) at the 40-token cap: Spearman 0.80.")
    one = [r for r in c if r["arm"] == "layer:0" or r["budget"] != 40]
    sentence = update_sentence(dict(update, truncated=["w"]), one, 40)
    assert "(a lower bound: truncated SVD for some matrices)" in sentence
    assert sentence.endswith("no rank correlation with C(k): fewer than two layers have a defined C at the "
                             "40-token cap.")
