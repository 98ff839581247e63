"""Figures of scripts/gpu-check.sh, from the results folders of two identical
rehearsal runs on one GPU: rollout and eval tokens/s, peak GPU memory per
arm against the memory preflight's estimate, and the spread between the runs (GPU kernels are not bitwise
reproducible; this measures by how much). Prints JSON.

    python scripts/gpu_check.py RESULTS_A RESULTS_B
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from layerbench.runtime.io import read_csv, sha256_file


def arm_figures(results: Path) -> dict:
    """Per trained arm: peak GPU memory against the memory preflight's
    estimate (layerbench.config.memory), rollout tokens/s, seconds per phase."""
    from layerbench.config import Arm, load_study
    from layerbench.config.memory import arm_memory, arm_plan, study_shape

    study = load_study(results / "study.yaml")
    out = {}
    for summary in sorted(results.glob("runs/*/seed*/summary.json")):
        cost = json.loads(summary.read_text()).get("cost") or {}
        generated = sum(int(r["length"]) for r in read_csv(summary.parent / "rollouts.csv"))
        generation = cost.get("seconds", {}).get("generation") or 0
        arm = Arm.parse(summary.parent.parent.name)
        estimate = arm_memory(study_shape(study, results / "base_model"),
                              arm_plan(study, arm, study.resources.gpu_memory_gb))
        out[arm.slug] = {
            "device": cost.get("device"), "peak_gpu_mb": cost.get("peak_gpu_mb"),
            "estimated_gb": round(estimate["total"], 3),
            "rollout_tokens": generated,
            "rollout_tokens_per_s": round(generated / generation, 1) if generation else None,
            "seconds": cost.get("seconds"), "optimizer_steps": cost.get("optimizer_steps"),
        }
    return out


def eval_figures(results: Path) -> dict:
    """Per evaluated arm: tokens generated (the largest budget's run) per second of its job."""
    seconds = {r["job"]: float(r["seconds"]) for r in read_csv(results / "timings.csv") if r["seconds"]}
    out = {}
    for per_sample in sorted(results.glob("eval/*/seed*/per_sample.csv")):
        rows = read_csv(per_sample)
        largest = max(int(r["budget"]) for r in rows)
        tokens = sum(int(r["n_tokens"]) for r in rows if int(r["budget"]) == largest)
        arm, seed = per_sample.parent.parent.name, per_sample.parent.name
        job = seconds.get(f"eval/{arm}_{seed}")
        out[arm] = {"tokens": tokens, "job_seconds": job,
                    "tokens_per_s": round(tokens / job, 1) if job else None}
    return out


def checkpoint_hashes(results: Path) -> dict[str, str]:
    return {str(f.relative_to(results)): sha256_file(f)
            for f in sorted(results.glob("runs/*/seed*/checkpoint/*.safetensors"))}


def spread(a: Path, b: Path) -> dict:
    """How far two identical runs drift: scores, rewards, weights."""
    key = ("arm", "seed", "task", "budget")
    scores_a = {tuple(r[k] for k in key): float(r["accuracy"]) for r in read_csv(a / "scores.csv")}
    scores_b = {tuple(r[k] for k in key): float(r["accuracy"]) for r in read_csv(b / "scores.csv")}
    diffs = [abs(scores_a[k] - scores_b[k]) for k in scores_a if k in scores_b]
    hashes_a, hashes_b = checkpoint_hashes(a), checkpoint_hashes(b)
    return {"scores_compared": len(diffs), "max_abs_accuracy_diff": max(diffs, default=None),
            "scores_equal": all(d == 0 for d in diffs),
            "checkpoints_bitwise_equal": hashes_a == hashes_b and bool(hashes_a),
            "checkpoints_differing": sorted(k for k in hashes_a if hashes_a[k] != hashes_b.get(k))}


def main(a: Path, b: Path) -> dict:
    return {"arms": arm_figures(a), "eval": eval_figures(a), "spread": spread(a, b),
            "provenance": json.loads((a / "provenance.json").read_text())}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
