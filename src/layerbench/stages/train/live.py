"""Training metrics in MLflow while the job runs: each logged optimizer
step of rank 0 goes to the (arm, seed)'s child run under the study's open
parent (``runtime.tracking``), under the names ``track`` gives the same
columns of ``metrics.csv`` (``train/reward``, ``train/kl``,
``train/completions/clipped_ratio``, ``train/learning_rate``, ...), plus
the seconds so far per phase (``train/time/<phase>``, ``stages.train.cost``).

Logging never stops training: the first failure (an unreachable server, a
store error) prints one warning and turns live logging off for the job;
``track`` then logs the steps MLflow missed from ``metrics.csv``. HTTP
requests get one short try each (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``, unless set), not MLflow's minutes of
retries. A resumed job logs into the run it began.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import mlflow  # noqa: F401 - loaded with this module, before the job measures its RSS before the model
from transformers import TrainerCallback

from layerbench.runtime.tracking import LIVE, log_run, open_study, retry, start_run

HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class LiveMetrics(TrainerCallback):
    """Logs each ``on_log`` of TRL's trainer to the child run ``run_id``
    (None if none could be begun) until the first failure turns it off."""

    def __init__(self, tracking, study: str, record: Path, arm, seed: int, identity: dict, meter):
        self.meter, self.run_id, self.client, self.on = meter, None, None, True
        for key, value in HTTP_SETTINGS.items():
            os.environ.setdefault(key, value)
        try:
            self.client, exp_id, parent = open_study(tracking, study, record)
            self.run_id = self._child(exp_id, parent, arm, seed, identity)
        except Exception as exc:  # noqa: BLE001 - no store error may stop training
            self._off(exc)

    def _child(self, exp_id: str, parent: str, arm, seed: int, identity: dict) -> str:
        """The child run this (arm, seed) began under ``parent`` with the same
        run identity (a resumed job), else a new one."""
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        tags = {"layerbench.arm": arm.name, "layerbench.seed": str(seed), "layerbench.run_identity": digest}
        found = retry(self.client.search_runs, [exp_id], max_results=1, filter_string=" and ".join(
            [f"tags.mlflow.parentRunId = '{parent}'", *(f"tags.`{k}` = '{v}'" for k, v in tags.items())]))
        if found:
            return found[0].info.run_id
        return start_run(self.client, exp_id, f"{arm.name} seed {seed}", parent=parent, tags={**tags, LIVE: "true"})

    def _off(self, exc: Exception) -> None:
        self.on = False
        print(f"[mlflow] live metrics off for this job ({type(exc).__name__}: {str(exc)[:300]}); "
              "training goes on, and track logs the metrics from metrics.csv", flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (self.on and self.run_id) or not logs or "train_runtime" in logs:
            return
        step = state.global_step
        metrics = [(f"train/{k}", float(v), step) for k, v in logs.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        metrics += [(f"train/time/{k}", v, step) for k, v in self.meter.phase_seconds().items()]
        try:
            log_run(self.client, self.run_id, {}, metrics, {})
        except Exception as exc:  # noqa: BLE001
            self._off(exc)
