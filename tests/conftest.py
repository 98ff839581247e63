"""Shared fixtures. Everything runs for real on CPU: a tiny model is built
and trained in-process (session-scoped, so once per test run)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def default_raw() -> dict:
    return yaml.safe_load((ROOT / "config" / "default.yaml").read_text())


def small_study_raw(name: str = "small", **changes) -> dict:
    """A scaled-down default study: 2 layers, 1 seed, a few RL steps.
    Small enough for tests, same code path as the real thing."""
    raw = copy.deepcopy(default_raw())
    raw["study"] = name
    raw["model"]["build"].update(num_layers=2, sft_steps=300, sft_lr=0.003)
    raw["data"]["synthetic"].update(n_train=600, n_test=40)
    raw["seeds"] = [1]
    raw["rl"].update(steps=4, prompts_per_step=4, num_generations=4)
    raw["limits"]["eval_budgets"] = [40, 96]
    raw["eval"]["batch_size"] = 40
    for key, value in changes.items():
        raw[key] = value
    return raw


def job_stats(text: str) -> dict[str, int]:
    """{rule: jobs} from the "Job stats" table of a Snakemake dry run."""
    block = text[text.index("Job stats:"):]
    stats = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


@pytest.fixture(scope="session")
def small_base(tmp_path_factory):
    """Data and a base model for the small study, built once."""
    from layerbench.config import study_from_dict
    from layerbench.data import write_splits
    from layerbench.tinymodel import build_base_model

    study = study_from_dict(small_study_raw())
    out = tmp_path_factory.mktemp("small_base")
    paths = write_splits(study.task_spec, out / "data")
    build_base_model(paths["sft"], out / "model", study.model_spec, threads=2)
    return {"study": study, "data": out / "data", "model": out / "model"}
