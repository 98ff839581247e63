"""vLLM engine settings shared by the train stage (TRL's colocated engine) and the evaluate stage."""

from __future__ import annotations

import os


def cpu_engine_settings(cpu_kvcache_gb: int) -> dict:
    """On CPU (no CUDA): the KV cache size (vLLM reads VLLM_CPU_KVCACHE_SPACE,
    GiB) and eager execution. vLLM's default on CPU compiles the model with
    torch.compile at every engine start (about 20 s for a tiny model) and
    caches the result in the user's home; eager starts in seconds and
    depends on no cache. GPU engines keep vLLM's defaults (CUDA graphs).
    Returns the LLM keyword arguments to add."""
    import torch

    if torch.cuda.is_available():
        return {}
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(cpu_kvcache_gb))
    return {"enforce_eager": True}
