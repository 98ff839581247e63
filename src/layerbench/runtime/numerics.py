"""CPU numerics as a study setting (``numerics``), applied before torch loads
and checked when each job starts.

PyTorch's CPU kernels (ATen's own, MKL's BLAS and LAPACK, oneDNN) pick their
code path by instruction set, CPU vendor, cache size and thread count, so the
same seed gives other bits on another CPU, and the default study's
single-layer arms sit on a knife-edge that amplifies the difference.

* ``portable``: the same bits on any x86-64 CPU with AVX2, Intel or AMD, at
  the study's thread counts (``model.build.threads``, ``rl.threads``,
  ``eval.threads``; any ``--cores``). Per library:

  - MKL: conditional numerical reproducibility on its ``COMPATIBLE`` branch,
    the one branch Intel documents as giving the same results on Intel and
    compatible CPUs. Every named branch (``AVX2`` ...) is honoured on Intel
    CPUs only; elsewhere MKL silently runs ``AUTO``. Its results depend on the
    thread count (strict mode does not cover this branch), so the thread
    count is fixed by the study, and each job checks that MKL runs exactly it.
  - ATen: its AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``). The capability is
    read from the instruction set, not the vendor, and its parallel split
    depends on the thread count only.
  - oneDNN: turned off (``torch.backends.mkldnn.enabled = False``) and capped
    to AVX2. Its kernels block by cache size, which differs between CPU
    models; the study's fp32 ops make no oneDNN call either way (measured
    with ``ONEDNN_VERBOSE=1``), so turning it off costs nothing and keeps a
    future op from reaching it.

  Not covered: other architectures (ARM, POWER) and GPU kernels; there
  ``repro`` measures the spread.
* ``native``: each library's fastest path for this CPU; results are specific
  to this machine and thread count.

MKL and ATen read their variables once, when they first run, so
``configure`` must run before ``import torch`` (``layerbench`` does it first
thing in every stage command). ``start_job`` then reads back the branch MKL
actually runs, from one call in MKL's verbose mode, and refuses to compute on
another branch or thread count.
"""

from __future__ import annotations

import os
import re
import sys

MODES = ("portable", "native")
DEFAULT = "portable"  # the schema's default; the study.yaml rules pass always carries the key
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels
    "MKL_CBWR": "COMPATIBLE",  # BLAS and LAPACK: the branch both vendors honour
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN (torch.backends.mkldnn), also turned off by start_job
}
_VERBOSE = re.compile(r"CNR:(?P<branch>[A-Z0-9_]+)(?P<strict>,STRICT)?\s.*?Dyn:(?P<dynamic>\d).*?NThr:(?P<threads>\d+)")


class NumericsError(RuntimeError):
    """The math libraries do not run as the study asked; nothing was computed."""


def configure(mode: str) -> None:
    """Set the math libraries' environment for ``mode``; call before torch loads."""
    if mode not in MODES:
        raise ValueError(f"key 'numerics': {mode!r} is not one of {', '.join(MODES)}")
    if mode == "native":
        return
    wrong = {k: os.environ.get(k) for k, v in PORTABLE_ENV.items() if os.environ.get(k, v) != v}
    if wrong:
        raise NumericsError(f"numerics: portable needs {PORTABLE_ENV}, but the environment sets {wrong}: "
                            "unset those variables, or use numerics: native")
    if "torch" in sys.modules and any(k not in os.environ for k in PORTABLE_ENV):
        raise NumericsError("numerics: portable must be configured before torch is imported")
    os.environ.update(PORTABLE_ENV)


def configure_for_study_file(path: str) -> None:
    """``configure`` from a study file's ``numerics`` key, reading YAML only
    (the config module imports torch); a missing file is left to the loader."""
    from pathlib import Path

    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError:
        return
    configure(raw.get("numerics", DEFAULT) if isinstance(raw, dict) else DEFAULT)


def identity(mode: str) -> dict:
    """What a mode sets, for change detection: a new definition of portable re-runs its jobs."""
    return {"mode": mode, **PORTABLE_ENV} if mode == "portable" else {"mode": mode}


def mode() -> str:
    """The mode this process was configured for, read back from the environment."""
    return "portable" if all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items()) else "native"


def parse_mkl_verbose(text: str) -> dict | None:
    """Branch, strict flag, dynamic threading and thread count of the first
    call in MKL's verbose output (``... CNR:COMPATIBLE Dyn:0 ... NThr:2``);
    None when MKL printed no call."""
    match = _VERBOSE.search(text)
    if match is None:
        return None
    return {"branch": match["branch"], "strict": bool(match["strict"]), "dynamic": match["dynamic"] == "1",
            "threads": int(match["threads"])}


def mkl_in_effect() -> dict | None:
    """What MKL actually runs in this process: one SGEMM in MKL's verbose mode,
    its line read from standard output (file descriptor 1, where MKL prints)."""
    import ctypes
    import tempfile

    import torch

    if not torch.backends.mkl.is_available():
        return None
    square = torch.ones(64, 64)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 1)
        try:
            with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
                torch.mm(square, square)
            ctypes.CDLL(None).fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        captured.seek(0)
        return parse_mkl_verbose(captured.read().decode(errors="replace"))


def check_mkl(in_effect: dict | None, threads: int, cpu: str) -> None:
    """Refuse portable numerics unless MKL runs the requested branch at the study's thread count."""
    wanted = PORTABLE_ENV["MKL_CBWR"]
    seen = "no MKL call was seen" if in_effect is None else (
        f"MKL reports branch {in_effect['branch']}{',STRICT' if in_effect['strict'] else ''} "
        f"on {in_effect['threads']} thread(s)")
    if in_effect is not None and in_effect["branch"] == wanted and in_effect["threads"] == threads:
        return
    raise NumericsError(
        f"numerics: portable asked MKL for its {wanted} branch on {threads} thread(s), but on this CPU ({cpu}) "
        f"{seen}. Nothing was computed: results here would not be the portable bits. Check that no MKL_* "
        "variable overrides the branch or thread count and that torch is the pinned build (scripts/setup.sh), "
        "or set numerics: native (results then hold for this machine and thread count only).")


def start_job(threads: int) -> dict:
    """Fix this job's intra-op threads and, under portable numerics, turn
    oneDNN off and check MKL's branch; return what the libraries run (``describe``)."""
    import torch

    torch.set_num_threads(threads)
    if mode() == "portable":
        torch.backends.mkldnn.enabled = False
    record = describe()
    if record["mode"] == "portable":
        check_mkl(record["mkl_in_effect"], threads, record["cpu"])
    return record


def cpu_model() -> str | None:
    """The CPU as /proc/cpuinfo names it, with its vendor, family and model
    numbers (a virtual machine may show only "AMD EPYC")."""
    import platform
    from pathlib import Path

    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        return platform.processor() or None
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" not in fields:
        return platform.processor() or None
    numbers = ", ".join(f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model"))
                        if key in fields)
    vendor = fields.get("vendor_id")
    return f"{fields['model name']} ({', '.join(x for x in (vendor, numbers) if x)})"


def describe() -> dict:
    """What this process's math libraries actually use, and its intra-op
    threads, for provenance and each job's record."""
    import torch

    current = mode()
    return {
        "mode": current,
        "portable_across": "x86-64 CPUs with AVX2 (Intel and AMD) at the study's thread counts"
        if current == "portable" else "this machine and thread count only",
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "mkl_in_effect": mkl_in_effect(),
        "dnnl_max_cpu_isa": os.environ.get("DNNL_MAX_CPU_ISA"),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "threads": torch.get_num_threads(),
    }
