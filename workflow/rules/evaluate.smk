# Stage evaluate: lm-eval on the base model or a checkpoint, at every eval budget.
# Module: layerbench.stages.evaluate. GPU studies: resources and a GPU slot per
# job, as in train.smk. Exported benchmarks and lm-eval Hub tasks are inputs, so
# nothing is downloaded on a compute node.


rule evaluate:
    """Per-sample correctness, tokens and finish reason of one model."""
    input:
        image=IMAGE,
        model=lambda w: P.model_for(w.arm, w.seed),
        base=P.base_model,  # a layer arm's checkpoint holds only its layers
        test=rules.data.output.test,
        preflight=rules.preflight_eval.output,
        **P.eval_data_inputs(),
        **P.eval_task_inputs(),
    output:
        directory(P.eval_pattern),
    params:
        lb=LB_JOB,
        study=P.study_file,
        fingerprint=R.fingerprint("eval", "limits", "numerics"),
        **R.gpu_params("evaluate"),
    threads: R.threads("evaluate", STUDY.eval.threads)
    resources:
        **R.resources("evaluate"),
    benchmark:
        P.benchmarks / "eval" / "{arm}_seed{seed}.tsv"
    log:
        P.logs / "eval" / "{arm}_seed{seed}.log",
    shell:
        R.gpu_wrap(
            "{params.lb} stage evaluate --study {params.study} --model {input.model} --base {input.base} "
            "--arm {wildcards.arm} --seed {wildcards.seed} --out {output} > {log} 2>&1"
        )
