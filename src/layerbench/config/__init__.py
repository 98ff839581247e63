"""One typed study config, read by the DAG and by every command.

``load_study(path)`` (commands) and ``study_from_snakemake(config)`` (the
Snakefile) are the only ways a study is read; both go through
``study_from_dict``: validate against the schema (errors name the key and
the allowed values), fill the schema's defaults, build the typed sections
(``layerbench.config.sections``), then check what a schema cannot
(``layerbench.config.cross_fields``). Nothing here imports torch or a stage.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from layerbench.config.arms import Arm
from layerbench.config.cross_fields import cross_field_problems
from layerbench.config.schema import (
    PACKAGE_ROOT,
    SCHEMA_PATH,
    ConfigError,
    validate_raw,
    with_defaults,
)
from layerbench.config.sections import (
    DataConfig,
    EvalConfig,
    HubData,
    Limits,
    ModelConfig,
    Resources,
    RLConfig,
    Suite,
    TaskSpec,
    TinyModelSpec,
    TrackingConfig,
)

__all__ = ["PACKAGE_ROOT", "SCHEMA_PATH", "Arm", "ConfigError", "DataConfig", "EvalConfig", "HubData", "Limits",
           "ModelConfig", "RLConfig", "Resources", "Study", "Suite", "TaskSpec", "TinyModelSpec", "TrackingConfig",
           "load_study", "study_from_dict", "study_from_snakemake"]


@dataclass(frozen=True)
class Study:
    """A resolved study: what every stage reads."""

    name: str
    model: ModelConfig
    data: DataConfig
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    rl: RLConfig  # before per-arm overrides; use rl_for(arm)
    per_arm: dict  # rl.per_arm: arm kind or exact arm -> overrides
    limits: Limits
    eval: EvalConfig
    tracking: TrackingConfig
    resources: Resources
    numerics: str
    runtime: str
    raw: dict = field(repr=False, default_factory=dict)  # the defaults-filled config, as written to study.yaml
    screened_out: tuple[Arm, ...] = ()  # single-layer arms the layer screen did not keep (after_screen)

    @property
    def data_source(self) -> str:
        return self.data.source

    @property
    def verifier(self) -> str:
        """How rewards check an answer: layerbench's ``####`` regex for the
        synthetic task, ``data.hub.verifier`` (math-verify) for Hub data."""
        return self.data.hub.verifier if self.data.source == "hub" else "arith"

    @property
    def model_spec(self) -> TinyModelSpec:
        return self.model.build

    @property
    def task_spec(self) -> TaskSpec:
        return self.data.synthetic

    @property
    def generation_budget(self) -> int:
        """The most tokens an evaluation generates for one answer: ``eval.probe_budget``
        when set (cut-off answers continue to it), else the largest eval budget."""
        return self.eval.probe_budget or self.limits.max_budget

    @property
    def screen_keep(self) -> int:
        """How many single-layer arms the layer screen keeps: ``rl.screen_keep``,
        else (a screen measured only) half, rounded up, for the report's "what it would save"."""
        scanned = sum(a.in_layer_scan for a in self.arms + self.screened_out)
        return self.rl.screen_keep or -(-scanned // 2)

    @property
    def screens(self) -> bool:
        """The DAG screens: ``rl.screen_steps`` and ``rl.screen_keep`` are both set
        (``screen_steps`` alone: every layer trains in full and the screen is measured)."""
        return self.rl.screen_steps is not None and self.rl.screen_keep is not None

    def after_screen(self, kept: list[str]) -> "Study":
        """The study once the layer screen chose: its single-layer arms only the kept ones."""
        import dataclasses

        out = [a for a in self.arms if a.in_layer_scan and a.name not in kept]
        return dataclasses.replace(self, arms=tuple(a for a in self.arms if a not in out), screened_out=tuple(out))

    @property
    def trained_arms(self) -> tuple[Arm, ...]:
        return tuple(a for a in self.arms if a.trains)

    def rl_for(self, arm: Arm) -> RLConfig:
        return arm.rl_settings(self.rl, self.per_arm)

    @property
    def repro_arm(self) -> Arm:
        """The arm the repro check re-runs: ``repro.arm``, else the first single-layer arm
        (in a study whose layer screen prunes, which layers stay is not known yet: full RL)."""
        chosen = self.raw.get("repro", {}).get("arm")
        if chosen:
            return Arm.parse(chosen)
        scanned = () if self.screens else (a for a in self.trained_arms if a.in_layer_scan)
        return next(iter(scanned), self.trained_arms[0])

    @property
    def repro_seed(self) -> int:
        return int(self.raw.get("repro", {}).get("seed", self.seeds[0]))

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()

    def resolved(self) -> dict:
        """The fully resolved config, as logged to MLflow and provenance."""
        out = copy.deepcopy(self.raw)
        out["arms"] = [a.name for a in self.arms]
        out["rl_by_arm"] = {a.name: asdict(self.rl_for(a)) for a in self.trained_arms}
        return out


def _required_for_source(raw: dict, source: str) -> None:
    model, data = raw["model"], raw["data"]
    for key in ("num_layers", "id"):
        if model["source"] != "build" and key not in model:
            raise ConfigError(f"{source}: key 'model.{key}' is required when model.source is {model['source']!r}")
    if data["source"] == "hub" and "hub" not in data:
        raise ConfigError(f"{source}: key 'data.hub' is required when data.source is 'hub'")


def study_from_dict(raw: dict, source: str = "config") -> Study:
    """The one loader: validate against the schema, fill its defaults, resolve.
    Nothing is merged over another study: what a config omits is the schema's default."""
    validate_raw(raw, source)
    raw = with_defaults(raw)
    _required_for_source(raw, source)
    results = f"results/{raw['study']}"
    suites = tuple(Suite.from_dict({**s, "data_files": s["data_files"].format(results=results)}
                                   if "data_files" in s else s) for s in raw["eval"]["suites"])
    model = ModelConfig.from_dict(raw["model"])
    rl = dict(raw["rl"])
    per_arm = rl.pop("per_arm", {})
    study = Study(
        name=raw["study"],
        model=model,
        data=DataConfig.from_dict(raw["data"]),
        arms=Arm.expand(raw["arms"], model.decoder_layer_count),
        seeds=tuple(raw["seeds"]),
        rl=RLConfig.from_dict(rl),
        per_arm=per_arm,
        limits=Limits.from_dict({**raw["limits"], "eval_budgets": tuple(sorted(raw["limits"]["eval_budgets"]))}),
        eval=EvalConfig.from_dict({**raw["eval"], "suites": suites}),
        tracking=TrackingConfig.from_dict(raw["tracking"]),
        resources=Resources.from_dict(raw.get("resources", {})),
        numerics=raw["numerics"],
        runtime=raw["runtime"],
        raw=raw,
    )
    if Arm("base") not in study.arms or Arm("full") not in study.arms:
        raise ConfigError(f"{source}: key 'arms' must include 'base' and 'full' (C(k) is relative to both)")
    problems = cross_field_problems(study)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return study


def study_from_snakemake(config: dict) -> Study:
    """The study of the Snakefile's ``config`` (the --configfile, or config/default.yaml)."""
    return study_from_dict(json.loads(json.dumps(config)), source="config")  # plain dicts, not OrderedDicts


def load_study(path: Path | str) -> Study:
    """Read, validate and resolve a study file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"study config {path} does not exist") from None
    except yaml.YAMLError as exc:  # one line: file, line and column, and what is wrong
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return study_from_dict(raw, source=str(path))
