"""Resumable training (rl.save_every): a train job SIGKILLed after a
checkpoint, rerun by Snakemake, ends bit-identical to an uninterrupted run;
a checkpoint killed while being written, or written by another run, is
never resumed from."""

import copy
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import SHARED_OUTPUTS, share_outputs, snakemake_in, study_workdir

from layerbench.runtime.io import atomic_write_json, read_csv
from layerbench.runtime.time_limit import job_end_time
from layerbench.stages.train.resume import MARKER, ResumeMismatch, StopBeforeLimit, latest_checkpoint

ARMS = ("full", "layer-1")
CLOCKS = ("step_time",)  # metrics.csv's wall-clock column: the one thing a resumed run may change


def _identity(**changes) -> dict:
    return {"arm": "layer:1", "seed": 1, "base_sha256": "b" * 64, "code_sha256": "c" * 64, **changes}


def _checkpoint(folder: Path, step: int, identity: dict | None) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if identity is not None:
        atomic_write_json(path / MARKER, {"step": step, "identity": identity})
    return path


def test_the_latest_marked_checkpoint_is_resumed_and_an_unmarked_one_removed(tmp_path):
    assert latest_checkpoint(tmp_path / "none", _identity()) is None
    marked = _checkpoint(tmp_path, 2, _identity())
    torn = _checkpoint(tmp_path, 4, None)  # killed while transformers wrote it
    assert latest_checkpoint(tmp_path, _identity()) == marked
    assert not torn.exists() and marked.exists()


def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path):
    _checkpoint(tmp_path, 2, _identity())
    with pytest.raises(ResumeMismatch, match=r"differs in: base_sha256, seed\).*delete the folder"):
        latest_checkpoint(tmp_path, _identity(seed=2, base_sha256="d" * 64))
    assert (tmp_path / "checkpoint-2").exists()  # refused, not removed: the user decides


def test_a_job_near_its_time_limit_stops_at_its_next_checkpoint_step():
    from transformers import TrainerControl, TrainerState

    now = [1000.0]
    stop = StopBeforeLimit(end_time=1700.0, margin=600, every=2, clock=lambda: now[0])
    state, control = TrainerState(max_steps=8), TrainerControl()
    stopped = []
    for step, clock in ((1, 1000.0), (2, 1050.0), (3, 1150.0), (4, 1160.0), (5, 1170.0)):
        now[0], state.global_step = clock, step
        stop.on_step_end(None, state, control)
        stopped.append(control.should_training_stop)
    # 650 s left at step 2: goes on; 540 s left at step 3, not a checkpoint step; step 4 is one
    assert stopped == [False, False, False, True, True] and stop.stopped_at == 4
    last = StopBeforeLimit(end_time=0.0, margin=600, every=2)
    control = TrainerControl()
    last.on_step_end(None, TrainerState(max_steps=8, global_step=8), control)
    assert not control.should_training_stop and last.stopped_at is None  # the last step publishes the run
    assert job_end_time({}) is None  # not a Slurm job: no limit


def _train_pid(work: Path, out: Path) -> int | None:
    """The train stage's own process (not Snakemake's shell, whose command
    line is one word) writing ``out``, which the rule names relative to ``work``."""
    names = {str(out).encode(), str(out.relative_to(work)).encode()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"stage" in words and b"train" in words and names & set(words):
                return int(entry.name)
    return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # trains two arms of the small study through Snakemake, twice (over the wide run's base model)
def test_a_killed_train_job_resumes_bit_identical_through_snakemake(study_runs, tmp_path):
    raw, works = study_runs
    raw = copy.deepcopy(raw)
    raw["rl"]["save_every"] = 2  # of 4 steps
    work = study_workdir(tmp_path / "study", raw)
    # the wide run's data, base model and training preflight (save_every is no part of them): only training runs here
    share_outputs(works["wide"] / "results" / "e2e", work / "results" / "e2e",
                  (*SHARED_OUTPUTS, "preflight_train.json", "train_checked.jsonl"))
    runs = work / "results" / "e2e" / "runs"
    targets = [f"results/e2e/runs/{arm}/seed1" for arm in ARMS]
    proc = snakemake_in(work, *targets, "--cores", "2", "--keep-going", wait=False)
    killed, deadline = set(), time.monotonic() + 1200
    while proc.poll() is None and len(killed) < len(ARMS) and time.monotonic() < deadline:
        for arm in set(ARMS) - killed:
            if (runs / arm / "seed1.resume" / "checkpoint-2" / MARKER).is_file():
                pid = _train_pid(work, runs / arm / "seed1")
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(arm)
        time.sleep(0.005)
    out, _ = proc.communicate(timeout=600)
    assert killed == set(ARMS), f"a train job finished before it could be killed: {out[-3000:]}"
    assert proc.returncode != 0
    for arm in ARMS:
        assert not (runs / arm / "seed1").exists() and list((runs / arm).glob(".seed1.*.tmp"))  # SIGKILL's litter
    # the layer arm was killed again while writing its next checkpoint: a torn copy, no marker
    torn = runs / "layer-1" / "seed1.resume" / "checkpoint-4"
    if not torn.exists():
        torn.mkdir()
        (torn / "model.safetensors").write_bytes(b"half a tensor")

    rerun = snakemake_in(work, *targets, "--cores", "2")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    reference = works["wide"] / "results" / "e2e" / "runs"
    for arm in ARMS:
        mine, theirs = runs / arm / "seed1", reference / arm / "seed1"
        log = (work / "results" / "e2e" / "logs" / "runs" / f"{arm}_seed1.log").read_text()
        assert "from checkpoint-2" in log, log[-2000:]
        assert json.loads((mine / "summary.json").read_text())["resumed_from_step"] == 2
        files = sorted(p.relative_to(theirs) for p in (theirs / "checkpoint").rglob("*") if p.is_file())
        assert files and all(_sha(mine / f) == _sha(theirs / f) for f in files), arm
        assert _sha(mine / "rollouts.csv") == _sha(theirs / "rollouts.csv"), arm
        strip = [{k: v for k, v in row.items() if k not in CLOCKS} for row in read_csv(mine / "metrics.csv")]
        assert strip == [{k: v for k, v in row.items() if k not in CLOCKS} for row in read_csv(theirs / "metrics.csv")]
        assert not (runs / arm / "seed1.resume").exists() and not list((runs / arm).glob(".seed1.*.tmp"))
