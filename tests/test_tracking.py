"""MLflow logging, for real: MLflow's default SQLite store under concurrent
writers, and a real ``mlflow server`` on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import E2E_THREADS, share_outputs, snakemake_in, study_workdir, with_threads

from layerbench.runtime.io import read_csv

WRITER = r"""
import sys
from layerbench.runtime.tracking import client_for, experiment_id, finish_run, log_run, start_run
worker = int(sys.argv[1])
client = client_for(None)  # MLflow's default store in the working directory
exp = experiment_id(client, "concurrency")
parent = start_run(client, exp, f"parent {worker}")
for child in range(3):
    run = start_run(client, exp, f"w{worker} c{child}", parent=parent)
    metrics = [("train/reward", step / 100, step) for step in range(150)]
    log_run(client, run, {"worker": str(worker), "child": str(child)}, metrics, {"w": worker})
    finish_run(client, run)
finish_run(client, parent)
"""


def _search(uri: str, experiment: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_concurrent_writers_lose_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for w in range(4)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(outputs)
    assert (tmp_path / "mlflow.db").exists()  # MLflow's own default store
    runs = _search(f"sqlite:///{tmp_path / 'mlflow.db'}", "concurrency")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 4 and len(children) == 12
    assert all(r.info.status == "FINISHED" for r in runs)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in children:
        history = client.get_metric_history(run.info.run_id, "train/reward")
        assert sorted(m.step for m in history) == list(range(150))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 over a SQLite store in ``folder``;
    stopped and started again on the same port, it keeps its runs."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, _free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{self.url}/health", timeout=2).status == 200:
                    return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not answer /health within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)


@pytest.fixture()
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path).start()
    try:
        yield server.url
    finally:
        server.stop()


def test_logs_to_a_real_server(mlflow_server, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MLFLOW_TRACKING_URI": mlflow_server}
    run = subprocess.run([sys.executable, "-c", WRITER, "7"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "mlflow.db").exists()  # the server got everything, not a local file
    runs = _search(mlflow_server, "concurrency")
    assert len(runs) == 4
    assert {r.data.params.get("child") for r in runs if r.data.params} == {"0", "1", "2"}


LIVE_ARMS = {"full": "full", "layer:1": "layer-1"}  # arm: its folder name


def live_study_raw(raw: dict, url: str) -> dict:
    """The small study's base, full and layer-1 arms, logged to ``url``; each
    train job on one thread, so that --cores 2 trains both at once (the base
    model keeps its build settings, so the wide run's is reused)."""
    raw = with_threads(raw, 1)
    raw["model"]["build"]["threads"] = E2E_THREADS
    raw["arms"] = ["base", *LIVE_ARMS]
    raw["rl"]["steps"] = 16  # long enough (a few seconds) to be seen mid-run
    raw["tracking"] = {"uri": url, "experiment": "live"}
    return raw


def _runs(url: str, **tags) -> list:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    exp = MlflowClient(url).get_experiment_by_name("live")
    if exp is None:
        return []
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()) or None
    return MlflowClient(url).search_runs([exp.experiment_id], filter_string=where or "", run_view_type=ViewType.ALL)


def _steps(url: str, run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(url).get_metric_history(run_id, key))


def watch_live_training(url: str, runs: Path, proc) -> list[set]:
    """Until ``proc`` ends: at each look, the arms whose job still runs (its
    run folder is not yet published) while MLflow already has its reward."""
    looks = []
    while proc.poll() is None:
        live = set()
        for arm, folder in LIVE_ARMS.items():
            if (runs / folder / "seed1").exists():
                continue
            found = _runs(url, **{"layerbench.arm": arm})
            if found and _steps(url, found[0].info.run_id, "train/reward") and not (runs / folder / "seed1").exists():
                live.add(arm)
        looks.append(live)
        time.sleep(0.5)
    return looks


def check_live_tracking(work: Path, server: "MlflowServer") -> None:
    """Phase 1: two train jobs log to a real server while they run, and
    track completes those runs. Phase 2: a train job whose server is down
    trains on, warns once, and track fills its metrics in afterwards."""
    results = work / "results" / "e2e"
    runs = results / "runs"
    # the two train jobs alone first: nothing else competes for the two cores, so they run at once
    proc = snakemake_in(work, *(f"results/e2e/runs/{folder}/seed1" for folder in LIVE_ARMS.values()),
                        "--cores", "2", wait=False)
    looks = watch_live_training(server.url, runs, proc)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert set(LIVE_ARMS) in looks, f"both train jobs never logged live at once: {looks}"
    finish = snakemake_in(work, "results/e2e/mlflow.json", "--cores", "2")
    assert finish.returncode == 0, finish.stderr[-4000:]
    assert not (work / "mlflow.db").exists()  # the study's store is the server

    record = json.loads((results / "mlflow.json").read_text())
    parents = [r for r in _runs(server.url) if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [record["parent_run_id"]]
    children = _runs(server.url)
    children = [r for r in children if r.data.tags.get("mlflow.parentRunId") == record["parent_run_id"]]
    assert sorted(r.data.tags["layerbench.arm"] for r in children) == ["base", "full", "layer:1"]  # no duplicate
    assert all(r.info.status == "FINISHED" and r.data.tags["layerbench.complete"] == "true" for r in children)
    for arm, folder in LIVE_ARMS.items():
        summary = json.loads((runs / folder / "seed1" / "summary.json").read_text())
        assert summary["mlflow_run_id"] == record["child_run_ids"][f"{arm} seed 1"]
        assert summary["mlflow_run_id"] in record["live_child_run_ids"]
        rows = read_csv(runs / folder / "seed1" / "metrics.csv")
        steps = [int(r["step"]) for r in rows]
        assert {"reward", "completions/clipped_ratio", "learning_rate", "rollouts/truncated_share"} <= set(rows[0])
        for column in set(rows[0]) - {"step"}:  # rollouts/* from track: computed when the run ends
            logged = [int(r["step"]) for r in rows if r[column] != ""]
            assert _steps(server.url, summary["mlflow_run_id"], f"train/{column}") == logged, column  # once each
        for phase in ("generation", "scoring", "forward_backward", "optimizer"):
            assert _steps(server.url, summary["mlflow_run_id"], f"train/time/{phase}") == steps
        run = next(r for r in children if r.info.run_id == summary["mlflow_run_id"])
        assert any(k.startswith("eval/") for k in run.data.metrics)  # track completed this run

    server.stop()
    retrain = snakemake_in(work, "results/e2e/runs/layer-1/seed1", "--cores", "2", "--forcerun", "train")
    assert retrain.returncode == 0, retrain.stderr[-4000:]
    log = (results / "logs" / "runs" / "layer-1_seed1.log").read_text()
    assert log.count("[mlflow] live metrics off for this job") == 1, log[-3000:]
    assert json.loads((runs / "layer-1" / "seed1" / "summary.json").read_text())["mlflow_run_id"] is None
    server.start()
    track = snakemake_in(work, "results/e2e/mlflow.json", "--cores", "2")
    assert track.returncode == 0, track.stderr[-4000:]
    second = json.loads((results / "mlflow.json").read_text())
    assert second["parent_run_id"] != record["parent_run_id"] and second["live_child_run_ids"] == []
    filled = second["child_run_ids"]["layer:1 seed 1"]
    steps = [int(r["step"]) for r in read_csv(runs / "layer-1" / "seed1" / "metrics.csv")]
    assert _steps(server.url, filled, "train/reward") == steps


def test_train_jobs_log_live_and_track_completes_their_runs(study_runs, tmp_path):
    raw, works = study_runs
    server = MlflowServer(tmp_path / "server").start()
    try:
        work = study_workdir(tmp_path / "study", live_study_raw(raw, server.url))
        share_outputs(works["wide"] / "results" / "e2e", work / "results" / "e2e")
        check_live_tracking(work, server)
    finally:
        server.stop()
