"""Paper studies rehearsed end to end on CPU, up to the report, before anyone
spends a GPU-day on them.

Each rehearsal is a paper config scaled down by ``config/paper/rehearsal/``
(size only: layers, problems, steps, token limits) and run through Snakemake,
downloads included, against an offline Hugging Face cache that
``tests/hub_mirror.py`` builds: a tiny model of each row's architecture under
the paper's model id, and fixture rows in each dataset's Hub schema
(``tests/hub_fixtures.py``). Stand-ins, and only these: the Hub (that cache,
read through the real ``snapshot_download``, ``load_dataset`` and lm-eval
task loading, with ``HF_HUB_OFFLINE=1``) and vLLM (Hugging Face generation
for rollouts and evaluation, ``rl.use_vllm: false`` / ``eval.backend: hf``).
What only a GPU run can show is listed in config/paper/README.md.
"""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REHEARSED, ROOT, rehearsal_configfiles
from hub_mirror import commit_of

from layerbench.runtime.io import read_csv


def _merged(study: str) -> dict:
    """The study config as Snakemake merges the rehearsal's config files."""
    from snakemake.utils import update_config

    raw = {}
    for path in rehearsal_configfiles(study):
        update_config(raw, yaml.safe_load((ROOT / path).read_text()))
    return raw


@pytest.mark.parametrize("study", REHEARSED)
def test_rehearsal_changes_size_only(study):
    """The rehearsal files touch sizes, hardware and the vLLM substitution;
    every setting that decides what is trained and how it is scored is the
    paper config's."""
    paper = yaml.safe_load((ROOT / f"config/paper/{study}.yaml").read_text())
    merged = _merged(study)
    for key in ("algorithm", "loss_type", "beta", "ref_dtype", "epochs", "temperature", "top_p", "top_k",
                "epsilon", "epsilon_high", "num_generations", "gradient_checkpointing", "bf16", "per_arm"):
        assert merged["rl"].get(key) == paper["rl"].get(key), key
    rl, paper_rl = merged["rl"], paper["rl"]
    updates = rl["prompts_per_step"] // rl.get("mini_batch_prompts", rl["prompts_per_step"])
    assert updates == paper_rl["prompts_per_step"] // paper_rl.get("mini_batch_prompts", paper_rl["prompts_per_step"])
    for key in ("suites", "num_fewshot", "temperature", "top_p", "top_k", "seed", "derive_budgets", "dtype"):
        assert merged["eval"][key] == paper["eval"][key], key
    assert merged["data"]["hub"] | {"sample": None, "test_size": None} == \
        paper["data"]["hub"] | {"sample": None, "test_size": None}
    assert len(merged["limits"]["eval_budgets"]) == len(paper["limits"]["eval_budgets"]) == 2
    assert (merged["rl"]["use_vllm"], merged["eval"]["backend"]) == (False, "hf")  # the one substitution


@pytest.mark.parametrize("study", REHEARSED)
def test_rehearsal_reaches_the_report(rehearsals, study):
    raw = _merged(study)
    results = rehearsals[study] / "results" / study
    source = json.loads((results / "base_model" / "layerbench_source.json").read_text())
    assert source["commit"] == commit_of(raw["model"]["id"])  # resolved offline through refs/main

    report = (rehearsals[study] / "reports" / study / "index.html").read_text()
    assert "<html" in report and study in report

    arms = {"base", "full", "layer:0", "layer:1"}
    scores = read_csv(results / "scores.csv")
    tasks = {s["task"] for s in raw["eval"]["suites"]}
    scored = {(r["arm"], r["task"], int(r["budget"])) for r in scores if r["accuracy"] != ""}
    for arm in arms:
        for budget in raw["limits"]["eval_budgets"]:
            for task in tasks:
                assert any(a == arm and b == budget and (t == task or t.startswith(task))
                           for a, t, b in scored), (arm, task, budget)

    for arm_dir in (results / "eval").glob("*/seed1"):
        per_sample = read_csv(arm_dir / "per_sample.csv")
        assert per_sample and all(r["finish_reason"] in {"eos", "stop", "length"} for r in per_sample), arm_dir
        assert all((r["finish_reason"] == "length") == (r["truncated"] == "1") for r in per_sample), arm_dir
        amc = [r for r in per_sample if r["task"] == "layerbench_amc" and r["budget"] == "24"]
        assert {r["repeat"] for r in amc} == {str(i) for i in range(32)}  # AMC avg@32

    pairing = read_csv(results / "pairing.csv")
    assert {r["arm"] for r in pairing} == arms - {"base"}
    assert len({r["step0_rollout_sha256"] for r in pairing}) == 1  # every arm saw the same first rollouts

    # gradient checkpointing is on (the paper config's) and the single-layer arm still trains its layer
    assert yaml.safe_load((results / "study.yaml").read_text())["rl"]["gradient_checkpointing"] is True
    audit = read_csv(results / "param_audit.csv")
    for row in audit:
        if row["arm"] == "layer:1":
            assert row["changed"] == ("1" if row["part"] == "layers.1" else "0"), row
    assert any(r["arm"] == "layer:1" and r["changed"] == "1" for r in audit)


def test_gpu_check_figures_read_a_rehearsal(rehearsals):
    """scripts/gpu_check.py (the figures of scripts/gpu-check.sh) on the CPU
    rehearsal: every arm's rollout and eval throughput, and no spread between
    a run and itself (the GPU run compares two runs)."""
    import subprocess
    import sys

    results = rehearsals[REHEARSED[0]] / "results" / REHEARSED[0]
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), str(results), str(results)],
                         capture_output=True, text=True, check=True).stdout
    figures = json.loads(out)
    assert set(figures["arms"]) == {"full", "layer-0", "layer-1"}
    assert all(a["device"] == "cpu" and a["peak_gpu_mb"] is None and a["rollout_tokens_per_s"] > 0
               for a in figures["arms"].values())
    assert set(figures["eval"]) == {"base", "full", "layer-0", "layer-1"}
    assert all(e["tokens"] > 0 and e["tokens_per_s"] > 0 for e in figures["eval"].values())
    assert figures["spread"]["scores_equal"] and figures["spread"]["checkpoints_bitwise_equal"]
