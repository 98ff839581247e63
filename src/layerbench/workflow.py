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
        paths = cls(study_from_dict(dict(raw), source="config"), Path(root))
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

    # --- change detection ------------------------------------------------
    def fingerprint(self, *sections: str) -> str:
        raw = self.study.raw
        return _digest({s: raw.get(s) for s in sections})

    def arm_fingerprint(self, slug: str) -> str:
        arm = Arm.parse(slug)
        raw = self.study.raw
        return _digest({"rl": vars(self.study.rl_for(arm)), "cap": raw["limits"]["max_completion_tokens"],
                        "model": raw["model"], "data": raw.get("data")})

    def write_study_file(self) -> None:
        text = yaml.safe_dump(self.study.raw, sort_keys=True)
        if not self.study_file.exists() or self.study_file.read_text() != text:
            from layerbench.io import atomic_write_text

            atomic_write_text(self.study_file, text)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
