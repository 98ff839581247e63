"""What portable numerics cost, per stage: the same jobs run once under
``numerics: portable`` and once under ``native``, one after the other, each
alone on the machine, timed from start to exit (imports included).

Reads a finished study (its data, base model and checked training prompts),
writes every job under a scratch folder and the table to ``--out``, with the
CPU named in every row. The default study's table is
``docs/default-study/numerics_cost.csv``:

    .venv/bin/python scripts/numerics_cost.py results/default --out docs/default-study/numerics_cost.csv

Jobs: the base model's build (``--sft-steps`` SFT steps, the study's build
threads), one full and one single-layer training run (the study's RL
settings) and one evaluation of the base model.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from layerbench.runtime.numerics import cpu_model

MODES = ("portable", "native")


def jobs(results: Path, study: Path, out: Path, layer_arm: str) -> dict[str, list[str]]:
    """{job: its ``layerbench stage`` arguments} over ``results``' inputs, writing under ``out``."""
    common = ["--study", str(study)]
    train = ["--seed", "1", "--base", str(results / "base_model"), "--train", str(results / "train_checked.jsonl")]
    return {
        "model": ["model", *common, "--sft", str(results / "data" / "sft.jsonl"), "--out", str(out / "base")],
        "train full": ["train", *common, "--arm", "full", *train, "--out", str(out / "full")],
        f"train {layer_arm}": ["train", *common, "--arm", layer_arm, *train, "--out", str(out / "layer")],
        "evaluate base": ["evaluate", *common, "--model", str(results / "base_model"), "--seed", "1",
                          "--base", str(results / "base_model"), "--out", str(out / "eval")],
    }


def timed(args: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as sink:
        subprocess.run([sys.executable, "-m", "layerbench", "stage", *args], stdout=sink, stderr=subprocess.STDOUT,
                       check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a finished study's results/<study>/ folder")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    parser.add_argument("--sft-steps", type=int, default=200, help="SFT steps of the timed model build")
    parser.add_argument("--layer", default="layer:3", help="the single-layer arm to time")
    args = parser.parse_args()
    raw = yaml.safe_load((args.results / "study.yaml").read_text())
    raw["model"]["build"]["sft_steps"] = args.sft_steps
    rows = {}
    with tempfile.TemporaryDirectory(prefix="numerics-cost-") as scratch:
        for mode in MODES:
            work = Path(scratch) / mode
            study = work / "results" / raw["study"] / "study.yaml"
            study.parent.mkdir(parents=True)
            study.write_text(yaml.safe_dump(raw | {"numerics": mode}))
            for job, job_args in jobs(args.results, study, work, args.layer).items():
                rows.setdefault(job, {})[mode] = timed(job_args, work / f"{job.replace(' ', '_')}.log")
                print(f"{mode:8s} {job:16s} {rows[job][mode]:7.1f} s", flush=True)
    cpu = cpu_model()
    with args.out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cpu", "job", "portable_seconds", "native_seconds", "portable_over_native"])
        for job, seconds in rows.items():
            writer.writerow([cpu, job, f"{seconds['portable']:.1f}", f"{seconds['native']:.1f}",
                             f"{seconds['portable'] / seconds['native']:.2f}"])


if __name__ == "__main__":
    main()
