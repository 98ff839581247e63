"""Collect's readers and decisions, on small hand-made inputs."""

import pytest

from layerbench.analysis.per_sample import read_per_sample
from layerbench.analysis.verdicts import cell_verdicts, verdict
from layerbench.runtime.io import atomic_write_csv

COLUMNS = ["task", "doc_id", "repeat", "budget", "correct", "truncated", "n_tokens", "finish_reason"]


def test_one_definition_of_solved_and_truncated(tmp_path):
    """``correct`` stays the metric's value (accuracy and C average it);
    solved means at least half the credit, for every reader."""
    path = tmp_path / "per_sample.csv"
    values = [(1.0, 0), (0.5, 0), (0.25, 1), (0.0, 1)]
    atomic_write_csv(path, [{"task": "t", "doc_id": i, "repeat": 0, "budget": 40, "correct": c, "truncated": t,
                             "n_tokens": 40 if t else 12, "finish_reason": "length" if t else "eos"}
                            for i, (c, t) in enumerate(values)], COLUMNS)
    rows = read_per_sample(path)
    assert [r.correct for r in rows] == [1.0, 0.5, 0.25, 0.0]
    assert [r.solved for r in rows] == [True, True, False, False]
    assert [r.truncated for r in rows] == [False, False, True, True]
    assert rows[2].problem == ("t", 2, 0) and rows[2].n_tokens == 40

    atomic_write_csv(path, [{"task": "t", "doc_id": 0, "repeat": 0, "budget": 40, "correct": 1.0,
                             "truncated": "yes", "n_tokens": 3, "finish_reason": "eos"}], COLUMNS)
    with pytest.raises(ValueError, match="truncated must be 0 or 1, not 'yes'"):
        read_per_sample(path)


def test_cell_verdicts_from_the_interval():
    assert [verdict(*x) for x in ((1.3, 1.1, 1.5), (0.5, 0.3, 0.7), (0.9, 0.5, 1.2), (0.5, -0.3, 1.3))] == [
        "beats", "short", "matches", "unclear"]
    assert verdict(1.0, None, None) == "matches" and verdict(0.9, None, None) == "short"  # one seed: no interval
    rows = [{"arm": "layer:0", "budget": "40", "C": "0.5", "ci_low": "0.3", "ci_high": "0.7", "reason": ""},
            {"arm": "layer:1", "budget": 40, "C": None, "ci_low": None, "ci_high": None, "reason": "no gain"}]
    assert cell_verdicts(rows) == [{"arm": "layer:0", "budget": 40, "verdict": "short"},
                                   {"arm": "layer:1", "budget": 40, "verdict": None}]
