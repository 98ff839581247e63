"""``layerbench numerics-probe``: the per-kernel hashes another machine checks
against the published ones (docs/default-study/numerics_probe.csv)."""

import csv
import os
import subprocess
import sys

from conftest import AVX2_MACHINE, ROOT

REFERENCE = ROOT / "docs" / "default-study" / "numerics_probe.csv"


def _probe(tmp_path, name: str, *args: str, env: dict | None = None) -> dict[tuple[str, str], str]:
    out = tmp_path / f"{name}.csv"
    run = subprocess.run([sys.executable, "-m", "layerbench", "numerics-probe", "--write", str(out), *args],
                         capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stderr[-3000:]
    with out.open() as f:
        return {(r["probe"], r["threads"]): r["sha256"] for r in csv.DictReader(f)}


def test_portable_probes_do_not_depend_on_the_instruction_set_and_native_ones_do(tmp_path):
    """The same probes with the kernels capped to an AVX2 machine's give the
    same bits under portable numerics; under native numerics the matrix
    products differ (so a probe can tell kernels apart)."""
    portable = _probe(tmp_path, "portable")
    assert _probe(tmp_path, "capped", env=AVX2_MACHINE) == portable
    native = _probe(tmp_path, "native", "--numerics", "native")
    differ = {name for (name, _), sha in native.items() if portable[(name, _)] != sha}
    assert "matmul tokens x hidden -> ffn" in differ and "tiny Qwen2, 3 SFT steps" in differ, differ
    check = subprocess.run([sys.executable, "-m", "layerbench", "numerics-probe", "--numerics", "native", "--check",
                            str(tmp_path / "portable.csv")], capture_output=True, text=True, timeout=300)
    assert check.returncode == 1 and "matmul tokens x hidden -> ffn at 1 thread(s)" in check.stdout


def test_the_published_reference_covers_every_probe_and_names_its_cpu():
    from layerbench.commands.numerics_probe import THREADS, probes

    with REFERENCE.open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["probe"], int(r["threads"])) for r in rows} == {(p, t) for p in probes() for t in THREADS}
    assert all(r["cpu"] and len(r["sha256"]) == 64 for r in rows)
