"""One typed study config: schema validation, defaults, arms and per-arm settings.

``load_study(path)`` is the only way a study is read. It validates the YAML
against ``workflow/schemas/config.schema.yaml`` (errors name the key and the
allowed values), then checks what a schema cannot: arm layers exist in the
model, budgets are sane. The Snakefile and every ``layerbench`` command call
it, so a bad value fails before any job starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from layerbench.data import TaskSpec
from layerbench.tinymodel import TinyModelSpec

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = PACKAGE_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A study config value is wrong; the message names the key."""


@dataclass(frozen=True)
class Arm:
    """One training arm. ``layers`` is None for base and full."""

    kind: str  # base | full | layer | layers
    layers: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        """Name used in tables and CSV files (``layer:3``, ``layers:1,2``)."""
        if self.kind in ("base", "full"):
            return self.kind
        return f"{self.kind}:{','.join(map(str, self.layers))}"

    @property
    def slug(self) -> str:
        """File-system name (``layer-3``, ``layers-1-2``)."""
        if self.kind in ("base", "full"):
            return self.kind
        return f"{self.kind}-{'-'.join(map(str, self.layers))}"

    @property
    def trains(self) -> bool:
        return self.kind != "base"

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """Inverse of ``name`` and ``slug``."""
        text = text.strip()
        if text in ("base", "full"):
            return cls(text)
        for kind in ("layers", "layer"):
            for sep in (":", "-"):
                if text.startswith(kind + sep):
                    rest = text[len(kind) + 1 :].replace("-", ",")
                    try:
                        layers = tuple(int(x) for x in rest.split(","))
                    except ValueError:
                        break
                    if kind == "layer" and len(layers) != 1:
                        break
                    return cls(kind, layers)
        raise ConfigError(f"unknown arm {text!r}: expected base, full, layer:K or layers:I,J")


@dataclass(frozen=True)
class RLConfig:
    """RL hyper-parameters of one arm (``rl`` section, after ``per_arm``)."""

    algorithm: str = "grpo"
    steps: int = 100
    learning_rate: float = 3e-5
    prompts_per_step: int = 4
    num_generations: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float = 0.2
    num_iterations: int = 1
    threads: int = 1
    use_vllm: bool = False

    @property
    def trl_loss(self) -> dict[str, Any]:
        """TRL's own switches for the algorithm: no loss code of ours."""
        if self.algorithm == "dr_grpo":
            return {"loss_type": "dr_grpo", "scale_rewards": "none"}
        return {"loss_type": "grpo", "scale_rewards": "group"}


@dataclass(frozen=True)
class Limits:
    """Every token limit of a study, checked by the preflight."""

    max_prompt_tokens: int
    max_completion_tokens: int
    eval_budgets: tuple[int, ...]
    prompt_policy: str = "error"

    @property
    def max_budget(self) -> int:
        return max(self.eval_budgets)


@dataclass(frozen=True)
class Suite:
    task: str
    include_path: str | None = None
    data_files: str | None = None
    repeats: int = 1


@dataclass(frozen=True)
class EvalConfig:
    suites: tuple[Suite, ...]
    batch_size: int = 64
    limit: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    threads: int = 1
    backend: str = "hf"

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Study:
    """A resolved study: what every stage reads."""

    name: str
    model: dict
    data: dict
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    rl: dict
    limits: Limits
    eval: EvalConfig
    tracking: dict
    runtime: str
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def num_layers(self) -> int:
        if self.model["source"] == "build":
            return self.model_spec.num_layers
        return int(self.model["num_layers"])

    @property
    def model_spec(self) -> TinyModelSpec:
        return TinyModelSpec(**self.model.get("build", {}))

    @property
    def task_spec(self) -> TaskSpec:
        return TaskSpec(**self.data.get("synthetic", {}))

    @property
    def trained_arms(self) -> tuple[Arm, ...]:
        return tuple(a for a in self.arms if a.trains)

    def rl_for(self, arm: Arm) -> RLConfig:
        """Base ``rl`` settings with ``per_arm`` overrides: kind first, then
        the exact arm (so ``layer:3`` beats ``layer``)."""
        settings = {k: v for k, v in self.rl.items() if k != "per_arm"}
        per_arm = self.rl.get("per_arm", {})
        for key in (arm.kind, arm.name):
            settings.update(per_arm.get(key, {}))
        return RLConfig(**settings)

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()

    def resolved(self) -> dict:
        """The fully resolved config, as logged to MLflow and provenance."""
        out = copy.deepcopy(self.raw)
        out["arms"] = [a.name for a in self.arms]
        out["rl_by_arm"] = {a.name: asdict(self.rl_for(a)) for a in self.trained_arms}
        return out


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_raw(raw: Any, source: str = "config") -> None:
    """JSON-Schema validation with errors that name the key and what is allowed."""
    import jsonschema

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a study config must be a mapping, got {type(raw).__name__}")
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    lines = []
    for error in errors:
        detail = error.message
        if error.validator == "enum":
            detail = f"got {error.instance!r}; allowed values: {', '.join(map(repr, error.validator_value))}"
        elif error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            detail = f"{error.message}; allowed keys: {', '.join(allowed)}"
        elif error.validator == "oneOf" and _key_path(error).startswith("arms"):
            detail = f"got {error.instance!r}; allowed: base, full, layer:K, layer:all or {{layers: [I, J]}}"
        lines.append(f"{source}: key '{_key_path(error)}': {detail}")
    raise ConfigError("\n".join(lines))


def _expand_arms(items: list, num_layers: int) -> tuple[Arm, ...]:
    arms: list[Arm] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            new = [Arm("layers", tuple(sorted(item["layers"])))]
        elif item == "layer:all":
            new = [Arm("layer", (k,)) for k in range(num_layers)]
        else:
            new = [Arm.parse(item)]
        for arm in new:
            bad = [k for k in arm.layers or () if k >= num_layers]
            if bad:
                raise ConfigError(
                    f"key 'arms.{i}': layer {bad[0]} does not exist; the model has "
                    f"{num_layers} decoder layers (0..{num_layers - 1})"
                )
            if arm not in arms:
                arms.append(arm)
    return tuple(arms)


def study_from_dict(raw: dict, source: str = "config") -> Study:
    validate_raw(raw, source)
    raw = copy.deepcopy(raw)
    model = raw["model"]
    if model["source"] != "build" and "num_layers" not in model:
        raise ConfigError(f"{source}: key 'model.num_layers' is required when model.source is {model['source']!r}")
    if model["source"] != "build" and "id" not in model:
        raise ConfigError(f"{source}: key 'model.id' is required when model.source is {model['source']!r}")
    num_layers = model.get("num_layers") or TinyModelSpec(**model.get("build", {})).num_layers

    limits_raw = raw["limits"]
    limits = Limits(
        max_prompt_tokens=limits_raw["max_prompt_tokens"],
        max_completion_tokens=limits_raw["max_completion_tokens"],
        eval_budgets=tuple(sorted(limits_raw["eval_budgets"])),
        prompt_policy=limits_raw.get("prompt_policy", "error"),
    )
    ev = dict(raw["eval"])
    results = f"results/{raw['study']}"
    ev["suites"] = tuple(
        Suite(**{**s, "data_files": s["data_files"].format(results=results)} if "data_files" in s else s)
        for s in ev["suites"]
    )
    valid_fields = {f.name for f in fields(RLConfig)}
    rl = raw.get("rl", {})
    assert set(rl) - {"per_arm"} <= valid_fields  # guaranteed by the schema
    study = Study(
        name=raw["study"],
        model=model,
        data=raw.get("data", {"source": "synthetic"}),
        arms=_expand_arms(raw["arms"], num_layers),
        seeds=tuple(raw["seeds"]),
        rl=rl,
        limits=limits,
        eval=EvalConfig(**ev),
        tracking=raw.get("tracking", {}),
        runtime=raw.get("runtime", "none"),
        raw=raw,
    )
    if not any(a.kind == "base" for a in study.arms) or not any(a.kind == "full" for a in study.arms):
        raise ConfigError(f"{source}: key 'arms' must include 'base' and 'full' (C(k) is relative to both)")
    for arm in study.trained_arms:
        study.rl_for(arm)  # per-arm overrides resolve
    return study


def load_study(path: Path | str, overrides: dict | None = None) -> Study:
    """Read, merge Snakemake-style overrides, validate and resolve a study."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"study config {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if overrides:
        raw = deep_merge(raw, overrides)
    return study_from_dict(raw, source=str(path))


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
