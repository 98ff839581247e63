"""The MLflow client the study's jobs share: its store, retries while
SQLite is locked, batched writes, and the study's open parent run.

Train jobs log their metrics while they run (``stages.train.live``) and
``track`` completes the same runs afterwards (``stages.track``), so both
find the parent through one record, ``StudyPaths.mlflow_parent``: the run
it names is the study's parent while it runs without the completion tag;
otherwise the first job to need a parent starts one and records it, under
a lock, so two jobs starting at once share it.

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

from layerbench.runtime.io import atomic_write_json, file_lock

MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call
COMPLETE = "layerbench.complete"  # set last, on every run of an invocation, once all are logged
LIVE = "layerbench.live"  # on a child run a train job began, to log its metrics while it trains


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
    import mlflow
    from mlflow import MlflowClient

    if uri:
        mlflow.set_tracking_uri(uri)
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    with file_lock(uri[len("sqlite:///"):] + ".lock"):
        client = MlflowClient(tracking_uri=uri)
        retry(client.search_experiments, max_results=1)
    return client


def store_uri(client) -> str:
    return client._tracking_client.tracking_uri


def experiment_id(client, name: str, attempts: int = 10) -> str:
    """The experiment's id, creating it if missing. Jobs starting at once
    race to create it: the loser's create fails (a unique-constraint error,
    which ``retry`` would keep retrying) and it reads the winner's."""
    for attempt in range(attempts):
        existing = retry(client.get_experiment_by_name, name)
        if existing:
            return existing.experiment_id
        try:
            return client.create_experiment(name)
        except Exception:  # noqa: BLE001 - created concurrently, or the store was locked: look again
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1) + random.random() * 0.1)


def metric_key(name: str) -> str:
    """MLflow names of metrics, params and tags allow alphanumerics and _ - . space : /
    (a control arm's ``+`` becomes ``_``)."""
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in name)


def log_run(client, run_id: str, params: dict, metrics: list[tuple[str, float, int]], tags: dict) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    param_list = [Param(metric_key(k), v[:6000]) for k, v in params.items()]
    for i in range(0, len(param_list), 90):
        retry(client.log_batch, run_id, params=param_list[i : i + 90])
    if tags:
        retry(client.log_batch, run_id, tags=[RunTag(metric_key(k), str(v)) for k, v in tags.items()])
    metric_list = [Metric(metric_key(k), float(v), now, step) for k, v, step in metrics
                   if v is not None and not (isinstance(v, float) and math.isnan(v))]
    for i in range(0, len(metric_list), MAX_BATCH):
        retry(client.log_batch, run_id, metrics=metric_list[i : i + MAX_BATCH])


def start_run(client, exp_id: str, name: str, parent: str | None = None, tags: dict | None = None) -> str:
    all_tags = {"mlflow.runName": name, **{k: str(v) for k, v in (tags or {}).items()}}  # REST stores take str only
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    return retry(client.create_run, exp_id, tags=all_tags).info.run_id


def finish_run(client, run_id: str, status: str = "FINISHED") -> None:
    retry(client.set_terminated, run_id, status)


def open_run(client, run_id: str | None, parent: str | None = None):
    """The run ``run_id`` if it is still running, not complete and (given
    ``parent``) a child of it; else None."""
    if not run_id:
        return None
    try:
        run = retry(client.get_run, run_id)
    except Exception:  # noqa: BLE001 - deleted, or in another store
        return None
    tags = run.data.tags
    if run.info.status != "RUNNING" or tags.get(COMPLETE) == "true":
        return None
    if parent is not None and tags.get("mlflow.parentRunId") != parent:
        return None
    return run


def study_parent(client, exp_id: str, study: str, record: Path) -> str:
    """The study's open parent run (see the module's docstring), started
    and recorded in ``record`` if there is none."""
    with file_lock(record.parent / f".{record.name}.lock"):
        known = json.loads(record.read_text()) if record.is_file() else {}
        if (known.get("tracking_uri") == store_uri(client) and known.get("experiment_id") == exp_id
                and open_run(client, known.get("parent_run_id"))):
            return known["parent_run_id"]
        parent = start_run(client, exp_id, f"{study} study", tags={"layerbench.study": study})
        atomic_write_json(record, {"tracking_uri": store_uri(client), "experiment_id": exp_id,
                                   "parent_run_id": parent})
        return parent


def open_study(tracking, study: str, record: Path) -> tuple:
    """(client, experiment id, parent run id) for the study named ``study``
    logged where its ``tracking`` section says."""
    client = client_for(tracking_uri(tracking.uri))
    exp_id = experiment_id(client, tracking.experiment or f"layerbench-{study}")
    return client, exp_id, study_parent(client, exp_id, study, record)
