"""Arms trained by several processes (resources.gpus_per_arm), on CPU.

The "two-processes" study of conftest.study_runs trains its full arm and
layer 1 through the launcher GPU studies use: accelerate launch with
layerbench's FSDP2 file. Accelerate applies FSDP to GPU processes only, so
on CPU the two processes are DDP over gloo; what only GPUs can show (FSDP
sharding, vLLM tensor parallelism) is listed in config/paper/README.md.
"""

import json

from conftest import TWO_PROCESS_CHECKS, two_process_raw

from layerbench.config import study_from_dict
from layerbench.config.batches import batch_geometry
from layerbench.runtime.io import read_csv


def test_two_processes_train_arms_that_pass_pairing_and_the_audit(study_runs):
    work = study_runs[1]["two-processes"]
    results = work / "results" / "two-processes"
    study = study_from_dict(two_process_raw())
    assert study.resources.gpus_per_arm == 2
    assert (work / TWO_PROCESS_CHECKS).is_file()  # the checks rule fails the DAG on a violation
    hashes = {}
    for arm in ("full", "layer-1"):
        run = results / "runs" / arm / "seed1"
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["processes"], summary["distributed"]) == (2, "MULTI_CPU"), summary["distributed"]
        by_rank = summary["step0_rollout_sha256_by_rank"]
        assert len(set(by_rank)) == 2  # each rank generated its own half of the first batch
        hashes[arm] = by_rank
        rollouts = read_csv(run / "rollouts.csv")
        per_rollout = batch_geometry(study.rl_for(study.trained_arms[0])).per_rollout
        assert len(rollouts) == summary["optimizer_steps"] * per_rollout  # every rank's rollouts gathered
        assert {r["rank"] for r in rollouts} == {"0", "1"}
    assert hashes["full"] == hashes["layer-1"]  # pairing holds rank by rank
    pairing = read_csv(results / "pairing.csv")
    assert len({r["step0_rollout_sha256"] for r in pairing}) == 1
    for row in read_csv(results / "param_audit.csv"):
        if row["arm"] == "layer:1":
            assert row["changed"] == ("1" if row["part"] == "layers.1" else "0"), row
