"""The headline says what the data says: budget dependence, where the gain came from, unstable arms."""

from layerbench.analysis.verdicts import (
    budget_dependence,
    control_sentence,
    gain_sources,
    study_verdicts,
    unstable_cells,
)


def _scores(cells: dict) -> list[dict]:
    """{(arm, seed, budget): (accuracy, truncated share)} as scores.csv rows."""
    return [{"arm": arm, "seed": seed, "task": "t", "budget": budget, "accuracy": acc, "truncated_rate": cut}
            for (arm, seed, budget), (acc, cut) in cells.items()]


def _c(arm, budget, c, lo, hi):
    return {"arm": arm, "budget": budget, "C": c, "ci_low": lo, "ci_high": hi, "reason": ""}


BASE_FULL = {("base", s, 40): (0.4, 0.5) for s in (1, 2)} | {("full", s, 40): (0.9, 0.0) for s in (1, 2)}


def test_seeds_that_disagree_in_kind_flag_the_arm_instead_of_averaging_it():
    scores = _scores(BASE_FULL | {
        ("layer:0", 1, 40): (0.60, 0.45), ("layer:0", 2, 40): (0.85, 0.00),  # one seed finishes, one stays cut off
        ("layer:1", 1, 40): (0.80, 0.05), ("layer:1", 2, 40): (0.78, 0.10),  # the same story twice
    })
    [flag] = unstable_cells(scores)
    assert (flag["arm"], flag["budget"]) == ("layer:0", 40)
    assert [round(s["C"], 2) for s in flag["seeds"]] == [0.4, 0.9]
    contributions = [_c("layer:0", 40, "0.95", "0.5", "1.2"), _c("layer:1", 40, "0.78", "0.7", "0.86")]
    decided = study_verdicts(contributions, [40], 40, scores, [], [])
    # layer:0's mean C (0.95) would win and "match"; flagged, it is not ranked and layer:1 is the best
    assert decided["headline"]["budgets"][0]["arm"] == "layer:1" and decided["headline"]["answer"] == "no"
    assert {c["arm"]: c["verdict"] for c in decided["cells"]} == {"layer:0": "unstable", "layer:1": "short"}
    assert any("layer 0 at the 40-token cap: seed 1 0.60 accuracy with 45% cut off (C 0.40)" in d
               for d in decided["headline"]["details"])


def test_a_truncation_split_alone_is_enough_and_similar_seeds_are_not_flagged():
    split = _scores(BASE_FULL | {("layer:0", 1, 40): (0.70, 0.30), ("layer:0", 2, 40): (0.70, 0.05)})
    assert [u["arm"] for u in unstable_cells(split)] == ["layer:0"]
    close = _scores(BASE_FULL | {("layer:0", 1, 40): (0.70, 0.20), ("layer:0", 2, 40): (0.66, 0.05)})
    assert unstable_cells(close) == []


def test_budget_dependence_names_the_best_layers_and_the_moves_in_the_ranking():
    per_budget = [{"budget": 40, "arm": "layer:3"}, {"budget": 96, "arm": "layer:2"}]
    contributions = [_c("layer:1", 40, "0.2", "", ""), _c("layer:2", 40, "0.5", "", ""), _c("layer:3", 40, "0.9", "", ""),
                     _c("layer:1", 96, "0.6", "", ""), _c("layer:2", 96, "0.9", "", ""), _c("layer:3", 96, "0.4", "", "")]
    ranking = [{"budget_a": "40", "budget_b": "96", "spearman": "-0.5", "n_layers": "3"}]
    text = budget_dependence(per_budget, ranking, contributions, 40)
    assert text.startswith("The best layer changes with the budget: layer 3 at the 40-token cap and layer 2 at 96 tokens.")
    assert "Spearman -0.50 between 40 and 96 tokens (of 3 layers, layer 1 rises from 3rd to 2nd, " \
           "layer 2 rises from 2nd to 1st and layer 3 drops from 1st to 3rd)" in text
    same = budget_dependence([{"budget": 40, "arm": "layer:3"}, {"budget": 96, "arm": "layer:3"}],
                             [{"budget_a": "40", "budget_b": "96", "spearman": "1.0", "n_layers": "3"}], contributions, 40)
    assert same == "The best layer is layer 3 at every budget. The ranking of the layers is the same at every budget (Spearman 1)."


def test_gain_sources_split_finishing_from_being_right():
    rows = [{"arm": "full", "budget": "40", "gain": "0.445", "now_right_was_truncated": "61.0",
             "now_right_was_wrong_finished": "28.5", "lost": "0.5"},
            {"arm": "layer:3", "budget": "40", "gain": "0.1", "now_right_was_truncated": "0.0",
             "now_right_was_wrong_finished": "20.0", "lost": "0.0"},
            {"arm": "full", "budget": "96", "gain": "0.2", "now_right_was_truncated": "0.0",
             "now_right_was_wrong_finished": "40.0", "lost": "0.0"}]
    text = gain_sources(rows, ["full", "layer:3"], 40)
    assert text == ("At the 40-token cap, full RL's gain of +0.445 is 61 problems per seed that no longer run out of "
                    "budget and 28.5 that now finish with the right answer, minus 0.5 lost (68% from finishing inside "
                    "the cap); layer 3's gain of +0.100 is 0 problems per seed that no longer run out of budget and 20 "
                    "that now finish with the right answer, minus 0 lost (0% from finishing inside the cap).")


def test_the_control_sentence_reads_each_control_arm_by_its_interval_and_leaves_the_scan_alone():
    rows = [_c("layer:0", 40, "0.9", "0.8", "1.0"), _c("full+finish_only", 40, "0.22", "0.04", "0.41"),
            _c("full+random", 40, "0.7", "0.55", "0.85"), _c("dup:1+none", 40, "0.1", "-0.2", "0.3"),
            _c("layer:1+finish_only", 40, "0.3", "0.1", "0.6"), _c("full+finish_only", 96, "-0.5", "-1", "-0.2"),
            {**_c("layer:2+random", 40, "", "", ""), "reason": "full RL gained nothing"}]
    sentence = control_sentence(rows, cap=40)
    assert sentence == (
        "Controls at the 40-token training cap: "
        "full RL, finish-only reward reaches 0.22 of full RL's gain (95% CI 0.04 to 0.41): learning to finish "
        "inside the cap explains less than half of full RL's gain; "
        "layer 1, finish-only reward reaches 0.30 of full RL's gain (95% CI 0.10 to 0.60); "
        "full RL, random reward reaches 0.70 of full RL's gain (95% CI 0.55 to 0.85): most of full RL's gain at "
        "the cap comes from the rollout loop itself, not from the reward; "
        "layer 2, random reward has no share because full RL gained nothing; "
        "layer 1 duplicated, untrained reaches 0.10 of full RL's gain (95% CI -0.20 to 0.30).")
    assert control_sentence([r for r in rows if r["arm"] == "layer:0"], cap=40) is None
