"""The typed sections of a study config, one dataclass per section.

Fields carry no defaults: every default is in the schema
(``workflow/schemas/config.schema.yaml``), filled in by the loader before a
section is built. ``Section.defaults(**values)`` builds one from the schema's
defaults, for code and tests that need a section outside a study. A field is
None where the key is absent and absence has a meaning the description says.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar


class Section:
    """A config section whose defaults are the schema's."""

    KEY: ClassVar[str]  # dotted path of the section in a study config

    @classmethod
    def from_dict(cls, values: dict):
        """The section from a defaults-filled dict; absent keys are None."""
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})

    @classmethod
    def defaults(cls, **values):
        from layerbench.config.schema import defaults_at

        return cls.from_dict({**defaults_at(cls.KEY), **values})


@dataclass(frozen=True)
class TinyModelSpec(Section):
    """``model.build``: architecture and SFT schedule of the tiny base model."""

    KEY = "model.build"
    architecture: str  # qwen2 | qwen3
    tie_word_embeddings: bool
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    vocab_size: int
    max_positions: int
    sft_steps: int
    sft_batch_size: int
    sft_lr: float
    sft_warmup: int
    seed: int
    threads: int


@dataclass(frozen=True)
class ModelConfig(Section):
    """``model``: the base model every arm starts from."""

    KEY = "model"
    source: str  # build | hub | path
    id: str | None
    revision: str | None
    num_layers: int | None
    context_length: int | None
    build: TinyModelSpec | None

    @classmethod
    def from_dict(cls, values: dict):
        build = values.get("build")
        return super().from_dict({**values, "build": TinyModelSpec.from_dict(build) if build is not None else None})

    @property
    def decoder_layer_count(self) -> int | None:
        """The model's decoder layers: the built model's, else the declared ``model.num_layers``."""
        return self.build.num_layers if self.source == "build" else self.num_layers

    def context(self, model_dir: Path | None = None) -> tuple[int | None, str]:
        """The model's context length and where it came from. The model's own
        ``config.json`` when it is at hand (what transformers and vLLM load;
        the download stage refuses a declared value that differs); else the
        declared ``model.context_length``; else a built model's
        ``max_positions``. None when none of them is known."""
        import json

        config = None if model_dir is None else Path(model_dir) / "config.json"
        if config is not None and config.exists():
            value = json.loads(config.read_text())["max_position_embeddings"]
            return int(value), f"{model_dir}/config.json max_position_embeddings"
        if self.context_length is not None:
            return int(self.context_length), "model.context_length (declared; the model is not at hand)"
        if self.source == "build":
            return self.build.max_positions, "model.build.max_positions (the model is built by the DAG)"
        return None, "unknown: the model is not at hand and key 'model.context_length' is not set"


@dataclass(frozen=True)
class TaskSpec(Section):
    """``data.synthetic``: shape of the synthetic arithmetic task."""

    KEY = "data.synthetic"
    n_train: int
    n_test: int
    min_ops: int
    max_ops: int
    max_operand: int
    verbose_share: float
    sign_slip_share: float
    seed: int

    @property
    def distinct_questions(self) -> int:
        """How many different questions the task can ask (operands 1..max_operand, +/-)."""
        return sum(self.max_operand ** (k + 1) * 2 ** k for k in range(self.min_ops, self.max_ops + 1))


@dataclass(frozen=True)
class HubData(Section):
    """``data.hub``: training prompts drawn from a Hub dataset."""

    KEY = "data.hub"
    id: str
    config_name: str | None
    revision: str | None
    split: str
    sample: int | None
    test_size: int | None
    seed: int | None
    question_field: str
    answer_field: str
    answer_extract: str
    prompt_suffix: str
    verifier: str


@dataclass(frozen=True)
class DataConfig(Section):
    """``data``: where the training and test prompts come from."""

    KEY = "data"
    source: str  # synthetic | hub
    synthetic: TaskSpec | None
    hub: HubData | None

    @classmethod
    def from_dict(cls, values: dict):
        synthetic, hub = values.get("synthetic"), values.get("hub")
        return cls(source=values["source"],
                   synthetic=TaskSpec.from_dict(synthetic) if synthetic is not None else None,
                   hub=HubData.from_dict(hub) if hub is not None else None)


@dataclass(frozen=True)
class RLConfig(Section):
    """``rl`` of one arm, after its ``rl.per_arm`` overrides."""

    KEY = "rl"
    algorithm: str
    steps: int
    learning_rate: float
    prompts_per_step: int
    num_generations: int
    temperature: float
    top_p: float
    top_k: int
    beta: float
    epsilon: float
    epsilon_high: float
    num_iterations: int
    threads: int
    use_vllm: bool
    epochs: int | None
    mini_batch_prompts: int | None
    micro_batch_completions: int | None
    loss_type: str | None
    weight_decay: float
    bf16: bool | None
    gradient_checkpointing: bool
    vllm_gpu_memory_utilization: float
    vllm_tensor_parallel_size: int
    vllm_cpu_kvcache_gb: int
    vllm_is_correction: bool
    vllm_is_mode: str
    vllm_is_clip: float
    ref_dtype: str | None
    policy_dtype: str
    checkpoint_dtype: str
    save_every: int | None
    save_before_limit: int
    screen_steps: int | None  # None: no layer screen
    screen_keep: int | None  # None: half the single-layer arms, rounded up (Study.screen_keep)

    def identity(self) -> dict[str, Any]:
        """What distinguishes this arm's training: every field, except the
        GPU-era fields while they hold their schema defaults (stable
        fingerprints) and when checkpoints are written (``save_every``,
        ``save_before_limit``) and the layer screen's settings, which change no bit of the result."""
        from layerbench.config.schema import defaults_at

        later = {k: defaults_at(self.KEY).get(k) for k in _RL_LATER_FIELDS}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _RL_NOT_RESULT_FIELDS
                and not (f.name in later and getattr(self, f.name) == later[f.name])}


_RL_NOT_RESULT_FIELDS = frozenset({"save_every", "save_before_limit",  # when checkpoints are written
                                   "screen_steps", "screen_keep"})  # how the study reads the runs
_RL_LATER_FIELDS = frozenset({
    "epochs", "mini_batch_prompts", "micro_batch_completions", "loss_type", "weight_decay", "bf16",
    "gradient_checkpointing", "vllm_gpu_memory_utilization", "vllm_tensor_parallel_size", "ref_dtype", "policy_dtype",
    "checkpoint_dtype", "vllm_cpu_kvcache_gb", "vllm_is_correction", "vllm_is_mode", "vllm_is_clip",
})


@dataclass(frozen=True)
class Limits(Section):
    """``limits``: every token limit of a study, checked by the preflight."""

    KEY = "limits"
    max_prompt_tokens: int
    max_completion_tokens: int
    eval_budgets: tuple[int, ...]
    prompt_policy: str

    @property
    def max_budget(self) -> int:
        return max(self.eval_budgets)


@dataclass(frozen=True)
class Suite(Section):
    """``eval.suites[]``: one lm-eval task (or group) and how it is scored."""

    KEY = "eval.suites"
    task: str
    include_path: str | None
    data_files: str | None
    repeats: int
    metric: str | None  # None: the task's first metric
    filter: str | None  # None: the task's first filter pipeline


@dataclass(frozen=True)
class EvalConfig(Section):
    """``eval``: how every checkpoint is evaluated."""

    KEY = "eval"
    suites: tuple[Suite, ...]
    batch_size: int | str
    limit: int | None
    temperature: float
    top_p: float
    top_k: int
    threads: int
    backend: str
    seed: int | None  # None: each checkpoint's training seed
    derive_budgets: bool
    dtype: str
    gpu_memory_utilization: float
    max_model_len: int | None  # None: model.context_length
    vllm_cpu_kvcache_gb: int
    num_fewshot: int | None  # None: each task's own few-shot setting
    probe_budget: int | None  # None: answers cut off at the largest budget are not continued

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class TrackingConfig(Section):
    """``tracking``: where the study is logged to MLflow."""

    KEY = "tracking"
    uri: str | None  # None: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str | None  # None: layerbench-<study>
    live: bool  # train jobs log per-step metrics while they run


@dataclass(frozen=True)
class StageResources(Section):
    """``resources.train`` / ``resources.evaluate``: one job's scheduler request."""

    KEY = "resources.train"
    mem_mb: int | None
    runtime: int | None
    cpus: int | None


@dataclass(frozen=True)
class Resources(Section):
    """``resources``: GPU studies' scheduler requests (absent: a CPU study)."""

    KEY = "resources"
    gpu: int
    gpus_per_arm: int  # resolved at load: absent means gpu (one process on a CPU study)
    gpu_memory_gb: float | None  # None: read from nvidia-smi by the training preflight
    train: StageResources
    evaluate: StageResources

    @classmethod
    def from_dict(cls, values: dict):
        gpu = int(values.get("gpu", 0))
        return cls(gpu=gpu, gpus_per_arm=values.get("gpus_per_arm") or max(1, gpu),
                   gpu_memory_gb=values.get("gpu_memory_gb"),
                   train=StageResources.from_dict(values.get("train") or {}),
                   evaluate=StageResources.from_dict(values.get("evaluate") or {}))

    def stage(self, name: str) -> StageResources:
        return {"train": self.train, "evaluate": self.evaluate}[name]
