"""What each arm needs in memory and on disk, from the config and the
model's declared shape alone: checked when a study loads, before anything is
downloaded or trained, and printed by ``layerbench check-limits``.

The shape is what config.json declares (``ModelShape.from_config_json``);
``KNOWN_SHAPES`` holds the paper models' so the estimate works offline.
Parameter counts are exact for Qwen2/Qwen3 decoders (tested against
transformers' models). Memory per training process is the sum of
weights, gradients and AdamW states of the *trainable* parameters, the KL
reference model, vLLM's share, and the larger of generation (KV cache) and
backward (activations, logits); FSDP shards the first four over the arm's
GPUs. ``MARGIN`` is how far the estimate may be from the peak measured on
CPU (tests/test_memory.py); on a GPU it is unmeasured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from layerbench.config.batches import batch_geometry, optimizer_steps

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9
OVERHEAD_GB = {"cpu": 0.15, "gpu": 1.5}  # CPU: allocator arenas, math-library scratch and trainer state above the parts (tests/test_memory.py, AMD EPYC); GPU: CUDA context, assumed
MARGIN = 0.25  # |estimate - measured| / measured on CPU (tests/test_memory.py: a 57M-parameter model)


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Qwen2/Qwen3 config.json that decide its size."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied: bool  # tie_word_embeddings: one matrix for input embeddings and output head
    qk_norm: bool  # Qwen3: RMSNorm on each head's queries and keys
    qkv_bias: bool  # Qwen2: biases on the query, key and value projections

    @classmethod
    def from_config_json(cls, config: dict) -> "ModelShape":
        heads = config["num_attention_heads"]
        qwen3 = config.get("model_type") == "qwen3"
        return cls(
            num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"], vocab_size=config["vocab_size"], num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            tied=bool(config.get("tie_word_embeddings", False)), qk_norm=qwen3, qkv_bias=not qwen3)

    def layer_parameters(self) -> int:
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attention = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.qkv_bias else 0) \
            + (2 * self.head_dim if self.qk_norm else 0)
        return attention + 3 * h * self.intermediate_size + 2 * h  # + MLP + two RMSNorms

    def lora_parameters(self, rank: int) -> int:
        """A rank-``rank`` LoRA adapter on every layer's LORA_TARGETS: r x (in + out) per map."""
        h, q, kv, inter = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, \
            self.intermediate_size
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 3 * (h + inter)  # q, k, v, o; gate, up, down
        return rank * per_layer * self.num_layers

    def parameters(self) -> int:
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tied else 2)
        return embeddings + self.num_layers * self.layer_parameters() + self.hidden_size  # + final norm


# config.json of the paper models (Hugging Face model cards), for estimates without a download
KNOWN_SHAPES = {
    "Qwen/Qwen3-1.7B-Base": ModelShape(28, 2048, 6144, 151936, 16, 8, 128, True, True, False),
    "Qwen/Qwen3-4B-Base": ModelShape(36, 2560, 9728, 151936, 32, 8, 128, True, True, False),
    "Qwen/Qwen3-8B-Base": ModelShape(36, 4096, 12288, 151936, 32, 8, 128, False, True, False),
    "Qwen/Qwen2.5-Math-1.5B": ModelShape(28, 1536, 8960, 151936, 12, 2, 128, True, False, True),
}


def trained_layers(arm) -> int | None:
    """How many decoder layers an arm trains whole; None for the full arm, 0 for a lora arm."""
    return None if arm.kind == "full" else len(arm.trained_layers)


def trainable_parameters(shape: ModelShape, trained_layers: int | None, lora_rank: int | None = None) -> int:
    """All parameters for the full arm (``None``), else the trained layers'
    and a lora arm's adapter's."""
    if trained_layers is None:
        return shape.parameters()
    return trained_layers * shape.layer_parameters() + (shape.lora_parameters(lora_rank) if lora_rank else 0)


@dataclass(frozen=True)
class TrainingPlan:
    """What one arm's training holds in memory, besides the model's shape."""

    trained_layers: int | None  # None: the full arm
    policy_dtype: str
    ref_dtype: str | None  # None: the policy's
    beta: float  # > 0: a KL reference model is held
    bf16: bool  # activations in bf16 (autocast) instead of float32
    micro_batch: int  # sequences per forward/backward pass of one process
    generation_batch: int  # sequences one process generates at once (HF generate)
    prompt: int
    completion: int
    gradient_checkpointing: bool
    vllm_share_gb: float = 0.0  # per GPU; replaces the HF generation cache
    # resources.gpus_per_arm on a GPU (1 on CPU): FSDP shards weights, gradients, optimizer states and the reference over these
    gpus_per_arm: int = 1
    device: str = "gpu"
    lora_rank: int | None = None  # a lora arm's adapter rank: its parameters are added to the model's
    added_layers: int = 0  # a dup arm's copy of a decoder layer: the model it trains is one layer deeper


def arm_memory(shape: ModelShape, plan: TrainingPlan) -> dict[str, float]:
    """GB per process (per GPU) of one arm, by part, and their ``total``.

    Activations: every layer's input (float32 residual stream) with gradient
    checkpointing, plus one layer recomputed at a time; without it, every
    layer's attention and MLP intermediates. Logits: completion tokens only
    (TRL's selective log-softmax), one copy plus one float32 row. An upper
    bound for layer arms, which back-propagate only from their lowest layer."""
    size, act = BYTES[plan.policy_dtype], 2 if plan.bf16 else 4
    trainable = trainable_parameters(shape, plan.trained_layers, plan.lora_rank)
    adapter = (shape.lora_parameters(plan.lora_rank) if plan.lora_rank else 0) \
        + plan.added_layers * shape.layer_parameters()
    tokens, h, inter = plan.micro_batch * (plan.prompt + plan.completion), shape.hidden_size, shape.intermediate_size
    if plan.gradient_checkpointing:
        activations = shape.num_layers * tokens * h * 4 + tokens * (8 * h + 3 * inter) * act
    else:
        activations = shape.num_layers * tokens * (8 * h + 3 * inter) * act
    logits = plan.micro_batch * plan.completion * shape.vocab_size * act + plan.completion * shape.vocab_size * 4
    kv_cache = (0 if plan.vllm_share_gb else plan.generation_batch * (plan.prompt + plan.completion)
                * shape.num_layers * 2 * shape.num_kv_heads * shape.head_dim * act)
    sharded = {
        "weights": (shape.parameters() + adapter) * size,
        "gradients": trainable * size,
        "optimizer": trainable * 2 * size,  # AdamW: two moments in the parameters' dtype
        "reference": shape.parameters() * BYTES[plan.ref_dtype or plan.policy_dtype] if plan.beta > 0 else 0,
    }
    out = {k: v / plan.gpus_per_arm / GB for k, v in sharded.items()}
    out.update(activations=activations / GB, logits=logits / GB, generation=kv_cache / GB,
               vllm=plan.vllm_share_gb, overhead=OVERHEAD_GB[plan.device])
    out["total"] = (sum(out[k] for k in (*sharded, "vllm", "overhead"))
                    + max(out["generation"], out["activations"] + out["logits"]))
    return out


def checkpoint_gb(shape: ModelShape, trained_layers: int | None, dtype: str = "float32",
                  lora_rank: int | None = None) -> float:
    """Disk of one checkpoint: the whole model for the full arm, only the
    trained layers for a layer arm (a layer delta), the adapter for a lora arm."""
    return trainable_parameters(shape, trained_layers, lora_rank) * BYTES[dtype] / GB


def study_shape(study, model_dir=None) -> ModelShape | None:
    """The study model's shape: its config.json when ``model_dir`` holds one
    (after download), else without a download: the built model's spec, or a
    known Hub model's config.json (None: unknown)."""
    if model_dir is not None and (Path(model_dir) / "config.json").is_file():
        return ModelShape.from_config_json(json.loads((Path(model_dir) / "config.json").read_text()))
    if study.model.source == "build":
        spec = study.model.build
        return ModelShape(spec.num_layers, spec.hidden_size, spec.intermediate_size, spec.vocab_size,
                          spec.num_heads, spec.num_heads, spec.hidden_size // spec.num_heads, spec.tie_word_embeddings,
                          qk_norm=spec.architecture == "qwen3", qkv_bias=spec.architecture == "qwen2")
    return KNOWN_SHAPES.get(study.model.id)


def arm_plan(study, arm, gpu_memory_gb: float | None) -> TrainingPlan:
    """The TrainingPlan of one arm of a study."""
    rl, processes = study.rl_for(arm), study.resources.gpus_per_arm
    batch = batch_geometry(rl)
    on_gpu = study.resources.gpu > 0
    return TrainingPlan(
        trained_layers=trained_layers(arm), policy_dtype=rl.policy_dtype,
        ref_dtype=rl.ref_dtype, beta=rl.beta, bf16=bool(rl.bf16) if rl.bf16 is not None else on_gpu,
        micro_batch=batch.micro, generation_batch=batch.per_rollout // processes,
        prompt=study.limits.max_prompt_tokens, completion=study.limits.max_completion_tokens,
        gradient_checkpointing=rl.gradient_checkpointing,
        vllm_share_gb=rl.vllm_gpu_memory_utilization * gpu_memory_gb if rl.use_vllm and gpu_memory_gb else 0.0,
        gpus_per_arm=processes if on_gpu else 1, device="gpu" if on_gpu else "cpu", lora_rank=arm.rank,
        added_layers=int(arm.duplicated_layer is not None))


def study_memory(study, gpu_memory_gb: float | None, model_dir=None) -> list[dict]:
    """One row per trained arm kind (full, single layer, ...): GB per process
    by part, whether it fits ``gpu_memory_gb`` (None: not compared), and the
    checkpoint's disk. Empty when the model's shape is unknown."""
    shape = study_shape(study, model_dir)
    if shape is None:
        return []
    rows, seen = [], set()
    for arm in study.trained_arms:
        kind = (arm.kind, len(arm.layers or ()), arm.rank)
        if kind in seen:
            continue
        seen.add(kind)
        plan = arm_plan(study, arm, gpu_memory_gb)
        memory = arm_memory(shape, plan)
        dtype = study.rl_for(arm).checkpoint_dtype
        rows.append({"arm": arm.name, "processes": study.resources.gpus_per_arm, **{k: round(v, 2) for k, v in memory.items()},
                     "gpu_memory_gb": gpu_memory_gb,
                     "fits": None if gpu_memory_gb is None else memory["total"] <= gpu_memory_gb,
                     "checkpoint_gb": round(checkpoint_gb(shape, plan.trained_layers, dtype, plan.lora_rank), 4)})
    return rows


def study_totals(study, model_dir=None) -> dict:
    """Per study: checkpoint disk of every run, and the tokens generated by
    rollouts (an upper bound: every completion at the cap) and by evaluation
    (per eval problem: budgets x repeats, all at their budget)."""
    shape = study_shape(study, model_dir)
    disk, tokens = 0.0, 0.0
    n_prompts = study.data.hub.sample if study.data.source == "hub" else study.data.synthetic.n_train
    for arm in study.trained_arms:
        rl = study.rl_for(arm)
        if tokens is not None and (rl.epochs is None or n_prompts):
            rollouts = optimizer_steps(rl, n_prompts) / batch_geometry(rl).updates_per_rollout
            tokens += rollouts * batch_geometry(rl).per_rollout * study.limits.max_completion_tokens * len(study.seeds)
        else:
            tokens = None  # rl.epochs over a whole Hub split: its size is known after download
        if shape is not None:
            disk += checkpoint_gb(shape, trained_layers(arm), rl.checkpoint_dtype, arm.rank) * len(study.seeds)
    budgets = study.limits.eval_budgets
    per_problem = sum(budgets) if study.eval.derive_budgets is False else max(budgets)
    eval_tokens = per_problem * sum(s.repeats for s in study.eval.suites) * len(study.arms) * len(study.seeds)
    return {"checkpoint_disk_gb": round(disk, 3) if shape is not None else None,
            "rollout_tokens": int(tokens) if tokens is not None else None,
            "eval_tokens_per_problem": int(eval_tokens)}


def describe(row: dict) -> str:
    """One arm's estimate in words: total and its parts."""
    parts = ", ".join(f"{k} {row[k]:.3g}" for k in ("weights", "gradients", "optimizer", "reference", "activations",
                                                    "logits", "generation", "vllm", "overhead") if row[k])
    return f"about {row['total']:.3g} GB per process on {row['processes']} process(es) ({parts})"


def memory_problems(study, gpu_memory_gb: float | None) -> list[str]:
    """Arms whose estimate exceeds ``gpu_memory_gb``, each naming the figures and the fixes."""
    return [f"key 'resources.gpus_per_arm': arm {row['arm']} needs {describe(row)}, more than the "
            f"{gpu_memory_gb:g} GB of one GPU; give it more GPUs (resources.gpus_per_arm, FSDP shards weights, "
            f"gradients and optimizer states), a smaller rl.micro_batch_completions, or "
            f"rl.gradient_checkpointing: true"
            for row in study_memory(study, gpu_memory_gb) if row["fits"] is False]
