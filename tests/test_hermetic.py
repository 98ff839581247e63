"""The suite passes in a clone where the quickstart study already ran, and
leaves that study alone.

A copy of the working tree gets the outputs a finished quickstart leaves
(results/default, reports/default, mlflow.db, mlruns/, .snakemake/); the
tests that drive Snakemake on the default study then run inside that copy,
with its own code. They must pass and leave every planted file as it was.
(The whole suite also checks the real repository the same way at the end of
each session: conftest.pytest_sessionfinish.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT, tree_state

DAG_TESTS = [
    "tests/test_paper.py::test_gpu_jobs_run_inside_a_gpu_slot_and_cpu_studies_do_not",
    "tests/test_workflow.py::test_lint_is_clean",
    "tests/test_config.py::test_snakemake_refuses_a_bad_config_before_any_job",
]


def plant_quickstart_outputs(clone) -> None:
    results = clone / "results" / "default"
    results.mkdir(parents=True)
    shutil.copy(ROOT / "config" / "default.yaml", results / "study.yaml")
    (results / "scores.csv").write_text("arm,seed,task,budget,accuracy\nbase,1,layerbench_arith,40,0.5\n")
    (clone / "reports" / "default").mkdir(parents=True)
    (clone / "reports" / "default" / "index.html").write_text("<!doctype html><title>quickstart</title>")
    (clone / "mlflow.db").write_bytes(b"SQLite format 3\x00")
    (clone / "mlruns" / "0").mkdir(parents=True)
    (clone / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    (clone / ".snakemake" / "metadata").mkdir(parents=True)
    (clone / ".snakemake" / "metadata" / "cmVzdWx0cw==").write_text("{}")


def test_dag_tests_pass_beside_a_finished_quickstart_and_leave_it_alone(tmp_path):
    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    plant_quickstart_outputs(clone)
    before = tree_state(clone)
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}  # the clone's code, not the editable install
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DAG_TESTS], cwd=clone,
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"{len(DAG_TESTS)} passed" in run.stdout
    assert tree_state(clone) == before
