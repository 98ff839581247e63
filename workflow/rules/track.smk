rule track:
    """Log the study to MLflow: one parent run, a child run per (arm, seed)."""
    input:
        image=IMAGE,
        scores=S.scores,
        contributions=S.contributions,
        training=rules.collect.output.training,
    output:
        S.mlflow,
    params:
        lb=LB_JOB,
        study=S.study_file,
    log:
        S.logs / "track.log",
    shell:
        "{params.lb} track --study {params.study} > {log} 2>&1"
