"""numerics: portable gives the same bits on another machine; every job checks
that MKL runs the branch it asked for and refuses otherwise; numerics: native
does not promise to.

The second machine is simulated: AVX2_MACHINE caps ATen, MKL and oneDNN to
the kernels an AVX2-only x86-64 CPU has. The session's DAG runs
(conftest.study_runs) are this CPU with --cores 2 ("wide") and the capped CPU
with --cores 1 ("narrow"), compared whole in test_workflow. A CPU of the
other vendor cannot be simulated on one machine: MKL decides by the CPU it
finds. That claim is checked by comparing the published weight hashes
(docs/default-study/weights.sha256, ``layerbench weight-hashes``) on a CPU of
the other vendor."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import AVX2_MACHINE, E2E_THREADS, small_study_raw

from layerbench.runtime.numerics import (
    PORTABLE_ENV,
    NumericsError,
    check_mkl,
    parse_mkl_verbose,
)

# MKL's verbose line for one SGEMM: on an Intel Xeon under MKL_CBWR=AVX2,STRICT
# (from the issue that reported the vendor gap) and on this project's AMD EPYC
# under the same setting, which MKL does not honour there.
INTEL_AVX2 = "MKL_VERBOSE SGEMM(N,N,64,64,64,...) 12.1us CNR:AVX2,STRICT Dyn:1 FastMM:1 TID:0  NThr:2"
AMD_AVX2 = "MKL_VERBOSE SGEMM(N,N,64,64,64,...) 24.00ms CNR:AUTO,STRICT Dyn:1 FastMM:1 TID:0  NThr:2"
COMPATIBLE = "MKL_VERBOSE SGEMM(T,N,64,64,64,...) 6.93ms CNR:COMPATIBLE Dyn:0 FastMM:1 TID:0  NThr:2"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verbose_lines_are_read_as_the_branch_in_effect():
    assert parse_mkl_verbose(INTEL_AVX2) == {"branch": "AVX2", "strict": True, "dynamic": True, "threads": 2}
    assert parse_mkl_verbose(AMD_AVX2)["branch"] == "AUTO"
    assert parse_mkl_verbose(COMPATIBLE) == {"branch": "COMPATIBLE", "strict": False, "dynamic": False, "threads": 2}
    assert parse_mkl_verbose("MKL_VERBOSE oneMKL 2024.0 Update 2 Product build\n") is None


def test_the_check_refuses_another_branch_or_thread_count_naming_the_cpu():
    check_mkl(parse_mkl_verbose(COMPATIBLE), 2, "AMD EPYC")
    for seen, threads in ((AMD_AVX2, 2), (COMPATIBLE, 1), ("", 2)):
        with pytest.raises(NumericsError, match=r"COMPATIBLE branch on \d thread\(s\), but on this CPU \(AMD EPYC\)"):
            check_mkl(parse_mkl_verbose(seen), threads, "AMD EPYC")


def test_portable_jobs_ran_on_the_branch_they_asked_for(study_runs):
    """Every compute job of both DAG runs recorded MKL's own report of its
    branch (COMPATIBLE) at the study's thread count, with oneDNN off."""
    _, runs = study_runs
    for name in ("wide", "narrow"):
        results = runs[name] / "results" / "e2e"
        records = [results / "base_model" / "build_summary.json", *results.glob("runs/*/seed*/summary.json"),
                   *results.glob("eval/*/seed*/scores.json")]
        assert len(records) == 1 + 3 + 4, records
        for record in records:
            numerics = json.loads(record.read_text())["numerics"]
            assert numerics["mkl_in_effect"] == {"branch": "COMPATIBLE", "strict": False, "dynamic": False,
                                                 "threads": E2E_THREADS}, (name, record)
            assert numerics["mode"] == "portable" and numerics["mkldnn"] is False, (name, record)


def _unhonoured_branch() -> tuple[str, str]:
    """A branch this CPU's MKL does not run when asked: AVX2 on an AMD CPU
    (named branches are Intel-only), else one newer than an Intel CPU has."""
    probe = ("from layerbench.runtime.numerics import mkl_in_effect; import json, sys; "
             "sys.stderr.write(json.dumps(mkl_in_effect()))")
    seen = {}
    for branch in ("AVX2", "AVX512_E5", "AVX512_MIC_E1"):
        out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "MKL_CBWR": branch},
                             capture_output=True, text=True, timeout=120)
        seen[branch] = json.loads(out.stderr.strip().splitlines()[-1])["branch"]
        if seen[branch] != branch:
            return branch, seen[branch]
    raise AssertionError(f"every branch tried runs as asked on this CPU: {seen}")


REQUEST = """import sys
import layerbench.runtime.numerics as numerics
numerics.PORTABLE_ENV["MKL_CBWR"] = sys.argv[1]  # what portable asks MKL for, in this process only
from layerbench.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_cpu_that_runs_another_branch_stops_before_training(small_base, tmp_path):
    """A stand-in for a CPU whose MKL does not honour the requested branch:
    portable asks this CPU's MKL for one it does not run (found by asking),
    through the real train stage; the job stops before training and says why."""
    branch, in_effect = _unhonoured_branch()
    study = tmp_path / "results" / "small" / "study.yaml"
    study.parent.mkdir(parents=True)
    study.write_text(yaml.safe_dump(small_study_raw()))
    out = tmp_path / "results" / "small" / "runs" / "full" / "seed1"
    job = subprocess.run([sys.executable, "-c", REQUEST, branch, "stage", "train", "--study", str(study), "--arm",
                          "full", "--seed", "1", "--base", str(small_base["model"]),
                          "--train", str(small_base["data"] / "train.jsonl"), "--out", str(out)],
                         env={k: v for k, v in os.environ.items() if k not in PORTABLE_ENV},
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 3, job.stderr[-3000:]
    assert f"asked MKL for its {branch} branch" in job.stderr and f"MKL reports branch {in_effect}" in job.stderr
    assert "numerics: native" in job.stderr and "this CPU (" in job.stderr
    assert not out.parent.exists()  # nothing trained, nothing written


def test_the_caps_change_native_kernels_so_the_simulation_is_real(small_base, tmp_path):
    """Control: under numerics: native the same build differs between this CPU
    and the capped one; otherwise the DAG comparison would prove nothing."""
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
