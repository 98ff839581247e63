"""Where a study's files live, shared by the Snakefile and every command.

The Snakefile builds one ``StudyPaths`` from its config; the rules pass
``results/<study>/study.yaml`` (the validated config, rewritten only when it
changes) to ``layerbench`` commands, which rebuild the same object from it.
Rules fingerprint just the config sections they depend on, so editing eval
budgets re-runs evaluation but not training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from layerbench.config import Arm, Study, load_study, study_from_dict


@dataclass(frozen=True)
class StudyPaths:
    study: Study
    root: Path = Path(".")

    @classmethod
    def from_config(cls, raw: dict, root: Path | str = ".") -> "StudyPaths":
        plain = json.loads(json.dumps(raw))  # Snakemake gives OrderedDicts for JSON config files
        paths = cls(study_from_dict(plain, source="config"), Path(root))
        paths.write_study_file()
        return paths

    @classmethod
    def from_study_file(cls, path: Path | str) -> "StudyPaths":
        path = Path(path)
        return cls(load_study(path), path.parent.parent.parent)

    # --- locations -------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.root / "results" / self.study.name

    @property
    def study_file(self) -> Path:
        return self.results / "study.yaml"

    @property
    def data(self) -> Path:
        return self.results / "data"

    @property
    def base_model(self) -> Path:
        if self.study.model["source"] == "path":
            return Path(self.study.model["id"])
        return self.results / "base_model"

    @property
    def logs(self) -> Path:
        return self.results / "logs"

    @property
    def benchmarks(self) -> Path:
        return self.results / "benchmarks"

    @property
    def scores(self) -> Path:
        return self.results / "scores.csv"

    @property
    def contributions(self) -> Path:
        return self.results / "contributions.csv"

    @property
    def mlflow(self) -> Path:
        return self.results / "mlflow.json"

    @property
    def report(self) -> Path:
        return self.root / "reports" / self.study.name / "index.html"

    def run_dir(self, arm: Arm, seed: int) -> Path:
        return self.results / "runs" / arm.slug / f"seed{seed}"

    def eval_dir(self, arm: Arm, seed: int) -> Path:
        return self.results / "eval" / arm.slug / f"seed{seed}"

    def model_for(self, arm: str | Arm, seed: int | str) -> str:
        """The model an eval job reads: the base model, or the arm's run
        (whose ``checkpoint/`` holds the trained weights)."""
        arm = Arm.parse(arm) if isinstance(arm, str) else arm
        return str(self.base_model if not arm.trains else self.run_dir(arm, int(seed)))

    @property
    def repro_arm(self) -> Arm:
        """The arm the repro target re-runs: ``repro.arm``, else the first single-layer arm."""
        chosen = self.study.raw.get("repro", {}).get("arm")
        if chosen:
            return Arm.parse(chosen)
        return next((a for a in self.study.trained_arms if a.kind == "layer"), self.study.trained_arms[0])

    @property
    def repro_seed(self) -> int:
        return int(self.study.raw.get("repro", {}).get("seed", self.study.seeds[0]))

    def all_runs(self) -> list[str]:
        return [str(self.run_dir(a, s)) for a in self.study.trained_arms for s in self.study.seeds]

    def all_evals(self) -> list[str]:
        return [str(self.eval_dir(a, s)) for a in self.study.arms for s in self.study.seeds]

    # --- data and GPU stages (what the rule files unpack) -----------------
    @property
    def hub_sample(self) -> Path:
        """Rows drawn from the Hub dataset by rule prepare_data (data.source hub)."""
        return self.data / "hub_sample.jsonl"

    def data_inputs(self) -> dict[str, str]:
        """Inputs of rule make_data: nothing for the synthetic task, the
        downloaded sample for Hub data."""
        return {"sample": str(self.hub_sample)} if self.study.data_source == "hub" else {}

    def data_outputs(self) -> dict[str, str]:
        """Outputs of rule make_data: train/test in the {prompt, answer}
        format every later stage reads, plus SFT demonstrations for a built model."""
        out = {"train": str(self.data / "train.jsonl"), "test": str(self.data / "test.jsonl")}
        if self.study.data_source == "synthetic":
            out["sft"] = str(self.data / "sft.jsonl")
        return out

    def eval_data_inputs(self) -> dict[str, str]:
        """Local eval data files that no rule of this study makes (exported
        benchmarks such as results/benchmarks/amc.jsonl): inputs of rule
        evaluate, so a missing file stops the DAG before any GPU time."""
        out = {}
        for suite in self.study.eval.suites:
            if suite.data_files and not Path(suite.data_files).is_relative_to(self.results):
                out[f"eval_{suite.task}"] = suite.data_files
        return out

    def eval_task_inputs(self) -> dict[str, str]:
        """``eval_tasks.json`` of rule prepare_eval_tasks, when the study uses
        lm-eval's own (Hub-backed) tasks; nothing otherwise."""
        if any(not s.include_path for s in self.study.eval.suites):
            return {"eval_tasks": str(self.results / "eval_tasks.json")}
        return {}

    def benchmark_exports(self) -> list[str]:
        """Exported benchmark files under results/benchmarks/ that rule
        prepare_benchmark can make."""
        from layerbench.benchmarks import EXPORTS

        out = []
        for path in self.eval_data_inputs().values():
            p = Path(path)
            if p.parent == Path("results/benchmarks") and p.suffix == ".jsonl" and p.stem in EXPORTS:
                out.append(path)
        return out

    def rule_resources(self, stage: str) -> dict:
        """Snakemake resources of a GPU stage (train, evaluate): ``gpu``,
        ``mem_mb``, ``runtime`` from the study's ``resources``; nothing for a
        CPU study, so its rules stay as they were."""
        res = self.study.resources
        if not res:
            return {}
        out = {"gpu": int(res.get("gpu", 0))}
        for key in ("mem_mb", "runtime"):
            if key in res.get(stage, {}):
                out[key] = int(res[stage][key])
        return out

    def rule_threads(self, stage: str, default: int) -> int:
        return int(self.study.resources.get(stage, {}).get("cpus", default))

    def gpu_params(self) -> dict:
        """Rule params of a GPU stage: the slot wrapper (empty for CPU studies)."""
        if self.study.gpus < 1:
            return {}
        import sys

        return {"gpu_run": f"{sys.executable} -m layerbench.gpuslots --gpus {self.study.gpus} --"}

    def gpu_wrap(self, shell: str) -> str:
        """The shell command of a GPU stage, run inside a GPU slot (one
        CUDA_VISIBLE_DEVICES per job, see layerbench.gpuslots); unchanged
        for CPU studies."""
        return f"{{params.gpu_run}} {shell}" if self.study.gpus >= 1 else shell

    # --- change detection ------------------------------------------------
    def fingerprint(self, *sections: str) -> str:
        raw = self.study.raw
        return _digest({s: raw.get(s) for s in sections})

    def arm_fingerprint(self, slug: str) -> str:
        arm = Arm.parse(slug)
        raw = self.study.raw
        limits = raw["limits"]
        fp = {"rl": self.study.rl_for(arm).identity(), "cap": limits["max_completion_tokens"],
              "model": raw["model"], "data": raw.get("data"), "numerics": raw.get("numerics"),
              "max_model_len": limits["max_prompt_tokens"]}  # vLLM's: prompt cap + completion cap
        return _digest(fp)

    def train_preflight_fingerprint(self) -> str:
        """What rule preflight_train reads: a change re-runs it and so every
        training job; nothing else may (see train.smk)."""
        study, raw = self.study, self.study.raw
        limits = raw["limits"]
        return _digest({"model": raw["model"],
                        "limits": [limits["max_prompt_tokens"], limits["max_completion_tokens"],
                                   limits.get("prompt_policy", "error")],
                        "rl": [bool(study.rl.get("use_vllm")),
                               sorted({study.rl_for(a).algorithm for a in study.trained_arms})]})

    def write_study_file(self) -> None:
        text = yaml.safe_dump(self.study.raw, sort_keys=True)
        if not self.study_file.exists() or self.study_file.read_text() != text:
            from layerbench.io import atomic_write_text

            atomic_write_text(self.study_file, text)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
