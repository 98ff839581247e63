"""CPU numerics as a study setting (``numerics``), applied before torch loads.

PyTorch's CPU kernels (ATen's own, MKL's BLAS, oneDNN) pick their code path
by instruction set and thread count, so the same seed gives other bits on
another CPU or at another thread count, and the default study's single-layer
arms sit on a knife-edge that amplifies the difference.

* ``portable``: ATen's AVX2 kernels, MKL's conditional numerical
  reproducibility in strict AVX2 mode, oneDNN capped to AVX2. The same bits on
  any x86-64 CPU with AVX2, at any thread count. Not covered: other
  architectures (ARM, POWER) and GPU kernels; there ``repro`` measures the spread.
* ``native``: each library's fastest path for this CPU; results are specific
  to this machine and thread count.

Every variable is read once, when the library first runs, so ``configure``
must run before ``import torch`` (``layerbench`` does it first thing in every
stage command); it refuses when torch came first with other settings.
"""

from __future__ import annotations

import os
import sys

MODES = ("portable", "native")
DEFAULT = "portable"  # the schema's default; the study.yaml rules pass always carries the key
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels
    "MKL_CBWR": "AVX2,STRICT",  # BLAS; STRICT also makes results independent of the thread count
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN (torch.backends.mkldnn)
}


def configure(mode: str) -> None:
    """Set the math libraries' environment for ``mode``; call before torch loads."""
    if mode not in MODES:
        raise ValueError(f"key 'numerics': {mode!r} is not one of {', '.join(MODES)}")
    if mode == "native":
        return
    wrong = {k: os.environ.get(k) for k, v in PORTABLE_ENV.items() if os.environ.get(k, v) != v}
    if wrong:
        raise RuntimeError(f"numerics: portable needs {PORTABLE_ENV}, but the environment sets {wrong}")
    if "torch" in sys.modules and any(k not in os.environ for k in PORTABLE_ENV):
        raise RuntimeError("numerics: portable must be configured before torch is imported")
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


def describe() -> dict:
    """What this process's math libraries actually use, and its intra-op
    threads, for provenance and each job's summary (the mode is read back
    from the environment)."""
    import torch

    mode = "portable" if all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items()) else "native"
    return {
        "mode": mode,
        "portable_across": "x86-64 CPUs with AVX2, any thread count" if mode == "portable"
        else "this machine and thread count only",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "dnnl_max_cpu_isa": os.environ.get("DNNL_MAX_CPU_ISA"),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "threads": torch.get_num_threads(),
    }
