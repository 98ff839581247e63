# Stage screen: the layer screen (rl.screen_steps with rl.screen_keep). Module:
# layerbench.stages.screen. Every single-layer arm first trains its first
# rl.screen_steps steps (rule screen_runs, the train stage with --screen); rule
# screen ranks them and keeps the top rl.screen_keep in screen.json, an input of
# every single-layer train job (P.screen_inputs). A kept arm trains on from its
# screen run; a screened-out arm's train and evaluate jobs publish a marker, and
# every stage after them reads the study as the screen left it
# (StudyPaths.after_screen). A static DAG: no checkpoint rule, which Snakemake
# does not re-run once downstream files exist.


rule screen_runs:
    """The first rl.screen_steps steps of one single-layer (arm, seed), and its checkpoint there."""
    input:
        image=IMAGE,
        model=P.base_model,
        train=rules.preflight_train.output.train,
    output:
        directory(P.screen_run_pattern),
    params:
        lb=LB_TRAIN,
        study=P.study_file,
        fingerprint=lambda w: R.arm_fingerprint(w.arm),
        **R.gpu_params("train"),
    threads: R.threads("train", STUDY.rl_for(STUDY.trained_arms[0]).threads)
    resources:
        **R.resources("train"),
    benchmark:
        P.benchmarks / "screen" / "{arm}_seed{seed}.tsv"
    log:
        P.logs / "screen" / "{arm}_seed{seed}.log",
    shell:
        R.gpu_wrap(
            "{params.lb} stage train --screen --study {params.study} --arm {wildcards.arm} --seed {wildcards.seed} "
            "--base {input.model} --train {input.train} --out {output} > {log} 2>&1"
        )


rule screen:
    """Rank the screen runs; screen.json names the kept arms."""
    input:
        image=IMAGE,
        runs=P.all_screen_runs(),
    output:
        P.screen,
    params:
        lb=LB_JOB,
        study=P.study_file,
    log:
        P.logs / "screen.log",
    shell:
        "{params.lb} stage screen --study {params.study} --runs {input.runs} --out {output} > {log} 2>&1"

