# Stage collect: every run and evaluation into tidy tables, plus what the report
# decides once (verdicts) and shows (sample browser, provenance, timings).
# Module: layerbench.stages.collect.


rule collect:
    """Tidy tables: scores, contributions, truncation audit, training metrics, timings, training costs."""
    input:
        image=IMAGE,
        runs=P.all_runs(),
        evals=P.all_evals(),
        checks=rules.checks.output.checks,
        preflight=rules.preflight_eval.output,
    output:
        scores=report(P.scores, category="Scores", caption="../report/scores.rst"),
        contributions=report(P.contributions, category="Scores", caption="../report/contributions.rst"),
        training=P.training_metrics,
        decomposition=P.decomposition,
        ranking=P.ranking,
        provenance=P.provenance,
        timings=P.timings,
        samples=P.samples,
        verdicts=P.verdicts,
        costs=P.costs,
        how_sure=P.how_sure,
    params:
        lb=LB_JOB,
        study=P.study_file,
    log:
        P.logs / "collect.log",
    shell:
        "{params.lb} stage collect --study {params.study} --scores {output.scores} "
        "--contributions {output.contributions} --training {output.training} "
        "--decomposition {output.decomposition} --ranking {output.ranking} --provenance {output.provenance} "
        "--timings {output.timings} --samples {output.samples} --verdicts {output.verdicts} --costs {output.costs} "
        "--how-sure {output.how_sure} > {log} 2>&1"
