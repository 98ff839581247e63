"""Log a study to MLflow: one experiment per study, one parent run per study
invocation, one child run per (arm, seed).

Training and evaluation jobs write plain files; this single stage logs them,
and a re-run of the DAG logs a fresh parent. An invocation's runs count as a
result only once all are logged: each then gets the ``layerbench.complete``
tag, the parent last. A ``track`` killed half-way leaves runs without it; the
next invocation marks them KILLED (``retire_unfinished``). Writes use
``log_batch`` and are retried when SQLite reports a lock, so several studies
(or processes) can share the default store.

Store: ``tracking.uri`` from the study, else ``MLFLOW_TRACKING_URI``, else
MLflow's own default (``sqlite:///mlflow.db`` in the working directory).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

from layerbench.paths import StudyPaths
from layerbench.runtime.io import atomic_write_json, read_csv
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths

MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


def tracking_uri(configured: str | None = None) -> str | None:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or None


def retry(fn, *args, attempts: int = 30, **kwargs):
    """Call an MLflow client method, retrying while SQLite is locked by
    another writer (MLflow surfaces that as an MlflowException)."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only lock errors are retried
            text = str(exc).lower()
            if attempt == attempts - 1 or not any(s in text for s in ("locked", "busy", "unique constraint")):
                raise
            time.sleep(0.05 * (attempt + 1) + random.random() * 0.1)


def client_for(uri: str | None):
    """An MlflowClient whose store is initialised. For SQLite stores, the
    first use creates and migrates the schema; several processes doing that
    at once corrupt it ("duplicate column"), so it happens under a file lock."""
    import fcntl

    import mlflow
    from mlflow import MlflowClient

    if uri:
        mlflow.set_tracking_uri(uri)
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    with open(uri[len("sqlite:///"):] + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri)
        retry(client.search_experiments, max_results=1)
    return client


def experiment_id(client, name: str) -> str:
    existing = retry(client.get_experiment_by_name, name)
    if existing:
        return existing.experiment_id
    try:
        return retry(client.create_experiment, name)
    except Exception:  # created concurrently by another process
        return retry(client.get_experiment_by_name, name).experiment_id


def _flatten(prefix: str, obj, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj if isinstance(obj, str) else json.dumps(obj)  # None -> "null", True -> "true"
    return out


def metric_key(name: str) -> str:
    """MLflow metric names allow alphanumerics and _ - . space : /"""
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in name)


def log_run(client, run_id: str, params: dict, metrics: list[tuple[str, float, int]], tags: dict) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    param_list = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(param_list), 90):
        retry(client.log_batch, run_id, params=param_list[i : i + 90])
    tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
    retry(client.log_batch, run_id, tags=tag_list)
    metric_list = [Metric(metric_key(k), float(v), now, step) for k, v, step in metrics
                   if v is not None and not (isinstance(v, float) and math.isnan(v))]
    for i in range(0, len(metric_list), MAX_BATCH):
        retry(client.log_batch, run_id, metrics=metric_list[i : i + MAX_BATCH])


def start_run(client, exp_id: str, name: str, parent: str | None = None, tags: dict | None = None) -> str:
    all_tags = {"mlflow.runName": name, **(tags or {})}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    return retry(client.create_run, exp_id, tags=all_tags).info.run_id


def finish_run(client, run_id: str, status: str = "FINISHED") -> None:
    retry(client.set_terminated, run_id, status)


COMPLETE = "layerbench.complete"  # set last, on every run of an invocation, once all are logged


def retire_unfinished(client, exp_id: str, study: str) -> list[str]:
    """Mark every earlier invocation of ``study`` that never got its
    completion tag KILLED, with all its child runs: a killed ``track`` leaves
    a RUNNING parent and some children, which must not pass for a result."""
    from mlflow.entities import ViewType

    runs = retry(client.search_runs, [exp_id], run_view_type=ViewType.ALL, max_results=50000)
    dead = {r.info.run_id for r in runs if r.data.tags.get("layerbench.study") == study
            and "mlflow.parentRunId" not in r.data.tags and r.data.tags.get(COMPLETE) != "true"}
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


def track_study(paths: StudyPaths, out: Path) -> dict:
    """Log everything the study produced, with the provenance the report
    shows (collect's provenance.json); write the record of what was logged to ``out``."""
    study = paths.study
    client = client_for(tracking_uri(study.tracking.uri))
    exp_id = experiment_id(client, study.tracking.experiment or f"layerbench-{study.name}")
    retire_unfinished(client, exp_id, study.name)
    prov = json.loads(paths.provenance.read_text())
    # the study's own name identifies its runs (retire_unfinished), whatever folder the record was made in
    tags = {f"layerbench.{k}": v for k, v in _flatten("", prov, {}).items()} | {"layerbench.study": study.name}
    parent = start_run(client, exp_id, f"{study.name} study", tags={"layerbench.study": study.name})
    config_params = _flatten("config", study.resolved(), {})
    log_run(client, parent, config_params, [], tags)

    scores = read_csv(paths.scores)
    training = read_csv(paths.training_metrics)
    contributions = read_csv(paths.contributions)
    parent_metrics = [(f"C/{r['arm']}/budget_{r['budget']}", float(r["C"]), 0) for r in contributions if r["C"]]
    log_run(client, parent, {}, parent_metrics, {})
    for path in (paths.scores, paths.contributions, paths.training_metrics, paths.provenance, paths.study_file):
        retry(client.log_artifact, parent, str(path))

    children = {}
    for arm in study.arms:
        for seed in study.seeds:
            run_name = f"{arm.name} seed {seed}"
            run_id = start_run(client, exp_id, run_name, parent=parent,
                               tags={"layerbench.arm": arm.name, "layerbench.seed": seed})
            params = {"arm": arm.name, "seed": str(seed)}
            metrics = []
            if arm.trains:
                run = paths.run(arm, seed)
                summary = json.loads(run.summary.read_text())
                params.update(_flatten("rl", summary["rl"], {}))
                params["trainable_parameters"] = str(summary["trainable_parameters"])
                params["step0_rollout_sha256"] = summary["step0_rollout_sha256"]
                metrics += _training_metrics([r for r in training if r["arm"] == arm.name and int(r["seed"]) == seed])
                metrics.append(("train/seconds_per_step", summary["seconds_per_step"], 0))
            else:
                params["trainable_parameters"] = "0"
            for row in scores:
                if row["arm"] == arm.name and int(row["seed"]) == seed:
                    for key in ("accuracy", "truncated_rate", "finished_accuracy", "mean_tokens"):
                        if row[key] != "":
                            metrics.append((f"eval/{row['task']}/{key}/budget_{row['budget']}", float(row[key]), 0))
            params.update(config_params)
            log_run(client, run_id, params, metrics, tags)
            retry(client.log_artifacts, run_id, str(paths.eval(arm, seed).path), "eval")
            if arm.trains:
                for path in (run.metrics, run.rollouts, run.summary):
                    retry(client.log_artifact, run_id, str(path), "train")
            finish_run(client, run_id)
            children[run_name] = run_id
    finish_run(client, parent)
    for run_id in [*children.values(), parent]:  # the parent last: complete only when all of it is
        retry(client.set_tag, run_id, COMPLETE, "true")
    record = {"tracking_uri": client._tracking_client.tracking_uri, "experiment_id": exp_id,
              "parent_run_id": parent, "child_run_ids": children}
    atomic_write_json(out, record)
    return record


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage track``."""
    parser = stage_parser("track", first_line(__doc__))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    print(track_study(study_paths(args), Path(args.out)))
