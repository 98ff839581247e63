"""Every file a study writes, declared once.

Rule files put these paths in their ``input:``/``output:`` and pass them to
``layerbench stage ...`` as arguments; modules receive paths, they never
spell a file name. A folder a job writes as a whole (one run, one
evaluation, the base model) has a small class that names its files.

Arms have two spellings, both defined by :class:`layerbench.config.Arm`:
the config form ``layer:3`` (configs, tables, MLflow) and the path form
``layer-3`` (``Arm.slug``: folders and rule wildcards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerbench.config import Arm, Study


@dataclass(frozen=True)
class RunFolder:
    """What stage ``train`` writes for one (arm, seed)."""

    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def scratch(self) -> Path:
        """TRL's output_dir; removed before the run is published."""
        return self.path / "trainer"

    @property
    def resume(self) -> Path:
        """Beside the run folder, not in it: it must outlive a killed job
        (``stages.train.resume``); removed once the run is published."""
        return self.path.parent / f"{self.path.name}.resume"

    @property
    def screen_checkpoint(self) -> Path:
        """A screen run's (stage ``screen``): transformers' checkpoint at its last
        step, which a kept arm's full run resumes from."""
        return self.path / "resume"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def rollouts(self) -> Path:
        return self.path / "rollouts.csv"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"


@dataclass(frozen=True)
class CheckpointFolder:
    """A run's ``checkpoint``: a whole Hugging Face model (full RL), a
    layer arm's trained layers over the base model, or a lora arm's PEFT
    adapter (``layerbench.runtime.checkpoints``)."""

    path: Path

    @property
    def delta(self) -> Path:
        """The trained layers' tensors."""
        return self.path / "delta.safetensors"

    @property
    def delta_record(self) -> Path:
        """What the delta holds and the hash of the base it lays over."""
        return self.path / "delta.json"

    @property
    def adapter_record(self) -> Path:
        """A lora arm's: the hash of the base its adapter (PEFT's own files beside it) was trained on."""
        return self.path / "adapter.json"


@dataclass(frozen=True)
class EvalFolder:
    """What stage ``evaluate`` writes for one model."""

    path: Path

    @property
    def per_sample(self) -> Path:
        return self.path / "per_sample.csv"

    @property
    def scores(self) -> Path:
        return self.path / "scores.json"

    @property
    def continued(self) -> Path:
        """With ``eval.probe_budget``: the answers cut off at the largest budget, continued to it."""
        return self.path / "continued.csv"

    def samples(self, task: str) -> Path:
        """lm-eval's own samples file."""
        return self.path / f"samples_{task}.jsonl"

    def generations(self, task: str) -> Path:
        """layerbench's per-generation records (token ids, finish reason)."""
        return self.path / f"generations_{task}.jsonl"


@dataclass(frozen=True)
class ModelFolder:
    """A base model: Hugging Face files plus what layerbench adds."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def tokenizer(self) -> Path:
        """The fast tokenizer (``tokenizers`` alone can decode with it)."""
        return self.path / "tokenizer.json"

    @property
    def tokenizer_config(self) -> Path:
        return self.path / "tokenizer_config.json"

    @property
    def build_summary(self) -> Path:
        """Stage ``model``'s record of the tiny model's training."""
        return self.path / "build_summary.json"

    @property
    def source(self) -> Path:
        """Stage ``download``'s record of the Hub commit."""
        return self.path / "layerbench_source.json"


def record_of(data_file: Path) -> Path:
    """The ``.json`` record written next to a downloaded data file."""
    return Path(data_file).with_suffix(".json")


def markdown_of(report_file: Path) -> Path:
    """The Markdown copy written next to a preflight table."""
    return Path(report_file).with_suffix(".md")


@dataclass(frozen=True)
class StudyPaths:
    """``results/<study>/`` and ``reports/<study>/``, file by file."""

    study: Study
    root: Path = Path(".")

    @classmethod
    def from_study_file(cls, path: Path | str) -> "StudyPaths":
        """The paths of the study whose ``results/<study>/study.yaml`` this is."""
        from layerbench.config import load_study

        path = Path(path)
        paths = cls(load_study(path), path.parent.parent.parent)
        return paths.after_screen()

    def after_screen(self) -> "StudyPaths":
        """The paths of the study as its layer screen left it (``Study.after_screen``),
        once ``screen.json`` is written; unchanged for a study that does not screen."""
        import dataclasses
        import json

        if not self.study.screens or not self.screen.exists():
            return self
        return dataclasses.replace(self, study=self.study.after_screen(json.loads(self.screen.read_text())["kept"]))

    # --- folders ------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.root / "results" / self.study.name

    @property
    def logs(self) -> Path:
        return self.results / "logs"

    @property
    def benchmarks(self) -> Path:
        """Snakemake ``benchmark:`` files (s, max_rss per job), read by collect."""
        return self.results / "benchmarks"

    @property
    def data(self) -> Path:
        return self.results / "data"

    @property
    def base_model(self) -> Path:
        if self.study.model.source == "path":
            return Path(self.study.model.id)
        return self.results / "base_model"

    @property
    def run_pattern(self) -> str:
        """A training run's folder, with the rule wildcards ``runs`` (``runs``,
        or ``repro`` for the from-scratch re-run), ``arm`` (path form) and ``seed``."""
        return str(self.results / "{runs}" / "{arm}" / "seed{seed}")

    @property
    def eval_pattern(self) -> str:
        """An evaluation's folder, with the rule wildcards ``arm`` and ``seed``."""
        return str(self.results / "eval" / "{arm}" / "seed{seed}")

    @property
    def screen_run_pattern(self) -> str:
        """A layer screen's run (its first ``rl.screen_steps`` steps), wildcards ``arm`` and ``seed``."""
        return str(self.results / "screen" / "{arm}" / "seed{seed}")

    def screen_run(self, arm: Arm, seed: int) -> RunFolder:
        return RunFolder(Path(self.screen_run_pattern.format(arm=arm.slug, seed=seed)))

    def all_screen_runs(self) -> list[str]:
        return [str(self.screen_run(a, s).path) for a in self.study.arms if a.in_layer_scan for s in self.study.seeds]

    def screen_inputs(self, arm: str, seed: int | str, runs: str) -> list[str]:
        """What a study run of ``arm`` waits for when the study screens and it is
        a single-layer arm (never the repro re-run): ``screen.json``, whether it
        was kept, and its screen run, where a kept arm resumes."""
        arm = Arm.parse(arm)
        if not (self.study.screens and arm.in_layer_scan and runs == "runs"):
            return []
        return [str(self.screen), str(self.screen_run(arm, int(seed)).path)]

    def run(self, arm: Arm, seed: int, runs: str = "runs") -> RunFolder:
        return RunFolder(Path(self.run_pattern.format(runs=runs, arm=arm.slug, seed=seed)))

    def eval(self, arm: Arm, seed: int) -> EvalFolder:
        return EvalFolder(Path(self.eval_pattern.format(arm=arm.slug, seed=seed)))

    def model_for(self, arm: str | Arm, seed: int | str) -> Path:
        """The model an eval job reads: the base model, or the arm's checkpoint."""
        arm = Arm.parse(arm) if isinstance(arm, str) else arm
        return self.base_model if not arm.trains else self.run(arm, int(seed)).path

    def all_runs(self) -> list[str]:
        return [str(self.run(a, s).path) for a in self.study.trained_arms for s in self.study.seeds]

    def all_evals(self) -> list[str]:
        return [str(self.eval(a, s).path) for a in self.study.arms for s in self.study.seeds]

    # --- stage files ----------------------------------------------------------
    @property
    def study_file(self) -> Path:
        """The validated config every stage command reads (``--study``)."""
        return self.results / "study.yaml"

    @property
    def hub_sample(self) -> Path:
        """Rows drawn from the Hub dataset (data.source hub); its record is ``record_of``."""
        return self.data / "hub_sample.jsonl"

    @property
    def train_data(self) -> Path:
        return self.data / "train.jsonl"

    @property
    def test_data(self) -> Path:
        return self.data / "test.jsonl"

    @property
    def sft_data(self) -> Path:
        """Demonstrations the tiny base model is trained on (model.source build)."""
        return self.data / "sft.jsonl"

    @property
    def eval_tasks(self) -> Path:
        """Record of the lm-eval Hub tasks built (and cached) before evaluation."""
        return self.results / "eval_tasks.json"

    @property
    def preflight_train(self) -> Path:
        return self.results / "preflight_train.json"

    @property
    def train_checked(self) -> Path:
        """Training prompts after the prompt policy: what every arm trains on."""
        return self.results / "train_checked.jsonl"

    @property
    def preflight(self) -> Path:
        """The whole preflight table, training checks first."""
        return self.results / "preflight.json"

    @property
    def pairing(self) -> Path:
        return self.results / "pairing.csv"

    @property
    def param_audit(self) -> Path:
        return self.results / "param_audit.csv"

    @property
    def checks(self) -> Path:
        """Verdicts of the pairing check and the parameter audit."""
        return self.results / "checks.json"

    @property
    def repro(self) -> Path:
        return self.results / "repro.json"

    @property
    def scores(self) -> Path:
        return self.results / "scores.csv"

    @property
    def contributions(self) -> Path:
        return self.results / "contributions.csv"

    @property
    def screen(self) -> Path:
        """The layer screen's ranking and the arms it kept (stage ``screen``)."""
        return self.results / "screen.json"

    @property
    def how_sure(self) -> Path:
        """Variance by source, seeds needed, continued answers and the layer screen (``analysis.sureness``)."""
        return self.results / "how_sure.json"

    @property
    def verdicts(self) -> Path:
        """The headline and each C(k)'s verdict, decided once by collect."""
        return self.results / "verdicts.json"

    @property
    def training_metrics(self) -> Path:
        return self.results / "training_metrics.csv"

    @property
    def decomposition(self) -> Path:
        return self.results / "decomposition.csv"

    @property
    def ranking(self) -> Path:
        return self.results / "ranking_correlation.csv"

    @property
    def provenance(self) -> Path:
        return self.results / "provenance.json"

    @property
    def timings(self) -> Path:
        return self.results / "timings.csv"

    @property
    def costs(self) -> Path:
        """What each training run cost (time per phase, memory, optimizer state)."""
        return self.results / "costs.csv"

    @property
    def samples(self) -> Path:
        """The sample browser's answers, picked by collect for the report."""
        return self.results / "samples.json"

    @property
    def wall_time(self) -> Path:
        return self.results / "wall_time.json"

    @property
    def mlflow(self) -> Path:
        """Record of what track logged (experiment, run ids)."""
        return self.results / "mlflow.json"

    @property
    def mlflow_parent(self) -> Path:
        """The study's open MLflow parent run, shared by the train jobs that
        log live and by track, which completes it (``runtime.tracking``)."""
        return self.results / "mlflow_parent.json"

    @property
    def report(self) -> Path:
        return self.root / "reports" / self.study.name / "index.html"

    # --- inputs a study may need that no rule of it makes ----------------------
    def eval_data_inputs(self) -> dict[str, str]:
        """Local eval data files of the suites (exported benchmarks such as
        results/benchmarks/amc.jsonl): inputs of rule evaluate, so a missing
        file stops the DAG before any GPU time."""
        out = {}
        for suite in self.study.eval.suites:
            if suite.data_files and not Path(suite.data_files).is_relative_to(self.results):
                out[f"eval_{suite.task}"] = suite.data_files
        return out

    def eval_task_inputs(self) -> dict[str, str]:
        """``eval_tasks.json`` when the study uses lm-eval's own (Hub) tasks."""
        if any(not s.include_path for s in self.study.eval.suites):
            return {"eval_tasks": str(self.eval_tasks)}
        return {}


@dataclass(frozen=True)
class StudyFolder(StudyPaths):
    """A study's results in any folder (a copied ``results/<study>/``), not
    necessarily ``<root>/results/<name>``: what ``compare`` and
    ``readme-table`` read."""

    folder: Path = Path(".")

    @property
    def results(self) -> Path:
        return self.folder

    @classmethod
    def files_in(cls, folder: Path) -> "StudyFolder":
        """The folder's file layout, before its study is read."""
        return cls(study=None, folder=folder)
