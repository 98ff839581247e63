# Stage report: one self-contained HTML page under reports/<study>/, rendered
# from collect's and the checks' outputs only. Module: layerbench.stages.report.


rule report:
    """The HTML comparison report."""
    input:
        image=IMAGE,
        collected=rules.collect.output,
        checks=rules.checks.output,
        preflight=rules.preflight_eval.output,
    output:
        report(P.report, category="Report", caption="../report/index.rst"),
    params:
        lb=LB_JOB,
        study=P.study_file,
    log:
        P.logs / "report.log",
    shell:
        "{params.lb} stage report --study {params.study} --out {output} > {log} 2>&1"
