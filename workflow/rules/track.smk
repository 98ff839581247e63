# Stage track: the study in MLflow (tracking.uri), logged only once complete.
# Module: layerbench.stages.track.


rule track:
    """One parent run per invocation, a child run per (arm, seed)."""
    input:
        image=IMAGE,
        scores=rules.collect.output.scores,
        contributions=rules.collect.output.contributions,
        training=rules.collect.output.training,
        provenance=rules.collect.output.provenance,
    output:
        P.mlflow,
    params:
        lb=LB_JOB,
        study=P.study_file,
    log:
        P.logs / "track.log",
    shell:
        "{params.lb} stage track --study {params.study} --out {output} > {log} 2>&1"
