"""What the rule files need besides paths: change detection, resources, GPU slots.

The Snakefile builds one :class:`RuleSettings` from the study. Rules
fingerprint only the config sections they read, so an edit of eval budgets
re-runs evaluation but not training; GPU studies get Snakemake resources and
a GPU slot per job, CPU studies neither.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass

from layerbench.config import Arm, Study
from layerbench.runtime.io import atomic_write_text
from layerbench.runtime.numerics import identity as numerics_identity


@dataclass(frozen=True)
class RuleSettings:
    study: Study

    # --- change detection ------------------------------------------------------
    def fingerprint(self, *sections: str) -> str:
        raw = self.study.raw
        return _digest({s: numerics_identity(self.study.numerics) if s == "numerics" else raw.get(s) for s in sections})

    def arm_fingerprint(self, slug: str) -> str:
        """What one arm's training reads."""
        study, raw = self.study, self.study.raw
        fp = {"rl": study.rl_for(Arm.parse(slug)).identity(), "cap": study.limits.max_completion_tokens,
              "model": raw["model"], "data": raw["data"], "numerics": numerics_identity(study.numerics),
              "max_model_len": study.limits.max_prompt_tokens}  # vLLM's: prompt cap + completion cap
        return _digest(fp)

    def train_preflight_fingerprint(self) -> str:
        """What rule preflight_train reads: a change re-runs it and so every
        training job; nothing else may (see train.smk)."""
        study, limits = self.study, self.study.limits
        return _digest({"model": study.raw["model"],
                        "limits": [limits.max_prompt_tokens, limits.max_completion_tokens, limits.prompt_policy],
                        "rl": [study.rl.use_vllm,
                               sorted({study.rl_for(a).algorithm for a in study.trained_arms})]})

    # --- resources ---------------------------------------------------------------
    def resources(self, stage: str) -> dict:
        """Snakemake resources of a GPU stage (train, evaluate): ``gpu``,
        ``mem_mb``, ``runtime`` from the study's ``resources``; nothing for a
        CPU study."""
        if "resources" not in self.study.raw:  # a CPU study: its rules request nothing
            return {}
        request = self.study.resources.stage(stage)
        out = {"gpu": self.job_gpus(stage), "mem_mb": request.mem_mb, "runtime": request.runtime}
        return {k: v for k, v in out.items() if v is not None}

    def job_gpus(self, stage: str) -> int:
        """GPUs of one job: ``resources.gpus_per_arm`` for training, ``resources.gpu`` otherwise."""
        resources = self.study.resources
        return resources.gpus_per_arm if stage == "train" and resources.gpu else resources.gpu

    def threads(self, stage: str, default: int) -> int:
        """CPU threads of one job; a training job runs ``resources.gpus_per_arm`` processes of ``default`` threads."""
        processes = self.study.resources.gpus_per_arm if stage == "train" else 1
        return self.study.resources.stage(stage).cpus or default * processes

    def gpu_params(self, stage: str) -> dict:
        """Rule params of a GPU stage: the slot wrapper (empty for CPU studies)."""
        if self.study.resources.gpu < 1:
            return {}
        return {"gpu_run": f"{sys.executable} -m layerbench.runtime.gpuslots --gpus {self.job_gpus(stage)} --"}

    def train_launcher(self) -> str:
        """What runs ``layerbench`` in a training job: the module itself, or
        its launcher with ``resources.gpus_per_arm`` processes (accelerate launch
        with FSDP2, see layerbench.runtime.launch)."""
        if self.study.resources.gpus_per_arm == 1:
            return "-m layerbench"
        return f"-m layerbench.runtime.launch --gpus-per-arm {self.study.resources.gpus_per_arm} --"

    def gpu_wrap(self, shell: str) -> str:
        """The shell command of a GPU stage, run inside a GPU slot (one
        CUDA_VISIBLE_DEVICES per job, see layerbench.runtime.gpuslots)."""
        return f"{{params.gpu_run}} {shell}" if self.study.resources.gpu >= 1 else shell


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_study_file(study: Study, path) -> None:
    """Write ``study.yaml`` (what every stage command reads), only when it
    changes, so Snakemake sees no new file on an unchanged study."""
    import yaml

    text = yaml.safe_dump(study.raw, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
