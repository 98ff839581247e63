"""One GPU slot per job: ``CUDA_VISIBLE_DEVICES`` for concurrent GPU jobs.

Snakemake counts GPUs (rules declare ``resources: gpu=1``; run with
``--resources gpu=N``) but does not say *which* GPU a job gets. GPU rules of
a study with ``resources.gpu`` run their command through this wrapper::

    python -m layerbench.runtime.gpuslots --gpus 1 -- python -m layerbench stage train ...

It picks the GPUs for the job and ``exec``s the command with
``CUDA_VISIBLE_DEVICES`` set to them:

* **The job already owns exactly its GPUs** (SLURM sets
  ``CUDA_VISIBLE_DEVICES`` to the job's allocation, e.g. ``--gpus=1``): they
  are used as they are; no locks.
* **A workstation with more GPUs than the job needs**: the pool is
  ``LAYERBENCH_GPUS`` (e.g. ``0,1,2,3``), else ``CUDA_VISIBLE_DEVICES``, else
  every GPU ``nvidia-smi`` lists. The job takes the first free ones by
  holding an exclusive ``flock`` on ``<lock dir>/gpu-<id>.lock``. The lock
  file descriptor is inherited by the command (and by vLLM's worker
  processes), so the GPU stays claimed until the last of them exits, even on
  a crash; the kernel releases it, no stale locks. Lock dir:
  ``LAYERBENCH_GPU_LOCK_DIR``, default ``/tmp/layerbench-gpu-locks-<uid>``
  (shared by every study of that user on the machine; point several users at
  one directory to share GPUs among them).

With ``--resources gpu=N`` equal to the pool size, Snakemake never starts
more GPU jobs than there are free slots; the wrapper still waits (up to
``--timeout`` seconds) if a GPU is held by something else.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

POOL_ENV = "LAYERBENCH_GPUS"
LOCK_DIR_ENV = "LAYERBENCH_GPU_LOCK_DIR"


class SlotError(RuntimeError):
    """No GPU slot can be had."""


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def gpu_pool(env: dict | None = None) -> tuple[list[str], str]:
    """The GPUs this job may choose from, and where that list came from."""
    env = os.environ if env is None else env
    if env.get(POOL_ENV):
        return _split(env[POOL_ENV]), POOL_ENV
    if "CUDA_VISIBLE_DEVICES" in env:
        return _split(env["CUDA_VISIBLE_DEVICES"]), "CUDA_VISIBLE_DEVICES"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (FileNotFoundError, subprocess.SubprocessError):
        return [], "nvidia-smi (not available)"
    return _split(out.replace("\n", ",")), "nvidia-smi"


def gpu_memory_gb() -> float | None:
    """Memory of the smallest GPU ``nvidia-smi`` lists, in GB (None: no nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (FileNotFoundError, subprocess.SubprocessError):
        return None
    sizes = [float(v) for v in out.split()]
    return round(min(sizes) * 2**20 / 1e9, 1) if sizes else None  # MiB -> GB


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or f"/tmp/layerbench-gpu-locks-{os.getuid()}")


def claim(n: int, pool: list[str], lock_dir: Path, timeout: float = 3600.0,
          poll: float = 2.0) -> tuple[list[str], list[int]]:
    """Claim ``n`` GPUs of ``pool``: (ids, lock fds). Holding the fds holds
    the claim. When the pool has exactly ``n`` GPUs they are the job's own
    (a scheduler allocation): no locks."""
    if n < 1:
        raise SlotError(f"--gpus must be at least 1, got {n}")
    if len(pool) < n:
        raise SlotError(f"this job needs {n} GPU(s) but only {len(pool)} are visible ({', '.join(pool) or 'none'}); "
                        f"set {POOL_ENV} or CUDA_VISIBLE_DEVICES, or run the study on a GPU machine")
    if len(pool) == n:
        return list(pool), []
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        ids, fds = [], []
        for gpu in pool:
            fd = os.open(lock_dir / f"gpu-{gpu}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            ids.append(gpu)
            fds.append(fd)
            if len(ids) == n:
                return ids, fds
        for fd in fds:  # not enough free: give back what we took, wait, retry
            os.close(fd)
        if time.monotonic() >= deadline:
            raise SlotError(f"no {n} free GPU(s) among {', '.join(pool)} after {timeout:.0f} s "
                            f"(locks in {lock_dir}); is --resources gpu=N larger than the pool?")
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerbench.runtime.gpuslots", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=1, help="GPUs the command needs")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for free GPUs")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    pool, source = gpu_pool()
    try:
        ids, fds = claim(args.gpus, pool, default_lock_dir(), timeout=args.timeout)
    except SlotError as exc:
        print(f"layerbench.runtime.gpuslots: {exc}", file=sys.stderr)
        return 4
    for fd in fds:
        os.set_inheritable(fd, True)  # the command (and its children) keep the claim
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(ids))
    print(f"layerbench.runtime.gpuslots: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} "
          f"(pool {','.join(pool)} from {source})", file=sys.stderr, flush=True)
    os.execvpe(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
