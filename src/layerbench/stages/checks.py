"""Proof that the arms are a fair comparison.

* Pairing: every (arm, seed) run hashes its first batch of rollouts (prompt
  and completion token ids, in order). Before the first update all arms of a
  seed are the same model with the same prompts and sampling stream, so the
  hashes must agree within a seed and differ across seeds.
* Parameter audit: after training, each checkpoint is compared with the base
  model part by part; a ``layer:K`` arm may change layer K and nothing else.
* Re-run check: one (arm, seed) is trained again from scratch and compared
  with the original, per-step metrics and final weights, bitwise.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from layerbench.config import Arm
from layerbench.runtime.io import atomic_write_csv, atomic_write_json, read_csv

PAIRING_COLUMNS = ["seed", "arm", "step0_rollout_sha256"]
AUDIT_COLUMNS = ["arm", "seed", "part", "changed", "rel_change"]
# Wall-clock figures differ between runs by nature; everything else must not.
TIMING_COLUMNS = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second")


class IntegrityError(RuntimeError):
    """The arms are not a fair comparison; the message says which and why."""


def pairing_rows(runs: dict[tuple[str, int], Path]) -> list[dict]:
    rows = []
    for (arm, seed), run_dir in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        summary = json.loads((run_dir / "summary.json").read_text())
        rows.append({"seed": seed, "arm": arm, "step0_rollout_sha256": summary["step0_rollout_sha256"]})
    return rows


def check_pairing(rows: list[dict]) -> None:
    """Raise naming the arms whose first rollouts differ from the rest of
    their seed, and the seeds that share rollouts."""
    by_seed: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_seed[int(row["seed"])][row["step0_rollout_sha256"]].append(row["arm"])
    problems = []
    for seed, groups in sorted(by_seed.items()):
        if len(groups) > 1:
            majority = max(groups.values(), key=len)
            odd = sorted(a for arms in groups.values() if arms is not majority for a in arms)
            problems.append(
                f"seed {seed}: arms {', '.join(odd)} started from different rollouts than "
                f"{', '.join(sorted(majority))} (different weights, prompt order or sampling settings)"
            )
    first_hash = {seed: next(iter(groups)) for seed, groups in by_seed.items()}
    seen: dict[str, int] = {}
    for seed, digest in sorted(first_hash.items()):
        if digest in seen:
            problems.append(f"seeds {seen[digest]} and {seed} produced identical first rollouts: the seed is not used")
        seen[digest] = seed
    if problems:
        raise IntegrityError("pairing check failed:\n  " + "\n  ".join(problems))


def model_parts(state: dict) -> dict[str, list[str]]:
    """Group parameter names into embed / layers.K / final_norm / lm_head."""
    parts: dict[str, list[str]] = defaultdict(list)
    for name in state:
        if name.startswith("model.layers."):
            parts["layers." + name.split(".")[2]].append(name)
        elif name.startswith("model.embed_tokens."):
            parts["embed"].append(name)
        elif name.startswith("model.norm."):
            parts["final_norm"].append(name)
        elif name.startswith("lm_head."):
            parts["lm_head"].append(name)
        else:
            parts["other"].append(name)
    return parts


def _load_state(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    state = {}
    for f in files:
        state.update(load_file(f))
    return state


def audit_parameters(base_dir: Path, checkpoint_dir: Path) -> list[dict]:
    """Per part: did it change at all, and by how much (||delta|| / ||base||)."""
    import torch

    base, tuned = _load_state(base_dir), _load_state(checkpoint_dir)
    if set(base) != set(tuned):
        raise IntegrityError(f"{checkpoint_dir}: parameter names differ from the base model's")
    rows = []
    for part, names in sorted(model_parts(base).items(), key=lambda kv: _part_order(kv[0])):
        delta = sum(float((tuned[n].double() - base[n].double()).pow(2).sum()) for n in names)
        norm = sum(float(base[n].double().pow(2).sum()) for n in names)
        changed = any(not torch.equal(base[n], tuned[n]) for n in names)
        rows.append({"part": part, "changed": int(changed), "rel_change": (delta / norm) ** 0.5 if norm else 0.0})
    return rows


def _part_order(part: str):
    if part.startswith("layers."):
        return (1, int(part.split(".")[1]))
    return ({"embed": 0, "final_norm": 2, "lm_head": 3}.get(part, 4), 0)


def check_audit(arm: Arm, seed: int, rows: list[dict]) -> None:
    if arm.kind == "full":
        return
    allowed = {f"layers.{k}" for k in arm.layers}
    leaked = [r["part"] for r in rows if r["changed"] and r["part"] not in allowed]
    frozen = [p for p in sorted(allowed) if not any(r["part"] == p and r["changed"] for r in rows)]
    problems = []
    if leaked:
        problems.append(f"{arm.name} seed {seed}: frozen parts changed: {', '.join(leaked)}")
    if frozen:
        problems.append(f"{arm.name} seed {seed}: its trained part(s) did not change: {', '.join(frozen)}")
    if problems:
        raise IntegrityError("parameter audit failed:\n  " + "\n  ".join(problems))


def run_audits(base_dir: Path, runs: dict[tuple[str, int], Path], out_dir: Path) -> None:
    """Write ``pairing.csv`` and ``param_audit.csv``; raise on any violation
    (after writing, so the tables show what went wrong)."""
    pairing = pairing_rows(runs)
    atomic_write_csv(out_dir / "pairing.csv", pairing, PAIRING_COLUMNS)
    audit, errors = [], []
    for (arm_name, seed), run_dir in sorted(runs.items()):
        rows = audit_parameters(base_dir, run_dir / "checkpoint")
        audit += [{"arm": arm_name, "seed": seed, **r, "rel_change": f"{r['rel_change']:.3e}"} for r in rows]
        try:
            check_audit(Arm.parse(arm_name), seed, rows)
        except IntegrityError as exc:
            errors.append(str(exc))
    atomic_write_csv(out_dir / "param_audit.csv", audit, AUDIT_COLUMNS)
    try:
        check_pairing(pairing)
    except IntegrityError as exc:
        errors.append(str(exc))
    if errors:
        raise IntegrityError("\n".join(errors))


def compare_runs(original: Path, rerun: Path) -> dict:
    """Per-step metrics and final weights of two runs of the same (arm, seed)."""
    import torch

    a, b = _load_state(original / "checkpoint"), _load_state(rerun / "checkpoint")
    weight_diff = max(float((a[n].double() - b[n].double()).abs().max()) for n in a)
    bitwise = all(torch.equal(a[n], b[n]) for n in a)
    ma, mb = read_csv(original / "metrics.csv"), read_csv(rerun / "metrics.csv")
    metric_diff, metrics_equal = 0.0, len(ma) == len(mb)
    for ra, rb in zip(ma, mb):
        for key in ra:
            if key in TIMING_COLUMNS:
                continue
            if ra[key] != rb.get(key):
                metrics_equal = False
                try:
                    metric_diff = max(metric_diff, abs(float(ra[key]) - float(rb[key])))
                except (TypeError, ValueError):
                    metric_diff = float("inf")
    ra_rollouts = (original / "rollouts.csv").read_bytes()
    rb_rollouts = (rerun / "rollouts.csv").read_bytes()
    return {
        "bitwise_equal": bitwise,
        "metrics_equal": metrics_equal,
        "rollouts_equal": ra_rollouts == rb_rollouts,
        "max_abs_weight_diff": weight_diff,
        "max_abs_metric_diff": metric_diff,
        "ignored_columns": list(TIMING_COLUMNS),
    }


def write_repro(arm: Arm, seed: int, original: Path, rerun: Path, out: Path) -> dict:
    from layerbench.runtime.provenance import hardware

    hw = hardware()
    result = {"arm": arm.name, "seed": seed, **compare_runs(original, rerun),
              "device": hw["gpu_model"] or hw["cpu_model"],
              "note": "CPU runs must match bitwise; on GPU (non-deterministic kernels, vLLM) the spread is reported"}
    atomic_write_json(out, result)
    if not hw["gpu_model"] and not (result["bitwise_equal"] and result["metrics_equal"]):
        raise IntegrityError(f"re-run of {arm.name} seed {seed} on CPU differs from the original: {result}")
    return result
