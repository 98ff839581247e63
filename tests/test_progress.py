"""Progress lines in train and evaluate logs (``layerbench.runtime.progress``)."""

import io
import re

from layerbench.runtime.progress import Progress


def test_progress_writes_the_first_the_last_and_one_line_per_interval():
    readings = iter([0.0, 1.0, 2.0, 40.0, 41.0, 50.0])  # started, then one reading per update
    out = io.StringIO()
    progress = Progress("train full seed 1", 5, interval=30, stream=out, clock=lambda: next(readings))
    for step in range(1, 6):
        progress.update(step, reward=0.25, truncated=None)
    lines = out.getvalue().splitlines()
    # step 1 (first), step 3 at 40 s (30 s after the first), step 5 (last); steps 2 and 4 fall inside the interval
    assert [re.search(r"step (\d+) of 5", line).group(1) for line in lines] == ["1", "3", "5"]
    assert lines[0] == "[progress] train full seed 1: step 1 of 5, elapsed 0:00:01, remaining 0:00:04, reward 0.25"
    assert "elapsed 0:00:50, remaining 0:00:00" in lines[2]


def test_train_and_evaluate_logs_show_progress(study_runs):
    """A person tailing a job's log sees where it is: the small study's jobs, as Snakemake ran them."""
    raw, works = study_runs
    logs = works["wide"] / "results" / raw["study"] / "logs"
    train = (logs / "runs" / "layer-1_seed1.log").read_text()
    steps = raw["rl"]["steps"]
    lines = [line for line in train.splitlines() if line.startswith("[progress] train layer:1 seed 1:")]
    assert lines and f"step {steps} of {steps}," in lines[-1] and "reward" in lines[-1], train[-3000:]
    evaluate = (logs / "eval" / "layer-1_seed1.log").read_text()
    done = re.findall(r"\[progress\] evaluate (\S+): answer (\d+) of (\d+), .*truncated", evaluate)
    assert done and any(n == total for _, n, total in done), evaluate[-3000:]
