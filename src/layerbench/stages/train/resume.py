"""Resumable training: a train job killed at hour 5 of 6 resumes from its last
checkpoint instead of step 0.

Every ``rl.save_every`` optimizer steps the trainer writes transformers'
own checkpoint (``checkpoint-N``: model, optimizer, scheduler, the RNG
states of every library and rank, trainer state with the log history) into
the run's resume folder (``RunFolder.resume``, beside the run folder, so it
outlives a killed job). A layer arm's checkpoint holds its trained tensors
only; the frozen rest is the base model, which resuming loads first.
layerbench adds what TRL does not keep: the rollouts recorded so far and
the step-0 pairing hash (``layerbench-rollouts-rank<r>.json``, one per rank), then the marker
``layerbench-resume.json`` last, written atomically. A checkpoint without
the marker (killed while writing) is removed, never resumed from; an older
complete one is removed only once a newer one is marked.

Data order: TRL's sampler is seeded, and transformers skips the batches
already consumed. A checkpoint is taken only at a rollout boundary (the
config check requires ``rl.save_every`` to be a multiple of the optimizer
updates per rollout batch), so no half-used rollout batch is regenerated.

A resume folder from another study, config, code version, base model or
training data is refused (``ResumeMismatch``) with the fields that differ.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from layerbench.config import PACKAGE_ROOT
from layerbench.runtime.checkpoints import base_sha256
from layerbench.runtime.io import atomic_write_json, sha256_file

MARKER = "layerbench-resume.json"
PREFIX = "checkpoint-"


def rollouts_file(rank: int) -> str:
    """One per rank: each records the rollouts it generated."""
    return f"layerbench-rollouts-rank{rank}.json"


class ResumeMismatch(RuntimeError):
    """A resume folder written by a different run than the one asked for."""


def code_sha256() -> str:
    """One hash over the layerbench package's Python source: a checkpoint
    written by other code is not resumed by this code."""
    digest = hashlib.sha256()
    for path in sorted((PACKAGE_ROOT / "src" / "layerbench").rglob("*.py")):
        digest.update(f"{path.relative_to(PACKAGE_ROOT)}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def run_identity(arm, seed: int, rl, base_model: Path, train_file: Path, **caps) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint."""
    return {"arm": arm.name, "seed": seed, "rl": rl.identity(), "caps": caps,
            "base_sha256": base_sha256(base_model), "train_sha256": sha256_file(train_file),
            "code_sha256": code_sha256()}


def _step(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def checkpoint_step(checkpoint: Path | None) -> int:
    """The optimizer step a run resumed from; 0 for a run from the start."""
    return 0 if checkpoint is None else _step(checkpoint)


def latest_checkpoint(folder: Path, identity: dict, tidy: bool = True) -> Path | None:
    """The newest complete checkpoint in ``folder``, after removing the
    incomplete ones (``tidy``: rank 0 only); None when there is none. Raises ResumeMismatch when the
    checkpoint was written for a different run."""
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob(PREFIX + "*") if p.is_dir() and p.name[len(PREFIX):].isdigit()), key=_step)
    complete = [p for p in found if (p / MARKER).is_file()]
    for path in sorted(set(found) - set(complete)) if tidy else ():
        shutil.rmtree(path)  # killed while it was being written
    if not complete:
        return None
    latest = complete[-1]
    written = json.loads((latest / MARKER).read_text())["identity"]
    differs = sorted(k for k in identity.keys() | written.keys() if identity.get(k) != written.get(k))
    if differs:
        raise ResumeMismatch(
            f"{folder} holds a checkpoint of another run (differs in: {', '.join(differs)}); "
            f"it is never reused: delete the folder to start this run from step 0")
    return latest


def restore(checkpoint: Path, reward) -> None:
    """Put the rollouts recorded before ``checkpoint`` back into ``reward``."""
    reward.load(json.loads((checkpoint / rollouts_file(reward.rank)).read_text()))


def keep_trained_tensors_only(trainer, arm) -> None:
    """A layer arm's checkpoint holds its trained tensors; transformers
    loads a checkpoint non-strictly, over the base model already loaded."""
    save = trainer._save

    def save_trained(output_dir=None, state_dict=None):
        state = state_dict if state_dict is not None else trainer.model.state_dict()
        save(output_dir, {n: t for n, t in state.items() if n.startswith(arm.tensor_prefixes)})

    trainer._save = save_trained


class MarkCheckpoints(TrainerCallback):
    """After transformers wrote ``checkpoint-N``: add the rollouts so far,
    mark it complete (atomically, last), then remove older checkpoints."""

    def __init__(self, folder: Path, identity: dict, reward, rank: int):
        self.folder, self.identity, self.reward, self.rank = folder, identity, reward, rank

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = False  # the finished run is published instead; no checkpoint to resume

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        checkpoint = self.folder / f"{PREFIX}{state.global_step}"
        atomic_write_json(checkpoint / rollouts_file(self.rank), self.reward.state())
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank's rollouts are written before the checkpoint is marked
        if self.rank != 0:
            return
        atomic_write_json(checkpoint / MARKER, {"step": state.global_step, "identity": self.identity})
        for older in self.folder.glob(PREFIX + "*"):
            if older.is_dir() and older.name[len(PREFIX):].isdigit() and _step(older) < state.global_step:
                shutil.rmtree(older)


EXIT_RESUBMIT = 75  # EX_TEMPFAIL: stopped before the scheduler's time limit, resumable
STOPS = "layerbench-time-limit-stops.json"  # in the resume folder: the steps earlier jobs of this run stopped at


def time_limit_stops(folder: Path) -> list[int]:
    """The steps at which earlier jobs of this run stopped before their time limit."""
    path = folder / STOPS
    return json.loads(path.read_text()) if path.is_file() else []


def record_stop(folder: Path, step: int) -> None:
    atomic_write_json(folder / STOPS, [*time_limit_stops(folder), step])


class StopBeforeLimit(TrainerCallback):
    """``rl.save_before_limit``: once fewer than ``margin`` seconds remain
    before ``end_time`` (the job's time limit), stop training at the next
    checkpoint step, after transformers saved it and ``MarkCheckpoints``
    marked it. Rank 0 decides for all ranks, so they stop at the same step."""

    def __init__(self, end_time: float, margin: float, every: int, clock=time.time):
        self.end_time, self.margin, self.every, self.clock = end_time, margin, every, clock
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps or state.global_step % self.every:
            return
        due = [self.clock() > self.end_time - self.margin]
        import torch.distributed as dist
        from accelerate.utils import broadcast_object_list

        if dist.is_available() and dist.is_initialized():
            broadcast_object_list(due, from_process=0)
        if due[0]:
            control.should_training_stop = True
            self.stopped_at = state.global_step


def start_from_screen(screen_checkpoints: Path, folder: Path) -> None:
    """A kept arm's full run starts where its screen run stopped: the screen's
    marked checkpoint is copied into the run's resume folder, then resumed
    like any (``latest_checkpoint`` checks it was written for this run)."""
    found = [p for p in screen_checkpoints.glob(PREFIX + "*") if (p / MARKER).is_file()]
    if len(found) != 1:
        raise ResumeMismatch(f"{screen_checkpoints} holds {len(found)} complete checkpoints, not the screen's one")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(found[0], folder / found[0].name, dirs_exist_ok=True)


class StopAfter(TrainerCallback):
    """The layer screen: stop after ``steps`` optimizer steps, once transformers
    saved that step (``save_steps``) and ``MarkCheckpoints`` marked it."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_training_stop = True
