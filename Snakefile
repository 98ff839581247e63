# layerbench: base vs full vs single-layer RL, evaluated at several token budgets.
# Thin by design: load the study, include one rule file per stage (the stage map
# in README.md lists them). Every rule calls `layerbench stage <name>`; no logic
# lives here.
import sys

from snakemake.utils import min_version

from layerbench.config import study_from_snakemake
from layerbench.paths import StudyPaths, record_of
from layerbench.rules import RuleSettings, write_study_file
from layerbench.runtime.timing import record as record_wall_time

min_version("9.0")


if not workflow.overwrite_configfiles:  # a --configfile study stands alone, never merged over the default study
    configfile: "config/default.yaml"


STUDY = study_from_snakemake(config)  # schema, defaults, cross-field checks; raises naming the bad key
P = StudyPaths(STUDY)  # every file, declared once
R = RuleSettings(STUDY)  # fingerprints, resources, GPU slots
P.study_file.parent.mkdir(parents=True, exist_ok=True)
write_study_file(STUDY, P.study_file)  # what every stage command reads (rewritten only when it changes)
LB = f"{sys.executable} -m layerbench"


wildcard_constraints:
    arm=r"[A-Za-z0-9+_-]+",  # slugs: layer-3, full+finish_only
    seed=r"\d+",
    runs=r"runs|repro",


include: "workflow/rules/container.smk"  # LB_JOB, IMAGE; before the stage rules
include: "workflow/rules/download.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/preflight.smk"
include: "workflow/rules/screen.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/report.smk"


onstart:
    record_wall_time(P.wall_time, "start")  # the study's wall time, for the report (no job of its own)


onsuccess:
    record_wall_time(P.wall_time, "finish")


rule all:
    input:
        P.report,
        P.scores,
        P.contributions,
        P.mlflow,
