"""Log a study to MLflow: one experiment per study, one parent run per
study invocation, one child run per (arm, seed).

Train jobs log their per-step metrics live, each into its child run under
the study's open parent (``stages.train.live``, ``runtime.tracking``).
This stage completes that same parent and those children: evaluation
results, parameters, provenance, artifacts, and whatever training metrics
did not reach MLflow live (a job whose server was unreachable, the
rollout statistics computed at the end). Arms that do not train, and runs
whose live child is gone, get a new child. An invocation's runs count as
a result only once all are logged: each then gets the
``layerbench.complete`` tag, the parent last, and the next invocation
starts a fresh parent. A ``track`` killed half-way leaves its runs
without the tag; its rerun completes the same parent, and parents of
earlier invocations left without it are marked KILLED
(``retire_unfinished``).
"""

from __future__ import annotations

import json
from pathlib import Path

from layerbench.paths import StudyPaths
from layerbench.runtime.io import atomic_write_json, read_csv
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths
from layerbench.runtime.tracking import (
    COMPLETE,
    LIVE,
    finish_run,
    log_run,
    metric_key,
    open_study,
    retry,
    start_run,
    store_uri,
)


def _flatten(prefix: str, obj, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj if isinstance(obj, str) else json.dumps(obj)  # None -> "null", True -> "true"
    return out


def retire_unfinished(client, exp_id: str, study: str, keep: str) -> list[str]:
    """Mark every parent of ``study`` but ``keep`` (the one being completed)
    that never got its completion tag KILLED, with all its child runs: they
    are left by an invocation given up half-way, and must not pass for a result."""
    from mlflow.entities import ViewType

    runs = retry(client.search_runs, [exp_id], run_view_type=ViewType.ALL, max_results=50000)
    dead = {r.info.run_id for r in runs if r.data.tags.get("layerbench.study") == study
            and "mlflow.parentRunId" not in r.data.tags and r.data.tags.get(COMPLETE) != "true"
            and r.info.run_id != keep}
    retired = [r.info.run_id for r in runs
               if r.info.run_id in dead or r.data.tags.get("mlflow.parentRunId") in dead]
    for run_id in retired:
        finish_run(client, run_id, "KILLED")
    return retired


def _training_metrics(rows: list[dict]) -> list[tuple[str, float, int]]:
    out = []
    for row in rows:
        step = int(row["step"])
        for key, value in row.items():
            if key in ("arm", "seed", "step") or value in ("", None):
                continue
            try:
                out.append((f"train/{key}", float(value), step))
            except ValueError:
                continue
    return out


def not_yet_logged(client, run_id: str, metrics: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    """The (key, value, step) of ``metrics`` whose step the run has no value
    for yet: what a live run missed, without logging a step twice."""
    logged: dict[str, set[int]] = {}
    for key in {k for k, _, _ in metrics}:
        logged[key] = {m.step for m in retry(client.get_metric_history, run_id, metric_key(key))}
    return [(k, v, step) for k, v, step in metrics if step not in logged[k]]


def children_of(client, exp_id: str, parent: str) -> tuple[dict, set]:
    """The child runs ``parent`` already has, to complete rather than
    duplicate: {run id: run id} for every one and {(arm, seed): run id} for
    those an earlier, killed ``track`` began; and the ids of the live runs
    train jobs began (a live run is found only by the id its summary.json
    records, so a stale one of a job run again since is never taken)."""
    runs = retry(client.search_runs, [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                 max_results=50000)
    earlier, live = {}, set()
    for run in sorted(runs, key=lambda r: r.info.start_time):
        tags = run.data.tags
        earlier[run.info.run_id] = run.info.run_id
        if tags.get(LIVE) == "true":
            live.add(run.info.run_id)
        else:
            earlier[(tags.get("layerbench.arm"), tags.get("layerbench.seed"))] = run.info.run_id
    return earlier, live


def track_study(paths: StudyPaths, out: Path) -> dict:
    """Log everything the study produced, with the provenance the report
    shows (collect's provenance.json); write the record of what was logged to ``out``."""
    study = paths.study
    client, exp_id, parent = open_study(study.tracking, study.name, paths.mlflow_parent)
    retire_unfinished(client, exp_id, study.name, keep=parent)
    prov = json.loads(paths.provenance.read_text())
    # the study's own name identifies its runs (retire_unfinished), whatever folder the record was made in
    tags = {f"layerbench.{k}": v for k, v in _flatten("", prov, {}).items()} | {"layerbench.study": study.name}
    config_params = _flatten("config", study.resolved(), {})
    log_run(client, parent, config_params, [], tags)

    scores = read_csv(paths.scores)
    training = read_csv(paths.training_metrics)
    contributions = read_csv(paths.contributions)
    parent_metrics = [(f"C/{r['arm']}/budget_{r['budget']}", float(r["C"]), 0) for r in contributions if r["C"]]
    log_run(client, parent, {}, parent_metrics, {})
    for path in (paths.scores, paths.contributions, paths.training_metrics, paths.provenance, paths.study_file):
        retry(client.log_artifact, parent, str(path))

    earlier, live = children_of(client, exp_id, parent)
    children = {}
    for arm in study.arms:
        for seed in study.seeds:
            run_name = f"{arm.name} seed {seed}"
            summary = json.loads(paths.run(arm, seed).summary.read_text()) if arm.trains else {}
            run_id = earlier.get(summary.get("mlflow_run_id")) or earlier.get((arm.name, str(seed)))
            if run_id is None:
                run_id = start_run(client, exp_id, run_name, parent=parent,
                                   tags={"layerbench.arm": arm.name, "layerbench.seed": seed})
            params = {"arm": arm.name, "seed": str(seed)}
            metrics = []
            if arm.trains:
                run = paths.run(arm, seed)
                params.update(_flatten("rl", summary["rl"], {}))
                params["trainable_parameters"] = str(summary["trainable_parameters"])
                params["step0_rollout_sha256"] = summary["step0_rollout_sha256"]
                trained = _training_metrics([r for r in training if r["arm"] == arm.name and int(r["seed"]) == seed])
                metrics += trained
                metrics.append(("train/seconds_per_step", summary["seconds_per_step"], 0))
            else:
                params["trainable_parameters"] = "0"
            for row in scores:
                if row["arm"] == arm.name and int(row["seed"]) == seed:
                    for key in ("accuracy", "truncated_rate", "finished_accuracy", "mean_tokens"):
                        if row[key] != "":
                            metrics.append((f"eval/{row['task']}/{key}/budget_{row['budget']}", float(row[key]), 0))
            params.update(config_params)
            if run_id in earlier.values():  # a live run, or one a killed track began
                metrics = not_yet_logged(client, run_id, metrics)
            log_run(client, run_id, params, metrics, tags)
            retry(client.log_artifacts, run_id, str(paths.eval(arm, seed).path), "eval")
            if arm.trains:
                for path in (run.metrics, run.rollouts, run.summary):
                    retry(client.log_artifact, run_id, str(path), "train")
            finish_run(client, run_id)
            children[run_name] = run_id
    for run_id in set(earlier.values()) - set(children.values()):  # a live run of a job run again since
        finish_run(client, run_id, "KILLED")
    finish_run(client, parent)
    for run_id in [*children.values(), parent]:  # the parent last: complete only when all of it is
        retry(client.set_tag, run_id, COMPLETE, "true")
    record = {"tracking_uri": store_uri(client), "experiment_id": exp_id,
              "parent_run_id": parent, "child_run_ids": children,
              "live_child_run_ids": sorted(run_id for run_id in children.values() if run_id in live)}
    atomic_write_json(out, record)
    return record


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage track``."""
    parser = stage_parser("track", first_line(__doc__))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    print(track_study(study_paths(args), Path(args.out)))
