rule train_arm:
    """RL (TRL GRPOTrainer) for one (arm, seed): checkpoint, per-step metrics, rollouts.
    runs/ holds the study's runs; repro/ the from-scratch re-run of the repro target.
    GPU studies (resources.gpu): resources gpu/mem_mb/runtime, and one GPU slot per job
    (layerbench.runtime.gpuslots sets CUDA_VISIBLE_DEVICES)."""
    input:
        image=IMAGE,
        model=S.base_model,
        # not ancient(): Snakemake 9 skips the params check of a job whose only
        # link to a re-running job is ancient, so an edit of eval settings and of
        # this arm together would not retrain it. preflight_train re-runs only
        # when what training reads changes.
        train=rules.preflight_train.output.train,
    output:
        directory(S.results / "{runs}" / "{arm}" / "seed{seed}"),
    params:
        lb=LB_JOB,
        study=S.study_file,
        fingerprint=lambda w: S.arm_fingerprint(w.arm),
        **S.gpu_params(),
    threads: S.rule_threads("train", S.study.rl_for(S.study.trained_arms[0]).threads)
    resources:
        **S.rule_resources("train"),
    benchmark:
        S.benchmarks / "{runs}" / "{arm}_seed{seed}.tsv"
    log:
        S.logs / "{runs}" / "{arm}_seed{seed}.log",
    shell:
        S.gpu_wrap(
            "{params.lb} train --study {params.study} --arm {wildcards.arm} --seed {wildcards.seed} "
            "--base {input.model} --train {input.train} --out {output} > {log} 2>&1"
        )
