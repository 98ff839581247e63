# Stage train: RL (TRL's GRPOTrainer) for one (arm, seed). Module: layerbench.stages.train.
# runs/ holds the study's runs; repro/ the from-scratch re-run of the repro target.
# GPU studies (resources.gpu): resources gpu/mem_mb/runtime and one GPU slot per
# job (layerbench.runtime.gpuslots sets CUDA_VISIBLE_DEVICES). resources.gpus_per_arm
# > 1: the job asks for that many GPUs and runs through accelerate launch (FSDP2).


rule train:
    """Checkpoint, per-step metrics and rollouts of one (arm, seed)."""
    input:
        image=IMAGE,
        model=P.base_model,
        # not ancient(): Snakemake 9 skips the params check of a job whose only
        # link to a re-running job is ancient, so an edit of eval settings and of
        # this arm together would not retrain it. preflight_train re-runs only
        # when what training reads changes.
        train=rules.preflight_train.output.train,
        screen=lambda w: P.screen_inputs(w.arm, w.seed, w.runs),  # screen.json, and the run a kept arm resumes from
    output:
        directory(P.run_pattern),
    params:
        lb=LB_TRAIN,
        study=P.study_file,
        fingerprint=lambda w: R.arm_fingerprint(w.arm),
        **R.gpu_params("train"),
    threads: R.threads("train", STUDY.rl_for(STUDY.trained_arms[0]).threads)
    resources:
        **R.resources("train"),
    benchmark:
        P.benchmarks / "{runs}" / "{arm}_seed{seed}.tsv"
    log:
        P.logs / "{runs}" / "{arm}_seed{seed}.log",
    shell:
        R.gpu_wrap(
            "{params.lb} stage train --study {params.study} --arm {wildcards.arm} --seed {wildcards.seed} "
            "--base {input.model} --train {input.train} --out {output} > {log} 2>&1"
        )
