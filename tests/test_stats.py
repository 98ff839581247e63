import subprocess
import sys

import numpy as np
import pytest

from layerbench.analysis.stats import (
    contributions_from_samples,
    contributions_from_scores,
    spearman,
)

# The paper's check values (Qwen3 math average). Scores are printed to 0.1, so the
# reported C may differ from C of the printed scores by rounding: the test
# checks that the reported value lies in the range of C over every score
# within +-0.05 of the printed ones.
PAPER = [
    # base, full, layer, reported C
    (44.1, 50.8, 51.8, 1.14),  # 1.7B, layer 10
    (52.2, 63.7, 64.3, 1.06),  # 4B, layer 16
    (58.0, 66.5, 67.1, 1.07),  # 8B, layer 16
    (58.0, 66.5, 53.7, -0.51),  # 8B, layer 0
]


def _c_range(base, full, layer):
    values = [(layer + dl - (base + db)) / (full + df - (base + db))
              for db in (-0.05, 0.05) for df in (-0.05, 0.05) for dl in (-0.05, 0.05)]
    return min(values), max(values)


@pytest.mark.parametrize("base, full, layer, reported", PAPER)
def test_paper_contributions(base, full, layer, reported):
    [c] = contributions_from_scores({"base": {0: base}, "full": {0: full}, "layer:k": {0: layer}})
    assert c.ci_low is None  # one seed: no interval
    low, high = _c_range(base, full, layer)
    assert low <= reported <= high
    assert round(c.C, 2) == pytest.approx(reported, abs=0.011)


def test_contribution_cli_prints_and_writes_csv(tmp_path):
    scores = tmp_path / "scores.csv"
    scores.write_text("arm,seed,score\nbase,1,58.0\nfull,1,66.5\nlayer:16,1,67.1\nlayer:0,1,53.7\n")
    out = tmp_path / "c.csv"
    run = subprocess.run([sys.executable, "-m", "layerbench", "contribution", str(scores), "--csv", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "layer:16" in run.stdout and "1.071" in run.stdout and "-0.506" in run.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "arm,C,ci_low,ci_high"
    assert lines[1].startswith("layer:16,1.0706,,") and lines[2].startswith("layer:0,-0.5059,,")


def test_contribution_cli_rejects_missing_full(tmp_path):
    scores = tmp_path / "scores.csv"
    scores.write_text("arm,seed,score\nbase,1,1\nlayer:1,1,2\n")
    run = subprocess.run([sys.executable, "-m", "layerbench", "contribution", str(scores)], capture_output=True, text=True)
    assert run.returncode == 2 and "'full'" in run.stderr


def test_seed_interval_and_undefined_when_full_gains_nothing():
    scores = {"base": {1: 0.40, 2: 0.42, 3: 0.41}, "full": {1: 0.60, 2: 0.62, 3: 0.61},
              "layer:1": {1: 0.50, 2: 0.52, 3: 0.51}}
    [c] = contributions_from_scores(scores)
    assert c.C == pytest.approx(0.5) and c.ci_low <= 0.5 <= c.ci_high
    flat = {"base": {1: 0.4, 2: 0.5}, "full": {1: 0.5, 2: 0.4}, "layer:1": {1: 0.9, 2: 0.9}}
    [c] = contributions_from_scores(flat)
    assert c.C is None and "not distinguishable from zero" in c.reason


def test_problem_bootstrap_is_paired_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    base = (rng.random((2, 300)) < 0.4).astype(float)
    full = np.maximum(base, rng.random((2, 300)) < 0.5)
    half = np.where(rng.random((2, 300)) < 0.5, full, base)
    [c] = contributions_from_samples({"base": [base], "full": [full], "layer:0": [half]})
    assert c.ci_low < c.C < c.ci_high and 0.3 < c.C < 0.7
    # identical arms: the interval collapses onto 1 because resampling is paired
    [same] = contributions_from_samples({"base": [base], "full": [full], "layer:0": [full.copy()]})
    assert same.C == same.ci_low == same.ci_high == 1.0
    [none] = contributions_from_samples({"base": [base], "full": [base.copy()], "layer:0": [full]})
    assert none.C is None


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
