"""How sure the study can be: where score variance comes from, how many seeds a
claim needs, what cut-off answers would have scored, and a cheap layer screen.

Variance by source. An arm's score is the mean of ``y[seed, problem,
repeat]`` (``repeat``: the evaluation samples of one problem). It is split
with the two-way crossed random-effects model with replication,

    y = mu + a_seed + b_problem + (ab)_seed,problem + e,

estimated by the ANOVA method (expected mean squares; Searle, Casella and
McCulloch, *Variance Components*, 1992, ch. 4), negative estimates set to
0. A component's standard error uses Var(MS) = 2 E[MS]^2 / df, estimated
without bias as 2 MS^2 / (df + 2). With one repeat per problem the sample
component cannot be told from the seed x problem one; under greedy
decoding it is 0 by construction.

For C(k) the same split is taken of the paired difference ``arm - full``
(same seed index, problem and repeat), divided by full RL's gain (the
delta method with the gain held fixed): the spread of C(k) - 1.

Seeds needed: the training seeds a two-sided z-test at 5% needs to tell the
arm from full RL with 80% power, for a difference of 0.1 in C and for the
observed difference, on the study's problems (fixed):
``n = (z_0.975 + z_0.8)^2 * (s_seed + s_seed_problem / P + s_sample / (P r)) / delta^2``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from layerbench.analysis.stats import spearman
from layerbench.config import Arm

Z_POWER = 1.959964 + 0.841621  # z at 0.975 (two-sided 5%) plus z at 0.8 (power)


@dataclass(frozen=True)
class VarianceSplit:
    """Variance components of ``y[seed, problem, repeat]`` and their standard errors."""

    seed: float
    problem: float
    seed_problem: float
    sample: float | None  # None: one repeat of sampled decoding, inside seed_problem
    se: dict
    n_seeds: int
    n_problems: int
    n_repeats: int

    @property
    def of_mean(self) -> dict[str, float]:
        """Each source's part of the variance of the mean score over every seed, problem and repeat."""
        s, p, r = self.n_seeds, self.n_problems, self.n_repeats
        return {"seed": self.seed / s, "problem": self.problem / p, "seed_problem": self.seed_problem / (s * p),
                "sample": (self.sample or 0.0) / (s * p * r)}

    @property
    def seed_spread(self) -> float:
        """Standard deviation of one training seed's score on these problems."""
        return math.sqrt(self.seed + (self.seed_problem + (self.sample or 0.0) / self.n_repeats) / self.n_problems)

    def seeds_needed(self, delta: float) -> int | None:
        """Training seeds to detect a difference ``delta`` at 80% power (problems fixed); None for delta 0."""
        if delta == 0:
            return None
        return max(2, math.ceil(Z_POWER ** 2 * self.seed_spread ** 2 / delta ** 2))

    def as_dict(self) -> dict:
        return {**asdict(self), "of_mean": self.of_mean, "seed_spread": self.seed_spread}


def variance_split(y: np.ndarray, greedy: bool) -> VarianceSplit:
    """ANOVA estimates of the components of ``y[seed, problem, repeat]``."""
    y = np.asarray(y, float)
    s, p, r = y.shape
    if s < 2 or p < 2:
        raise ValueError(f"a variance split needs 2 seeds and 2 problems, not {s} and {p}")
    cell, by_seed, by_problem, grand = y.mean(2), y.mean((1, 2)), y.mean((0, 2)), y.mean()
    df_s, df_p, df_sp, df_e = s - 1, p - 1, (s - 1) * (p - 1), s * p * (r - 1)
    ms_s = r * p * ((by_seed - grand) ** 2).sum() / df_s
    ms_p = r * s * ((by_problem - grand) ** 2).sum() / df_p
    ms_sp = r * ((cell - by_seed[:, None] - by_problem[None, :] + grand) ** 2).sum() / df_sp
    ms_e = ((y - cell[..., None]) ** 2).sum() / df_e if df_e else (0.0 if greedy else None)

    def var_ms(ms, df):
        return 2 * ms ** 2 / (df + 2)

    floor = ms_e or 0.0
    se = {"seed": math.sqrt(var_ms(ms_s, df_s) + var_ms(ms_sp, df_sp)) / (r * p),
          "problem": math.sqrt(var_ms(ms_p, df_p) + var_ms(ms_sp, df_sp)) / (r * s),
          "seed_problem": math.sqrt(var_ms(ms_sp, df_sp) + (var_ms(ms_e, df_e) if df_e else 0.0)) / r,
          "sample": math.sqrt(var_ms(ms_e, df_e)) if df_e else None}
    return VarianceSplit(seed=max(0.0, (ms_s - ms_sp) / (r * p)), problem=max(0.0, (ms_p - ms_sp) / (r * s)),
                         seed_problem=max(0.0, (ms_sp - floor) / r), sample=ms_e, se=se,
                         n_seeds=s, n_problems=p, n_repeats=r)


def arm_variance(correct: dict[str, np.ndarray], greedy: bool) -> list[dict]:
    """Per arm ``{arm: y[seed, problem, repeat]}``: its split, and for every
    arm but base and full the split of C(k) (of ``arm - full``, over full
    RL's gain) with the seeds needed to tell C = 0.9 and the observed C from 1."""
    gain = correct["full"].mean() - correct["base"].mean()
    rows = []
    for arm, y in correct.items():
        row = {"arm": arm, "score": variance_split(y, greedy).as_dict()}
        if arm not in ("base", "full") and gain != 0:
            d = variance_split(y - correct["full"], greedy)
            observed = abs(y.mean() - correct["full"].mean())
            row["C"] = {**d.as_dict(), "scale": 1 / gain ** 2, "C_spread": d.seed_spread / abs(gain),
                        "seeds_for_0.1": d.seeds_needed(0.1 * abs(gain)),
                        "observed_gap": observed / abs(gain), "seeds_for_observed": d.seeds_needed(observed)}
        rows.append(row)
    return rows


def continuation_effect(at_max: dict[str, float], if_finished: dict[str, float], still_cut: dict[str, float],
                        cut: dict[str, float]) -> list[dict]:
    """Per arm: accuracy at the largest budget and if allowed to finish (to
    the probe budget), each arm's gain over base both ways, and C both ways."""
    def c(scores, arm):
        gain = scores["full"] - scores["base"]
        return None if gain == 0 or arm in ("base", "full") else (scores[arm] - scores["base"]) / gain

    return [{"arm": arm, "accuracy": at_max[arm], "accuracy_if_finished": if_finished[arm],
             "truncated": cut[arm], "still_truncated": still_cut[arm],
             "gain": at_max[arm] - at_max["base"], "gain_if_finished": if_finished[arm] - if_finished["base"],
             "C": c(at_max, arm), "C_if_finished": c(if_finished, arm)} for arm in at_max]


def screen_score(metrics: list[dict], screen_steps: int) -> float:
    """What the layer screen ranks a run by: its mean training reward over
    steps ``screen_steps``/2 (exclusive) to ``screen_steps``, late enough to
    show learning, long enough to average the rollouts' noise."""
    rewards = [float(r["reward"]) for r in metrics if screen_steps / 2 < int(r["step"]) <= screen_steps]
    if not rewards:
        raise ValueError(f"no training steps between {screen_steps / 2:g} and {screen_steps} to screen on")
    return float(np.mean(rewards))


def pooled_screen_scores(metrics: dict[tuple[str, int], list[dict]], screen_steps: int) -> dict[str, float]:
    """{arm: its screen score, the mean over seeds} from (arm, seed) -> that run's metrics rows."""
    arms = sorted({arm for arm, _ in metrics}, key=Arm.sort_key_of)
    return {arm: float(np.mean([screen_score(rows, screen_steps) for (a, _), rows in sorted(metrics.items())
                                if a == arm])) for arm in arms}


def screen_ranking(scores: dict[str, float], keep: int) -> dict:
    """{"ranking": arms best first (ties: the lower layer first), "kept": the first ``keep``, "scores"}."""
    order = sorted(scores, key=lambda a: (-scores[a], Arm.parse(a).layers))
    return {"ranking": order, "kept": order[:keep], "scores": scores}


def screen_agreement(screen: dict[str, float], full_runs: dict[int, dict[str, float]], steps: int,
                     screen_steps: int, keep: int) -> dict:
    """The screen's ranking (``screen``: arm -> its score after ``screen_steps``)
    against the full runs' (``full_runs``: budget -> arm -> score): Spearman
    per budget, whether the best layer is the same, and the share of
    single-layer training steps a screen keeping ``keep`` arms saves (kept
    arms resume from their screen, so they cost no step twice)."""
    arms = sorted(screen)
    ranked = screen_ranking(screen, keep)
    order, kept = ranked["ranking"], ranked["kept"]
    out = {"screen_steps": screen_steps, "steps": steps, "keep": keep, "ranking": order, "kept": kept,
           "screen_scores": screen, "budgets": []}
    for budget, scores in sorted(full_runs.items()):
        best = max(arms, key=lambda a: scores[a])
        out["budgets"].append({"budget": budget, "spearman": spearman([screen[a] for a in arms],
                                                                      [scores[a] for a in arms]),
                               "best": best, "screen_best": order[0], "same_best": best == order[0],
                               "best_kept": best in kept})
    n = len(arms)
    out["steps_saved"] = 1 - (n * screen_steps + len(kept) * (steps - screen_steps)) / (n * steps)
    return out
