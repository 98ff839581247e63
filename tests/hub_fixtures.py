"""Small, deterministic rows for every Hugging Face Hub dataset the paper
studies read, each in that dataset's Hub schema: config names, split names,
field names, field types and answer formats. ``tests/hub_mirror.py``
(:func:`hub_mirror.write_dataset`) writes them into an offline HF cache, so
``load_dataset``, lm-eval's task loading and layerbench's download stage run
on them exactly as on the real datasets.

The problems are short arithmetic (answers are small integers) so that a tiny
model can be fine-tuned on prompts built from them; every gold answer is
right and written the way its dataset writes answers (``\\boxed{42}`` at the
end of a worked solution, ``#### 42`` in GSM8K, an ``int`` for AIME 2024, a
``float`` for AMC, ``["$42$"]`` for OlympiadBench, ...). Each dataset (and
each config) draws from its own seeded ``random.Random``, so rows are the
same on every run and no two datasets are copies of each other.

A dataset with no named configs on the Hub uses the config name ``default``
(as the Hub's parquet layout does).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

__all__ = ["DatasetFixture", "dataset_fixtures", "latex_arith"]


@dataclass(frozen=True)
class DatasetFixture:
    repo_id: str  # Hub id
    configs: dict[str, dict[str, list[dict]]]  # config name -> split -> rows
    source: str  # where the schema comes from


# ---------------------------------------------------------------------------
# Problem generators: each returns (problem, worked solution, answer) with the
# answer a small non-negative integer and the solution (empty for datasets that
# have none) ending in \boxed{answer}.
# ---------------------------------------------------------------------------

Problem = tuple[str, str, int]


def _rng(repo_id: str, config: str = "default") -> random.Random:
    # str seeds are hashed with sha512 by random.seed: stable across runs and
    # independent of PYTHONHASHSEED.
    return random.Random(f"layerbench-hub-fixture:{repo_id}:{config}")


def _operands(rng: random.Random) -> tuple[int, str, int, int]:
    """(a, op, b, value) with op one of + - * and 0 < value <= 144."""
    op = rng.choice("+-*")
    if op == "+":
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        return a, op, b, a + b
    if op == "-":
        a = rng.randint(20, 99)
        b = rng.randint(2, a - 1)
        return a, op, b, a - b
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return a, op, b, a * b


def _tex(op: str) -> str:
    return {"+": "+", "-": "-", "*": "\\times"}[op]


def latex_arith(rng: random.Random) -> Problem:
    """A MATH-style problem: ``What is $17 + 25$?`` / ``$17 + 25 = \\boxed{42}$.``"""
    a, op, b, value = _operands(rng)
    expr = f"{a} {_tex(op)} {b}"
    problem = rng.choice(["What is ${}$?", "Compute ${}$.", "Evaluate ${}$.", "Find the value of ${}$."]).format(expr)
    return problem, f"We have ${expr} = \\boxed{{{value}}}$.", value


def _algebra(rng: random.Random) -> Problem:
    x, a = rng.randint(2, 40), rng.randint(2, 40)
    return (f"If $x + {a} = {x + a}$, what is the value of $x$?",
            f"Subtracting ${a}$ from both sides gives $x = {x + a} - {a} = \\boxed{{{x}}}$.", x)


def _counting(rng: random.Random) -> Problem:
    things = ["books", "pens", "coins", "cards", "flowers", "hats", "toys", "songs", "games", "shirts",
              "stamps", "mugs"]
    thing, k = rng.choice(things), rng.choice([2, 3])
    n = rng.randint(k + 1, 12)
    value = n * (n - 1) // 2 if k == 2 else n * (n - 1) * (n - 2) // 6
    ways = f"\\frac{{{n} \\cdot {n - 1}}}{{2}}" if k == 2 else f"\\frac{{{n} \\cdot {n - 1} \\cdot {n - 2}}}{{6}}"
    return (f"In how many ways can ${k}$ {thing} be chosen from ${n}$ different {thing}?",
            f"The number of ways is $\\binom{{{n}}}{{{k}}} = {ways} = \\boxed{{{value}}}$.", value)


def _geometry(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    if rng.random() < 0.5:
        return (f"A rectangle has side lengths ${a}$ and ${b}$. What is its area?",
                f"The area of the rectangle is ${a} \\cdot {b} = \\boxed{{{a * b}}}$.", a * b)
    return (f"A rectangle has side lengths ${a}$ and ${b}$. What is its perimeter?",
            f"The perimeter of the rectangle is $2({a} + {b}) = \\boxed{{{2 * (a + b)}}}$.", 2 * (a + b))


def _intermediate_algebra(rng: random.Random) -> Problem:
    r, s = rng.randint(1, 15), rng.randint(1, 15)
    what, value = rng.choice([("sum", r + s), ("product", r * s)])
    return (f"Find the {what} of the roots of $x^2 - {r + s}x + {r * s} = 0$.",
            f"By Vieta's formulas, the {what} of the roots is $\\boxed{{{value}}}$.", value)


def _number_theory(rng: random.Random) -> Problem:
    b = rng.randint(3, 12)
    q, r = rng.randint(2, 9), rng.randint(0, b - 1)
    a = b * q + r
    return (f"What is the remainder when ${a}$ is divided by ${b}$?",
            f"Since ${a} = {b} \\cdot {q} + {r}$, the remainder is $\\boxed{{{r}}}$.", r)


def _precalculus(rng: random.Random) -> Problem:
    while True:
        a, b, c, d = (rng.randint(1, 9) for _ in range(4))
        if a * d >= b * c:
            break
    value = a * d - b * c
    return (f"Compute $\\det \\begin{{pmatrix}} {a} & {b} \\\\ {c} & {d} \\end{{pmatrix}}$.",
            f"We have $({a})({d}) - ({b})({c}) = {a * d} - {b * c} = \\boxed{{{value}}}$.", value)


def _answer_only(template: str) -> Callable[[random.Random], Problem]:
    """Problems of a dataset that has answers but no solutions: ``template``
    holds the expression, the solution is empty."""

    def make(rng: random.Random) -> Problem:
        a, op, b, value = _operands(rng)
        return template.format(f"{a} {_tex(op)} {b}"), "", value

    make.__name__ = f"answer_only({template!r})"
    return make


def _unique(rng: random.Random, make: Callable[[random.Random], tuple], n: int, seen: set[str]) -> list[tuple]:
    """``n`` items from ``make`` whose first element (the problem) is not in ``seen``."""
    out = []
    for _ in range(1000 * n + 1000):
        if len(out) == n:
            break
        item = make(rng)
        if item[0] not in seen:
            seen.add(item[0])
            out.append(item)
    if len(out) < n:
        raise ValueError(f"{make.__name__}: fewer than {n} distinct problems")
    return out


def _splits(repo_id: str, config: str, splits: tuple[str, ...], rows: int,
            make: Callable[[random.Random], tuple]) -> dict[str, list[tuple]]:
    """Distinct problems per split (no problem in two splits)."""
    rng, seen = _rng(repo_id, config), set()
    return {split: _unique(rng, make, rows, seen) for split in splits}


# ---------------------------------------------------------------------------
# One function per dataset.
# ---------------------------------------------------------------------------


def _numina(rows: int) -> DatasetFixture:
    # Schema: dataset card huggingface.co/datasets/AI-MO/NuminaMath-CoT (one default config,
    # splits train/test; source, problem, solution, messages = [user problem, assistant
    # solution]); layerbench reads problem / last \boxed{} of solution
    # (config/paper/qwen3-*-grpo-*.yaml data.hub, answer_extract: boxed).
    repo = "AI-MO/NuminaMath-CoT"
    sources = ["synthetic_math", "orca_math", "cn_k12", "olympiads", "synthetic_amc", "math", "gsm8k",
               "amc_aime", "aops_forum"]
    rng = _rng(repo, "source")

    def make(r: random.Random) -> Problem:
        a, op, b, value = _operands(r)
        expr = f"{a} {_tex(op)} {b}"
        verb = {"+": "add", "-": "subtract", "*": "multiply"}[op]
        problem = r.choice(["Calculate ${}$.", "What is the value of ${}$?", "Compute ${}$."]).format(expr)
        solution = (f"To find ${expr}$, we {verb} the two numbers:\n\\[\n{expr} = {value}\n\\]\n"
                    f"Thus, the answer is $\\boxed{{{value}}}$.")
        return problem, solution, value

    configs = {"default": {
        split: [{"source": rng.choice(sources), "problem": p, "solution": s,
                 "messages": [{"content": p, "role": "user"}, {"content": s, "role": "assistant"}]}
                for p, s, _ in problems]
        for split, problems in _splits(repo, "default", ("train", "test"), rows, make).items()}}
    return DatasetFixture(repo, configs, "huggingface.co/datasets/AI-MO/NuminaMath-CoT (dataset card); "
                          "layerbench config/paper/qwen3-*-grpo-*.yaml (data.hub: problem, solution, boxed)")


def _math12k(rows: int) -> DatasetFixture:
    # Schema: dataset card huggingface.co/datasets/hiyouga/math12k (default config, splits
    # train 12,000 / test 500; problem, answer = final answer only); layerbench reads it in
    # config/paper/qwen2.5-math-1.5b-drgrpo.yaml (answer_field: answer, answer_extract: none).
    repo = "hiyouga/math12k"
    configs = {"default": {
        split: [{"problem": p, "answer": str(v)} for p, _, v in problems]
        for split, problems in _splits(repo, "default", ("train", "test"), rows, latex_arith).items()}}
    return DatasetFixture(repo, configs, "huggingface.co/datasets/hiyouga/math12k (dataset card); "
                          "layerbench config/paper/qwen2.5-math-1.5b-drgrpo.yaml (problem, answer, none)")


MATH_SUBJECTS = {  # hendrycks_math config (lm-eval minerva_math_*.yaml dataset_name) -> type, generator
    "algebra": ("Algebra", _algebra),
    "counting_and_probability": ("Counting & Probability", _counting),
    "geometry": ("Geometry", _geometry),
    "intermediate_algebra": ("Intermediate Algebra", _intermediate_algebra),
    "number_theory": ("Number Theory", _number_theory),
    "prealgebra": ("Prealgebra", latex_arith),
    "precalculus": ("Precalculus", _precalculus),
}


def _math500(rows: int) -> DatasetFixture:
    # Schema: dataset card huggingface.co/datasets/HuggingFaceH4/MATH-500 (default config, split
    # test; problem, solution, answer, subject, level int, unique_id "test/<subject>/<n>.json");
    # read by lm-eval's lm_eval/tasks/minerva_math/minerva_math500.yaml (dataset_name: default,
    # test_split: test; process_docs takes the answer from the solution's last \boxed{}).
    repo = "HuggingFaceH4/MATH-500"
    subjects = list(MATH_SUBJECTS)

    def make(r: random.Random) -> tuple:
        subject = r.choice(subjects)
        return (*MATH_SUBJECTS[subject][1](r), subject, r.randint(1, 5))

    problems = _splits(repo, "default", ("test",), rows, make)["test"]
    numbers = _rng(repo, "unique_id").sample(range(1, 1300 + rows), rows)  # distinct problem numbers
    out = [{"problem": p, "solution": s, "answer": str(v), "subject": MATH_SUBJECTS[subject][0],
            "level": level, "unique_id": f"test/{subject}/{n}.json"}
           for (p, s, v, subject, level), n in zip(problems, numbers)]
    return DatasetFixture(repo, {"default": {"test": out}},
                          "huggingface.co/datasets/HuggingFaceH4/MATH-500 (dataset card); "
                          "lm_eval/tasks/minerva_math/minerva_math500.yaml")


def _hendrycks_math(rows: int) -> DatasetFixture:
    # Schema: lm_eval/tasks/minerva_math/minerva_math_*.yaml (dataset_path
    # EleutherAI/hendrycks_math, dataset_name = the 7 configs below, splits train/test;
    # utils.process_docs reads problem and the last \boxed{} of solution) and the dataset
    # card huggingface.co/datasets/EleutherAI/hendrycks_math (problem, level "Level N",
    # type e.g. "Algebra", solution).
    repo = "EleutherAI/hendrycks_math"
    configs = {}
    for config, (kind, make) in MATH_SUBJECTS.items():
        rng = _rng(repo, f"{config}:level")
        configs[config] = {
            split: [{"problem": p, "level": f"Level {rng.randint(1, 5)}", "type": kind, "solution": s}
                    for p, s, _ in problems]
            for split, problems in _splits(repo, config, ("train", "test"), rows, make).items()}
    return DatasetFixture(repo, configs, "lm_eval/tasks/minerva_math/minerva_math_*.yaml and utils.py; "
                          "huggingface.co/datasets/EleutherAI/hendrycks_math (dataset card)")


NAMES = ["Ana", "Ben", "Cai", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jo", "Kim", "Leo", "Mia", "Ned", "Oli"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "cards"]


def _gsm8k(rows: int) -> DatasetFixture:
    # Schema: lm_eval/tasks/gsm8k/gsm8k.yaml (dataset_path openai/gsm8k, dataset_name main,
    # splits train/test, question / answer; gold = text after "#### ") and the dataset card
    # huggingface.co/datasets/openai/gsm8k (configs main and socratic; answers are steps with
    # <<a+b=c>> calculator annotations, then "#### <number>"; socratic steps are
    # "<sub-question> ** <step>").
    repo = "openai/gsm8k"

    def make(r: random.Random) -> tuple:
        """(question, sub-question, step, answer)."""
        name, item = r.choice(NAMES), r.choice(ITEMS)
        a, op, b, value = _operands(r)
        calc = f"{a}{op}{b} = <<{a}{op}{b}={value}>>{value}"
        if op == "+":
            return (f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
                    f"How many {item} does {name} have now?", f"{name} has {calc} {item} now.", value)
        if op == "-":
            return (f"{name} had {a} {item} and gave away {b}. How many {item} are left?",
                    f"How many {item} are left?", f"{name} has {calc} {item} left.", value)
        return (f"{name} buys {a} bags with {b} {item} each. How many {item} is that?",
                f"How many {item} does {name} buy?", f"{name} buys {calc} {item}.", value)

    # Both configs hold the same questions (as on the Hub); only the answer style differs.
    problems = _splits(repo, "main", ("train", "test"), rows, make)
    configs = {
        "main": {split: [{"question": q, "answer": f"{step}\n#### {v}"} for q, _, step, v in items]
                 for split, items in problems.items()},
        "socratic": {split: [{"question": q, "answer": f"{ask} ** {step}\n#### {v}"} for q, ask, step, v in items]
                     for split, items in problems.items()},
    }
    return DatasetFixture(repo, configs, "lm_eval/tasks/gsm8k/gsm8k.yaml; "
                          "huggingface.co/datasets/openai/gsm8k (dataset card)")


def _aime24(rows: int) -> DatasetFixture:
    # Schema: lm_eval/tasks/aime/aime24.yaml (dataset_path Maxwell-Jia/AIME_2024, no
    # dataset_name, split train; doc_to_text {{Problem}}, doc_to_target {{Answer}}; utils.py
    # finds the key "answer" case-insensitively) and the dataset card
    # huggingface.co/datasets/Maxwell-Jia/AIME_2024 (ID "2024-I-1".."2024-II-15", Problem,
    # Solution, Answer int).
    repo = "Maxwell-Jia/AIME_2024"

    def make(r: random.Random) -> Problem:
        a, op, b, value = _operands(r)
        expr = f"{a} {_tex(op)} {b}"
        return (f"Find the value of ${expr}$.",
                f"Direct computation gives ${expr} = {value}$, so the answer is $\\boxed{{{value}}}$.", value)

    problems = _splits(repo, "default", ("train",), rows, make)["train"]
    # the Hub's 30 IDs in order (2024-I-1..15, 2024-II-1..15), repeating beyond 30 rows
    out = [{"ID": f"2024-{'I' if i // 15 % 2 == 0 else 'II'}-{i % 15 + 1}", "Problem": p, "Solution": s, "Answer": v}
           for i, (p, s, v) in enumerate(problems)]
    return DatasetFixture(repo, {"default": {"train": out}}, "lm_eval/tasks/aime/aime24.yaml and utils.py; "
                          "huggingface.co/datasets/Maxwell-Jia/AIME_2024 (dataset card)")


def _aime25(rows: int) -> DatasetFixture:
    # Schema: lm_eval/tasks/aime/aime25.yaml (dataset_path math-ai/aime25, no dataset_name,
    # split test; doc_to_text {{problem}}, doc_to_target {{answer}}) and the dataset card
    # huggingface.co/datasets/math-ai/aime25 (problem, answer str, id str).
    repo = "math-ai/aime25"

    problems = _splits(repo, "default", ("test",), rows, _answer_only("Compute the value of ${}$."))["test"]
    out = [{"problem": p, "answer": str(v), "id": str(i)} for i, (p, _, v) in enumerate(problems)]
    return DatasetFixture(repo, {"default": {"test": out}}, "lm_eval/tasks/aime/aime25.yaml; "
                          "huggingface.co/datasets/math-ai/aime25 (dataset card)")


def _amc(rows: int) -> DatasetFixture:
    # Schema: layerbench src/layerbench/stages/download.py EXPORTS["amc"] (split train,
    # problem, answer; extract_answer writes a float 142.0 as "142") and the dataset card
    # huggingface.co/datasets/AI-MO/aimo-validation-amc (id int, problem, answer float, url
    # of the AoPS wiki page of the problem).
    repo = "AI-MO/aimo-validation-amc"

    problems = _splits(repo, "default", ("train",), rows, _answer_only("What is the value of ${}$?"))["train"]
    out = []
    for i, (p, _, v) in enumerate(problems):
        year, test, number = 2022 + i // 50 % 2, "AB"[i // 25 % 2], i % 25 + 1
        page = f"{year}_AMC_12{test}_Problems/Problem_{number}"
        out.append({"id": i, "problem": p, "answer": float(v),
                    "url": f"https://artofproblemsolving.com/wiki/index.php/{page}"})
    return DatasetFixture(repo, {"default": {"train": out}},
                          "layerbench src/layerbench/stages/download.py EXPORTS['amc']; "
                          "huggingface.co/datasets/AI-MO/aimo-validation-amc (dataset card)")


def _olympiadbench(rows: int) -> DatasetFixture:
    # Schema: layerbench src/layerbench/stages/download.py EXPORTS["olympiadbench"] (config
    # OE_TO_maths_en_COMP, split train, question, final_answer = list whose first element is
    # the answer, "$...$" stripped) and the dataset card huggingface.co/datasets/Hothan/OlympiadBench
    # (id int, question, solution list[str], final_answer list[str] like ["$7$"], context,
    # image_1..image_5, modality, difficulty, is_multiple_answer bool, unit, answer_type, error,
    # question_type, subfield, subject, language). context, image_* and error are None in every
    # row (null columns, as in a text-only config without them); unit is a string on the
    # perimeter problems and None elsewhere.
    repo, config = "Hothan/OlympiadBench", "OE_TO_maths_en_COMP"
    fields = {"Algebra": _algebra, "Combinatorics": _counting, "Number Theory": _number_theory}

    def perimeter(r: random.Random) -> Problem:
        a, b = r.randint(2, 12), r.randint(2, 12)
        return (f"A rectangle has sides ${a}$ cm and ${b}$ cm. Find its perimeter.",
                f"The perimeter is $2({a}+{b})=2 \\cdot {a + b}=\\boxed{{{2 * (a + b)}}}$.", 2 * (a + b))

    # subfields in turn, Geometry (the rows with a unit) first
    rng, seen, order = _rng(repo, config), set(), ["Geometry", *fields]
    problems = [(*_unique(rng, fields.get(order[i % 4], perimeter), 1, seen)[0], order[i % 4])
                for i in range(rows)]
    out = []
    for i, (p, s, v, field) in enumerate(problems):
        # OlympiadBench solutions end in a plain statement of the answer, not \boxed{}
        solution = re.sub(r"\\boxed\{(\d+)\}", r"\1", s)
        out.append({
            "id": 1606 + i, "question": p, "solution": [solution], "final_answer": [f"${v}$"],
            "context": None, "image_1": None, "image_2": None, "image_3": None, "image_4": None,
            "image_5": None, "modality": "Text-only", "difficulty": "Competition", "is_multiple_answer": False,
            "unit": "cm" if field == "Geometry" else None, "answer_type": "Numerical", "error": None,
            "question_type": "Open-ended", "subfield": field, "subject": "Math", "language": "English",
        })
    return DatasetFixture(repo, {config: {"train": out}}, "layerbench src/layerbench/stages/download.py "
                          "EXPORTS['olympiadbench']; huggingface.co/datasets/Hothan/OlympiadBench (dataset card)")


def dataset_fixtures(rows: int = 16) -> list[DatasetFixture]:
    """Every Hub dataset of the paper studies, ``rows`` rows per split."""
    return [_numina(rows), _math12k(rows), _math500(rows), _gsm8k(rows), _aime24(rows), _aime25(rows),
            _hendrycks_math(rows), _amc(rows), _olympiadbench(rows)]
