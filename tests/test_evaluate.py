"""lm-eval evaluation, for real, on a tiny model built in the session."""

import json

import pytest

from layerbench.paths import EvalFolder
from layerbench.runtime.io import read_csv
from layerbench.stages.evaluate import evaluate_model
from layerbench.stages.evaluate.backends import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    trim_generation,
)


def _decode_chars(ids):
    return "".join(chr(i) for i in ids)


@pytest.mark.parametrize(
    "generated, expected_ids, reason",
    [
        ([65, 66, 0, 0, 0], (65, 66, 0), FINISH_EOS),  # EOS then padding
        ([65, 10, 66, 0], (65, 10), FINISH_STOP),  # stop sequence "\n" before EOS
        ([65, 66, 67, 68], (65, 66, 67, 68), FINISH_LENGTH),  # ran out of budget
        ([65, 81, 58, 66], (65, 81, 58), FINISH_STOP),  # two-token stop sequence "Q:"
    ],
)
def test_trim_generation(generated, expected_ids, reason):
    gen = trim_generation(generated, ["\n", "Q:"], {0}, _decode_chars, budget=4)
    assert gen.token_ids == expected_ids and gen.finish_reason == reason
    assert gen.truncated == (reason == FINISH_LENGTH)


def test_budget_semantics():
    gen = trim_generation([65, 66, 67, 0], [], {0}, _decode_chars, budget=8)
    assert gen.at_budget(4).finish_reason == FINISH_EOS  # EOS is the 4th token: finished within 4
    cut = gen.at_budget(3)
    assert cut.finish_reason == FINISH_LENGTH and cut.token_ids == (65, 66, 67)


@pytest.fixture(scope="module")
def eval_study(small_base):
    from dataclasses import replace

    study = small_base["study"]
    suite = replace(study.eval.suites[0], data_files=str(small_base["data"] / "test.jsonl"))
    return replace(study.eval, suites=(suite,))


def test_derived_budgets_equal_real_regeneration(small_base, eval_study, tmp_path):
    budgets = (24, 40, 96)
    evaluate_model(small_base["model"], eval_study, budgets, 1, EvalFolder(tmp_path / "derived"), derive_budgets=True)
    evaluate_model(small_base["model"], eval_study, budgets, 1, EvalFolder(tmp_path / "real"), derive_budgets=False)
    derived = read_csv(tmp_path / "derived" / "per_sample.csv")
    real = read_csv(tmp_path / "real" / "per_sample.csv")
    key = lambda r: (int(r["budget"]), int(r["doc_id"]))  # noqa: E731
    assert sorted(derived, key=key) == sorted(real, key=key)
    scores = json.loads((tmp_path / "derived" / "scores.json").read_text())["tasks"]["layerbench_arith"]
    truncated = [scores[str(b)]["truncated_rate"] for b in budgets]
    assert truncated[0] > truncated[-1]  # the small budget really binds
    assert truncated[0] > 0


def test_sampled_budgets_derived_from_the_largest_equal_real_runs(small_base, eval_study, tmp_path):
    """Under seeded sampling the first b tokens of a sample do not depend on the
    cap: with lm-eval's HF sampling (one stream per run, drawn step by step for
    the whole batch) the answer cut at b is the run at b, token for token."""
    from dataclasses import replace

    sampled = replace(eval_study, temperature=0.6, top_p=0.95, top_k=20, seed=42)
    budgets = (24, 40, 96)
    evaluate_model(small_base["model"], sampled, budgets, 1, EvalFolder(tmp_path / "derived"), derive_budgets=True)
    evaluate_model(small_base["model"], sampled, budgets, 1, EvalFolder(tmp_path / "real"), derive_budgets=False)
    key = lambda r: (int(r["budget"]), int(r["doc_id"]), int(r["repeat"]))  # noqa: E731
    derived = sorted(read_csv(tmp_path / "derived" / "per_sample.csv"), key=key)
    real = sorted(read_csv(tmp_path / "real" / "per_sample.csv"), key=key)
    assert derived == real and len(real) == len(budgets) * len({r["doc_id"] for r in real}) > 0
    # really sampled: the answers differ from greedy decoding's
    evaluate_model(small_base["model"], eval_study, (96,), 1, EvalFolder(tmp_path / "greedy"))
    greedy = {r["doc_id"]: r["n_tokens"] for r in read_csv(tmp_path / "greedy" / "per_sample.csv")}
    assert any(greedy[r["doc_id"]] != r["n_tokens"] for r in real if r["budget"] == "96")


def test_recorded_finish_reasons_match_direct_generate(small_base, eval_study, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    evaluate_model(small_base["model"], eval_study, (40,), 1, EvalFolder(tmp_path / "e"))
    records = {r["doc_id"]: r for r in map(json.loads, (tmp_path / "e" / "generations_layerbench_arith.jsonl").open())}
    tests = [json.loads(line) for line in (small_base["data"] / "test.jsonl").open()]
    tok = AutoTokenizer.from_pretrained(small_base["model"])
    model = AutoModelForCausalLM.from_pretrained(small_base["model"])
    reasons = set()
    for doc_id, doc in enumerate(tests):
        ids = tok(doc["prompt"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=tok.eos_token_id)
        gen = out[0, ids.shape[1]:].tolist()
        text = tok.decode(gen, skip_special_tokens=True)
        if tok.eos_token_id in gen:
            expected = FINISH_EOS
        elif "\n" in text or "Q:" in text:
            expected = FINISH_STOP
        else:
            expected = FINISH_LENGTH
        assert records[doc_id]["finish_reason"] == expected, (doc_id, text)
        assert records[doc_id]["token_ids"] == gen[: len(records[doc_id]["token_ids"])]
        reasons.add(expected)
    assert {FINISH_EOS, FINISH_LENGTH} <= reasons  # both outcomes occur, so the check has teeth


def test_continued_answers_equal_a_direct_generation_at_the_probe_budget(small_base, eval_study, tmp_path):
    """eval.probe_budget: answers cut off at the largest budget are continued
    from their prefix; under greedy decoding (HF) each continued answer is
    the direct generation at the probe budget, sample for sample, and it
    costs only the cut-off answers' extra tokens."""
    from dataclasses import replace

    budgets, probe = (24, 40), 96
    probed = replace(eval_study, probe_budget=probe)
    evaluate_model(small_base["model"], probed, budgets, 1, EvalFolder(tmp_path / "probed"))
    evaluate_model(small_base["model"], eval_study, (probe,), 1, EvalFolder(tmp_path / "direct"))
    at_40 = {int(r["doc_id"]): r for r in read_csv(tmp_path / "probed" / "per_sample.csv") if r["budget"] == "40"}
    direct = {int(r["doc_id"]): r for r in read_csv(tmp_path / "direct" / "per_sample.csv")}
    continued = {int(r["doc_id"]): r for r in read_csv(tmp_path / "probed" / "continued.csv")}
    assert set(continued) == {d for d, r in at_40.items() if r["truncated"] == "1"} and continued
    for doc_id, row in continued.items():
        same = {k: direct[doc_id][k] for k in ("correct", "truncated", "n_tokens", "finish_reason")}
        assert {k: row[k] for k in same} == same, doc_id
        assert int(row["extra_tokens"]) >= int(row["n_tokens"]) - 40 > 0
    assert {r["finish_reason"] for r in continued.values()} - {FINISH_LENGTH}  # some do finish past 40
    # the continued answers' tokens, prefix included, are the direct run's (generations files)
    def token_ids(run):
        path = tmp_path / run / "generations_layerbench_arith.jsonl"
        return {r["doc_id"]: r["token_ids"] for r in map(json.loads, path.open())}

    gens, ours = token_ids("direct"), token_ids("probed")
    assert all(gens[d][:40] == ours[d] for d in continued)
    cost = json.loads((tmp_path / "probed" / "scores.json").read_text())["probe"]
    assert cost["continued"] == len(continued) and cost["answers"] == len(at_40)
    assert cost["direct_tokens"] == sum(int(r["n_tokens"]) for r in direct.values())
    assert cost["extra_tokens"] == sum(int(r["extra_tokens"]) for r in continued.values()) < cost["direct_tokens"]


def test_sampled_continuations_are_seeded_per_answer(small_base, eval_study, tmp_path):
    """Under sampling a continued answer is a sample given its prefix (not a
    direct run's: lm-eval's HF stream is shared by the batch), drawn from a
    stream of its own: a rerun continues every answer the same way."""
    from dataclasses import replace

    sampled = replace(eval_study, temperature=0.8, top_p=0.95, top_k=20, seed=7, probe_budget=96)
    for run in ("a", "b"):
        evaluate_model(small_base["model"], sampled, (24,), 1, EvalFolder(tmp_path / run))
    first, again = (read_csv(tmp_path / run / "continued.csv") for run in ("a", "b"))
    assert first == again and len(first) > 0
    assert {r["finish_reason"] for r in first} - {FINISH_LENGTH}  # continued answers do end
    at_24 = {r["doc_id"]: r for r in read_csv(tmp_path / "a" / "per_sample.csv")}
    assert all(at_24[r["doc_id"]]["truncated"] == "1" and int(r["n_tokens"]) > 24 for r in first)
