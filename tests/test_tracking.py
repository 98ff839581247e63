"""MLflow logging, for real: MLflow's default SQLite store under concurrent
writers, and a real ``mlflow server`` on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

WRITER = r"""
import sys
from layerbench.stages.track import client_for, experiment_id, finish_run, log_run, start_run
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


@pytest.fixture()
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not answer /health within 60 s")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_logs_to_a_real_server(mlflow_server, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MLFLOW_TRACKING_URI": mlflow_server}
    run = subprocess.run([sys.executable, "-c", WRITER, "7"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "mlflow.db").exists()  # the server got everything, not a local file
    runs = _search(mlflow_server, "concurrency")
    assert len(runs) == 4
    assert {r.data.params.get("child") for r in runs if r.data.params} == {"0", "1", "2"}
