"""The README's results block is made from a portable run's tables
(docs/default-study/, copied from results/default/ of the run) and must say
exactly what they say."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

REFERENCE = ROOT / "docs" / "default-study"


def readme_table(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerbench", "readme-table", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("study", ["default", "controls"])
def test_readme_block_equals_the_reference_run_of_the_shipped_config(study):
    """The block is the published run's, and that run is of the config this
    repository ships (the same study file, the schema's defaults filled in)."""
    from layerbench.config.schema import with_defaults

    published = ROOT / "docs" / f"{study}-study"
    out = readme_table(published, "--check", ROOT / "README.md")
    assert out.returncode == 0, out.stderr
    shipped = with_defaults(yaml.safe_load((ROOT / "config" / f"{study}.yaml").read_text()))
    assert yaml.safe_load((published / "study.yaml").read_text()) == shipped


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


def weight_hashes(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerbench", "weight-hashes", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_published_hashes_cover_the_base_model_and_every_checkpoint_of_the_reference_study():
    import yaml

    from layerbench.commands.weight_hashes import read_hashes

    study = yaml.safe_load((REFERENCE / "study.yaml").read_text())
    names = read_hashes(REFERENCE / "weights.sha256")
    layers = study["model"]["build"]["num_layers"]
    arms = ["full", *(f"layer-{k}" for k in range(layers))]
    assert "base_model/model.safetensors" in names
    for arm in arms:
        for seed in study["seeds"]:
            assert any(n.startswith(f"runs/{arm}/seed{seed}/checkpoint/") for n in names), (arm, seed)
    assert all(len(digest) == 64 for digest in names.values())


def _study_tree(root):
    """Weight files laid out as a study writes them (contents are arbitrary bytes)."""
    files = {"base_model/model.safetensors": b"base", "runs/full/seed1/checkpoint/model.safetensors": b"full",
             "runs/layer-0/seed1/checkpoint/delta.safetensors": b"l0",
             "runs/layer-10/seed1/checkpoint/delta.safetensors": b"l10",
             "runs/layer-2/seed2/checkpoint/delta.safetensors": b"l2s2",
             "runs/layer-2/seed1/checkpoint/delta.safetensors": b"l2s1"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_weight_hashes_name_the_first_file_that_differs_in_dag_order(tmp_path):
    results = _study_tree(tmp_path / "run")
    reference = tmp_path / "weights.sha256"
    assert weight_hashes(results, "--write", reference).returncode == 0
    lines = reference.read_text().splitlines()
    assert [line.split()[1] for line in lines] == [  # base, full, then layers by index, seeds in order
        "base_model/model.safetensors", "runs/full/seed1/checkpoint/model.safetensors",
        "runs/layer-0/seed1/checkpoint/delta.safetensors", "runs/layer-2/seed1/checkpoint/delta.safetensors",
        "runs/layer-2/seed2/checkpoint/delta.safetensors", "runs/layer-10/seed1/checkpoint/delta.safetensors"]
    ok = weight_hashes(results, "--check", reference)
    assert ok.returncode == 0 and "all 6 weight files match" in ok.stdout
    same = subprocess.run(["sha256sum", "--check", "--strict", reference], cwd=results, capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr  # the standard tool reads the same file

    (results / "runs/layer-2/seed2/checkpoint/delta.safetensors").write_bytes(b"other")
    (results / "runs/layer-10/seed1/checkpoint/delta.safetensors").unlink()
    diff = weight_hashes(results, "--check", reference)
    assert diff.returncode == 1
    first = diff.stderr.splitlines()[1]
    assert first.strip().startswith("arm layer:2, seed 2 (runs/layer-2/seed2/checkpoint/delta.safetensors): sha256")
    assert "arm layer:10, seed 1 (runs/layer-10/seed1/checkpoint/delta.safetensors): missing" in diff.stderr

    (results / "base_model/model.safetensors").write_bytes(b"another base")
    diff = weight_hashes(results, "--check", reference)
    assert "3 weight file(s) differ" in diff.stderr
    assert diff.stderr.splitlines()[1].strip().startswith("the base model (base_model/model.safetensors)")
    assert weight_hashes(tmp_path / "empty", "--check", reference).returncode == 2
