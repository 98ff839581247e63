"""``layerbench weight-hashes``: the sha256 of every weight file of a study,
to compare machines.

Under ``numerics: portable`` the default study promises the same bits on any
x86-64 CPU with AVX2, Intel or AMD. Scores can agree by the luck of rounding;
weights cannot, so ``docs/default-study/weights.sha256`` publishes the hash of
the base model and of every checkpoint, in ``sha256sum``'s format (``cd
results/default && sha256sum -c`` reads it too). ``--check`` names the first
file that differs in the DAG's order: the base model first, since every arm
trains from it, then each arm and seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from layerbench.config import Arm
from layerbench.runtime.io import atomic_write_text, sha256_file

PATTERNS = ("base_model/*.safetensors", "runs/*/seed*/checkpoint/*.safetensors")


def dag_order(name: str) -> tuple:
    """Sort key of a weight file's path in a study folder: base model, then arm, seed, file."""
    parts = Path(name).parts
    if parts[0] == "base_model":
        return (0, (), 0, name)
    return (1, Arm.sort_key_of(parts[1]), int(parts[2].removeprefix("seed")), name)


def describe_file(name: str) -> str:
    """Whose weights a file holds, in words."""
    parts = Path(name).parts
    if parts[0] == "base_model":
        return f"the base model ({name})"
    return f"arm {Arm.parse(parts[1]).name}, seed {parts[2].removeprefix('seed')} ({name})"


def study_hashes(results: Path) -> dict[str, str]:
    """{path relative to ``results``: sha256} of every weight file, in DAG order."""
    files = {str(f.relative_to(results)): f for pattern in PATTERNS for f in results.glob(pattern)}
    return {name: sha256_file(files[name]) for name in sorted(files, key=dag_order)}


def read_hashes(path: Path) -> dict[str, str]:
    """A ``sha256sum`` file as {name: sha256}."""
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {name.strip().lstrip("*"): digest for digest, name in pairs}


def differences(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """One line per file that differs, is missing or is extra, in DAG order."""
    lines = []
    for name in sorted(expected.keys() | found.keys(), key=dag_order):
        if name not in found:
            lines.append(f"{describe_file(name)}: missing")
        elif name not in expected:
            lines.append(f"{describe_file(name)}: not in the reference")
        elif expected[name] != found[name]:
            lines.append(f"{describe_file(name)}: sha256 {found[name]}, the reference has {expected[name]}")
    return lines


def weight_hashes_command(results: Path, check: Path | None, write: Path | None) -> int:
    found = study_hashes(results)
    if not found:
        print(f"{results}: no weight files (base_model/, runs/*/seed*/checkpoint/); is it a study's results "
              "folder?", file=sys.stderr)
        return 2
    listing = "".join(f"{digest}  {name}\n" for name, digest in found.items())
    if write:
        atomic_write_text(write, listing)
        print(f"{write}: {len(found)} weight files of {results}")
        return 0
    if check is None:
        print(listing, end="")
        return 0
    diff = differences(read_hashes(check), found)
    if not diff:
        print(f"{results}: all {len(found)} weight files match {check}")
        return 0
    print(f"{results}: {len(diff)} weight file(s) differ from {check}. The first in the DAG's order, where "
          f"the difference begins:\n  {diff[0]}", file=sys.stderr)
    if len(diff) > 1:
        print("Then:\n  " + "\n  ".join(diff[1:]), file=sys.stderr)
    return 1
