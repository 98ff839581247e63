rule train_arm:
    """RL (TRL GRPOTrainer) for one (arm, seed): checkpoint, per-step metrics, rollouts."""
    input:
        model=S.base_model,
        train=rules.make_data.output.train,
    output:
        directory(S.results / "runs" / "{arm}" / "seed{seed}"),
    params:
        lb=LB,
        study=S.study_file,
        fingerprint=lambda w: S.arm_fingerprint(w.arm),
    threads: S.study.rl_for(S.study.trained_arms[0]).threads
    benchmark:
        S.benchmarks / "train" / "{arm}_seed{seed}.tsv"
    log:
        S.logs / "train" / "{arm}_seed{seed}.log",
    shell:
        "{params.lb} train --study {params.study} --arm {wildcards.arm} --seed {wildcards.seed} "
        "--base {input.model} --train {input.train} --out {output} > {log} 2>&1"
