rule collect:
    """Tidy tables: scores, contributions, training metrics, per-job timings."""
    input:
        image=IMAGE,
        runs=S.all_runs(),
        evals=S.all_evals(),
        pairing=rules.check_arms.output.pairing,
        preflight=rules.preflight.output.report,
    output:
        scores=report(S.scores, category="Scores", caption="../report/scores.rst"),
        contributions=report(S.contributions, category="Scores", caption="../report/contributions.rst"),
        training=S.results / "training_metrics.csv",
        decomposition=S.results / "decomposition.csv",
        ranking=S.results / "ranking_correlation.csv",
        provenance=S.results / "provenance.json",
        timings=S.results / "timings.csv",
    params:
        lb=LB_JOB,
        study=S.study_file,
    log:
        S.logs / "collect.log",
    shell:
        "{params.lb} collect --study {params.study} > {log} 2>&1"
