"""Synthetic multi-step arithmetic: the default study's task.

The task is built so that RL has two different things to learn, and the
report can tell them apart:

* **Finishing inside the cap.** Demonstrations mix a verbose style (most of
  them) with a terse one. Under greedy decoding the SFT model writes the
  verbose style, which overruns the training completion cap on longer
  problems. Learning to answer tersely raises accuracy *at the cap* only.
* **Being right more often.** When a step's result is negative, most
  demonstrations make a systematic "sign slip" (they write |result| and carry
  on from it). That is a real reasoning error: fixing it raises accuracy at
  every budget, including budgets where nothing is cut off.

Everything is a pure function of the seed, so the same config gives the same
files byte for byte.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from layerbench.answers import format_answer
from layerbench.config import HubData, TaskSpec
from layerbench.runtime.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from layerbench.runtime.stage_command import (
    first_line,
    require,
    stage_parser,
    study_paths,
)

VERBOSE_OPENING = "Let's go step by step."
VERBOSE_CLOSING = "So the answer is"


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    operators: tuple[str, ...]

    @property
    def question(self) -> str:
        text = str(self.operands[0])
        for op, value in zip(self.operators, self.operands[1:]):
            text += f"{op}{value}"
        return f"{text}=?"

    def steps(self, sign_slip: bool = False) -> list[tuple[int, str, int, int]]:
        """(left, op, right, result) per step; with ``sign_slip`` negative
        results are written as their absolute value and the chain continues
        from the wrong value, as a student with that misconception would."""
        out, total = [], self.operands[0]
        for op, value in zip(self.operators, self.operands[1:]):
            result = total + value if op == "+" else total - value
            if sign_slip:
                result = abs(result)
            out.append((total, op, value, result))
            total = result
        return out

    @property
    def answer(self) -> int:
        return self.steps()[-1][3]

    @property
    def has_negative_step(self) -> bool:
        return any(result < 0 for *_, result in self.steps())


def prompt_text(problem: Problem) -> str:
    """The prompt every stage uses: SFT, RL rollouts and the lm-eval task."""
    return f"Q: {problem.question} A:"


def solution_text(problem: Problem, verbose: bool, sign_slip: bool) -> str:
    """A worked solution; starts with a space so it tokenises the same way
    whether it is generated after the prompt or encoded on its own."""
    steps = problem.steps(sign_slip=sign_slip)
    final = steps[-1][3]
    if verbose:
        body = " ".join(
            f"Step {i}: {a}{op}{b}={r}." for i, (a, op, b, r) in enumerate(steps, 1)
        )
        return f" {VERBOSE_OPENING} {body} {VERBOSE_CLOSING} {format_answer(final)}"
    body = " ".join(f"{a}{op}{b}={r}." for a, op, b, r in steps)
    return f" {body} {format_answer(final)}"


def sample_problem(rng: random.Random, spec: TaskSpec) -> Problem:
    n_ops = rng.randint(spec.min_ops, spec.max_ops)
    operands = tuple(rng.randint(1, spec.max_operand) for _ in range(n_ops + 1))
    operators = tuple(rng.choice("+-") for _ in range(n_ops))
    return Problem(operands, operators)


def build_splits(spec: TaskSpec) -> dict[str, list[dict]]:
    """Train and test problems (disjoint by question) plus SFT demonstrations
    drawn from the train problems."""
    rng = random.Random(spec.seed)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {"train": [], "test": [], "sft": []}
    attempts = 0
    for split, n in (("test", spec.n_test), ("train", spec.n_train)):
        while len(splits[split]) < n:
            attempts += 1
            if attempts > 50 * (spec.n_train + spec.n_test):  # bounded: a too small task would never finish
                raise ValueError(f"data.synthetic: after {attempts - 1} draws only {len(seen)} distinct problems "
                                 f"for the {spec.n_train + spec.n_test} asked; raise max_operand or max_ops")
            problem = sample_problem(rng, spec)
            if problem.question in seen:
                continue
            seen.add(problem.question)
            record = {
                "question": problem.question,
                "prompt": prompt_text(problem),
                "answer": str(problem.answer),
                "n_ops": len(problem.operators),
                "has_negative_step": problem.has_negative_step,
            }
            splits[split].append(record)
            if split == "train":
                verbose = rng.random() < spec.verbose_share
                slip = problem.has_negative_step and rng.random() < spec.sign_slip_share
                splits["sft"].append(
                    {
                        "prompt": record["prompt"],
                        "completion": solution_text(problem, verbose, slip),
                        "verbose": verbose,
                        "sign_slip": slip,
                    }
                )
    return splits


def write_splits(spec: TaskSpec, train: Path, test: Path, sft: Path) -> None:
    """Write the synthetic task's splits atomically."""
    splits = build_splits(spec)
    for path, name in ((train, "train"), (test, "test"), (sft, "sft")):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in splits[name]))


def write_hub_splits(hub: HubData, sample_file: Path, train: Path, test: Path) -> dict:
    """The train and test splits from the drawn sample (stage download)."""
    records = read_jsonl(sample_file)
    n_train = hub.sample or (len(records) - (hub.test_size or 0))
    suffix = hub.prompt_suffix
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    dropped = {"train": 0, "test": 0}
    for i, record in enumerate(records):
        split = "train" if i < n_train else "test"
        if not record.get("answer"):
            dropped[split] += 1
            continue
        splits[split].append({"prompt": record["question"] + suffix, "answer": record["answer"],
                              "question": record["question"], "index": record["index"]})
    atomic_write_jsonl(train, splits["train"])
    atomic_write_jsonl(test, splits["test"])
    summary = {"train": len(splits["train"]), "test": len(splits["test"]),
               "dropped_without_answer": dropped, "prompt_suffix": suffix}
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage data``: the splits of the study's data source."""
    parser = stage_parser("data", first_line(__doc__))
    parser.add_argument("--sample", help="downloaded Hub sample (data.source hub)")
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--sft", help="SFT demonstrations (data.source synthetic)")
    args = parser.parse_args(argv)
    data = study_paths(args).study.data
    require(parser, args, f"for data.source: {data.source}", "--sample" if data.source == "hub" else "--sft")
    if data.source == "hub":
        write_hub_splits(data.hub, Path(args.sample), Path(args.train), Path(args.test))
    else:
        write_splits(data.synthetic, Path(args.train), Path(args.test), Path(args.sft))
