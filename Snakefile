# layerbench: base vs full vs single-layer RL, evaluated at several token budgets.
# Thin by design: load and validate the study, include one rule file per stage.
# Every rule calls the layerbench package; no logic lives here.
import sys

from snakemake.utils import min_version

from layerbench.paths import StudyPaths

min_version("9.0")


if not workflow.overwrite_configfiles:  # a --configfile study stands alone, never merged over the default study
    configfile: "config/default.yaml"


S = StudyPaths.from_config(config)  # schema, defaults, cross-field checks; raises naming the bad key
LB = f"{sys.executable} -m layerbench"


wildcard_constraints:
    arm=r"[A-Za-z0-9-]+",
    seed=r"\d+",
    runs=r"runs|repro",


include: "workflow/rules/container.smk"  # LB_JOB, IMAGE; before the stage rules
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/preflight.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/benchmarks.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        S.report,
        S.scores,
        S.contributions,
        S.mlflow,
