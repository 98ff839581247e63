"""A decoder layer duplicated: the model of a ``dup:K`` arm.

The copy of layer K goes right after it, equal to it, so the model is one
layer deeper and applies layer K twice. Its output is therefore not the base
model's at step 0 (``step0_difference`` measures by how much); skipping the
copy gives the base model's output bit for bit, which tests the surgery.
Three views of the same change, one per reader: the live model (train),
its config.json and its state dict (checkpoints).
"""

from __future__ import annotations

import contextlib
import copy

from layerbench.config.arms import DECODER_LAYERS


def duplicate_layer(model, k: int):
    """``model``, changed in place: decoder layer ``k`` copied to ``k + 1``,
    the layer indices (KV-cache slots) and the config following."""
    layers = model.get_submodule(DECODER_LAYERS)
    layers.insert(k + 1, copy.deepcopy(layers[k]))
    for i, layer in enumerate(layers):
        layer.self_attn.layer_idx = i
    duplicated = duplicated_config(model.config.to_dict(), k)
    model.config.num_hidden_layers = duplicated["num_hidden_layers"]
    if "layer_types" in duplicated:
        model.config.layer_types = duplicated["layer_types"]
    return model


def duplicated_config(config: dict, k: int) -> dict:
    """A config.json dict one layer deeper, layer ``k``'s type repeated."""
    out = dict(config, num_hidden_layers=config["num_hidden_layers"] + 1)
    if config.get("layer_types"):
        types = list(config["layer_types"])
        out["layer_types"] = types[: k + 1] + [types[k]] + types[k + 1 :]
    return out


def duplicated_state(state: dict, k: int) -> dict:
    """Base tensors under the deeper model's names: layers above ``k`` move up
    one, and layer ``k``'s tensors are also layer ``k + 1``'s."""
    prefix = DECODER_LAYERS + "."
    out = {}
    for name, tensor in state.items():
        if not name.startswith(prefix):
            out[name] = tensor
            continue
        index, rest = name[len(prefix):].split(".", 1)
        index = int(index)
        out[f"{prefix}{index + (index > k)}.{rest}"] = tensor
        if index == k:
            out[f"{prefix}{k + 1}.{rest}"] = tensor.clone()
    return out


@contextlib.contextmanager
def copy_skipped(model, k: int):
    """Inside the block, the copy of layer ``k`` passes its input through: the base model's forward."""
    def skip(module, args, kwargs, output):
        return args[0] if args else kwargs["hidden_states"]

    handle = model.get_submodule(DECODER_LAYERS)[k + 1].register_forward_hook(skip, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()


def step0_difference(model, k: int, input_ids, attention_mask) -> dict:
    """How far the duplicated model's output is from the base model's on
    ``input_ids`` (a batch of prompts), before any training: the largest
    absolute difference of the last position's logits, and the share of
    prompts whose greedy next token is the same."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, -1]
        with copy_skipped(model, k):
            base = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, -1]
    return {"max_abs_logit_diff": float((logits - base).abs().max()),
            "next_token_agreement": float((logits.argmax(-1) == base.argmax(-1)).float().mean()),
            "prompts": int(input_ids.shape[0])}
