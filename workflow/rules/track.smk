rule track:
    """Log the study to MLflow: one parent run, a child run per (arm, seed)."""
    input:
        scores=S.scores,
        contributions=S.contributions,
        training=rules.collect.output.training,
    output:
        S.mlflow,
    log:
        S.logs / "track.log",
    shell:
        "{LB} track --study {S.study_file} > {log} 2>&1"
