"""Answers still cut off at the largest budget, continued up to ``eval.probe_budget``.

The largest budget bounds every score: an answer cut off there scores 0, and
nobody knows whether it was heading right. This continues the same
generation up to the probe budget and scores it again, so the report can
say what each arm would have scored if allowed to finish, at the cost of the
cut-off answers alone.

How, per backend:
- HF (``layerbench-hf``): from the prompt plus the tokens the answer already
  has, through lm-eval's own ``_model_generate`` (same stop criteria), so
  it costs only the extra tokens. Greedy: the continued answer is the
  direct generation at the probe budget, token for token
  (``tests/test_evaluate.py``). Sampling: a sample given the same prefix,
  seeded per answer, but not the one a direct run would draw: lm-eval's HF
  sampling uses one random stream for the whole batch, and that stream's
  position for one answer cannot be recovered.
- vLLM (``layerbench-vllm``): each cut-off request is replayed with its own
  sampling settings and seed (``backends.request_seed``) at the probe
  budget, so under sampling too it is the direct generation at the probe
  budget (``tests/test_vllm.py``). It re-decodes the answer's first tokens,
  so it costs the probe budget per cut-off answer. A replay that does not
  start with the recorded tokens (vLLM's kernels can vary with the batch) is
  continued from its prefix instead, as HF does, and not counted as replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerbench.stages.evaluate.backends import (
    Generation,
    generation_from_vllm,
    request_seed,
    trim_generation,
)


@dataclass(frozen=True)
class Continued:
    """One cut-off answer, continued: where it ended and what it cost."""

    generation: Generation  # the whole answer, prefix included, trimmed at the probe budget
    extra_tokens: int  # tokens the continuation generated (before trimming at a stop sequence)
    replayed: bool  # vLLM: the answer regenerated from its own seed, equal to it up to where it was cut


def continue_generations(lm, pending: list[tuple[str, Generation]], probe_budget: int, decoding: dict,
                         seed: int) -> list[Continued]:
    """Continue every (context, cut-off generation) in ``pending`` with the evaluation's model ``lm``."""
    if not pending:
        return []
    if pending[0][1].params is not None:
        return _replay_vllm(lm, pending, probe_budget)
    return [_continue_hf(lm, context, gen, probe_budget, decoding, seed) for context, gen in pending]


def _continue_hf(lm, context: str, gen: Generation, probe_budget: int, decoding: dict, seed: int) -> Continued:
    import torch
    from lm_eval.models.huggingface import HFLM

    ids = list(lm.tok_encode(context)) + list(gen.token_ids)
    kwargs = dict(decoding)
    if kwargs.get("do_sample"):  # a stream of its own per answer: the same continuation on any rerun
        torch.manual_seed(request_seed(seed, tuple(ids), 0))
    out = HFLM._model_generate(lm, context=torch.tensor([ids], device=lm.device),
                               max_length=len(ids) - len(gen.token_ids) + probe_budget, stop=list(gen.stop), **kwargs)
    new = out[0].tolist()[len(ids):]
    whole = trim_generation(list(gen.token_ids) + new, list(gen.stop), {lm.eot_token_id}, lm.tok_decode,
                            probe_budget)
    return Continued(whole, len(new), replayed=False)


def _replay_vllm(lm, pending: list[tuple[str, Generation]], probe_budget: int) -> list[Continued]:
    from lm_eval.models.vllm_causallms import VLLM

    def generate(prompts, params):
        return VLLM._model_generate(lm, prompts, generate=True, sampling_params=params)

    prompts = [list(lm.tok_encode(context)) for context, _ in pending]
    params = [_with_max_tokens(gen.params, probe_budget) for _, gen in pending]
    done, diverged = {}, []
    for i, ((_, gen), p, output) in enumerate(zip(pending, params, generate(prompts, params))):
        whole = generation_from_vllm(output.outputs[0], p.stop, probe_budget)
        if whole.token_ids[:len(gen.token_ids)] == gen.token_ids:
            done[i] = Continued(whole, len(whole.token_ids), replayed=True)
        else:
            diverged.append(i)
    if diverged:
        rest = [_with_max_tokens(params[i], probe_budget - len(pending[i][1].token_ids)) for i in diverged]
        outputs = generate([prompts[i] + list(pending[i][1].token_ids) for i in diverged], rest)
        for i, p, output in zip(diverged, rest, outputs):
            gen, new = pending[i][1], generation_from_vllm(output.outputs[0], p.stop, probe_budget)
            whole = Generation(gen.token_ids + new.token_ids, new.finish_reason, probe_budget, gen.stop)
            done[i] = Continued(whole, len(new.token_ids), replayed=False)
    return [done[i] for i in range(len(pending))]


def _with_max_tokens(params, max_tokens: int):
    out = params.clone()
    out.max_tokens = max_tokens
    return out
