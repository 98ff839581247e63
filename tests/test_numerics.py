"""numerics: portable gives the same bits on another machine and at another
thread count; numerics: native does not promise to.

The second machine is simulated: AVX2_MACHINE caps ATen, MKL and oneDNN to
the kernels an AVX2-only x86-64 CPU has. The session's DAG runs
(conftest.study_runs) are this CPU at 2 threads ("wide") and the capped CPU
at 1 thread ("narrow"), compared whole in test_workflow, plus the other two
corners, capped at 2 threads and this CPU at 1 thread, for the base model and
one arm, compared here."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import yaml
from conftest import AVX2_MACHINE, small_study_raw, weight_hashes


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("corner", ["capped-2-threads", "native-1-thread"])
def test_other_machine_and_thread_count_give_the_same_weights_and_scores(study_runs, corner):
    _, runs = study_runs
    reference = runs["wide"] / "results" / "e2e"
    results = runs[corner] / "results" / "e2e"
    expected = {k: v for k, v in weight_hashes(reference).items() if "full" not in k and "layer-0" not in k}
    assert len(expected) == 2 and weight_hashes(results) == expected
    for table in ("per_sample.csv", "scores.json"):
        assert _sha(results / "eval" / "layer-1" / "seed1" / table) == _sha(
            reference / "eval" / "layer-1" / "seed1" / table), table


def test_the_caps_change_native_kernels_so_the_simulation_is_real(small_base, tmp_path):
    """Control: under numerics: native the same build differs between this CPU
    and the capped one; otherwise the test above would prove nothing."""
    import torch

    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        pytest.skip("this CPU has no kernels beyond AVX2: the caps simulate nothing here")
    raw = small_study_raw("control")
    raw["numerics"] = "native"
    raw["model"]["build"]["sft_steps"] = 40
    study = tmp_path / "results" / "control" / "study.yaml"
    study.parent.mkdir(parents=True)
    study.write_text(yaml.safe_dump(raw))
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "layerbench", "stage", "model", "--study", str(study), "--sft",
         str(small_base["data"] / "sft.jsonl"), "--out", str(tmp_path / name)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, env in (("native", {}), ("capped", AVX2_MACHINE))}
    for proc in procs.values():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    native, capped = (_sha(tmp_path / name / "model.safetensors") for name in procs)
    assert native != capped
