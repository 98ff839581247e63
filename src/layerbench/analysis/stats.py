"""Layer contribution C(k) with bootstrap confidence intervals.

    C(k) = (S_k - S_base) / (S_full - S_base)

Pooled over seeds by averaging scores first. Intervals resample problems
(paired: every arm gets the same resampled problems, since arms answer the
same test set) and seeds. When full RL's own gain is not distinguishable from
zero (its bootstrap interval contains 0, or it is exactly 0), C is undefined
and the reason is given instead of a huge or sign-flipped number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOTSTRAP = 2000


def percentile(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


@dataclass(frozen=True)
class Contribution:
    arm: str
    C: float | None
    ci_low: float | None
    ci_high: float | None
    reason: str = ""

    def as_row(self) -> dict:
        def fmt(x):
            return None if x is None else round(x, 4)

        return {"arm": self.arm, "C": fmt(self.C), "ci_low": fmt(self.ci_low),
                "ci_high": fmt(self.ci_high), "reason": self.reason}


def _ci(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def contributions_from_scores(scores: dict[str, dict[int, float]], seed: int = 0) -> list[Contribution]:
    """C per arm from per-seed scores {arm: {seed: S}} (no per-problem data:
    the interval is over seeds only, and absent with one seed)."""
    seeds = sorted(set.intersection(*(set(v) for v in scores.values())))
    if not seeds:
        raise ValueError("no seed has scores for every arm (base, full and the layer arms)")
    table = {arm: np.array([scores[arm][s] for s in seeds]) for arm in scores}
    means = {arm: float(v.mean()) for arm, v in table.items()}
    boot = None
    if len(seeds) > 1:
        idx = np.random.default_rng(seed).integers(0, len(seeds), size=(N_BOOTSTRAP, len(seeds)))
        boot = {arm: v[idx].mean(axis=1) for arm, v in table.items()}
    return [_contribution(arm, means, boot) for arm in scores if arm not in ("base", "full")]


def contributions_from_samples(
    correct: dict[str, list[np.ndarray]], seed: int = 0, n_boot: int = N_BOOTSTRAP
) -> list[Contribution]:
    """C per arm from per-problem correctness {arm: [array[seeds, problems] per task]}.

    S is the mean over tasks of task accuracy (as in the paper). The bootstrap
    resamples seeds and, within each task, problems, with the same indices
    for every arm (arms are paired on both)."""
    first = next(iter(correct.values()))
    for arm, mats in correct.items():
        if [m.shape for m in mats] != [m.shape for m in first]:
            raise ValueError(f"arm {arm} differs from the others in seeds x problems per task")
    n_seeds = first[0].shape[0]
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    prob_idx = [rng.integers(0, m.shape[1], size=(n_boot, m.shape[1])) for m in first]
    boot, means = {}, {}
    for arm, mats in correct.items():
        # [boot, seeds]: per replicate, per seed, mean over tasks of resampled-problem accuracy
        per_seed = np.mean([np.take(m, idx, axis=1).mean(axis=2).T for m, idx in zip(mats, prob_idx)], axis=0)
        boot[arm] = np.take_along_axis(per_seed, seed_idx, axis=1).mean(axis=1)
        means[arm] = float(np.mean([m.mean() for m in mats]))
    return [_contribution(arm, means, boot) for arm in correct if arm not in ("base", "full")]


def _contribution(arm: str, means: dict[str, float], boot: dict[str, np.ndarray] | None) -> Contribution:
    """C of ``arm`` from mean scores, with a percentile interval when
    bootstrap replicates of every arm's score are given."""
    gain = means["full"] - means["base"]
    if boot is None:
        if gain == 0:
            return Contribution(arm, None, None, None, "full RL gained nothing over base (S_full = S_base)")
        return Contribution(arm, (means[arm] - means["base"]) / gain, None, None)
    b_gain = boot["full"] - boot["base"]
    g_low, g_high = _ci(b_gain)
    if gain == 0 or g_low <= 0 <= g_high:
        return Contribution(
            arm, None, None, None,
            f"full RL's gain {gain:+.3f} is not distinguishable from zero (95% CI {g_low:+.3f} to {g_high:+.3f})",
        )
    ok = b_gain != 0
    low, high = _ci((boot[arm][ok] - boot["base"][ok]) / b_gain[ok])
    return Contribution(arm, (means[arm] - means["base"]) / gain, low, high)


def spearman(x, y) -> float | None:
    """Spearman rank correlation (average ranks for ties)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None

    def ranks(v):
        order = v.argsort()
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            mask = v == value
            r[mask] = r[mask].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])
