"""``layerbench truncation-audit`` on a samples file made by stock lm-eval (hf backend)."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

BUDGET = 40


@pytest.fixture(scope="module")
def stock_samples(small_base, tmp_path_factory):
    """lm-eval's own hf backend, its own samples file: no layerbench code involved."""
    import lm_eval

    from layerbench.lmeval import task_manager, task_specs

    study = small_base["study"]
    suite = replace(study.eval.suites[0], data_files=str(small_base["data"] / "test.jsonl"))
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={small_base['model']},device={device}",
                                     tasks=task_specs((suite,)), task_manager=task_manager((suite,)),
                                     log_samples=True,
                                     gen_kwargs={"max_gen_toks": BUDGET}, batch_size=40, bootstrap_iters=0)
    out = tmp_path_factory.mktemp("stock") / "samples_layerbench_arith.jsonl"
    with open(out, "w") as fh:
        for sample in result["samples"]["layerbench_arith"]:
            fh.write(json.dumps(sample, default=str) + "\n")
    return out


def test_audit_flags_exactly_the_answers_that_hit_the_budget(small_base, stock_samples, tmp_path):
    from layerbench.paths import EvalFolder
    from layerbench.stages.evaluate import evaluate_model

    study = small_base["study"]
    suite = replace(study.eval.suites[0], data_files=str(small_base["data"] / "test.jsonl"))
    evaluate_model(small_base["model"], replace(study.eval, suites=(suite,)), (BUDGET,), 1, EvalFolder(tmp_path / "ours"))
    truth = {r["doc_id"]: r["finish_reason"] == "length"
             for r in map(json.loads, (tmp_path / "ours" / "generations_layerbench_arith.jsonl").open())}
    run = subprocess.run([sys.executable, "-m", "layerbench", "truncation-audit", str(stock_samples), "--tokenizer",
                          str(small_base["model"]), "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    audit = json.loads(run.stdout)
    flagged = {r["doc_id"] for r in audit["samples"] if r["status"] == "truncated"}
    assert flagged == {d for d, hit in truth.items() if hit}
    assert flagged, "the budget must bind for some answers, or the test proves nothing"
    assert audit["summary"]["budget"] == [BUDGET]  # read from the samples' own generation arguments
    for r in audit["samples"]:
        if r["status"] == "ambiguous":
            assert not truth[r["doc_id"]] or r["n_tokens"] < BUDGET


def test_audit_prints_a_table_and_needs_a_tokenizer(stock_samples, small_base):
    run = subprocess.run([sys.executable, "-m", "layerbench", "truncation-audit", str(stock_samples), "--tokenizer",
                          str(small_base["model"])], capture_output=True, text=True)
    assert run.returncode == 0 and "hit the budget" in run.stdout and "accuracy, finished" in run.stdout
    missing = subprocess.run([sys.executable, "-m", "layerbench", "truncation-audit", str(stock_samples)],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "--tokenizer is required" in missing.stderr
