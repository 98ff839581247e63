"""An arm's batches, counted in completions (TRL's unit): one definition,
used by the config checks, the memory estimate and the train stage."""

from __future__ import annotations

from dataclasses import dataclass

from layerbench.config.sections import RLConfig


@dataclass(frozen=True)
class BatchGeometry:
    """One arm's batches, counted in completions (TRL's unit)."""

    per_rollout: int  # completions generated per rollout batch (prompts x group size)
    mini: int  # completions per optimizer update
    micro: int  # completions per forward/backward pass (TRL per_device_train_batch_size)
    updates_per_rollout: int  # optimizer updates made from one rollout batch (all PPO iterations)


def batch_geometry(rl: RLConfig) -> BatchGeometry:
    """The config's batch sizes as TRL takes them; that they divide evenly is
    checked at load (:func:`batch_problem`)."""
    mini_prompts = rl.mini_batch_prompts or rl.prompts_per_step
    mini = mini_prompts * rl.num_generations
    return BatchGeometry(per_rollout=rl.prompts_per_step * rl.num_generations, mini=mini,
                         micro=rl.micro_batch_completions or mini,
                         updates_per_rollout=rl.num_iterations * (rl.prompts_per_step // mini_prompts))


def optimizer_steps(rl: RLConfig, n_prompts: int | None = None) -> int:
    """TRL ``max_steps`` (optimizer updates). With ``rl.epochs``: every full
    rollout batch of the training prompts, ``epochs`` times (a trailing
    partial batch is dropped, as verl's dataloader does)."""
    if rl.epochs is None:
        return rl.steps
    if n_prompts is None:
        raise ValueError("rl.epochs needs the number of training prompts")
    batches = n_prompts // rl.prompts_per_step
    if batches == 0:
        raise ValueError(f"{n_prompts} training prompts are fewer than rl.prompts_per_step={rl.prompts_per_step}")
    return rl.epochs * batches * batch_geometry(rl).updates_per_rollout


def batch_problem(rl: RLConfig, gpus_per_arm: int = 1) -> str | None:
    """Batch sizes must divide evenly, or TRL would silently regroup them;
    with several training processes each takes an equal share of every
    optimizer update (the global batch stays the config's)."""
    mini_prompts = rl.mini_batch_prompts or rl.prompts_per_step
    if rl.prompts_per_step % mini_prompts:
        return f"rl.prompts_per_step={rl.prompts_per_step} is not a multiple of rl.mini_batch_prompts={mini_prompts}"
    batch = batch_geometry(rl)
    mini_batch, micro_batch = batch.mini, batch.micro
    if mini_batch % micro_batch:
        return (f"rl.micro_batch_completions={micro_batch} does not divide the {mini_batch} completions of one "
                f"optimizer update")
    if mini_batch % (micro_batch * gpus_per_arm):
        return (f"key 'resources.gpus_per_arm': {gpus_per_arm} processes x rl.micro_batch_completions={micro_batch} "
                f"do not divide the {mini_batch} completions of one optimizer update (lower the micro-batch or "
                f"use a number of GPUs that divides {mini_batch // micro_batch})")
    if rl.save_every and rl.save_every % batch.updates_per_rollout:
        return (f"key 'rl.save_every': {rl.save_every} is not a multiple of the {batch.updates_per_rollout} optimizer "
                f"updates made from one rollout batch; a checkpoint inside a rollout batch could not resume "
                f"bit-identically (use a multiple of {batch.updates_per_rollout})")
    if rl.screen_steps and rl.screen_steps % batch.updates_per_rollout:
        return (f"key 'rl.screen_steps': {rl.screen_steps} is not a multiple of the {batch.updates_per_rollout} "
                f"optimizer updates made from one rollout batch; the screen's checkpoint, which kept arms resume "
                f"from, must fall between rollout batches (use a multiple of {batch.updates_per_rollout})")
    if rl.use_vllm and gpus_per_arm % rl.vllm_tensor_parallel_size:
        return (f"key 'rl.vllm_tensor_parallel_size': {rl.vllm_tensor_parallel_size} does not divide "
                f"resources.gpus_per_arm={gpus_per_arm}")
    return None
