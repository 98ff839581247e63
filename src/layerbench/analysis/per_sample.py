"""The one reader of ``per_sample.csv``, and what its columns mean.

Stage ``evaluate`` writes one row per sample, repeat and budget. ``correct``
is the task metric's value, a float: 0/1 for exact match, possibly in between
for other metrics. Accuracy and C(k) average it as it is; whether a problem
counts as *solved* (the truncation audit's gains and losses, the sample
browser's right/wrong) is decided here, once: ``correct >= SOLVED_AT``.
``truncated`` is true when the budget ran out before the answer ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerbench.runtime.io import read_csv

SOLVED_AT = 0.5  # at least half the credit: a 0/1 metric's 1, a fractional metric's majority
_FLAGS = {"1": True, "0": False, "True": True, "False": False}  # evaluate writes 0/1


@dataclass(frozen=True)
class PerSample:
    task: str
    doc_id: int
    repeat: int
    budget: int
    correct: float
    truncated: bool
    n_tokens: int | None

    @property
    def solved(self) -> bool:
        return self.correct >= SOLVED_AT

    @property
    def problem(self) -> tuple[str, int, int]:
        """(task, doc_id, repeat): the same sample across arms, seeds and budgets."""
        return self.task, self.doc_id, self.repeat


PerSampleTable = dict[tuple[str, int], list[PerSample]]  # (arm, seed) -> that evaluation's rows


def read_per_sample(path: Path) -> list[PerSample]:
    return [PerSample(task=r["task"], doc_id=int(r["doc_id"]), repeat=int(r["repeat"]), budget=int(r["budget"]),
                      correct=float(r["correct"]), truncated=_flag(r["truncated"], path),
                      n_tokens=int(float(r["n_tokens"])) if r["n_tokens"] else None)
            for r in read_csv(path)]


def _flag(value: str, path: Path) -> bool:
    try:
        return _FLAGS[value]
    except KeyError:
        raise ValueError(f"{path}: truncated must be 0 or 1, not {value!r}") from None
