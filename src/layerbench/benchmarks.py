"""Data recipes of layerbench's own lm-eval tasks (benchmarks/amc, benchmarks/olympiadbench).

lm-eval has no AMC or OlympiadBench task, so layerbench ships task YAMLs
that read a local jsonl file ({problem, answer} per line). This module is
the recipe that makes those files from the Hub, as a command and as the
DAG's ``prepare_benchmark`` rule::

    python -m layerbench export-benchmark amc --out results/benchmarks/amc.jsonl

It writes ``<name>.jsonl`` and ``<name>.json`` (dataset id, config, split,
revision, ``datasets`` fingerprint, row count, sha256 of the jsonl), so a
report can say exactly which problems were scored. See benchmarks/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerbench.hubdata import extract_answer
from layerbench.io import atomic_write_json, atomic_write_jsonl, sha256_file


@dataclass(frozen=True)
class Export:
    """Where a benchmark's problems come from and which fields hold what."""

    dataset: str
    split: str
    question_field: str
    answer_field: str
    config_name: str | None = None
    revision: str | None = None
    note: str = ""


EXPORTS: dict[str, Export] = {
    # AMC 2022 + 2023 (83 problems, integer answers), the set Numina used to
    # validate AIMO models and DeepScaleR-style evaluations call "AMC".
    "amc": Export("AI-MO/aimo-validation-amc", "train", "problem", "answer",
                  note="83 AMC12 2022/2023 problems; answers are numbers"),
    # OlympiadBench, English text-only open-ended maths competition problems
    # (OE_TO_maths_en_COMP, about 675 problems); final_answer is a list, layerbench
    # keeps its first element (the few multi-answer problems are kept as-is).
    "olympiadbench": Export("Hothan/OlympiadBench", "train", "question", "final_answer",
                            config_name="OE_TO_maths_en_COMP",
                            note="OE_TO_maths_en_COMP; first element of final_answer"),
}


def export_benchmark(name: str, out: Path, dataset=None) -> dict:
    """Write ``out`` ({problem, answer} per line) and its ``.json`` record."""
    if name not in EXPORTS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(EXPORTS))}")
    spec = EXPORTS[name]
    if dataset is None:
        from datasets import load_dataset

        dataset = load_dataset(spec.dataset, spec.config_name, split=spec.split, revision=spec.revision)
    records, skipped = [], 0
    for i, row in enumerate(dataset):
        answer = extract_answer(row[spec.answer_field], "none")
        if answer is None:
            skipped += 1
            continue
        records.append({"id": i, "problem": str(row[spec.question_field]).strip(), "answer": answer})
    atomic_write_jsonl(out, records)
    info = {"name": name, "dataset": spec.dataset, "config_name": spec.config_name, "split": spec.split,
            "revision": spec.revision, "fingerprint": getattr(dataset, "_fingerprint", None),
            "rows": len(records), "skipped_without_answer": skipped, "note": spec.note,
            "sha256": sha256_file(out)}
    atomic_write_json(Path(out).with_suffix(".json"), info)
    return info
