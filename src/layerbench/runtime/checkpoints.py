"""Checkpoints of trained arms, and a whole model back from any of them.

A full-RL arm is saved as a Hugging Face model folder, as a Hub model is. A
layer arm changes only its decoder layers; everything else is the base
model's, bit for bit (the parameter audit proves it). Saving that rest again
for every layer arm and seed would multiply a study's disk by its number of
arms, so a layer arm's checkpoint holds only its layers' tensors
(``delta.safetensors``) and ``delta.json``, which names the base model by
the hash of its weights. A lora arm's is PEFT's adapter folder
(``adapter_model.safetensors``, ``adapter_config.json``) and ``adapter.json``
with the same hash; reading it merges the adapter into the base with PEFT's
own ``merge_and_unload``. A dup arm's delta holds its copy of layer K
(layer K + 1 of the deeper model) and names K (``duplicate_of``): the base
is read as the deeper model (``runtime.duplicate``) before the delta is laid
over it.

Readers never open a checkpoint's files themselves: ``load_state`` gives the
whole state dict (the checks), ``materialized`` a whole model folder on disk
(lm-eval and vLLM load only those). Both refuse a delta whose base is not the
base model they are given.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from layerbench.paths import CheckpointFolder
from layerbench.runtime.duplicate import duplicated_config, duplicated_state
from layerbench.runtime.io import atomic_write_json, link_or_copy, scratch_beside, sha256_file

DELTA_FORMAT = "layerbench-layer-delta"
DELTA_VERSION = 1
ADAPTER_FORMAT = "layerbench-lora-adapter"
WEIGHTS = "model.safetensors"  # Hugging Face's name for a model's single weights file
SHARD_INDEX = "model.safetensors.index.json"  # names the shards; a materialized model has one file


class IntegrityError(RuntimeError):
    """The arms are not a fair comparison, or a checkpoint is not what it
    claims to be; the message says which and why. (Defined here, not in
    ``stages.checks``, because reading a checkpoint already checks it.)"""


def base_sha256(model_dir: Path) -> str:
    """One hash for a model's weights: over each ``*.safetensors`` file's
    name and sha256, sorted. A delta records it so it is never laid over any
    other base."""
    digest = hashlib.sha256()
    for weights in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(f"{weights.name}\0{sha256_file(weights)}\n".encode())
    return digest.hexdigest()


def save_checkpoint(trainer, tokenizer, arm, base_dir: Path, checkpoint_dir: Path, dtype: str) -> dict | None:
    """Save the trained model of ``arm`` cast to ``dtype`` (float32 or
    bfloat16): a whole model folder for ``full``, the PEFT adapter for
    ``lora``, else the delta of its decoder layers over ``base_dir``.

    Call it on every process of a distributed run: gathering the state dict
    is a collective (one process, DDP or FSDP alike). Only the main process
    writes; it returns the summary's ``checkpoint`` record (format, dtype,
    bytes on disk, base_sha256), the others None."""
    import torch

    state = trainer.accelerator.get_state_dict(trainer.model)
    if not trainer.accelerator.is_main_process:
        return None
    folder, base_hash = CheckpointFolder(Path(checkpoint_dir)), base_sha256(base_dir)
    cast = getattr(torch, dtype)
    if arm.kind == "full":
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(folder.path, state_dict=cast_shared(state, cast))
        tokenizer.save_pretrained(folder.path)
        kind = "full"
    elif arm.kind == "lora":
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(folder.path, state_dict=cast_shared(state, cast))
        atomic_write_json(folder.adapter_record, {"format": ADAPTER_FORMAT, "version": DELTA_VERSION,
                                                  "base_sha256": base_hash, "rank": arm.rank, "dtype": dtype})
        kind = "adapter"
    else:
        from safetensors.torch import save_file

        delta = {n: t.to(cast).contiguous() for n, t in state.items() if n.startswith(arm.tensor_prefixes)}
        folder.path.mkdir(parents=True, exist_ok=True)
        save_file(delta, folder.delta, metadata={"format": "pt"})
        atomic_write_json(folder.delta_record, {
            "format": DELTA_FORMAT, "version": DELTA_VERSION, "base_sha256": base_hash,
            "layers": list(arm.trained_layers), "duplicate_of": arm.duplicated_layer, "dtype": dtype,
            "tensors": sorted(delta)})
        kind = "delta"
    return {"format": kind, "dtype": dtype, "bytes": disk_bytes(folder.path), "base_sha256": base_hash}


def cast_shared(state: dict, dtype) -> dict:
    """``state`` in ``dtype``, names that share one tensor (tied embeddings)
    still sharing one: ``save_pretrained`` then drops the tied copy, as it
    does for the uncast model."""
    def shared(tensor):
        return tensor.data_ptr(), tensor.shape

    by_storage = {}
    for tensor in state.values():
        by_storage.setdefault(shared(tensor), tensor.to(dtype))
    return {name: by_storage[shared(tensor)] for name, tensor in state.items()}


def disk_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def is_delta(checkpoint_dir: Path) -> bool:
    return CheckpointFolder(Path(checkpoint_dir)).delta_record.is_file()


def is_adapter(checkpoint_dir: Path) -> bool:
    return CheckpointFolder(Path(checkpoint_dir)).adapter_record.is_file()


def needs_base(checkpoint_dir: Path) -> bool:
    """A checkpoint that is not a whole model: a layer delta or a LoRA adapter."""
    return is_delta(checkpoint_dir) or is_adapter(checkpoint_dir)


def load_weights(model_dir: Path) -> dict:
    """The tensors of a whole model folder (every ``*.safetensors`` file)."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    state = {}
    for f in files:
        state.update(load_file(f))
    return state


def load_state(checkpoint_dir: Path, base_dir: Path) -> dict:
    """The whole state dict of a checkpoint (or of any model folder): for a
    delta, the base's tensors with the delta's laid over them, once the base
    is the one it was trained from and every delta tensor has a place in it."""
    folder = CheckpointFolder(Path(checkpoint_dir))
    if is_adapter(folder.path):
        _check_base(folder.adapter_record, ADAPTER_FORMAT, base_dir)
        return merged_adapter(folder.path, base_dir)
    if not is_delta(folder.path):
        return load_weights(folder.path)
    from safetensors.torch import load_file

    _check_base(folder.delta_record, DELTA_FORMAT, base_dir)
    state, delta = reference_state(folder.path, base_dir), load_file(folder.delta)
    misplaced = [n for n, t in delta.items() if n not in state or state[n].shape != t.shape]
    if misplaced:
        raise IntegrityError(f"{folder.delta}: tensors with no same-shaped tensor in the base model "
                             f"{base_dir}: {', '.join(sorted(misplaced))}")
    return {**state, **delta}


def duplicate_of(checkpoint_dir: Path) -> int | None:
    """K of a dup arm's delta, else None."""
    record = CheckpointFolder(Path(checkpoint_dir)).delta_record
    return json.loads(record.read_text()).get("duplicate_of") if record.is_file() else None


def reference_state(checkpoint_dir: Path, base_dir: Path) -> dict:
    """The weights a checkpoint's run started from: the base model's, as the
    deeper model for a dup arm. The parameter audit compares against it."""
    state, k = load_weights(base_dir), duplicate_of(checkpoint_dir)
    return state if k is None else duplicated_state(state, k)


def _check_base(record_file: Path, kind: str, base_dir: Path) -> None:
    """Refuse a record of another format, or one trained over another base model."""
    record = json.loads(record_file.read_text())
    if (record.get("format"), record.get("version")) != (kind, DELTA_VERSION):
        raise IntegrityError(f"{record_file}: not a {kind} version {DELTA_VERSION} record")
    recorded, actual = record["base_sha256"], base_sha256(base_dir)
    if recorded != actual:
        raise IntegrityError(
            f"{record_file.parent} holds only trained tensors over a base model whose weights hash to {recorded}, "
            f"but the base model given, {base_dir}, hashes to {actual}: read it with the base model it was "
            "trained from, or train the run again from this one")


def merged_adapter(adapter_dir: Path, base_dir: Path) -> dict:
    """The base model's tensors with a LoRA adapter merged in by PEFT
    (W + alpha / r * B @ A on each adapted weight), under the base's names."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    names = load_weights(base_dir)
    dtype = next(iter(names.values())).dtype
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    with torch.no_grad():
        state = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().state_dict()
    return {n: state[n].contiguous() for n in names}


@contextmanager
def materialized(checkpoint_dir: Path, base_dir: Path, beside: Path) -> Iterator[Path]:
    """A whole Hugging Face model folder for ``checkpoint_dir``, for readers
    that load only those: a full checkpoint (or a base model) is one already;
    a delta or an adapter becomes a temporary folder beside ``beside`` (the job's output:
    same disk; one a killed job left is removed first) with the base's config and tokenizer files
    and ``model.safetensors`` from ``load_state``, removed when the block
    ends, on errors too. Its tensors are the base's names (a tied base has
    no ``lm_head.weight``: neither has this)."""
    if not needs_base(checkpoint_dir):
        yield Path(checkpoint_dir)
        return
    with _model_folder(lambda: load_state(checkpoint_dir, base_dir), base_dir, beside,
                       duplicate_of(checkpoint_dir)) as folder:
        yield folder


@contextmanager
def materialized_duplicate(base_dir: Path, k: int, beside: Path) -> Iterator[Path]:
    """The base model with decoder layer ``k`` duplicated, untrained (``dup:K+none``), as ``materialized``."""
    with _model_folder(lambda: duplicated_state(load_weights(base_dir), k), base_dir, beside, k) as folder:
        yield folder


@contextmanager
def _model_folder(state_of, base_dir: Path, beside: Path, duplicate: int | None) -> Iterator[Path]:
    folder = scratch_beside(Path(beside), "materialized-")
    try:
        from safetensors.torch import save_file

        state = state_of()
        for source in Path(base_dir).iterdir():
            if source.is_file() and source.suffix != ".safetensors" and source.name != SHARD_INDEX:
                if source.name == "config.json" and duplicate is not None:
                    atomic_write_json(folder / source.name, duplicated_config(json.loads(source.read_text()), duplicate))
                else:
                    link_or_copy(source, folder / source.name)
        save_file({n: t.contiguous() for n, t in state.items()}, folder / WEIGHTS, metadata={"format": "pt"})
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
