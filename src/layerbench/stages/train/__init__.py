"""RL for one (arm, seed) with TRL's GRPOTrainer.

The arm decides what may change: ``full`` trains every parameter;
``layer:K`` (and ``layers:I,J``) freeze everything except those decoder
layers (attention, MLP and both norms); ``lora:R`` trains a PEFT adapter
(``with_lora``); ``dup:K`` trains a copy of layer K inserted after it
(``runtime.duplicate``). A control arm's reward is ``RecordingReward``'s. Gradients flow from the loss down
to the lowest trained layer and stop there (``cost.stop_backward_at_arm``
keeps gradient checkpointing from pulling the frozen layers below into
backward); only the optimizer's parameter set and how deep backward goes
differ. GRPO and Dr. GRPO are TRL's own ``loss_type``/``scale_rewards``
options. What a run costs (time per phase, memory, optimizer state) goes to
``summary.json``'s ``cost`` (``cost.CostMeter``).

The reward function also records every rollout (length, truncated, reward)
and hashes the first batch of rollouts: arms of one seed must produce the
same hash, which proves they start from the same weights, prompts and
sampling stream.

Truncated (one definition, everywhere in layerbench): the generation stopped
because its token budget ran out, not because of EOS or a stop sequence.
During training there are no stop sequences, so: no EOS within the cap.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from layerbench.analysis.stats import percentile
from layerbench.answers import is_correct
from layerbench.config import Arm, RLConfig
from layerbench.config.arms import DECODER_LAYERS, LORA_ALPHA, LORA_TARGETS
from layerbench.config.batches import batch_geometry, optimizer_steps
from layerbench.paths import RunFolder
from layerbench.runtime.checkpoints import save_checkpoint
from layerbench.runtime.duplicate import duplicate_layer, step0_difference
from layerbench.runtime.io import (
    atomic_directory,
    atomic_write_csv,
    atomic_write_json,
    read_jsonl,
)
from layerbench.runtime.progress import Progress
from layerbench.runtime.seeding import seed_everything
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths
from layerbench.runtime.time_limit import job_end_time

ROLLOUT_COLUMNS = ["step", "rank", "index", "prompt", "length", "truncated", "reward", "correct"]
DUP_PROBE_PROMPTS = 32  # training prompts on which a dup arm's step-0 output is compared with the base model's


def freeze_for_arm(model, arm: Arm) -> int:
    """Leave only the arm's parameters trainable; return how many there are."""
    if arm.kind == "full":
        model.requires_grad_(True)
    elif arm.kind == "lora":
        pass  # get_peft_model (with_lora) froze everything but the adapters
    else:
        model.requires_grad_(False)
        layers = decoder_layers(model)
        for k in arm.trained_layers:
            layers[k].requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def decoder_layers(model):
    """The decoder layer list of a Qwen-style causal LM (``DECODER_LAYERS``),
    under PEFT's wrapper too."""
    unwrapped = model.get_base_model() if hasattr(model, "get_base_model") else model
    return unwrapped.get_submodule(DECODER_LAYERS)


def with_lora(model, arm: Arm, seed: int):
    """``model`` wrapped by PEFT with a rank-``arm.rank`` LoRA adapter on every
    decoder layer's ``LORA_TARGETS``. PEFT starts B at zero, so the model's
    output is the base's at step 0 (the pairing holds); A's random start is
    drawn from the seed in a forked RNG, leaving every other draw as in the
    other arms."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=arm.rank, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none",
                        target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def verifier(name: str):
    """The answer check of a study (``Study.verifier``): layerbench's ``####``
    regex for the synthetic task, math-verify for Hub math data."""
    if name == "arith":
        return is_correct
    if name == "math_verify":
        from layerbench.mathverify import is_correct_math

        return is_correct_math
    raise ValueError(f"unknown verifier {name!r}")


class RecordingReward:
    """The arm's reward (``Arm.reward``) that also records every rollout for
    the truncation audit and the pairing check.

    ``correct``: 1 if the final answer matches, else 0. ``finish_only``: 1 if
    the rollout ends inside the cap (EOS), whatever the answer. ``random``:
    Bernoulli with mean the step-0 rollouts' correctness (the base model's:
    step 0 samples from the base weights, the same for every arm of a seed),
    each draw seeded by (seed, step, rank, index) so a resumed run draws the
    same. Every rollout's correctness is recorded whatever it was rewarded."""


    def __init__(self, tokenizer, eos_ids: list[int], correct=is_correct, rank: int = 0,
                 reward: str = "correct", seed: int = 0):
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.correct = correct
        self.rank = rank  # this process's rank: each rank generates its own share of every rollout batch
        self.reward, self.seed = reward, seed
        self.__name__ = reward  # TRL's name for it: metrics.csv's rewards/<reward>/mean
        self.rows: list[dict] = []
        self.step0_sha256: str | None = None
        self.step0_prompt_sha256: str | None = None  # prompts only: what a dup arm, another model, pairs on
        self.random_mean: float | None = None

    def __call__(self, prompts, completions, completion_ids, answer, trainer_state=None, **_):
        step = trainer_state.global_step if trainer_state is not None else 0
        correct = [float(self.correct(c, a)) for c, a in zip(completions, answer)]
        truncated = [int(not any(t in self.eos_ids for t in ids)) for ids in completion_ids]
        if self.step0_sha256 is None:
            digest, prompt_digest = hashlib.sha256(), hashlib.sha256()
            for prompt, ids in zip(prompts, completion_ids):
                prompt_ids = self.tokenizer(prompt)["input_ids"]
                digest.update(json.dumps([prompt_ids, list(ids)]).encode())
                prompt_digest.update(json.dumps(prompt_ids).encode())
            self.step0_sha256, self.step0_prompt_sha256 = digest.hexdigest(), prompt_digest.hexdigest()
            if self.reward == "random":
                from accelerate.utils import gather_object

                every_rank = gather_object(correct)
                self.random_mean = sum(every_rank) / len(every_rank)
        rewards = self.rewards(step, correct, truncated)
        for i, (prompt, ids) in enumerate(zip(prompts, completion_ids)):
            self.rows.append({"step": step, "rank": self.rank, "index": i, "prompt": prompt, "length": len(ids),
                              "truncated": truncated[i], "reward": rewards[i], "correct": correct[i]})
        return rewards

    def rewards(self, step: int, correct: list[float], truncated: list[int]) -> list[float]:
        if self.reward == "finish_only":
            return [float(not t) for t in truncated]
        if self.reward == "random":
            import numpy as np

            return [float(np.random.default_rng([self.seed, step, self.rank, i]).random() < self.random_mean)
                    for i in range(len(correct))]
        return correct

    def state(self) -> dict:
        """What a resumed job needs back (``resume``): the rollouts so far, the pairing hash, the random mean."""
        return {"rows": self.rows, "step0_sha256": self.step0_sha256, "step0_prompt_sha256": self.step0_prompt_sha256,
                "random_mean": self.random_mean}

    def load(self, state: dict) -> None:
        self.rows[:] = state["rows"]
        self.step0_sha256, self.random_mean = state["step0_sha256"], state.get("random_mean")
        self.step0_prompt_sha256 = state.get("step0_prompt_sha256")


def truncation_by_step(rows: list[dict]) -> dict[int, dict]:
    """Per step: share truncated, length percentiles of finished vs truncated
    rollouts, mean reward of truncated ones."""
    by_step: dict[int, list[dict]] = {}
    for row in rows:
        by_step.setdefault(int(row["step"]), []).append(row)
    out = {}
    for step, group in sorted(by_step.items()):
        finished = [r["length"] for r in group if not r["truncated"]]
        truncated = [r for r in group if r["truncated"]]
        out[step] = {
            "rollouts/truncated_share": len(truncated) / len(group),
            "rollouts/finished_length_p50": percentile(finished, 50),
            "rollouts/finished_length_p90": percentile(finished, 90),
            "rollouts/truncated_reward_mean": (
                sum(r["reward"] for r in truncated) / len(truncated) if truncated else None
            ),
            "rollouts/reward_mean": sum(r["reward"] for r in group) / len(group),
        }
    return out


def progress_callback(what: str, steps: int):
    """A TrainerCallback writing the job's progress line (``runtime.progress``)
    from each optimizer step's logged reward and truncated share (TRL's
    ``completions/clipped_ratio``: completions with no EOS within the cap)."""
    from transformers import TrainerCallback

    class ProgressLine(TrainerCallback):
        def __init__(self):
            self.progress = Progress(what, steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.progress.update(state.global_step, reward=logs["reward"],
                                     truncated=logs.get("completions/clipped_ratio"))

    return ProgressLine()


def trl_loss(rl: RLConfig) -> dict:
    """TRL's own switches for the algorithm: no loss code of ours."""
    out = ({"loss_type": "dr_grpo", "scale_rewards": "none"} if rl.algorithm == "dr_grpo"
           else {"loss_type": "grpo", "scale_rewards": "group"})
    if rl.loss_type:
        out["loss_type"] = rl.loss_type
    return out


def grpo_args(rl: RLConfig, max_completion_tokens: int, seed: int, output_dir: Path,
              max_prompt_tokens: int | None = None, n_prompts: int | None = None, use_cpu: bool | None = None,
              gpus_per_arm: int = 1, save_steps: int | None = None):
    """GRPOConfig for one arm; every value comes from the study config.

    Batch geometry (all counted in completions, TRL's unit): a rollout batch
    is ``prompts_per_step x num_generations`` completions, split into
    optimizer updates of ``mini_batch`` completions, each accumulated over
    forward/backward passes of ``micro_batch`` completions. With
    ``rl.epochs`` the number of optimizer steps follows from ``n_prompts``.
    With ``gpus_per_arm`` data-parallel processes each pass runs on every
    process at once, so each accumulates 1/``gpus_per_arm`` as many passes: the
    global batches, and so the optimization, stay the config's.

    vLLM (``rl.use_vllm``): TRL's colocated engine, its ``max_model_len`` the
    prompt cap plus the completion cap (a longer sequence cannot occur: the
    preflight enforces the prompt cap), and TRL's importance-sampling
    correction as ``rl.vllm_is_*`` say. Its seed is not set here: TRL seeds
    the engine from the process index; ``engine.seeded_engine`` fixes that."""
    from trl import GRPOConfig

    save_steps = save_steps or rl.save_every  # the screen's job saves at its last step instead
    batch = batch_geometry(rl)
    extra = {}
    if rl.use_vllm:
        if max_prompt_tokens is None:
            raise ValueError("rl.use_vllm needs the prompt cap (vLLM max_model_len = prompt cap + completion cap)")
        extra.update(use_vllm=True, vllm_mode="colocate",
                     vllm_gpu_memory_utilization=rl.vllm_gpu_memory_utilization,
                     vllm_tensor_parallel_size=rl.vllm_tensor_parallel_size,
                     vllm_max_model_length=max_prompt_tokens + max_completion_tokens,
                     vllm_importance_sampling_correction=rl.vllm_is_correction,
                     vllm_importance_sampling_mode=rl.vllm_is_mode,
                     vllm_importance_sampling_clip_max=rl.vllm_is_clip)
    if rl.bf16 is not None:
        extra["bf16"] = rl.bf16
    if rl.ref_dtype is not None:  # TRL builds the reference model from model_init_kwargs
        extra["model_init_kwargs"] = {"dtype": rl.ref_dtype}
    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=optimizer_steps(rl, n_prompts),
        per_device_train_batch_size=batch.micro,
        gradient_accumulation_steps=batch.mini // (batch.micro * gpus_per_arm),
        steps_per_generation=batch.per_rollout // (batch.micro * gpus_per_arm),
        num_generations=rl.num_generations,
        max_completion_length=max_completion_tokens,
        learning_rate=rl.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=rl.weight_decay,
        temperature=rl.temperature,
        top_p=rl.top_p,
        top_k=rl.top_k,
        beta=rl.beta,
        epsilon=rl.epsilon,
        epsilon_high=rl.epsilon_high,
        num_iterations=rl.num_iterations,
        seed=seed,
        data_seed=seed,
        use_cpu=(not _cuda_available()) if use_cpu is None else use_cpu,
        gradient_checkpointing=rl.gradient_checkpointing,
        logging_steps=1,
        **({"save_strategy": "steps", "save_steps": save_steps} if save_steps else {"save_strategy": "no"}),
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        **trl_loss(rl),
        **extra,
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def train_arm(
    base_model: Path,
    train_file: Path,
    arm: Arm,
    seed: int,
    rl: RLConfig,
    max_completion_tokens: int,
    out: RunFolder,
    max_prompt_tokens: int | None = None,
    verifier_name: str = "arith",
    gpus_per_arm: int = 1,
    live=None,
    stop_after: int | None = None,
    start_from: Path | None = None,
) -> dict:
    """Train one arm; write its run folder atomically (all or nothing).

    The layer screen (``rl.screen_steps``): ``stop_after`` S trains the run's
    first S steps (same schedule: the optimizer steps of the whole run) and
    publishes their metrics, rollouts and the checkpoint at S
    (``RunFolder.screen_checkpoint``) instead of a model; ``start_from`` (a
    screen run's checkpoint folder) makes a kept arm's full run resume there.

    ``gpus_per_arm`` is the study's ``resources.gpus_per_arm``: the
    data-parallel processes of the job (CPU processes on a CPU study).
    Under a launcher (``WORLD_SIZE`` > 1, see
    ``RuleSettings.train_launcher``) every process runs this function; all
    take part in training and in gathering the rollouts, and only rank 0
    writes the run folder. A job whose launcher started another number of
    processes stops before training: its batches would not be the study's.
    ``live``: how rank 0 begins logging to MLflow while it trains (a
    ``live.LiveMetrics`` given all but the arm, seed, run identity and cost
    meter), or None."""
    import torch
    from accelerate.utils import gather_object
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from layerbench.runtime.numerics import start_job
    from layerbench.stages.train import engine, resume
    from layerbench.stages.train.cost import (
        CostMeter,
        current_rss_mb,
        stop_backward_at_arm,
    )

    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world_size != gpus_per_arm:
        raise RuntimeError(f"key 'resources.gpus_per_arm': the study trains each arm with {gpus_per_arm} process(es), "
                           f"but this job was launched with WORLD_SIZE={world_size}")
    rss_before_model = current_rss_mb()
    seed_everything(seed)
    numerics = start_job(rl.threads)
    tokenizer = AutoTokenizer.from_pretrained(base_model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=getattr(torch, rl.policy_dtype))
    if arm.kind == "lora":
        model = with_lora(model, arm, seed)
    records = read_jsonl(train_file)
    dup_step0 = None
    if arm.duplicated_layer is not None:
        duplicate_layer(model, arm.duplicated_layer)
        batch = tokenizer([r["prompt"] for r in records[:DUP_PROBE_PROMPTS]], return_tensors="pt", padding=True)
        dup_step0 = step0_difference(model, arm.duplicated_layer, batch["input_ids"], batch["attention_mask"])
    trainable = freeze_for_arm(model, arm)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in records])
    reward = RecordingReward(tokenizer, [tokenizer.eos_token_id], verifier(verifier_name), rank=rank,
                             reward=arm.reward, seed=seed)
    steps = optimizer_steps(rl, len(records))

    identity = resume.run_identity(arm, seed, rl, base_model, train_file, max_completion_tokens=max_completion_tokens,
                                   max_prompt_tokens=max_prompt_tokens, verifier=verifier_name)
    if start_from is not None and rank == 0 and resume.latest_checkpoint(out.resume, identity) is None:
        resume.start_from_screen(start_from, out.resume)
    resume_from = resume.latest_checkpoint(out.resume, identity, tidy=rank == 0)
    started = time.perf_counter()
    folder = atomic_directory(out.path) if rank == 0 else tempfile.TemporaryDirectory(prefix="layerbench-rank")
    with folder as tmp:
        run = RunFolder(Path(tmp))
        saves = stop_after or rl.save_every
        checkpoints = run.screen_checkpoint if stop_after else out.resume
        args = grpo_args(rl, max_completion_tokens, seed, checkpoints if saves else run.scratch,
                         max_prompt_tokens=max_prompt_tokens, n_prompts=len(records), gpus_per_arm=gpus_per_arm,
                         save_steps=saves)
        engine_meter = engine.EngineMeter()
        with (engine.seeded_engine(seed, rl.vllm_cpu_kvcache_gb, engine_meter) if rl.use_vllm
              else contextlib.nullcontext()):
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=[reward],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
            )
        if rl.use_vllm:
            engine.attach(trainer, model, engine_meter)
        input_grads_blocked = stop_backward_at_arm(model, trainer.args, embeddings_frozen=arm.kind != "full")
        meter = CostMeter(rss_before_model).attach(trainer, decoder_layers(model))
        live_metrics = live(arm, seed, identity, meter) if live is not None and rank == 0 else None
        if rank == 0:
            trainer.add_callback(progress_callback(f"train {arm.name} seed {seed}", steps))
        if live_metrics is not None:
            trainer.add_callback(live_metrics)
        stop_before_limit = None
        if saves:
            trainer.add_callback(resume.MarkCheckpoints(checkpoints, identity, reward, rank))
            end_time = job_end_time()
            if end_time is not None and not stop_after:
                stop_before_limit = resume.StopBeforeLimit(end_time, rl.save_before_limit, rl.save_every)
                trainer.add_callback(stop_before_limit)
            if arm.tensor_prefixes:  # a lora arm's checkpoint is PEFT's adapter already
                resume.keep_trained_tensors_only(trainer, arm)
        if stop_after:
            trainer.add_callback(resume.StopAfter(stop_after))
        if resume_from is not None:
            resume.restore(resume_from, reward)
            print(f"[resume] train {arm.name} seed {seed}: from {resume_from.name}", flush=True)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
        if stop_before_limit is not None and stop_before_limit.stopped_at is not None:
            if rank == 0:
                resume.record_stop(out.resume, stop_before_limit.stopped_at)
            print(f"[time limit] train {arm.name} seed {seed}: fewer than {rl.save_before_limit} s left, "
                  f"stopped at checkpoint-{stop_before_limit.stopped_at}; exit {resume.EXIT_RESUBMIT} "
                  "for Snakemake to resubmit, and the job resumes", flush=True)
            raise SystemExit(resume.EXIT_RESUBMIT)  # the run folder is not published; the checkpoint stays
        seconds = time.perf_counter() - started
        checkpoint = (None if stop_after else
                      save_checkpoint(trainer, tokenizer, arm, base_model, run.checkpoint, rl.checkpoint_dtype))
        rollouts = gather_object(reward.rows)  # every rank's, in rank order
        step0_by_rank = gather_object([reward.step0_sha256])
        prompts_by_rank = gather_object([reward.step0_prompt_sha256])
        if rank != 0:
            return {}
        _remove_tree(run.scratch)

        truncation = truncation_by_step(rollouts)
        metrics = []
        for entry in trainer.state.log_history:
            if "step" not in entry or "train_runtime" in entry:
                continue
            step = int(entry["step"])
            row = {"step": step, **{k: v for k, v in entry.items() if k != "step"}}
            row.update(truncation.get(step - 1, {}))  # rewards are recorded before the update
            metrics.append(row)
        columns = ["step"] + sorted({k for row in metrics for k in row} - {"step"})
        atomic_write_csv(run.metrics, metrics, columns)
        atomic_write_csv(run.rollouts, rollouts, ROLLOUT_COLUMNS)
        summary = {
            "arm": arm.name,
            "seed": seed,
            "trainable_parameters": trainable,
            "total_parameters": sum(p.numel() for p in model.parameters()),
            "step0_rollout_sha256": step0_across_ranks(step0_by_rank),
            "step0_rollout_sha256_by_rank": step0_by_rank,
            "step0_prompt_sha256": step0_across_ranks(prompts_by_rank),
            "dup_step0_vs_base": dup_step0,
            "processes": gpus_per_arm,
            "distributed": trainer.accelerator.distributed_type.value,
            "train_seconds": round(seconds, 2),
            "optimizer_steps": steps,
            "resumed_from_step": resume.checkpoint_step(resume_from),
            "screen_steps": stop_after,
            "time_limit_stops": resume.time_limit_stops(out.resume),
            "seconds_per_step": round(seconds / ((stop_after or steps) - resume.checkpoint_step(resume_from)), 4),
            "rl": asdict(rl),
            "max_completion_tokens": max_completion_tokens,
            "numerics": numerics,
            "cost": {**meter.summary(trainer, seconds, trainable), "input_grads_blocked": input_grads_blocked},
            "checkpoint": checkpoint,
            "mlflow_run_id": live_metrics.run_id if live_metrics is not None else None,
        }
        if rl.use_vllm:
            summary["vllm"] = engine_meter.summary()
        atomic_write_json(run.summary, summary)
    _remove_tree(out.resume)  # the run is published: nothing is left to resume
    return summary


def step0_across_ranks(hashes: list[str]) -> str:
    """One pairing hash for a run: the rank's own with one process, else the
    hash of every rank's in rank order (equal only if every rank's is)."""
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("".join(hashes).encode()).hexdigest()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage train``: one (arm, seed) with the study's settings for that arm."""
    parser = stage_parser("train", first_line(__doc__))
    parser.add_argument("--arm", required=True, help="config or path form: layer:3 or layer-3")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--screen", action="store_true",
                        help="the layer screen's run: the first rl.screen_steps steps, and their checkpoint")
    args = parser.parse_args(argv)
    paths = study_paths(args)
    study = paths.study
    arm = Arm.parse(args.arm)
    if arm in study.screened_out and not args.screen:
        print(publish_screened_out(RunFolder(Path(args.out)), arm, args.seed))
        return
    live = None
    # the study's own run of the arm logs live (tracking.live); the repro target's re-run and the screen do not
    if study.tracking.live and Path(args.out).resolve() == paths.run(arm, args.seed).path.resolve():
        from layerbench.stages.train.live import LiveMetrics

        live = functools.partial(LiveMetrics, study.tracking, study.name, paths.mlflow_parent)
    print(train_arm(Path(args.base), Path(args.train), arm, args.seed, study.rl_for(arm),
                    study.limits.max_completion_tokens, RunFolder(Path(args.out)),
                    max_prompt_tokens=study.limits.max_prompt_tokens, verifier_name=study.verifier,
                    gpus_per_arm=study.resources.gpus_per_arm, live=live,
                    stop_after=study.rl.screen_steps if args.screen else None,
                    start_from=screen_start(paths, arm, args.seed, Path(args.out))))


def screen_start(paths, arm: Arm, seed: int, out: Path) -> Path | None:
    """Where a kept arm's study run resumes: its screen run's checkpoint
    (``StudyPaths.screen_inputs``, also the rule's inputs), else None. Found
    here rather than passed, so that the train rule of a study that does not
    screen is unchanged and Snakemake retrains nothing."""
    inputs = paths.screen_inputs(arm.name, seed, "runs")
    if not inputs or out.resolve() != paths.run(arm, seed).path.resolve():
        return None
    return RunFolder(Path(inputs[1])).screen_checkpoint


def publish_screened_out(out: RunFolder, arm: Arm, seed: int) -> dict:
    """A screened-out arm's run folder: a summary that says so, no checkpoint
    (the DAG is static; every stage after it skips the arm)."""
    summary = {"arm": arm.name, "seed": seed, "screened_out": True}
    with atomic_directory(out.path) as tmp:
        atomic_write_json(RunFolder(Path(tmp)).summary, summary)
    return summary
