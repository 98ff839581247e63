"""The study on a real Slurm cluster, through the SLURM executor plugin and
the user-facing profile (``snakemake --profile workflow/profiles/slurm``).

The cluster (tests/slurm_cluster.py) is Debian's Slurm 22.05 on this machine:
controller, one compute node with this machine's CPUs and memory, accounting
(slurmdbd on MariaDB, which the plugin needs for ``sacct``), all started as
this session's own processes under a temp folder. README.md, "Running on a
cluster", lists what this covers and what it does not.

One study, the session's "wide" e2e study (same config, same threads), runs
through Slurm in three invocations, so that the faults cost little more than
the study itself:

1. up to one training job, with ``train:mem_mb`` below what training needs:
   data, model and preflight run as Slurm jobs, the training job is killed by
   Slurm for its memory and Snakemake reports it with Slurm's reason;
2. the whole study: one training job is cancelled with ``scancel`` while it
   runs; Snakemake reports it;
3. the same command again: it completes the study, nothing half-written is
   left, and ``scores.csv`` is byte for byte the local "wide" run's;
4. one train job again, near its time limit (``rl.save_before_limit``): it
   saves a checkpoint and exits, Snakemake resubmits it, the new job resumes,
   and ``scores.csv`` is still byte for byte the local run's.

Then every compute job is checked against the accounting (``sacct``): each
ran as a Slurm job, and only the localrule ran in Snakemake's own process.
A second test checks the GPU requests of the paper studies against the
controller with ``sbatch --test-only``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import (
    ROOT,
    e2e_raw,
    job_stats,
    snakemake_in,
    study_workdir,
    weight_hashes,
)
from slurm_cluster import GPU_NODE, SlurmCluster

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
PAPER = ROOT / "config" / "paper" / "qwen3-1.7b-grpo-scripts.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm") / "cluster") as running:
        yield running
    assert not running.leftover_processes(), running.leftover_processes()


def profile_args(cluster: SlurmCluster) -> list[str]:
    """The profile, plus what this one-node test cluster needs on the command
    line (the profile itself is the user's): the checks job's 96 GB (paper
    models) does not fit this machine, and the plugin's first status check
    comes after 2 s instead of 40 (jobs here take seconds)."""
    args = ["--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "2"]
    if cluster.mem_mb < 16000:  # the profile's default for every other job
        args += ["--default-resources", f"mem_mb={cluster.mem_mb}", "runtime=60"]
    return args


def slurm_jobs(text: str) -> dict[str, str]:
    """{Slurm job id: rule} of every job Snakemake submitted, from its output."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+?)/", text)
    return dict(found)


def local_rules(text: str) -> list[str]:
    """The rules Snakemake ran in its own process (``localrule X:``), not
    counting the logs of failed jobs it prints (``show-failed-logs``: a Slurm
    log holds the job's own Snakemake, which runs its rule as a localrule)."""
    own = re.sub(r"^Logfile \S+:\n(=+)\n.*?^\1$", "", text, flags=re.M | re.S)
    return re.findall(r"^localrule (\w+):", own, re.M)


def wait_for_running(cluster: SlurmCluster, rule: str, proc: subprocess.Popen, timeout: float = 900):
    """(job id, comment) of the first job of ``rule`` Slurm reports RUNNING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"Snakemake ended (exit {proc.returncode}) before a {rule} job ran"
        out = cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i|%k", check=False).stdout
        for line in out.splitlines():
            job_id, comment = line.split("|", 1)
            if comment.startswith(f"rule_{rule}_"):
                return job_id, comment
        time.sleep(0.5)
    raise AssertionError(f"no {rule} job ran within {timeout}s")


def test_study_on_slurm_equals_local_run_through_faults(cluster, study_runs, tmp_path):
    raw = e2e_raw()  # the "wide" run's study, as it ran locally with --cores 2
    work = study_workdir(tmp_path / "study", raw)
    results = work / "results" / "e2e"
    planned = job_stats(snakemake_in(work, "-n", "--cores", "2").stdout)
    started = time.monotonic()
    env, args = cluster.env, profile_args(cluster)

    # 1. a training job over its memory: Slurm kills it, Snakemake says why
    over = snakemake_in(work, *args, "--set-resources", "checks:mem_mb=16000", "train:mem_mb=400", "--retries", "0",
                        "results/e2e/runs/full/seed1", env=env)
    text1 = over.stdout + over.stderr
    assert over.returncode != 0, text1[-4000:]
    killed = [j for j, rule in slurm_jobs(text1).items() if rule == "train"]
    assert len(killed) == 1, text1[-4000:]
    message = re.search(rf"SLURM-job '{killed[0]}' failed, SLURM status is: '(\w+)'.*?\n(.*?)\n\s*external_jobid",
                        text1, re.S)
    assert message and message.group(1) in ("FAILED", "OUT_OF_MEMORY"), text1[-4000:]
    slurm_log = re.search(r"log: .*?(\S+/slurm_logs/rule_train/\S+\.log)", message.group(2)).group(1)
    # Slurm's reason, in the job's Slurm log that the error names (and the plugin keeps). The limit is the
    # job's; whichever of its steps Slurm's accounting catches over it is named: the rule's (.0, the
    # training process) or the batch step (.batch, the plugin's inner Snakemake around it). Both seen here.
    assert re.search(rf"StepId={killed[0]}\.(0|batch) exceeded memory limit", Path(slurm_log).read_text())
    assert not (results / "runs" / "full" / "seed1").exists()
    assert (results / "base_model").is_dir()  # the jobs before it completed and stay

    # 2. the whole study; one training job cancelled with scancel while it runs
    proc = snakemake_in(work, *args, "--set-resources", "checks:mem_mb=16000", "--retries", "0", env=env, wait=False)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)  # never a full pipe
    reader.start()
    job_id, comment = wait_for_running(cluster, "train", proc)
    arm = comment.split("_runs_")[1].rsplit("_", 1)[0]
    deadline = time.monotonic() + 300  # until training writes its run folder (atomic_directory's scratch copy)
    while not list((results / "runs" / arm).glob(".seed1.*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    writing = list((results / "runs" / arm).glob(".seed1.*"))
    cluster.run("scancel", job_id)
    try:
        proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"Snakemake still waited for cancelled job {job_id} 900 s later:\n{''.join(output)[-4000:]}")
    reader.join()
    text2 = "".join(output)
    assert writing, f"job {job_id} was cancelled before training wrote anything"
    assert proc.returncode != 0, text2[-4000:]
    assert re.search(rf"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED", text2), text2[-4000:]
    assert not (results / "runs" / arm / "seed1").exists()

    # 3. the same command again completes the study
    rerun = snakemake_in(work, *args, "--set-resources", "checks:mem_mb=16000", env=env)
    text3 = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, text3[-4000:]
    wall = time.monotonic() - started
    half_written = sorted(str(p.relative_to(work)) for p in work.rglob("*") if re.search(r"\.tmp$|\.seed\d+\.", p.name))
    assert not half_written, half_written

    wide = study_runs[1]["wide"] / "results" / "e2e"
    assert (results / "scores.csv").read_bytes() == (wide / "scores.csv").read_bytes()
    assert weight_hashes(results) == weight_hashes(wide)
    assert (work / "reports" / "e2e" / "index.html").is_file()

    # every compute job ran as a Slurm job (accounting), the localrule in Snakemake's process
    submitted = {**slurm_jobs(text1), **slurm_jobs(text2), **slurm_jobs(text3)}
    accounting = {j["JobID"]: j for j in cluster.sacct("JobID", "State", "Comment", "NodeList", "Elapsed")}
    assert set(submitted) <= set(accounting), (submitted, accounting)
    for job_id, rule in submitted.items():
        assert accounting[job_id]["Comment"].startswith(f"rule_{rule}"), accounting[job_id]
        assert accounting[job_id]["NodeList"] == cluster.host
    completed = Counter(rule for j, rule in submitted.items() if accounting[j]["State"] == "COMPLETED")
    assert completed == Counter({rule: n for rule, n in planned.items() if rule != "all"}), (completed, planned)
    assert local_rules(text1 + text2 + text3) == ["all"], local_rules(text1 + text2 + text3)
    states = sorted(accounting[j]["State"] for j in submitted if accounting[j]["State"] != "COMPLETED")
    print(f"\nSLURM: {len(submitted)} Slurm jobs ({sum(completed.values())} completed; {states}), "
          f"{wall:.0f} s wall for the three invocations")

    # 4. a train job near its time limit: it checkpoints, exits 75, Snakemake resubmits it, the new job
    # resumes. A save_before_limit of all but 10 s of the job's 2-minute limit stands in for a run
    # longer than the limit: every job of it stops at its first checkpoint step (rl.save_every).
    raw = yaml.safe_load((work / "study.yaml").read_text())
    raw["rl"].update(save_every=2, save_before_limit=110)  # of 4 steps: two jobs
    raw.setdefault("resources", {}).setdefault("train", {})["runtime"] = 2  # minutes
    (work / "study.yaml").write_text(yaml.safe_dump(raw))
    shutil.rmtree(results / "runs" / "layer-1" / "seed1")
    limited = snakemake_in(work, *args, "--set-resources", "checks:mem_mb=16000", "--retries", "1",
                           "results/e2e/runs/layer-1/seed1", "all", env=env)  # a missing run alone reruns nothing
    text4 = limited.stdout + limited.stderr
    assert limited.returncode == 0, text4[-6000:]
    trains = [j for j, rule in slurm_jobs(text4).items() if rule == "train"]
    assert len(trains) == 2, text4[-6000:]  # the one that stopped, and the one Snakemake resubmitted
    failed = [j for j in trains if re.search(rf"SLURM-job '{j}' failed", text4)]
    assert failed == trains[:1], text4[-6000:]  # the first stopped (exit 75), the resubmitted one completed
    log = (results / "logs" / "runs" / "layer-1_seed1.log").read_text()  # the resubmitted job's
    assert "[resume] train layer:1 seed 1: from checkpoint-2" in log, log[-3000:]
    summary = json.loads((results / "runs" / "layer-1" / "seed1" / "summary.json").read_text())
    assert summary["resumed_from_step"] == 2 and summary["time_limit_stops"] == [2]
    assert (results / "scores.csv").read_bytes() == (wide / "scores.csv").read_bytes()
    assert weight_hashes(results) == weight_hashes(wide)
    assert not (results / "runs" / "layer-1" / "seed1.resume").exists()


# --- GPU requests ---------------------------------------------------------------

def sbatch_calls(workdir: Path, configfile: Path, partition: str) -> list[dict]:
    """Every job of a study planned with the SLURM profile: its rule, whether
    Snakemake runs it locally, and (if not) the sbatch call the plugin builds
    for it (tests/slurm_cluster.py, ``sbatch-calls``)."""
    out = workdir / "sbatch_calls.json"
    cmd = [sys.executable, str(Path(__file__).with_name("slurm_cluster.py")), "sbatch-calls", str(out), partition,
           "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--profile", str(PROFILE), "-n",
           # a dry run caps every job's threads at --cores (1 unless given); a run on the
           # cluster does not cap them
           "--cores", "1024", "--configfile", str(configfile)]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def minutes(limit: str) -> int:
    """Slurm's [D-]HH:MM:SS as minutes."""
    days, _, clock = limit.rpartition("-")
    h, m, sec = (int(x) for x in clock.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (sec > 0)


def shell(cluster: SlurmCluster, command: str) -> subprocess.CompletedProcess:
    """A command line as the plugin runs it (shell=True), against the test cluster."""
    return subprocess.run(command, shell=True, env={**os.environ, **cluster.env}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow  # starts a one-node Slurm cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd)
@pytest.mark.parametrize("eval_gpus,train_gpus", [(1, 1), (2, 4)])
def test_gpu_jobs_ask_slurm_for_the_studys_gpus(cluster, tmp_path, eval_gpus, train_gpus):
    """A paper study with ``resources.gpu`` (evaluate) and
    ``resources.gpus_per_arm`` (train), planned through the profile: the
    sbatch lines the plugin builds for its train and evaluate jobs ask for
    the study's GPUs, memory, time and CPUs; the controller places them on
    gpu-node (--test-only), and runs them there (a second slurmd on this
    machine, 8 stand-in GPU devices): Slurm allocates the GPUs and sets
    CUDA_VISIBLE_DEVICES, which layerbench's GPU slot takes as it is."""
    raw = yaml.safe_load(PAPER.read_text())
    raw["resources"].update(gpu=eval_gpus, gpus_per_arm=train_gpus)
    work = study_workdir(tmp_path / "study", raw)
    jobs = sbatch_calls(work, work / "study.yaml", GPU_NODE["partition"])
    assert Counter(j["rule"] for j in jobs)["train"] == 29 and Counter(j["rule"] for j in jobs)["evaluate"] == 30
    # the network: downloads and the preflight run where Snakemake runs, nothing else does
    assert sorted({j["rule"] for j in jobs if j["local"]}) == [
        "all", "download_benchmark", "download_data", "download_eval_tasks", "download_model", "preflight_eval",
        "preflight_train"]
    calls: dict[str, set[str]] = {}
    for job in jobs:
        if not job["local"]:
            calls.setdefault(job["rule"], set()).add(job["sbatch"])
    cpu_rules = [c for rule, cs in calls.items() if rule not in ("train", "evaluate") for c in cs]
    assert cpu_rules and not [c for c in cpu_rules if "--gpus" in c or "--gres" in c]
    for rule, gpus in (("train", train_gpus), ("evaluate", eval_gpus)):
        (call,) = calls[rule]  # every arm's job asks for the same
        stage = raw["resources"][rule]
        for part in (f"--gpus={gpus}", f"--mem {stage['mem_mb']}", f"-t {stage['runtime']}",
                     f"--cpus-per-task={stage['cpus']}", f"-p {GPU_NODE['partition']}"):
            assert f" {part}" in f"{call} ", (part, call)

        placed = shell(cluster, f"{call} --test-only --wrap=true")
        # "sbatch: Job N to start at T using C processors on nodes gpu-node in partition gpu"
        assert placed.returncode == 0, (call, placed.stderr)
        assert f"on nodes {GPU_NODE['name']} in partition {GPU_NODE['partition']}" in placed.stderr, placed.stderr

        command = f"{sys.executable} -m layerbench.runtime.gpuslots --gpus {gpus} -- printenv CUDA_VISIBLE_DEVICES"
        submitted = shell(cluster, f"{call} --wrap='{command}'")
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip().split(";")[0]
        ran = cluster.wait_for_job(job_id, "State", "AllocTRES", "NodeList")
        assert ran["State"] == "COMPLETED" and ran["NodeList"] == GPU_NODE["name"], ran
        tres = dict(kv.split("=", 1) for kv in ran["AllocTRES"].split(","))
        assert (tres["gres/gpu"], tres["cpu"], tres["mem"]) == (str(gpus), str(stage["cpus"]), f"{stage['mem_mb']}M")
        limit = re.search(r"\bTimeLimit=(\S+)", cluster.run("scontrol", "show", "job", "-o", job_id).stdout).group(1)
        assert minutes(limit) == stage["runtime"], limit
        output = (work / f"{job_id}.log").read_text().split()
        assert output[-1] == ",".join(str(i) for i in range(gpus)), output  # CUDA_VISIBLE_DEVICES in the job

    # more GPUs than any node has: the controller refuses, it checks the count
    too_many = shell(cluster, next(iter(calls["train"])).replace(f"--gpus={train_gpus}",
                                                                 f"--gpus={GPU_NODE['gpus'] + 1}")
                     + " --test-only --wrap=true")
    assert too_many.returncode != 0 and "Requested node configuration is not available" in too_many.stderr
