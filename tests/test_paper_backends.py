"""The GPU-study code paths that can run on CPU, for real, with the tiny model:

* Hub data and model preparation, and the benchmark exports, against
  in-memory ``datasets`` tables and stand-in Hub clients (no network here);
* the math-verify reward and the AMC/OlympiadBench scoring hook;
* GPU slots (flock-based CUDA_VISIBLE_DEVICES assignment) with a fake pool;
* lm-eval on layerbench's local AMC task: 3 sampled repeats, a budget sweep
  that generates every budget for real, and a task with two filters.

vLLM itself runs for real on CPU: tests/test_vllm.py (evaluation) and
tests/test_rehearsal.py (TRL's colocated engine in every paper config).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT, small_study_raw

from layerbench.config import HubData, study_from_dict

# --- Hub data, model and benchmark exports ----------------------------------------


def _numina_like(n: int = 40):
    from datasets import Dataset

    rows = []
    for i in range(n):
        solution = f"We add. So $x = {i} + 1$ and the answer is $\\boxed{{{i + 1}}}$."
        if i % 10 == 3:
            solution = "A proof with no final answer."
        rows.append({"problem": f"Problem {i}: what is {i}+1?", "solution": solution})
    return Dataset.from_list(rows)


def test_draw_sample_is_seeded_and_keeps_source_indices(tmp_path):
    from layerbench.stages.download import draw_sample

    data = _numina_like()
    hub = HubData.defaults(id="AI-MO/NuminaMath-CoT", split="train", sample=20, test_size=5, seed=42,
                           question_field="problem", answer_field="solution", answer_extract="boxed")
    info = draw_sample(hub, tmp_path / "a.jsonl", dataset=data)
    draw_sample(hub, tmp_path / "b.jsonl", dataset=data)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == 25 and info["drawn"] == 25 and info["rows_in_split"] == 40
    shuffled = data.shuffle(seed=42)
    assert [r["question"] for r in rows] == shuffled["problem"][:25]
    for r in rows:  # indices point back into the original split
        assert data[r["index"]]["problem"] == r["question"]
        assert r["answer"] == (None if r["index"] % 10 == 3 else str(r["index"] + 1))
    assert info["without_answer"] == sum(r["answer"] is None for r in rows)
    other = draw_sample(replace(hub, seed=7), tmp_path / "c.jsonl", dataset=data)
    assert (tmp_path / "c.jsonl").read_text() != (tmp_path / "a.jsonl").read_text() and other["drawn"] == 25
    with pytest.raises(ValueError, match="has 40 rows"):
        draw_sample(replace(hub, sample=39), tmp_path / "d.jsonl", dataset=data)


def test_hub_splits_use_the_prompt_suffix_and_drop_rows_without_answer(tmp_path):
    from layerbench.stages.data import write_hub_splits
    from layerbench.stages.download import draw_sample

    hub = HubData.defaults(id="x", split="train", sample=20, test_size=5, seed=42, question_field="problem",
                           answer_field="solution", answer_extract="boxed",
                           prompt_suffix=" Let's think step by step and output the final answer within \\boxed{}.")
    info = draw_sample(hub, tmp_path / "hub_sample.jsonl", dataset=_numina_like())
    summary = write_hub_splits(hub, tmp_path / "hub_sample.jsonl", tmp_path / "train.jsonl", tmp_path / "test.jsonl")
    train = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert summary["train"] + summary["test"] + sum(summary["dropped_without_answer"].values()) == 25
    assert sum(summary["dropped_without_answer"].values()) == info["without_answer"]
    assert not {r["index"] for r in train} & {r["index"] for r in test}
    for r in train + test:
        assert r["prompt"] == r["question"] + hub.prompt_suffix and r["answer"]


def test_dr_grpo_data_uses_every_row_when_no_sample_is_set(tmp_path):
    from datasets import Dataset

    from layerbench.stages.data import write_hub_splits
    from layerbench.stages.download import draw_sample

    data = Dataset.from_list([{"problem": f"p{i}", "answer": str(i)} for i in range(12)])
    hub = HubData.defaults(id="hiyouga/math12k", split="train", seed=42, question_field="problem",
                           answer_field="answer", answer_extract="none", prompt_suffix="!")
    draw_sample(hub, tmp_path / "s.jsonl", dataset=data)
    summary = write_hub_splits(hub, tmp_path / "s.jsonl", tmp_path / "train.jsonl", tmp_path / "test.jsonl")
    assert (summary["train"], summary["test"]) == (12, 0)


DOWNLOAD_MODEL = """
import json, sys
from dataclasses import replace
from pathlib import Path
from layerbench.config import ModelConfig
from layerbench.stages.download import download_model
model = ModelConfig.defaults(source="hub", id="Qwen/Qwen3-1.7B-Base", revision="main", num_layers=28,
                             context_length=32768)
out = Path(sys.argv[1])
print(json.dumps(download_model(model, out / "base_model")))
try:
    download_model(replace(model, num_layers=36), out / "other")
except ValueError as exc:
    print(exc)
"""


def test_download_model_pins_the_commit_and_checks_the_declared_shape(tmp_path):
    """Through the real snapshot_download, offline: the revision resolves to its
    commit through the cache's refs/main (tests/hub_mirror.py), exactly the
    files of that commit land in base_model/, and a declared shape that
    config.json contradicts is refused with nothing left behind."""
    from hub_mirror import commit_of, write_model

    files = tmp_path / "files"
    files.mkdir()
    (files / "config.json").write_text(json.dumps({"num_hidden_layers": 28, "max_position_embeddings": 32768}))
    (files / "notes.md").write_text("not a model file: allow_patterns leaves it out")
    home = tmp_path / "hf-home"
    write_model(home, "Qwen/Qwen3-1.7B-Base", files)
    out = subprocess.run([sys.executable, "-c", DOWNLOAD_MODEL, str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}, check=True).stdout
    source = json.loads(out.splitlines()[0])
    assert source == {"id": "Qwen/Qwen3-1.7B-Base", "revision": "main", "commit": commit_of("Qwen/Qwen3-1.7B-Base"),
                      "num_layers": 28, "context_length": 32768}
    assert json.loads((tmp_path / "base_model" / "layerbench_source.json").read_text()) == source
    assert sorted(p.name for p in (tmp_path / "base_model").iterdir()) == ["config.json", "layerbench_source.json"]
    assert "model.num_layers=36 but config.json has 28" in out
    assert not (tmp_path / "other").exists()


def test_benchmark_exports_write_problem_answer_jsonl_with_provenance(tmp_path):
    from datasets import Dataset

    from layerbench.stages.download import export_benchmark

    amc = Dataset.from_list([{"id": 1, "problem": "AMC p", "answer": 142.0, "url": "u"}])
    info = export_benchmark("amc", tmp_path / "amc.jsonl", dataset=amc)
    assert json.loads((tmp_path / "amc.jsonl").read_text()) == {"id": 0, "problem": "AMC p", "answer": "142"}
    assert info["rows"] == 1 and len(info["sha256"]) == 64
    oly = Dataset.from_list([{"question": "Oly q", "final_answer": ["$\\frac{1}{2}$"]},
                             {"question": "no answer", "final_answer": []}])
    info = export_benchmark("olympiadbench", tmp_path / "olympiadbench.jsonl", dataset=oly)
    assert json.loads((tmp_path / "olympiadbench.jsonl").read_text())["answer"] == "\\frac{1}{2}"
    assert info["skipped_without_answer"] == 1 and info["config_name"] == "OE_TO_maths_en_COMP"


# --- math-verify -------------------------------------------------------------------


def test_math_reward_needs_an_anchored_final_answer():
    from layerbench.mathverify import is_correct_math, process_results
    from layerbench.stages.train import RecordingReward, verifier

    assert is_correct_math("... so $x=\\frac12$, and \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}")
    assert is_correct_math("\\boxed{0.5}", "\\frac{1}{2}")
    assert is_correct_math("The final answer is $142$.", "142")
    assert not is_correct_math("\\boxed{141}", "142")
    assert not is_correct_math("We get 142 = 100 + 42, then we continue and", "142")  # cut off: no anchor
    assert process_results({"answer": "2"}, [["\\boxed{2}", "\\boxed{3}", "no", "\\boxed{2}"]]) == {"acc": 0.5}
    assert process_results({"answer": "2"}, ["\\boxed{2}"]) == {"acc": 1.0}
    assert verifier("math_verify") is is_correct_math

    class Tok:
        def __call__(self, text):
            return {"input_ids": [len(text)]}

    reward = RecordingReward(Tok(), [0], verifier("math_verify"))
    out = reward(["p", "p"], ["\\boxed{4}", "so 4"], [[1, 0], [1, 2]], ["4", "4"])
    assert out == [1.0, 0.0] and [r["truncated"] for r in reward.rows] == [0, 1]


# --- GPU slots ---------------------------------------------------------------------


def test_gpu_claims_are_exclusive_and_released(tmp_path):
    from layerbench.runtime.gpuslots import SlotError, claim

    pool = ["0", "1", "2"]
    a, fds_a = claim(1, pool, tmp_path)
    b, fds_b = claim(1, pool, tmp_path)
    assert a == ["0"] and b == ["1"]
    with pytest.raises(SlotError, match="no 2 free GPU"):
        claim(2, pool, tmp_path, timeout=0.2, poll=0.05)
    for fd in fds_a:
        os.close(fd)
    c, _ = claim(2, pool, tmp_path, timeout=1)
    assert sorted(c) == ["0", "2"]
    # a scheduler allocation (the pool is exactly the job's GPUs) is used as it is, without locks
    assert claim(1, ["3"], tmp_path) == (["3"], [])
    with pytest.raises(SlotError, match="only 0 are visible"):
        claim(1, [], tmp_path)


def test_gpu_wrapper_gives_concurrent_jobs_different_gpus(tmp_path):
    env = {**os.environ, "LAYERBENCH_GPUS": "4,5", "LAYERBENCH_GPU_LOCK_DIR": str(tmp_path)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    job = [sys.executable, "-m", "layerbench.runtime.gpuslots", "--gpus", "1", "--",
           sys.executable, "-c", "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(2)"]
    first = subprocess.Popen(job, env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the first job holds its GPU while it runs
    second = subprocess.run(job, env=env, capture_output=True, text=True, timeout=60)
    assert first.wait(timeout=60) == 0 and second.returncode == 0, second.stderr
    assert {first.stdout.read().strip(), second.stdout.strip()} == {"4", "5"}
    slurm = subprocess.run(job, env={**env, "LAYERBENCH_GPUS": "", "CUDA_VISIBLE_DEVICES": "7"},
                           capture_output=True, text=True, timeout=60)
    assert slurm.stdout.strip() == "7"
    none = subprocess.run(job, env={**env, "LAYERBENCH_GPUS": "", "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=60)
    assert none.returncode == 4 and "only 0 are visible" in none.stderr


# --- lm-eval on the CPU: local math tasks, repeats, filters ---------------------------


def _per_sample(out: Path) -> list[dict]:
    with open(out / "per_sample.csv") as fh:
        return list(csv.DictReader(fh))


def test_amc_task_scores_every_sampled_repeat_and_runs_every_budget(small_base, tmp_path):
    from layerbench.paths import EvalFolder
    from layerbench.stages.evaluate import evaluate_model

    data = tmp_path / "amc.jsonl"
    data.write_text("".join(json.dumps({"id": i, "problem": f"Q: {i}+1=? A:", "answer": str(i + 1)}) + "\n"
                            for i in range(3)))
    raw = small_study_raw()
    raw["eval"] = {"suites": [{"task": "layerbench_amc", "include_path": str(ROOT / "benchmarks" / "amc"),
                               "data_files": str(data), "repeats": 3}],
                   "batch_size": 9, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "seed": 42,
                   "derive_budgets": False}  # the option that generates every budget for real
    study = study_from_dict(raw)
    assert study.eval.derive_budgets is False
    scores = evaluate_model(small_base["model"], study.eval, (8, 16), 1, EvalFolder(tmp_path / "out"))
    rows = _per_sample(tmp_path / "out")
    assert len(rows) == 3 * 3 * 2  # docs x repeats x budgets, each budget generated
    assert {(r["doc_id"], r["repeat"]) for r in rows} == {(str(d), str(k)) for d in range(3) for k in range(3)}
    assert all(int(r["n_tokens"]) <= int(r["budget"]) for r in rows)
    saved = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert saved["derived_budgets"] is False and saved["sampling_seed"] == 42
    assert scores["layerbench_amc"]["8"]["n"] == 9
    gens = [json.loads(x) for x in (tmp_path / "out" / "generations_layerbench_amc.jsonl").read_text().splitlines()]
    assert sorted({g["run_budget"] for g in gens}) == [8, 16]


def test_a_named_filter_is_scored_and_other_filters_do_not_trip_the_check(small_base, tmp_path):
    import yaml

    from layerbench.paths import EvalFolder
    from layerbench.stages.evaluate import evaluate_model

    cfg = yaml.safe_load((ROOT / "benchmarks" / "arith" / "arith.yaml").read_text())
    cfg["filter_list"].append({"name": "last-number", "filter": [
        {"function": "regex", "regex_pattern": "(-?[0-9]+)", "group_select": -1}, {"function": "take_first"}]})
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "arith.yaml").write_text(yaml.safe_dump(cfg))
    test = small_base["data"] / "test.jsonl"
    results = {}
    for name in (None, "last-number"):
        suite = {"task": "layerbench_arith", "include_path": str(tasks), "data_files": str(test)}
        if name:
            suite["filter"] = name
        raw = small_study_raw()
        raw["eval"].update(suites=[suite], limit=20)
        study = study_from_dict(raw)
        out = tmp_path / f"out-{name}"
        results[name] = evaluate_model(small_base["model"], study.eval, (96,), 1, EvalFolder(out))["layerbench_arith"]["96"]
        samples = [json.loads(x) for x in (out / "samples_layerbench_arith.jsonl").read_text().splitlines()]
        assert {s["filter"] for s in samples} == {"strict-match", "last-number"}
    # the last number of a worked answer is its final answer more often than not, and never less often
    assert results["last-number"]["accuracy"] >= results[None]["accuracy"]
