rule report:
    """The self-contained HTML comparison report under reports/<study>/."""
    input:
        scores=S.scores,
        contributions=S.contributions,
        training=rules.collect.output.training,
    output:
        report(S.report, category="Report", caption="../report/index.rst"),
    log:
        S.logs / "report.log",
    shell:
        "{LB} report --study {S.study_file} --out {output} > {log} 2>&1"
