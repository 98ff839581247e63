"""``layerbench numerics-probe``: which kernel gives other bits on this CPU.

``weight-hashes --check`` says *that* a machine's weights differ from the
reference; this says *where*. It runs, under ``numerics: portable``, the
kernels the default study's jobs are made of, one at a time on fixed inputs
(drawn with numpy's PCG64, which gives the same numbers on every machine):
matrix products of the tiny model's shapes and of their gradients, attention,
norms, activations, the loss, the optimizer step, the tiny Qwen2's
initialisation and a few SFT steps of it, each at 1 and 2 intra-op threads
(the study's thread counts), and hashes every result. ``--check`` against
``docs/default-study/numerics_probe.csv`` (made on the reference machine,
which every row names) lists the probes that differ: the first library
whose bits depend on the CPU.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

THREADS = (1, 2)  # the default study's thread counts (rl and eval: 1, model build: 2)
TOKENS = 32 * 37  # a training batch of the tiny model: 32 sequences of its typical length
COLUMNS = ["probe", "threads", "sha256", "cpu"]  # written under portable numerics, the reference's mode


def _normal(seed: int, *shape: int):
    import numpy as np
    import torch

    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def _tiny_spec():
    """The default study's model (``config/default.yaml``)."""
    from layerbench.config import PACKAGE_ROOT, load_study

    return load_study(PACKAGE_ROOT / "config" / "default.yaml").model.build


def _tiny_model():
    import torch

    from layerbench.stages.model import build_model

    spec = _tiny_spec()
    torch.manual_seed(spec.seed)
    return build_model(spec, spec.vocab_size, 0), spec


def _sft_steps(steps: int = 3) -> list:
    """The build stage's loop (AdamW, clipping, masked loss) on fixed token batches."""
    import numpy as np
    import torch

    model, spec = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, weight_decay=0.01)
    rng = np.random.default_rng(7)
    model.train()
    for _ in range(steps):
        ids = torch.from_numpy(rng.integers(1, spec.vocab_size, (spec.sft_batch_size, 37)))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return list(model.state_dict().values())


def _tokenizer() -> bytes:
    """The build stage's BPE training (the tokenizers library, in Rust) on fixed arithmetic text."""
    import json

    import numpy as np

    from layerbench.stages.model import train_tokenizer

    rng = np.random.default_rng(27)
    texts = [f"Q: {a}+{b}-{c}=? A: {a}+{b}={a + b}. {a + b}-{c}={a + b - c}. #### {a + b - c}"
             for a, b, c in rng.integers(0, 10, (2000, 3)).tolist()]
    tokenizer = train_tokenizer(texts, _tiny_spec().vocab_size)
    return json.dumps([tokenizer.get_vocab(), tokenizer.backend_tokenizer.to_str()], sort_keys=True).encode()


def _grad(fn, *shapes: tuple[int, ...]) -> list:
    """Gradients of ``fn(*inputs).sum()`` with respect to every input."""
    inputs = [_normal(10 + i, *s).requires_grad_(True) for i, s in enumerate(shapes)]
    fn(*inputs).sum().backward()
    return [x.grad for x in inputs]


def probes() -> dict:
    """{name: () -> tensor or list of tensors}, in the order a build runs them."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    spec = _tiny_spec()
    h, ffn, vocab, heads = spec.hidden_size, spec.intermediate_size, spec.vocab_size, spec.num_heads
    x = _normal(1, TOKENS, h)

    def adamw():
        p = torch.nn.Parameter(_normal(2, ffn, h))
        p.grad = _normal(3, ffn, h)
        opt = torch.optim.AdamW([p], lr=2e-3, weight_decay=0.01)
        for _ in range(3):
            opt.step()
        return p.detach()

    def clip():
        grads = [_normal(4, ffn, h), _normal(5, h)]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        return [norm] + [p.grad for p in params]

    def embedding_backward():
        weight = _normal(6, vocab, h).requires_grad_(True)
        ids = torch.from_numpy(np.random.default_rng(8).integers(0, vocab, TOKENS))
        F.embedding(ids, weight).mul(_normal(9, TOKENS, h)).sum().backward()
        return weight.grad

    q = _normal(11, 32, heads, 37, h // heads)
    return {
        "BPE tokenizer training": _tokenizer,
        "torch.normal_ (init)": lambda: torch.empty(ffn, h).normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0)),
        "matmul tokens x hidden -> ffn": lambda: x @ _normal(12, h, ffn),
        "matmul tokens x ffn -> hidden": lambda: _normal(13, TOKENS, ffn) @ _normal(14, ffn, h),
        "matmul weight gradient (hidden^T x tokens)": lambda: x.T @ _normal(15, TOKENS, ffn),
        "matmul lm head (tokens x hidden -> vocab)": lambda: x @ _normal(16, h, vocab),
        "linear forward (F.linear)": lambda: F.linear(x, _normal(17, ffn, h), _normal(18, ffn)),
        "linear backward": lambda: _grad(F.linear, (TOKENS, h), (ffn, h)),
        "bmm (attention scores)": lambda: q @ q.transpose(-1, -2),
        "scaled_dot_product_attention (causal)": lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True),
        "attention backward": lambda: _grad(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                                            *[tuple(q.shape)] * 3),
        "softmax": lambda: torch.softmax(_normal(19, TOKENS, vocab), -1),
        "cross_entropy": lambda: F.cross_entropy(_normal(20, TOKENS, vocab), torch.arange(TOKENS) % vocab),
        "cross_entropy backward": lambda: _grad(lambda z: F.cross_entropy(z, torch.arange(TOKENS) % vocab),
                                                (TOKENS, vocab)),
        "rms_norm": lambda: F.rms_norm(x, (h,), _normal(21, h), eps=1e-6),
        "rms_norm backward": lambda: _grad(lambda a, w: F.rms_norm(a, (h,), w, eps=1e-6), (TOKENS, h), (h,)),
        "sum over tokens (bias and norm gradients)": lambda: _normal(25, TOKENS, ffn).sum(0),
        "sum of everything (loss reduction)": lambda: _normal(26, TOKENS, ffn).sum(),
        "silu": lambda: F.silu(_normal(22, TOKENS, ffn)),
        "exp": lambda: torch.exp(_normal(23, TOKENS, ffn)),
        "rsqrt": lambda: torch.rsqrt(_normal(24, TOKENS, h).abs() + 1e-6),
        "embedding backward": embedding_backward,
        "AdamW step": adamw,
        "clip_grad_norm_": clip,
        "tiny Qwen2 initialisation": lambda: list(_tiny_model()[0].state_dict().values()),
        "tiny Qwen2 forward": lambda: _tiny_model()[0](input_ids=torch.arange(37)[None] % vocab).logits,
        "tiny Qwen2, 3 SFT steps": _sft_steps,
    }


def _sha(result) -> str:
    digest = hashlib.sha256()
    for item in result if isinstance(result, list) else [result]:
        digest.update(item if isinstance(item, bytes) else item.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def probe_rows(mode: str = "portable") -> list[dict]:
    """Every probe at every thread count, under ``mode`` numerics (set here, before torch loads)."""
    from layerbench.runtime.numerics import configure, cpu_model, start_job

    configure(mode)
    rows = []
    for threads in THREADS:
        start_job(threads)  # refuses a machine whose MKL does not run the portable branch at this count
        for name, fn in probes().items():
            rows.append({"probe": name, "threads": threads, "sha256": _sha(fn()), "cpu": cpu_model()})
    return rows


def numerics_probe_command(check: Path | None, write: Path | None, mode: str = "portable") -> int:
    rows = probe_rows(mode)
    if write:
        with write.open("w", newline="") as f:
            out = csv.DictWriter(f, COLUMNS, lineterminator="\n")
            out.writeheader()
            out.writerows(rows)
    if not check:
        for r in rows:
            print(f"{r['sha256'][:16]}  {r['threads']} thread(s)  {r['probe']}")
        print(f"cpu: {rows[0]['cpu']}")
        return 0
    with check.open() as f:
        reference = {(r["probe"], int(r["threads"])): r for r in csv.DictReader(f)}
    differ = [r for r in rows if reference.get((r["probe"], r["threads"]), {}).get("sha256") != r["sha256"]]
    ref_cpu = next(iter(reference.values()))["cpu"] if reference else "?"
    if not differ:
        print(f"all {len(rows)} probes match {check} (made on {ref_cpu}; this CPU: {rows[0]['cpu']})")
        return 0
    print(f"{len(differ)} of {len(rows)} probes differ from {check} (made on {ref_cpu}; this CPU: {rows[0]['cpu']}):")
    for r in differ:
        print(f"  {r['probe']} at {r['threads']} thread(s)")
    return 1
