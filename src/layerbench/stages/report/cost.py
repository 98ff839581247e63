"""The report's "What freezing saves": what each arm's training cost, next to full RL's.

Reads collect's ``costs.csv`` (one row per trained arm and seed, from each
run's ``summary.json`` ``cost``): means over seeds per arm, the phase split
as a stacked bar chart, each layer arm's ratios to full RL, one sentence on
which phase dominates on the device the study ran on, and what changes on a
GPU, as arithmetic from parameter counts (labelled as estimates: there is no
GPU run to read, nor a memory preflight).
"""

from __future__ import annotations

from collections import defaultdict

from layerbench.analysis.verdicts import number
from layerbench.config import Arm
from layerbench.stages.report.charts import mean, png_data_uri, pyplot

STEP_PHASES = (("generation", "rollout generation"), ("scoring", "rollout scoring"),
               ("forward_backward", "forward/backward"), ("optimizer", "optimizer step"))
RATIO_PHASES = (("generation", "generation"), ("forward_backward", "fwd/bwd"), ("backward", "of it backward"),
                ("optimizer", "optimizer"))
UNTOUCHED = ("generation", "scoring")  # what freezing cannot shrink: the rollouts
COLORS = {"generation": "#3b7dd8", "scoring": "#9bbce8", "forward_backward": "#e9a23b", "optimizer": "#b23a48"}
ADAMW_BYTES = 8  # two fp32 moments per trainable parameter
GRAD_BYTES = {"fp32": 4, "bf16": 2}


def arm_costs(rows: list[dict]) -> list[dict]:
    """Per arm, means over its seeds with a cost record: seconds per phase
    (whole run and per optimizer step), peak memory, optimizer state, the
    checkpoint's format and dtype (its first seed's) and size on disk."""
    by_arm = defaultdict(list)
    for r in rows:
        if number(r.get("forward_backward_seconds")) is not None:
            by_arm[r["arm"]].append(r)
    out = []
    for arm in sorted(by_arm, key=Arm.sort_key_of):
        rs = by_arm[arm]

        def avg(col, rs=rs):
            return mean(number(r.get(col)) for r in rs)

        seconds = {p: avg(f"{p}_seconds") for p, _ in STEP_PHASES}
        steps = avg("optimizer_steps") or 1
        per_step = {p: s / steps for p, s in seconds.items()}
        backward = avg("backward_seconds")  # forward/backward less the loss forward
        gpu = avg("peak_gpu_mb")
        layers = sorted({int(k) for r in rs for k in (r.get("backward_layers") or "").split()})
        state = avg("optimizer_state_bytes")
        checkpoint_bytes, checkpoint_format = avg("checkpoint_bytes"), rs[0].get("checkpoint_format")
        out.append({"arm": arm, "label": Arm.label_of(arm), "seeds": len(rs), "steps": steps,
                    "train": avg("train_seconds"), "seconds": seconds, "per_step": per_step,
                    "step": sum(per_step.values()), "backward": None if backward is None else backward / steps,
                    "memory": gpu if gpu is not None else avg("peak_rss_mb"),
                    "memory_kind": "peak GPU memory" if gpu is not None else "peak RSS",
                    "optimizer_state": state, "optimizer_state_mb": None if state is None else state / 2**20,
                    "trainable": avg("trainable_parameters"), "backward_layers": layers,
                    "checkpoint": f"{checkpoint_format} {rs[0].get('checkpoint_dtype')}" if checkpoint_format else None,
                    "checkpoint_mb": None if checkpoint_bytes is None else checkpoint_bytes / 2**20,
                    "device": rs[0].get("device") or "unknown device",
                    "vllm": None if avg("vllm_syncs") is None else {
                        "start": avg("vllm_start_seconds"), "sync_mb": avg("vllm_sync_bytes") / 2**20,
                        "sync_tensors": avg("vllm_sync_tensors"), "sync_seconds": avg("vllm_sync_seconds_mean"),
                        "gap_mean": avg("vllm_logp_gap_mean"), "gap_max": max_of(rs, "vllm_logp_gap_max"),
                        "ratio_min": min_of(rs, "vllm_is_ratio_min"), "ratio_max": max_of(rs, "vllm_is_ratio_max")}})
    return out


def max_of(rows: list[dict], col: str) -> float | None:
    return max((v for r in rows if (v := number(r.get(col))) is not None), default=None)


def min_of(rows: list[dict], col: str) -> float | None:
    return min((v for r in rows if (v := number(r.get(col))) is not None), default=None)


def est_forward_backward(arm: str, num_layers: int) -> float | None:
    """Forward plus backward FLOPs of the decoder layers relative to full RL,
    by counting matrix products: forward L; backward of full RL 2L (input and
    weight gradients everywhere); of a layer arm an input gradient in every
    layer above its lowest trained layer K and a weight gradient in each
    trained layer: (L - 1 - K) + n. The LM head and attention scores are left out."""
    a = Arm.parse(arm)
    if a.kind not in ("layer", "layers"):
        return None
    lo, n = min(a.layers), len(a.layers)
    return (num_layers + num_layers - 1 - lo + n) / (3 * num_layers)


def _ratio(a, b):
    return a / b if a is not None and b else None


def ratio_rows(arms: list[dict], num_layers: int) -> list[dict]:
    """Each layer arm relative to full RL (mean over seeds)."""
    full = next((a for a in arms if a["arm"] == "full"), None)
    if full is None:
        return []
    rows = []
    for a in arms:
        if a["arm"] == "full":
            continue
        rows.append({"arm": a["arm"], "label": a["label"], "train": _ratio(a["train"], full["train"]),
                     "step": _ratio(a["step"], full["step"]),
                     **{p: _ratio(a["per_step"][p], full["per_step"][p]) for p, _ in STEP_PHASES},
                     "backward": _ratio(a["backward"], full["backward"]),
                     "memory": _ratio(a["memory"], full["memory"]),
                     "optimizer_state": _ratio(a["optimizer_state"], full["optimizer_state"]),
                     "trainable": _ratio(a["trainable"], full["trainable"]),
                     "backward_layers": a["backward_layers"],
                     "est_forward_backward": est_forward_backward(a["arm"], num_layers)})
    return rows


def _device(arms: list[dict]) -> str:
    devices = sorted({a["device"] for a in arms})
    names = ["CPU" if d == "cpu" else d.removeprefix("cuda: ") for d in devices]
    return " and ".join(names)


def dominant_sentence(arms: list[dict]) -> str | None:
    """Which phase takes most of an optimizer step on this device, with the
    numbers, and what that leaves freezing to save per step."""
    if not arms:
        return None
    share = {p: [a["per_step"][p] / a["step"] for a in arms if a["step"]] for p, _ in STEP_PHASES}
    phase, label = max(STEP_PHASES, key=lambda pl: mean(share[pl[0]]) or 0)
    lo, hi = min(share[phase]), max(share[phase])
    spread = (f"{100 * lo:.0f}% of each optimizer step for every arm" if round(100 * lo) == round(100 * hi)
              else f"{100 * lo:.0f}-{100 * hi:.0f}% of each optimizer step across arms")
    text = f"On {_device(arms)}, {label} is {spread}"
    full = next((a for a in arms if a["arm"] == "full"), None)
    layer_arms = [a for a in arms if Arm.parse(a["arm"]).tensor_prefixes]
    if full is None or not layer_arms or not full["step"]:
        return text + "."
    fixed = sum(full["per_step"][p] for p in UNTOUCHED) / full["step"]
    best = min(layer_arms, key=lambda a: a["step"])
    measured = (f"measured, the fastest layer arm ({best['label']}) takes {best['step'] / full['step']:.2f}x "
                "full RL's time per step")
    if phase in UNTOUCHED:
        return (f"{text}, so freezing, which leaves the rollouts ({100 * fixed:.0f}% of full RL's step) as they are, "
                f"saves at most {1 / fixed:.1f}x per step here; {measured}.")
    return (f"{text}, the part freezing can shrink; the rollouts, which it leaves as they are, take "
            f"{100 * fixed:.0f}% of full RL's step, so it saves at most {1 / fixed:.1f}x per step here; {measured}.")


def gpu_note(arms: list[dict], num_layers: int) -> str:
    """What changes on a GPU, from parameter counts: an estimate, labelled so."""
    text = ("On a GPU memory changes first. AdamW keeps two fp32 moments per trainable parameter (8 bytes each) and "
            "every trainable parameter has a gradient (4 bytes in fp32, 2 in bf16), so optimizer state and "
            "gradients scale with the trainable parameters")
    full = next((a for a in arms if a["arm"] == "full"), None)
    layers = [a for a in arms if Arm.parse(a["arm"]).tensor_prefixes and a["trainable"]]
    if full is not None and full["trainable"] and layers:
        small = min(layers, key=lambda a: a["trainable"])

        def est(p):
            return size(p * (ADAMW_BYTES + GRAD_BYTES["fp32"]))

        text += (f": for this model {est(full['trainable'])} for full RL against {est(small['trainable'])} for "
                 f"{small['label']} (12 bytes per trainable parameter)")
    text += (f". Backward keeps activations only for layers K to L - 1 of a layer-K arm (L = {num_layers}), "
             "(L - K)/L of the decoder's per-layer activations; the logits, the same for every arm, are not "
             "reduced, and the rollouts cost the same for every arm. These are arithmetic estimates until a GPU "
             "run of this study exists (there is no memory preflight yet).")
    return text


def size(n: float) -> str:
    """Bytes as kB, MB or GB (powers of 1024)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 2**10:,.1f} kB"


def phase_chart(arms: list[dict]) -> str | None:
    """Seconds per optimizer step by phase, one stacked bar per arm (mean over seeds)."""
    if not arms:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 0.7 + 0.36 * len(arms)))
    ys = list(range(len(arms)))[::-1]
    for y, a in zip(ys, arms):
        left = 0.0
        for p, label in STEP_PHASES:
            ax.barh(y, a["per_step"][p], left=left, color=COLORS[p], label=label)
            left += a["per_step"][p]
    ax.set_yticks(ys)
    ax.set_yticklabels([a["label"] for a in arms])
    ax.set_xlabel("seconds per optimizer step (mean over seeds)")
    ax.grid(axis="y", visible=False)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[:len(STEP_PHASES)], labels[:len(STEP_PHASES)], loc="lower center", ncol=4, frameon=False,
              bbox_to_anchor=(0.5, 1.0))
    return png_data_uri(fig)


def cost_view(rows: list[dict] | None, num_layers: int) -> dict | None:
    """What the section shows; None when costs.csv is missing."""
    if rows is None:
        return None
    arms = arm_costs(rows)
    measured = {a["arm"] for a in arms}
    return {"arms": arms, "ratios": ratio_rows(arms, num_layers), "sentence": dominant_sentence(arms),
            "chart": phase_chart(arms), "gpu_note": gpu_note(arms, num_layers), "phases": RATIO_PHASES,
            "unmeasured": sorted({r["arm"] for r in rows} - measured, key=Arm.sort_key_of)}
