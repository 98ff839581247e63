rule check_arms:
    """Pairing check (same first rollouts within a seed) and parameter audit."""
    input:
        image=IMAGE,
        model=S.base_model,
        runs=S.all_runs(),
    output:
        pairing=S.results / "pairing.csv",
        audit=S.results / "param_audit.csv",
    params:
        lb=LB_JOB,
        study=S.study_file,
    log:
        S.logs / "check_arms.log",
    shell:
        "{params.lb} check-arms --study {params.study} > {log} 2>&1"


rule repro:
    """Re-run one (arm, seed) from scratch and compare it with the original run."""
    input:
        image=IMAGE,
        original=S.run_dir(S.repro_arm, S.repro_seed),
        rerun=S.results / "repro" / S.repro_arm.slug / f"seed{S.repro_seed}",
    output:
        S.results / "repro.json",
    params:
        lb=LB_JOB,
        study=S.study_file,
        arm=S.repro_arm.name,
        seed=S.repro_seed,
    log:
        S.logs / "repro.log",
    shell:
        "{params.lb} check-repro --study {params.study} --arm {params.arm} --seed {params.seed} "
        "--original {input.original} --rerun {input.rerun} --out {output} > {log} 2>&1"
