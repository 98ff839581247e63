import re
from pathlib import Path

import yaml

from layerbench.answers import ANSWER_REGEX, extract_answer, is_correct
from layerbench.config import TaskSpec
from layerbench.stages.data import Problem, build_splits, solution_text, write_splits

ROOT = Path(__file__).resolve().parents[1]


def test_splits_are_deterministic_and_disjoint(tmp_path):
    spec = TaskSpec.defaults(n_train=300, n_test=50)
    files = {run: [tmp_path / f"{run}-{name}.jsonl" for name in ("train", "test", "sft")] for run in "ab"}
    for run in files:
        write_splits(spec, *files[run])
    for a, b in zip(files["a"], files["b"]):
        assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 0
    splits = build_splits(spec)
    assert not {r["question"] for r in splits["train"]} & {r["question"] for r in splits["test"]}
    assert build_splits(TaskSpec.defaults(n_train=300, n_test=50, seed=99))["test"] != splits["test"]


def test_solutions_end_with_the_right_answer_unless_they_slip():
    problem = Problem((3, 7, 2), ("-", "+"))  # 3-7=-4, -4+2=-2
    assert problem.answer == -2 and problem.has_negative_step
    assert is_correct(solution_text(problem, verbose=False, sign_slip=False), "-2")
    slipped = solution_text(problem, verbose=False, sign_slip=True)  # 3-7=4. 4+2=6.
    assert "3-7=4." in slipped and extract_answer(slipped) == "6"
    verbose = solution_text(problem, verbose=True, sign_slip=False)
    assert verbose.startswith(" Let's go step by step.") and extract_answer(verbose) == "-2"


def test_demonstration_mix_matches_the_spec():
    spec = TaskSpec.defaults(n_train=2000, n_test=10)
    sft = build_splits(spec)["sft"]
    verbose = sum(r["verbose"] for r in sft) / len(sft)
    assert abs(verbose - spec.verbose_share) < 0.05
    train = build_splits(spec)["train"]
    negative = [s for s, t in zip(sft, train) if t["has_negative_step"]]
    slips = sum(s["sign_slip"] for s in negative) / len(negative)
    assert abs(slips - spec.sign_slip_share) < 0.06


def test_task_yaml_uses_the_package_answer_regex():
    cfg = yaml.safe_load((ROOT / "benchmarks" / "arith" / "arith.yaml").read_text())
    regexes = [f["regex_pattern"] for flt in cfg["filter_list"] for f in flt["filter"] if "regex_pattern" in f]
    assert regexes == [ANSWER_REGEX]
    assert cfg["generation_kwargs"]["max_gen_toks"] > 0  # never lm-eval's silent 256
    assert re.compile(ANSWER_REGEX).search("x #### -12 y").group(1) == "-12"
