"""When the scheduler ends this job: the time limit a train job saves its
checkpoint before (``rl.save_before_limit``). Slurm is the scheduler the
project runs on (``workflow/profiles/slurm``); its job's end time comes
from ``squeue``, since Slurm puts no end time in the job's environment."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime


def job_end_time(environ=os.environ) -> float | None:
    """Unix time at which Slurm ends this job; None outside a Slurm job or for
    a job without a time limit. A failing ``squeue`` says so and gives None:
    the job then runs as if it had no limit."""
    job = environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True,
                             timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"[time limit] squeue gave no end time for Slurm job {job} ({exc}); no checkpoint before the limit",
              flush=True)
        return None
    try:
        return datetime.fromisoformat(out).timestamp()  # squeue prints local time, as datetime reads it
    except ValueError:  # "N/A", "Unknown": no limit
        return None
