"""Answers still cut off at the largest budget, continued up to ``eval.probe_budget``.

The largest budget bounds every score: an answer cut off there scores 0, and
nobody knows whether it was heading right. This continues the same
generation (the prompt plus the tokens it already has) up to the probe
budget and scores it again, so the report can say what each arm would have
scored if allowed to finish, at the cost of the cut-off answers' extra
tokens only.

Which answer it is:
- greedy decoding (``eval.temperature: 0``): the continued answer is the
  answer a direct generation at the probe budget gives, token for token
  (``tests/test_evaluate.py`` checks it against a direct lm-eval run);
- sampling: a sample from the model given the same prefix, seeded by the
  evaluation's sampling seed and the answer's tokens (so a rerun draws the
  same), but not the sample a direct run would draw:
  lm-eval's HF sampling uses one random stream for the whole batch, and
  that stream's position cannot be recovered for one answer.
Only the HF backend continues (``cross_fields`` refuses ``probe_budget``
with vLLM, naming the key).
"""

from __future__ import annotations

from dataclasses import dataclass

from layerbench.stages.evaluate.backends import Generation, request_seed, trim_generation


@dataclass(frozen=True)
class Continued:
    """One cut-off answer, continued: where it ended and what it cost."""

    generation: Generation  # the whole answer, prefix included, trimmed at the probe budget
    extra_tokens: int  # tokens the continuation generated (before trimming at a stop sequence)


def continue_generation(lm, context: str, gen: Generation, probe_budget: int, decoding: dict,
                        seed: int) -> Continued:
    """Continue ``gen`` (cut off at its budget) of the HF model ``lm`` from
    ``context`` plus its tokens, through lm-eval's own ``_model_generate``
    (same stop criteria, same generate call as a direct run)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    prompt = lm.tok_encode(context)
    ids = list(prompt) + list(gen.token_ids)
    kwargs = dict(decoding)
    if kwargs.get("do_sample"):  # a stream of its own per answer: the same continuation on any rerun
        torch.manual_seed(request_seed(seed, tuple(ids), 0))
    out = HFLM._model_generate(lm, context=torch.tensor([ids], device=lm.device),
                               max_length=len(prompt) + probe_budget, stop=list(gen.stop), **kwargs)
    new = out[0].tolist()[len(ids):]
    whole = trim_generation(list(gen.token_ids) + new, list(gen.stop), {lm.eot_token_id}, lm.tok_decode,
                            probe_budget)
    return Continued(whole, len(new))
