"""The How-sure statistics (layerbench.analysis.sureness) on synthetic data whose truth is known."""

import math

import numpy as np
import pytest

from layerbench.analysis.sureness import Z_POWER, screen_agreement, variance_split

TRUE = {"seed": 0.010, "problem": 0.040, "seed_problem": 0.020, "sample": 0.050}


def synthetic(rng, seeds=24, problems=150, repeats=4, truth=TRUE):
    """y = a_seed + b_problem + (ab)_seed,problem + e, each Gaussian with the given variance."""
    a = rng.normal(0, math.sqrt(truth["seed"]), (seeds, 1, 1))
    b = rng.normal(0, math.sqrt(truth["problem"]), (1, problems, 1))
    ab = rng.normal(0, math.sqrt(truth["seed_problem"]), (seeds, problems, 1))
    e = rng.normal(0, math.sqrt(truth["sample"]), (seeds, problems, repeats))
    return 0.5 + a + b + ab + e


def test_variance_split_recovers_known_components_within_its_stated_error():
    rng = np.random.default_rng(0)
    within = {k: 0 for k in TRUE}
    trials = 100
    for _ in range(trials):
        split = variance_split(synthetic(rng), greedy=False)
        for k, truth in TRUE.items():
            within[k] += abs(getattr(split, k) - truth) <= 1.96 * split.se[k]
    # the stated error is a real 95% interval: about 95% of trials fall inside it
    assert all(n / trials >= 0.85 for n in within.values()), within


def test_variance_split_with_one_repeat():
    rng = np.random.default_rng(1)
    y = synthetic(rng, repeats=1)
    assert variance_split(y, greedy=False).sample is None  # inside seed x problem, not separable
    greedy = variance_split(y, greedy=True)
    assert greedy.sample == 0.0 and greedy.seed_problem > 0
    with pytest.raises(ValueError, match="2 seeds"):
        variance_split(y[:1], greedy=True)


def test_identical_seeds_have_no_seed_variance():
    """The base model answers the same way for every seed (greedy): all of it is problems."""
    problems = (np.arange(40) % 3 == 0).astype(float)
    split = variance_split(np.tile(problems[None, :, None], (3, 1, 1)), greedy=True)
    assert split.seed == split.seed_problem == 0.0 and split.problem > 0
    assert split.seed_spread == 0.0


def test_seeds_needed_gives_80_percent_power():
    """Simulate the paired difference arm - full with the seeds the formula asks
    for: a z-test at 5% rejects 'no difference' about 80% of the time."""
    rng = np.random.default_rng(2)
    truth = {"seed": 0.004, "problem": 0.0, "seed_problem": 0.03, "sample": 0.0}
    reference = variance_split(synthetic(rng, seeds=400, problems=100, repeats=1, truth=truth), greedy=True)
    delta = 0.02
    n = reference.seeds_needed(delta)
    assert n == max(2, math.ceil(Z_POWER ** 2 * reference.seed_spread ** 2 / delta ** 2)) and n > 5
    spread = math.sqrt(truth["seed"] + truth["seed_problem"] / 100)
    rejected = 0
    for _ in range(2000):
        means = delta + rng.normal(0, spread, n)  # one mean difference per seed on the same 100 problems
        rejected += abs(means.mean()) / (spread / math.sqrt(n)) > 1.959964
    assert 0.74 <= rejected / 2000 <= 0.88


def test_screen_agreement():
    screen = {"layer:0": 0.1, "layer:1": 0.4, "layer:2": 0.3, "layer:3": 0.2}
    full = {40: {"layer:0": 0.5, "layer:1": 0.8, "layer:2": 0.7, "layer:3": 0.6},
            96: {"layer:0": 0.9, "layer:1": 0.6, "layer:2": 0.7, "layer:3": 0.8}}
    out = screen_agreement(screen, full, steps=60, screen_steps=15, keep=2)
    assert out["ranking"] == ["layer:1", "layer:2", "layer:3", "layer:0"] and out["kept"] == ["layer:1", "layer:2"]
    at_40, at_96 = out["budgets"]
    assert at_40["spearman"] == pytest.approx(1.0) and at_40["same_best"] and at_40["best_kept"]
    assert at_96["spearman"] == pytest.approx(-1.0) and at_96["best"] == "layer:0" and not at_96["best_kept"]
    # 4 arms x 15 screen steps, then 2 arms x 45 more, of 4 x 60
    assert out["steps_saved"] == pytest.approx(1 - (4 * 15 + 2 * 45) / 240)
