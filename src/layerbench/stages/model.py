"""Build the default study's base model: a tiny Qwen2 (or Qwen3) trained from scratch.

The result is an ordinary Hugging Face model directory (``config.json``,
``model.safetensors``, tokenizer files) that ``AutoModelForCausalLM`` and
``AutoTokenizer`` load offline, so every later stage treats it exactly like a
Hub model.

Tokenizer: byte-level BPE trained with Qwen2's own pre-tokenisation regex and
NFC normalisation, then handed to ``Qwen2Tokenizer`` — the class
``AutoTokenizer`` picks for a ``qwen2`` folder — so encodings are identical
before and after a reload (see ENVIRONMENT.md). Digits are single tokens.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from layerbench.config import TinyModelSpec
from layerbench.paths import ModelFolder
from layerbench.runtime.io import atomic_directory, atomic_write_json, read_jsonl
from layerbench.runtime.numerics import start_job
from layerbench.runtime.seeding import seed_everything
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return Qwen2Tokenizer(vocab=state["vocab"], merges=merges, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def build_model(spec: TinyModelSpec, vocab_size: int, eos_id: int):
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

    qwen3 = spec.architecture == "qwen3"
    # Qwen3Config's head_dim is its own field (default 128), not hidden_size / heads
    extra = {"head_dim": spec.hidden_size // spec.num_heads} if qwen3 else {}
    config = (Qwen3Config if qwen3 else Qwen2Config)(
        **extra,
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        use_cache=True,
    )
    return AutoModelForCausalLM.from_config(config)


def _batches(sequences: list[list[int]], loss_from: list[int], spec: TinyModelSpec, pad_id: int):
    """Endless shuffled batches of (input_ids, labels) with the prompt masked
    out of the loss: SFT teaches completions, not questions."""
    gen = torch.Generator().manual_seed(spec.seed)
    while True:
        for idx in torch.randperm(len(sequences), generator=gen).split(spec.sft_batch_size):
            rows = [sequences[i] for i in idx.tolist()]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad_id)
            labels = torch.full((len(rows), width), -100)
            for r, i in enumerate(idx.tolist()):
                seq = sequences[i]
                ids[r, : len(seq)] = torch.tensor(seq)
                labels[r, loss_from[i] : len(seq)] = torch.tensor(seq[loss_from[i] :])
            yield ids, labels


def build_base_model(sft_path: Path, out_dir: Path, spec: TinyModelSpec) -> dict:
    """Train tokenizer and model on the SFT demonstrations; write ``out_dir``
    atomically and return a summary (also saved as ``build_summary.json``)."""
    seed_everything(spec.seed)
    numerics = start_job(spec.threads)
    records = read_jsonl(sft_path)
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in records], spec.vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    model = build_model(spec, len(tokenizer), eos_id)

    sequences, loss_from = [], []
    for r in records:
        prompt_ids = tokenizer(r["prompt"])["input_ids"]
        completion_ids = tokenizer(r["completion"])["input_ids"] + [eos_id]
        sequences.append(prompt_ids + completion_ids)
        loss_from.append(len(prompt_ids))
    longest = max(map(len, sequences))
    if longest > spec.max_positions:
        raise ValueError(
            f"model.build.max_positions={spec.max_positions} is shorter than the longest "
            f"SFT sequence ({longest} tokens) in {sft_path}"
        )

    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < spec.sft_warmup:
            return (step + 1) / spec.sft_warmup
        progress = (step - spec.sft_warmup) / max(1, spec.sft_steps - spec.sft_warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    losses, started = [], time.perf_counter()
    batches = _batches(sequences, loss_from, spec, eos_id)
    for _ in range(spec.sft_steps):
        ids, labels = next(batches)
        loss = model(input_ids=ids, attention_mask=(labels != -100) | (ids != eos_id), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()

    summary = {
        "spec": asdict(spec),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "longest_sequence": longest,
        "final_loss": sum(losses[-20:]) / min(20, len(losses)),
        "sft_seconds": round(time.perf_counter() - started, 1),
        "numerics": numerics,
    }
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        atomic_write_json(ModelFolder(tmp).build_summary, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage model``: the tiny base model from the SFT demonstrations."""
    parser = stage_parser("model", first_line(__doc__))
    parser.add_argument("--sft", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    print(build_base_model(Path(args.sft), Path(args.out), study_paths(args).study.model.build))
