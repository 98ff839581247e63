# Stage checks: is the comparison fair? Module: layerbench.stages.checks.
#   checks        pairing (same first rollouts within a seed, different across
#                 seeds) and the parameter audit (a layer arm moves its layers
#                 and nothing else, measured per weight matrix: share changed,
#                 relative Frobenius norm, effective rank); verdicts and where
#                 the full arm's update lives in checks.json; a violation fails.
#   checks_repro  re-runs one (arm, seed) from scratch (repro.arm, repro.seed)
#                 and compares it with the original: bitwise on CPU.


rule checks:
    """Pairing check and parameter audit of every run."""
    input:
        image=IMAGE,
        model=P.base_model,
        runs=P.all_runs(),
    output:
        pairing=P.pairing,
        param_audit=P.param_audit,
        checks=P.checks,
    params:
        lb=LB_JOB,
        study=P.study_file,
    log:
        P.logs / "checks.log",
    shell:
        "{params.lb} stage checks arms --study {params.study} --pairing {output.pairing} "
        "--param-audit {output.param_audit} --checks {output.checks} > {log} 2>&1"


rule checks_repro:
    """Re-run one (arm, seed) from scratch and compare it with the original run."""
    input:
        image=IMAGE,
        original=P.run(STUDY.repro_arm, STUDY.repro_seed).path,
        rerun=P.run(STUDY.repro_arm, STUDY.repro_seed, runs="repro").path,
        base=P.base_model,  # a layer arm's checkpoint holds only its layers
    output:
        P.repro,
    params:
        lb=LB_JOB,
        study=P.study_file,
        arm=STUDY.repro_arm.name,
        seed=STUDY.repro_seed,
    log:
        P.logs / "checks_repro.log",
    shell:
        "{params.lb} stage checks repro --study {params.study} --arm {params.arm} --seed {params.seed} "
        "--original {input.original} --rerun {input.rerun} --base {input.base} --out {output} > {log} 2>&1"
