rule report:
    """The self-contained HTML comparison report under reports/<study>/."""
    input:
        image=IMAGE,
        scores=S.scores,
        contributions=S.contributions,
        training=rules.collect.output.training,
        decomposition=rules.collect.output.decomposition,
        ranking=rules.collect.output.ranking,
        provenance=rules.collect.output.provenance,
        preflight=rules.preflight.output.report,
        pairing=rules.check_arms.output.pairing,
        audit=rules.check_arms.output.audit,
    output:
        report(S.report, category="Report", caption="../report/index.rst"),
    params:
        lb=LB_JOB,
        study=S.study_file,
    log:
        S.logs / "report.log",
    shell:
        "{params.lb} report --study {params.study} --out {output} > {log} 2>&1"
