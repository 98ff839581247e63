"""The README's results block is made from a portable run's tables
(docs/default-study/, copied from results/default/ of the run) and must say
exactly what they say."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import ROOT

REFERENCE = ROOT / "docs" / "default-study"


def readme_table(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerbench", "readme-table", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_readme_block_equals_the_reference_run():
    out = readme_table(REFERENCE, "--check", ROOT / "README.md")
    assert out.returncode == 0, out.stderr


def test_drift_is_caught_and_write_repairs_it(tmp_path):
    tables = shutil.copytree(REFERENCE, tmp_path / "run")
    scores = (tables / "scores.csv").read_text().splitlines()
    first = scores[1].split(",")
    first[4] = f"{1 - float(first[4]):.4f}"  # the base arm's accuracy at the cap, for one seed
    (tables / "scores.csv").write_text("\n".join([scores[0], ",".join(first), *scores[2:]]) + "\n")
    readme = shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    drift = readme_table(tables, "--check", readme)
    assert drift.returncode == 1 and "differs" in drift.stderr
    assert readme_table(tables, "--write", readme).returncode == 0
    assert readme_table(tables, "--check", readme).returncode == 0
    assert (tmp_path / "README.md").read_text() != (ROOT / "README.md").read_text()
