"""The one definition of a final answer, shared by rewards, lm-eval and audits.

The lm-eval task YAML under ``benchmarks/`` repeats ``ANSWER_REGEX`` (YAML
cannot import Python); a test checks the two stay equal.
"""

from __future__ import annotations

import re

ANSWER_MARKER = "####"
ANSWER_REGEX = r"#### (\-?[0-9]+)"
_ANSWER = re.compile(ANSWER_REGEX)


def format_answer(value: int) -> str:
    return f"{ANSWER_MARKER} {value}"


def extract_answer(text: str) -> str | None:
    """First final answer in ``text``, or None when there is none (for
    example because the generation was cut off before it)."""
    match = _ANSWER.search(text)
    return match.group(1) if match else None


def is_correct(text: str, target: str) -> bool:
    answer = extract_answer(text)
    return answer is not None and answer == str(target).strip()
