"""Proof that the arms are a fair comparison.

* Pairing: every (arm, seed) run hashes its first batch of rollouts (prompt
  and completion token ids, in order). Before the first update all arms of a
  seed are the same model with the same prompts and sampling stream, so the
  hashes must agree within a seed and differ across seeds.
* Parameter audit: after training, each checkpoint is compared with the base
  model part by part; a ``layer:K`` arm may change layer K and nothing else.
  Per weight tensor it also measures where the update lives (share of
  elements changed, relative Frobenius norm and effective rank of the update;
  ``matrix_measures``), summarised for the full arm in ``checks.json``.
  Checkpoints are read whole (``runtime.checkpoints.load_state``): a layer
  arm saves only its layers, so its frozen tensors are the base's, once the
  base is the one its delta records.
* Re-run check: one (arm, seed) is trained again from scratch and compared
  with the original, per-step metrics and final weights, bitwise.

``run_checks`` writes the two tables and ``checks.json``, their verdicts as
the report shows them (per-seed hashes, the arm x part matrix, every
problem), so the report never runs a check itself.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from layerbench.analysis.update import update_summary
from layerbench.analysis.verdicts import number
from layerbench.config import Arm
from layerbench.config.arms import DECODER_LAYERS
from layerbench.paths import RunFolder
from layerbench.runtime.checkpoints import IntegrityError, load_state, reference_state
from layerbench.runtime.io import atomic_write_csv, atomic_write_json, read_csv
from layerbench.runtime.numerics import start_job
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths

PAIRING_COLUMNS = ["seed", "arm", "step0_rollout_sha256", "step0_prompt_sha256"]
PARAM_AUDIT_COLUMNS = ["arm", "seed", "part", "matrix", "changed", "rel_change", "frac_changed", "rel_frobenius",
                 "effective_rank"]
# Effective rank from a truncated SVD (top LOWRANK_Q singular values) above this smaller side.
LOWRANK_ABOVE = 1024
LOWRANK_Q = 256
PARAM_AUDIT_THREADS = 1  # the audit is small; one thread keeps its numbers the same on every machine
# Wall-clock figures differ between runs by nature; everything else must not.
TIMING_COLUMNS = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second")


def pairing_rows(runs: dict[tuple[str, int], RunFolder]) -> list[dict]:
    rows = []
    for (arm, seed), run in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        summary = json.loads(run.summary.read_text())
        rows.append({"seed": seed, "arm": arm, "step0_rollout_sha256": summary["step0_rollout_sha256"],
                     "step0_prompt_sha256": summary.get("step0_prompt_sha256")})
    return rows


def _same_model(row: dict) -> bool:
    """Arms that start from the base model itself; a dup arm starts from a
    deeper model, so it pairs on its first prompts alone."""
    return Arm.parse(row["arm"]).duplicated_layer is None


def check_pairing(rows: list[dict]) -> None:
    """Raise naming the arms whose first rollouts differ from the rest of
    their seed, and the seeds that share rollouts."""
    _raise({"pairing check": pairing_problems(rows)})


def pairing_problems(rows: list[dict]) -> list[str]:
    """Within a seed, arms from the base model whose first rollouts differ from
    the majority's, and dup arms whose first prompts differ from theirs;
    across seeds, identical first rollouts."""
    by_seed: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    prompts: dict[int, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for row in rows:
        if _same_model(row):
            by_seed[int(row["seed"])][row["step0_rollout_sha256"]].append(row["arm"])
        prompts[int(row["seed"])][row.get("step0_prompt_sha256")].add(row["arm"])
    problems = []
    for seed, groups in sorted(prompts.items()):
        if len(groups) > 1:
            majority = max(groups.values(), key=len)
            odd = sorted(a for arms in groups.values() if arms is not majority for a in arms)
            problems.append(f"seed {seed}: arms {', '.join(odd)} started from different prompts than "
                            f"{', '.join(sorted(majority))} (different data order or prompt caps)")
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
    return problems


def _raise(problems: dict[str, list[str]]) -> None:
    """One IntegrityError for every check ({check: problems}) that has problems."""
    failed = [f"{check} failed:\n  " + "\n  ".join(found) for check, found in problems.items() if found]
    if failed:
        raise IntegrityError("\n".join(failed))


def model_parts(state: dict) -> dict[str, list[str]]:
    """Group parameter names into embed / layers.K / final_norm / lm_head."""
    parts: dict[str, list[str]] = defaultdict(list)
    for name in state:
        if name.startswith(DECODER_LAYERS + "."):
            parts["layers." + name.removeprefix(DECODER_LAYERS + ".").split(".")[0]].append(name)
        elif name.startswith("model.embed_tokens."):
            parts["embed"].append(name)
        elif name.startswith("model.norm."):
            parts["final_norm"].append(name)
        elif name.startswith("lm_head."):
            parts["lm_head"].append(name)
        else:
            parts["other"].append(name)
    return parts


def audit_parameters(base_dir: Path, checkpoint_dir: Path) -> list[dict]:
    """One row per weight tensor (``matrix``), parts in ``part_order``. Per
    part, on each of its rows: did it change at all (``changed``) and by how
    much (``rel_change`` = ||delta|| / ||base|| over the part); per tensor the
    ``matrix_measures``."""
    base, tuned = reference_state(checkpoint_dir, base_dir), load_state(checkpoint_dir, base_dir)
    if set(base) != set(tuned):
        raise IntegrityError(f"{checkpoint_dir}: parameter names differ from the base model's")
    odd = [n for n in base if base[n].shape != tuned[n].shape]
    if odd:
        raise IntegrityError(f"{checkpoint_dir}: parameter shapes differ from the base model's: {', '.join(odd)}")
    rows = []
    for part, names in sorted(model_parts(base).items(), key=lambda kv: part_order(kv[0])):
        measures = [matrix_measures(base[n], tuned[n]) for n in names]
        delta = sum(m["delta_sq"] for m in measures)
        norm = sum(m["base_sq"] for m in measures)
        changed = any(m["n_changed"] for m in measures)
        rel = (delta / norm) ** 0.5 if norm else 0.0
        rows += [{"part": part, "matrix": n, "changed": int(changed), "rel_change": rel, **m}
                 for n, m in zip(names, measures)]
    return rows


def matrix_measures(base, tuned) -> dict:
    """Where one tensor's update delta = tuned - base lives: ``frac_changed``
    (share of elements not bitwise equal), ``rel_frobenius`` (||delta||_F /
    ||base||_F; None when the base tensor is zero but delta is not) and
    ``effective_rank`` of delta (2-D tensors only, else None). Also the raw
    counts and squared norms the part-level figures are summed from."""
    delta = tuned.double() - base.double()
    delta_sq, base_sq = float(delta.pow(2).sum()), float(base.double().pow(2).sum())
    numel, n_changed = base.numel(), int((base != tuned).sum())
    two_d = delta.dim() == 2
    return {"numel": numel, "shape": list(base.shape), "n_changed": n_changed,
            "frac_changed": n_changed / numel if numel else 0.0, "delta_sq": delta_sq, "base_sq": base_sq,
            "rel_frobenius": (delta_sq / base_sq) ** 0.5 if base_sq else (0.0 if delta_sq == 0 else None),
            "effective_rank": effective_rank(delta) if two_d else None,
            "erank_truncated": two_d and min(delta.shape) > LOWRANK_ABOVE}


def effective_rank(delta) -> float | None:
    """Entropy effective rank of a matrix (Roy & Vetterli, 2007): exp(H(p)),
    p_i = s_i / sum_j s_j over its singular values s; 0 for a zero matrix,
    None when it is not finite. Cheap: full ``svdvals`` in float64 when the
    smaller side is at most LOWRANK_ABOVE, else a seeded ``svd_lowrank`` with
    q = LOWRANK_Q. The truncated spectrum drops the tail, so that erank is a
    lower bound of the matrix's."""
    import torch

    d = delta.double()
    if not bool(torch.isfinite(d).all()):
        return None
    if not bool(d.any()):
        return 0.0
    if min(d.shape) > LOWRANK_ABOVE:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            s = torch.svd_lowrank(d, q=min(LOWRANK_Q, *d.shape))[1]
    else:
        s = torch.linalg.svdvals(d)
    s = s[s > 0]
    p = s / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def part_order(part: str):
    """embed, layers by index, final_norm, lm_head, anything else."""
    if part.startswith("layers."):
        return (1, int(part.split(".")[1]))
    return ({"embed": 0, "final_norm": 2, "lm_head": 3}.get(part, 4), 0)


def check_param_audit(arm: Arm, seed: int, rows: list[dict]) -> None:
    """Raise when a frozen part of ``arm`` changed or a trained part did not."""
    _raise({"parameter audit": param_audit_problems(arm, seed, rows)})


def param_audit_problems(arm: Arm, seed: int, rows: list[dict]) -> list[str]:
    """Parts the arm does not train that changed, and trained parts that did
    not; for a lora arm also any changed tensor that is not an adapted weight."""
    if arm.kind == "full":
        return []
    allowed = {r["part"] for r in rows if arm.trains_part(r["part"])}
    leaked = list(dict.fromkeys(r["part"] for r in rows if int(r["changed"]) and r["part"] not in allowed))
    if arm.kind == "lora":
        leaked += [r["matrix"] for r in rows if number(r.get("frac_changed")) and not arm.trains_tensor(r["matrix"])]
    frozen = [p for p in sorted(allowed, key=part_order) if not any(r["part"] == p and int(r["changed"]) for r in rows)]
    problems = []
    if leaked:
        problems.append(f"{arm.name} seed {seed}: frozen parts changed: {', '.join(leaked)}")
    if frozen:
        problems.append(f"{arm.name} seed {seed}: its trained part(s) did not change: {', '.join(frozen)}")
    return problems


def run_checks(base_model: Path, runs: dict[tuple[str, int], RunFolder], pairing: Path, audit: Path,
               checks: Path) -> None:
    """Audit every run's checkpoint against the base model and write the
    results (``write_checks``); raise on any violation. The audit's
    arithmetic (norms, singular values) runs on PARAM_AUDIT_THREADS, a fixed part
    of the study like every stage's thread count."""
    start_job(PARAM_AUDIT_THREADS)
    audit_rows = []
    for (arm, seed), run in sorted(runs.items()):
        audit_rows += [{"arm": arm, "seed": seed, **r} for r in audit_parameters(base_model, run.checkpoint)]
    write_checks(pairing_rows(runs), audit_rows, pairing, audit, checks)


def write_checks(pairings: list[dict], audits: list[dict], pairing: Path, audit: Path, checks: Path) -> dict:
    """Write the pairing rows (``pairing_rows``), the parameter audit rows
    (``audit_parameters`` plus arm and seed; relative changes to four digits,
    frac_changed to four decimals, effective rank to two; a tensor without a
    measure, e.g. a 1-D one's rank, gets an empty cell) and ``checks``, their
    summaries; then raise on any violation, so the files show what went
    wrong. Returns the summaries:

    {"pairing": {"seeds": [{seed, arms, distinct, sha (first 16 hex of the
    hash most arms share), odd: [arms]}], "rows", "problems", "ok"},
     "param_audit": {"parts", "rows": [{arm, cells: [{changed, rel, status}
    or None per part]}], "problems", "ok"},
     "update": ``update_summary`` of the full arm, or None}"""
    def fmt(value, spec):
        return None if value is None or value == "" else format(value, spec)

    csv_rows = [{**r, "rel_change": fmt(r["rel_change"], ".3e"), "rel_frobenius": fmt(r.get("rel_frobenius"), ".3e"),
                 "frac_changed": fmt(r.get("frac_changed"), ".4f"),
                 "effective_rank": fmt(r.get("effective_rank"), ".2f")} for r in audits]
    atomic_write_csv(pairing, pairings, PAIRING_COLUMNS)
    atomic_write_csv(audit, csv_rows, PARAM_AUDIT_COLUMNS)
    audit_sum = param_audit_summary(csv_rows)
    summary = {"pairing": pairing_summary(pairings), "param_audit": audit_sum,
               "update": update_summary(audits, audit_sum["parts"])}
    atomic_write_json(checks, summary)
    _raise({"parameter audit": summary["param_audit"]["problems"], "pairing check": summary["pairing"]["problems"]})
    return summary


def pairing_summary(rows: list[dict]) -> dict:
    """Per seed: how many arms start from the base model (dup arms pair on
    prompts alone), how many distinct step-0 rollout hashes, the arms off the
    majority's hash; the problems are ``pairing_problems``."""
    by_seed = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if _same_model(r):
            by_seed[int(r["seed"])][r["step0_rollout_sha256"]].append(r["arm"])
    seeds = []
    for seed, groups in sorted(by_seed.items()):
        majority = max(groups, key=lambda h: len(groups[h]))
        seeds.append({"seed": seed, "arms": sum(map(len, groups.values())), "distinct": len(groups),
                      "sha": majority[:16], "odd": sorted((a for h, arms in groups.items() if h != majority
                                                           for a in arms), key=Arm.sort_key_of)})
    problems = pairing_problems(rows)
    return {"seeds": seeds, "problems": problems, "ok": not problems,
            "rows": sorted(rows, key=lambda r: (int(r["seed"]), Arm.sort_key_of(r["arm"])))}


def param_audit_summary(rows: list[dict]) -> dict:
    """Matrix arm x part: changed in any seed, largest relative change, and
    "error" where that is not what the arm trains; the problems are
    ``param_audit_problems`` of every run. Rows may be per part or per tensor (a
    part's figures repeat on its tensors' rows)."""
    parts = sorted({r["part"] for r in rows}, key=part_order)
    cells, by_run = defaultdict(list), defaultdict(list)
    for r in rows:
        cells[(r["arm"], r["part"])].append(r)
        by_run[(r["arm"], int(r["seed"]))].append(r)
    problems = []
    for (arm, seed), run_rows in sorted(by_run.items(), key=lambda kv: (Arm.sort_key_of(kv[0][0]), kv[0][1])):
        problems += param_audit_problems(Arm.parse(arm), seed, run_rows)
    table = []
    for arm in sorted({r["arm"] for r in rows}, key=Arm.sort_key_of):
        a = Arm.parse(arm)
        row = []
        for part in parts:
            sel = cells.get((arm, part))
            if not sel:
                row.append(None)
                continue
            changed = any(r["changed"] for r in sel)
            trained = a.trains_part(part)
            row.append({"changed": changed, "rel": max(number(r["rel_change"]) or 0.0 for r in sel),
                        "status": "error" if a.kind != "full" and changed != trained else "ok"})
        table.append({"arm": arm, "cells": row})
    return {"parts": parts, "rows": table, "problems": problems, "ok": not problems}


def compare_runs(original: RunFolder, rerun: RunFolder, base_dir: Path) -> dict:
    """Per-step metrics and final weights of two runs of the same (arm, seed)
    from the base model ``base_dir``."""
    import torch

    a, b = load_state(original.checkpoint, base_dir), load_state(rerun.checkpoint, base_dir)
    weight_diff = max(float((a[n].double() - b[n].double()).abs().max()) for n in a)
    bitwise = all(torch.equal(a[n], b[n]) for n in a)
    ma, mb = read_csv(original.metrics), read_csv(rerun.metrics)
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
    ra_rollouts = original.rollouts.read_bytes()
    rb_rollouts = rerun.rollouts.read_bytes()
    return {
        "bitwise_equal": bitwise,
        "metrics_equal": metrics_equal,
        "rollouts_equal": ra_rollouts == rb_rollouts,
        "max_abs_weight_diff": weight_diff,
        "max_abs_metric_diff": metric_diff,
        "ignored_columns": list(TIMING_COLUMNS),
    }


def write_repro(arm: Arm, seed: int, original: RunFolder, rerun: RunFolder, base_dir: Path, out: Path) -> dict:
    from layerbench.runtime.provenance import hardware

    hw = hardware()
    result = {"arm": arm.name, "seed": seed, **compare_runs(original, rerun, base_dir),
              "device": hw["gpu_model"] or hw["cpu_model"],
              "note": "CPU runs must match bitwise; on GPU (non-deterministic kernels, vLLM) the spread is reported"}
    atomic_write_json(out, result)
    if not hw["gpu_model"] and not (result["bitwise_equal"] and result["metrics_equal"]):
        raise IntegrityError(f"re-run of {arm.name} seed {seed} on CPU differs from the original: {result}")
    return result


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage checks arms|repro``."""
    parser = stage_parser("checks", first_line(__doc__), study=False)
    what = parser.add_subparsers(dest="what", required=True)
    q = what.add_parser("arms", help="pairing check and parameter audit of every run")
    for flag in ("--study", "--pairing", "--param-audit", "--checks"):
        q.add_argument(flag, required=True)
    q = what.add_parser("repro", help="compare a re-run with the original run")
    for flag in ("--study", "--arm", "--original", "--rerun", "--base", "--out"):
        q.add_argument(flag, required=True)
    q.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    if args.what == "repro":
        print(write_repro(Arm.parse(args.arm), args.seed, RunFolder(Path(args.original)),
                          RunFolder(Path(args.rerun)), Path(args.base), Path(args.out)))
        return
    paths = study_paths(args)
    runs = {(a.name, s): paths.run(a, s) for a in paths.study.trained_arms for s in paths.study.seeds}
    run_checks(paths.base_model, runs, Path(args.pairing), Path(args.param_audit), Path(args.checks))
