"""One typed study config: schema validation, defaults, arms and per-arm settings.

``load_study(path)`` is the only way a study is read. It validates the YAML
against ``workflow/schemas/config.schema.yaml`` (errors name the key and the
allowed values), then checks what a schema cannot: arm layers exist in the
model, budgets are sane. The Snakefile and every ``layerbench`` command call
it, so a bad value fails before any job starts.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from layerbench.stages.data import TaskSpec
from layerbench.stages.model import TinyModelSpec

PACKAGE_ROOT = Path(__file__).resolve().parents[3]
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
    # --- GPU studies (config/paper/). Every default below reproduces the
    # behaviour from before these fields existed; ``identity()`` leaves them
    # out while they hold their default, so older runs keep their fingerprint.
    epochs: int | None = None  # passes over the training prompts; overrides ``steps``
    mini_batch_prompts: int | None = None  # prompts per optimizer update (verl ppo_mini_batch_size)
    micro_batch_completions: int | None = None  # completions per forward/backward (gradient accumulation)
    loss_type: str | None = None  # TRL loss_type override (e.g. dapo = verl's token-mean)
    weight_decay: float = 0.0
    bf16: bool | None = None  # None: TRL's default
    gradient_checkpointing: bool = False
    vllm_gpu_memory_utilization: float = 0.3
    ref_dtype: str | None = None  # dtype of the KL reference model (None: the policy's, float32)

    @property
    def trl_loss(self) -> dict[str, Any]:
        """TRL's own switches for the algorithm: no loss code of ours."""
        if self.algorithm == "dr_grpo":
            out = {"loss_type": "dr_grpo", "scale_rewards": "none"}
        else:
            out = {"loss_type": "grpo", "scale_rewards": "group"}
        if self.loss_type:
            out["loss_type"] = self.loss_type
        return out

    # --- batch geometry ----------------------------------------------------
    @property
    def completions_per_step(self) -> int:
        """Completions generated per rollout batch (prompts x group size)."""
        return self.prompts_per_step * self.num_generations

    @property
    def mini_batch(self) -> int:
        """Completions per optimizer update."""
        return (self.mini_batch_prompts or self.prompts_per_step) * self.num_generations

    @property
    def micro_batch(self) -> int:
        """Completions per forward/backward pass (TRL per_device_train_batch_size)."""
        return self.micro_batch_completions or self.mini_batch

    @property
    def updates_per_rollout_batch(self) -> int:
        """Optimizer updates made from one rollout batch (all PPO iterations)."""
        return self.num_iterations * (self.prompts_per_step // (self.mini_batch_prompts or self.prompts_per_step))

    def optimizer_steps(self, n_prompts: int | None = None) -> int:
        """TRL ``max_steps`` (optimizer updates). With ``epochs``: every full
        rollout batch of the training prompts, ``epochs`` times (a trailing
        partial batch is dropped, as verl's dataloader does)."""
        if self.epochs is None:
            return self.steps
        if n_prompts is None:
            raise ValueError("rl.epochs needs the number of training prompts")
        batches = n_prompts // self.prompts_per_step
        if batches == 0:
            raise ValueError(f"{n_prompts} training prompts are fewer than rl.prompts_per_step={self.prompts_per_step}")
        return self.epochs * batches * self.updates_per_rollout_batch

    def check_geometry(self) -> None:
        """Batch sizes must divide evenly, or TRL would silently regroup them."""
        mini_prompts = self.mini_batch_prompts or self.prompts_per_step
        if self.prompts_per_step % mini_prompts:
            raise ValueError(f"rl.prompts_per_step={self.prompts_per_step} is not a multiple of "
                             f"rl.mini_batch_prompts={mini_prompts}")
        if self.mini_batch % self.micro_batch:
            raise ValueError(f"rl.micro_batch_completions={self.micro_batch} does not divide the "
                             f"{self.mini_batch} completions of one optimizer update")

    def identity(self) -> dict[str, Any]:
        """What distinguishes this arm's training: every field, except the
        GPU-era fields while they hold their defaults (stable fingerprints)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _RL_LATER_FIELDS and value == f.default:
                continue
            out[f.name] = value
        return out


_RL_LATER_FIELDS = frozenset({
    "epochs", "mini_batch_prompts", "micro_batch_completions", "loss_type", "weight_decay", "bf16",
    "gradient_checkpointing", "vllm_gpu_memory_utilization", "ref_dtype",
})


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
    metric: str | None = None  # which metric layerbench scores on (default: the task's first)
    filter: str | None = None  # which filter pipeline (default: the task's first)


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
    seed: int | None = None  # sampling seed for every checkpoint; None: the arm's training seed
    derive_budgets: bool | None = None  # None: derive smaller budgets only under greedy decoding
    dtype: str = "float32"
    gpu_memory_utilization: float = 0.9  # vLLM backend
    max_model_len: int | None = None  # vLLM backend; None: model.context_length
    num_fewshot: int | None = None  # None: each task's own few-shot setting

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def derive(self) -> bool:
        """Whether one generation at the largest budget gives the smaller ones."""
        return self.greedy if self.derive_budgets is None else self.derive_budgets


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
    resources: dict = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        """GPUs per train/evaluate job (``resources.gpu``; 0: a CPU study)."""
        return int(self.resources.get("gpu", 0))

    @property
    def data_source(self) -> str:
        return self.data.get("source", "synthetic")

    @property
    def verifier(self) -> str:
        """How rewards check an answer: layerbench's ``####`` regex for the
        synthetic task, ``data.hub.verifier`` (math-verify) for Hub data."""
        if self.data_source == "hub":
            return self.data["hub"].get("verifier", "math_verify")
        return "arith"

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


def drop_inapplicable(raw: dict) -> dict:
    """Remove sections that do not apply to this study's sources.

    Snakemake deep-merges ``--configfile`` over ``config/default.yaml``, so a
    Hub study would otherwise inherit the default's ``model.build``,
    ``data.synthetic`` and ``rl.steps``; they mean nothing there and would
    only confuse the resolved config and its fingerprints."""
    raw = copy.deepcopy(raw)
    if not isinstance(raw, dict):
        return raw
    model, data, rl = raw.get("model"), raw.get("data"), raw.get("rl")
    if isinstance(model, dict) and model.get("source", "build") != "build":
        model.pop("build", None)
    if isinstance(data, dict) and data.get("source", "synthetic") != "synthetic":
        data.pop("synthetic", None)
    if isinstance(rl, dict) and rl.get("epochs") is not None:
        rl.pop("steps", None)
    return raw


def fill_schema_defaults(raw: dict, schema: dict) -> dict:
    """Set every missing key that has a ``default`` in the schema, in the
    sections the study has (as Snakemake's ``validate(set_default=True)``)."""
    for key, sub in schema.get("properties", {}).items():
        if key not in raw and "default" in sub:
            raw[key] = copy.deepcopy(sub["default"])
        elif isinstance(raw.get(key), dict):
            fill_schema_defaults(raw[key], sub)
    return raw


def study_from_dict(raw: dict, source: str = "config") -> Study:
    """The one loader: validate against the schema, fill its defaults, resolve.
    Nothing is merged over another study: what a config omits is the schema's default."""
    raw = drop_inapplicable(raw)
    validate_raw(raw, source)
    raw = fill_schema_defaults(copy.deepcopy(raw), _schema())
    model = raw["model"]
    if model["source"] != "build" and "num_layers" not in model:
        raise ConfigError(f"{source}: key 'model.num_layers' is required when model.source is {model['source']!r}")
    if model["source"] != "build" and "id" not in model:
        raise ConfigError(f"{source}: key 'model.id' is required when model.source is {model['source']!r}")
    num_layers = model.get("num_layers") or TinyModelSpec(**model.get("build", {})).num_layers
    data = raw.get("data", {"source": "synthetic"})
    if data.get("source") == "hub" and "hub" not in data:
        raise ConfigError(f"{source}: key 'data.hub' is required when data.source is 'hub'")

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
        data=data,
        arms=_expand_arms(raw["arms"], num_layers),
        seeds=tuple(raw["seeds"]),
        rl=rl,
        limits=limits,
        eval=EvalConfig(**ev),
        tracking=raw.get("tracking", {}),
        runtime=raw.get("runtime", "none"),
        raw=raw,
        resources=raw.get("resources", {}),
    )
    if not any(a.kind == "base" for a in study.arms) or not any(a.kind == "full" for a in study.arms):
        raise ConfigError(f"{source}: key 'arms' must include 'base' and 'full' (C(k) is relative to both)")
    for arm in study.trained_arms:
        try:
            study.rl_for(arm).check_geometry()  # per-arm overrides resolve, batches divide evenly
        except ValueError as exc:
            raise ConfigError(f"{source}: arm {arm.name}: {exc}") from None
    if study.eval.derive_budgets and not study.eval.greedy:
        raise ConfigError(
            f"{source}: key 'eval.derive_budgets': true needs greedy decoding (eval.temperature: 0); "
            f"under sampling every budget must be generated for real"
        )
    if study.eval.backend == "vllm" or any(study.rl_for(a).use_vllm for a in study.trained_arms):
        if study.gpus < 1:
            raise ConfigError(f"{source}: key 'resources.gpu': vLLM (eval.backend or rl.use_vllm) needs a GPU per job")
    problems = cross_field_problems(study)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return study


_TASK_NAME = re.compile(r"^(?:task|group|tag):\s*['\"]?([A-Za-z0-9_.-]+)", re.M)


@functools.cache
def lm_eval_task_names() -> frozenset[str]:
    """Task, group and tag names of the installed lm-eval, read from its YAML files."""
    spec = importlib.util.find_spec("lm_eval")
    root = Path(spec.origin).parent / "tasks"
    return frozenset(n for p in root.rglob("*.yaml") for n in _TASK_NAME.findall(p.read_text(errors="replace")))


TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def cross_field_problems(study: Study) -> list[str]:
    """What JSON Schema cannot check, each as "key 'K': value, what is allowed":
    the model's shape, the synthetic task's size, per-arm overrides, token
    limits against the model context, the tracking URI and the eval tasks.
    Everything here is known from the config alone, so it fails before any job."""
    raw, out = study.raw, []
    if study.model["source"] == "build":
        spec = study.model_spec
        if spec.hidden_size % spec.num_heads:
            out.append(f"key 'model.build.num_heads': {spec.num_heads} does not divide "
                       f"model.build.hidden_size {spec.hidden_size}")
    if study.data_source == "synthetic":
        task = study.task_spec
        if task.min_ops > task.max_ops:
            out.append(f"key 'data.synthetic.min_ops': {task.min_ops} is larger than data.synthetic.max_ops "
                       f"{task.max_ops}")
        elif task.n_train + task.n_test > task.distinct_questions // 2:
            out.append(f"key 'data.synthetic.max_operand': {task.max_operand} with {task.min_ops}..{task.max_ops} "
                       f"operations gives {task.distinct_questions} distinct problems; n_train + n_test "
                       f"({task.n_train + task.n_test}) may be at most half of them (raise max_operand or max_ops, "
                       f"or lower n_train/n_test)")
    names = {a.name for a in study.arms}
    for key in study.rl.get("per_arm", {}):
        if key not in ("full", "layer", "layers") and Arm.parse(key).name not in names:
            out.append(f"key 'rl.per_arm.{key}': arm {key} is not in this study (arms: {', '.join(sorted(names))})")
    context = (study.model_spec.max_positions if study.model["source"] == "build"
               else study.model.get("context_length"))
    limits = study.limits
    if context:
        if limits.max_prompt_tokens + limits.max_completion_tokens > context:
            out.append(f"key 'limits.max_completion_tokens': prompt cap {limits.max_prompt_tokens} + completion cap "
                       f"{limits.max_completion_tokens} exceed the model context {context}")
        if limits.max_budget >= context:
            out.append(f"key 'limits.eval_budgets': budget {limits.max_budget} does not fit the model context "
                       f"{context} (a budget must leave room for the prompt)")
    uri = study.tracking.get("uri")
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if uri and ":" in uri else None
    if uri is not None and scheme not in TRACKING_SCHEMES:
        out.append(f"key 'tracking.uri': {uri!r} is not an MLflow tracking URI; allowed schemes: "
                   f"{', '.join(TRACKING_SCHEMES)} (e.g. sqlite:///mlflow.db, http://127.0.0.1:5000)")
    repro = raw.get("repro", {})
    if "arm" in repro and Arm.parse(repro["arm"]) not in study.trained_arms:
        out.append(f"key 'repro.arm': {repro['arm']} is not a trained arm of this study "
                   f"(arms: {', '.join(a.name for a in study.trained_arms)})")
    if "seed" in repro and repro["seed"] not in study.seeds:
        out.append(f"key 'repro.seed': {repro['seed']} is not one of the study's seeds {list(study.seeds)}")
    out += [f"key 'eval.suites.{i}': {p}" for i, p in _suite_problems(study.eval.suites)]
    return out


def _suite_problems(suites) -> list[tuple[int, str]]:
    """Local tasks: the include_path exists and one of its YAMLs defines the
    task. lm-eval's own tasks: the name is a task, group or tag of the
    installed lm-eval (read from its YAML files, without importing it)."""
    out = []
    for i, suite in enumerate(suites):
        if suite.include_path:
            folder = Path(suite.include_path)
            if not folder.is_dir():
                out.append((i, f"include_path {suite.include_path!r} is not a folder"))
            elif not any(suite.task in _TASK_NAME.findall(p.read_text()) for p in folder.glob("*.yaml")):
                out.append((i, f"task {suite.task!r} is defined by no YAML in {suite.include_path}"))
        elif suite.task not in lm_eval_task_names():
            out.append((i, f"task {suite.task!r} is not an lm-eval task, group or tag (lm-eval's task list: "
                           f"`lm-eval ls tasks`); a local task needs include_path"))
    return out


def load_study(path: Path | str, overrides: dict | None = None) -> Study:
    """Read, merge Snakemake-style overrides, validate and resolve a study."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"study config {path} does not exist") from None
    except yaml.YAMLError as exc:  # one line: file, line and column, and what is wrong
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
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
