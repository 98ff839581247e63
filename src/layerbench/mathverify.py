"""Answer verification for real math data (Hub studies), with ``math-verify``.

One rule for training rewards and for layerbench's own eval tasks
(``benchmarks/amc``, ``benchmarks/olympiadbench``):

* the gold answer is parsed as LaTeX (``$answer$``);
* the completion's answer is what math-verify finds at an *anchor*: a
  ``\\boxed{}`` first, else an explicit "final answer is ..." phrase.
  Free-standing numbers elsewhere do not count, so a completion that was cut
  off before its final answer scores 0 (as in verl's math reward), instead of
  being credited for an intermediate number that happens to match;
* the two are compared with ``math_verify.verify`` (symbolic equality,
  numbers to 6 decimals, intervals, sets, ...).

math-verify 0.9 is pinned in environment.lock (pulled in by ``lm-eval[math]``).
Its parser uses ``signal.alarm`` timeouts, so it must run in the main thread:
TRL reward functions and lm-eval's ``process_results`` do.
"""

from __future__ import annotations

import functools


@functools.cache
def _configs():
    from math_verify import LatexExtractionConfig

    anchored = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
    return anchored


def parse_gold(answer) -> list:
    """The gold answer as math-verify objects; a bare value is read as LaTeX."""
    from math_verify import parse

    text = str(answer).strip()
    if not (text.startswith("$") or "\\boxed" in text):
        text = f"${text}$"
    return parse(text)


def extract(completion: str) -> list:
    """The completion's final answer, or [] when it has none at an anchor."""
    from math_verify import parse

    return parse(completion, extraction_config=_configs())


def is_correct_math(completion: str, answer) -> bool:
    """True when the completion's anchored final answer equals the gold one."""
    from math_verify import verify

    pred = extract(completion)
    if not pred:
        return False
    gold = parse_gold(answer)
    return bool(gold) and bool(verify(gold, pred))


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval ``process_results`` for layerbench's math tasks: the mean of
    :func:`is_correct_math` over every response the filter kept. The tasks'
    filter (``remove_whitespace``) keeps all ``repeats: N`` samples, so this
    is avg@N; with one response it is plain accuracy. lm-eval passes one entry per request:
    the filtered response (a string), or the kept responses (a list)."""
    responses = [r for entry in results for r in (entry if isinstance(entry, list) else [entry])]
    scores = [float(is_correct_math(r, doc["answer"])) for r in responses]
    return {"acc": sum(scores) / len(scores) if scores else 0.0}
