"""What one training run costs, measured while it trains (stage ``train``).

``CostMeter`` reads clocks and counters around what TRL's GRPOTrainer does;
it changes nothing that is computed (no extra synchronisation on CPU, no
change to the autograd graph), so every trained bit stays the same:

* time per phase: ``generation`` (``GRPOTrainer._generate_single_turn``:
  ``model.generate``, or vLLM's generate and weight sync), ``scoring`` (the
  rest of ``_generate_and_score_completions``: rewards, advantages, log-probs
  without grad), ``optimizer`` (``optimizer.step``, between the
  ``on_pre_optimizer_step``/``on_optimizer_step`` callbacks),
  ``forward_backward`` (the rest of each optimizer step: loss forward,
  backward, gradient clipping and zeroing) and ``other`` (the rest of the
  run: trainer set-up, data loading, logging). GRPO generates once per
  ``steps_per_generation`` micro-batches; that time lands in the optimizer
  step that generated; ``forward_backward_split`` divides forward/backward
  into the loss forward (``compute_loss``) and the rest (backward, gradient
  clipping and zeroing). On CUDA the clocks are read after
  ``torch.cuda.synchronize``.
* peak memory: the process's max RSS; on CUDA ``torch.cuda.max_memory_allocated``
  (peak reset when training starts).
* optimizer-state bytes: every tensor in ``trainer.optimizer.state`` after
  training; gradient bytes: one gradient per trainable parameter, its dtype.
* ``backward_layers``: decoder layers whose output received a gradient
  during training (a hook on each layer's output tensor): where backward ran.

``stop_backward_at_arm`` keeps backward from running below a layer arm's
lowest trained layer (see its docstring).
"""

from __future__ import annotations

import resource
import time
from collections import Counter

import torch
from transformers import TrainerCallback

TIMED = ("_generate_single_turn", "_generate_and_score_completions", "compute_loss")  # what CostMeter wraps


def stop_backward_at_arm(model, args, embeddings_frozen: bool) -> bool:
    """Keep the frozen layers below a layer arm out of backward; True when
    something had to be done.

    With gradient checkpointing, transformers' ``gradient_checkpointing_enable``
    calls ``enable_input_require_grads`` on every model that takes
    ``input_ids``: the embeddings' output then requires grad, so backward
    runs through every frozen layer below the trained one (recomputing its
    activations too) for gradients nothing uses. ``Trainer.train`` enables
    checkpointing, and TRL enables it again after every rollout and no-grad
    pass (``trl.models.utils.disable_gradient_checkpointing``), each time
    adding the hook again (the earlier ones stay registered). With non-reentrant checkpointing (transformers'
    default) the trained layers' weights get their gradients without it, so
    for arms whose embeddings are frozen this model's
    ``enable_input_require_grads`` becomes a no-op. Reentrant checkpointing
    needs the hook (a checkpointed layer whose inputs do not require grad
    gives its weights no gradient) and is left alone."""
    reentrant = (args.gradient_checkpointing_kwargs or {}).get("use_reentrant")
    if not (embeddings_frozen and args.gradient_checkpointing and not reentrant):
        return False

    def enable_input_require_grads():
        """layerbench: no-op, the embeddings are frozen (cost.stop_backward_at_arm)."""

    model.disable_input_require_grads()
    model.enable_input_require_grads = enable_input_require_grads
    return True


class CostMeter(TrainerCallback):
    """Time per phase, peak memory, optimizer state and backward depth of one run."""

    def __init__(self, rss_before_model_mb: float = 0.0):
        self.rss_before_model_mb = rss_before_model_mb  # the interpreter and libraries, before the model loads
        self.use_cuda = False
        self.seconds: Counter = Counter()  # generation, rollout, loss_forward, optimizer, step
        self.steps = 0
        self.rollouts = 0
        self.backward_calls: Counter = Counter()
        self._marks: dict[str, float] = {}
        self.peak_rss_train_mb: float | None = None

    # --- clocks -----------------------------------------------------------------
    def now(self) -> float:
        if self.use_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def attach(self, trainer, layers) -> "CostMeter":
        """Time the trainer's generation and rollout methods, hook the decoder
        ``layers`` of the model it trains, add the callback."""
        missing = [name for name in TIMED if not callable(getattr(trainer, name, None))]
        if missing:
            raise RuntimeError(f"TRL's GRPOTrainer has no {', '.join(missing)}: update layerbench.stages.train.cost")
        trainer._generate_single_turn = self._timed(trainer._generate_single_turn, "generation")
        trainer._generate_and_score_completions = self._timed(trainer._generate_and_score_completions, "rollout")
        trainer.compute_loss = self._timed(trainer.compute_loss, "loss_forward")
        for index, layer in enumerate(layers):
            layer.register_forward_hook(self._output_hook(index))
        self.use_cuda = trainer.args.device.type == "cuda"
        trainer.add_callback(self)
        return self

    def _timed(self, method, key: str):
        def timed(*args, **kwargs):
            started = self.now()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[key] += self.now() - started
                self.rollouts += key == "rollout"

        return timed

    def _output_hook(self, index: int):
        def count(grad):
            self.backward_calls[index] += 1

        def hook(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad:
                out.register_hook(count)  # returns None: the gradient is left as it is

        return hook

    # --- TrainerCallback --------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if self.use_cuda:
            torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, args, state, control, **kwargs):
        self.peak_rss_train_mb = peak_rss_mb()  # before the checkpoint is saved: the peak the estimate models

    def on_step_begin(self, args, state, control, **kwargs):
        self._marks["step"] = self.now()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._marks["optimizer"] = self.now()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.seconds["optimizer"] += self.now() - self._marks.pop("optimizer")

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds["step"] += self.now() - self._marks.pop("step")
        self.steps += 1

    # --- the record ---------------------------------------------------------------
    def phase_seconds(self) -> dict:
        """Seconds so far in each phase of the optimizer steps (see the README's ``cost``)."""
        s = self.seconds
        return {
            "generation": s["generation"],
            "scoring": s["rollout"] - s["generation"],
            "forward_backward": s["step"] - s["rollout"] - s["optimizer"],
            "optimizer": s["optimizer"],
        }

    def summary(self, trainer, train_seconds: float, trainable: int) -> dict:
        """summary.json's ``cost``: seconds per phase (whole run and per
        optimizer step), peak memory, optimizer state, backward depth."""
        s = self.seconds
        seconds = {**self.phase_seconds(), "other": train_seconds - s["step"]}
        steps = max(self.steps, 1)
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        return {
            "device": _device_name() if self.use_cuda else "cpu",
            "optimizer_steps": self.steps,
            "rollouts": self.rollouts,
            "train_seconds": round(train_seconds, 4),
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "forward_backward_split": {"loss_forward": round(s["loss_forward"], 4),
                                       "backward": round(seconds["forward_backward"] - s["loss_forward"], 4)},
            "per_step": {**{k: round(v / steps, 5) for k, v in seconds.items() if k != "other"},
                         "step": round(s["step"] / steps, 5)},
            "peak_rss_mb": self.peak_rss_train_mb,
            "rss_before_model_mb": self.rss_before_model_mb,
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if self.use_cuda else None,
            "optimizer_state_bytes": optimizer_state_bytes(trainer.optimizer),
            "gradient_bytes": sum(p.numel() * p.element_size() for p in params),
            "trainable_parameters": trainable,
            "backward_layers": sorted(self.backward_calls),
        }


def peak_rss_mb() -> float:
    """This process's largest resident memory so far, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float:
    """This process's resident memory now, in MB (Linux: VmRSS; elsewhere the
    peak so far). Not the peak: a transient while importing libraries is not
    the baseline the model's memory is measured above."""
    try:
        with open("/proc/self/status") as fh:
            return next(round(int(line.split()[1]) / 1024, 1) for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return peak_rss_mb()


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor the optimizer keeps (AdamW: two moments and a step per parameter)."""
    return sum(v.nbytes for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))


def _device_name() -> str:
    return f"cuda: {torch.cuda.get_device_name()}"
