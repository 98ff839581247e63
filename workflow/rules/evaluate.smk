rule evaluate:
    """lm-eval on the base model or a checkpoint, at every eval budget.
    GPU studies (resources.gpu): resources gpu/mem_mb/runtime and one GPU slot per job; studies
    with exported local benchmarks (results/benchmarks/*.jsonl) or lm-eval Hub tasks
    (eval_tasks.json) take those as inputs, so nothing is downloaded on a compute node."""
    input:
        image=IMAGE,
        model=lambda w: S.model_for(w.arm, w.seed),
        test=rules.make_data.output.test,
        preflight=rules.preflight.output.report,
        **S.eval_data_inputs(),
        **S.eval_task_inputs(),
    output:
        directory(S.results / "eval" / "{arm}" / "seed{seed}"),
    params:
        lb=LB_JOB,
        study=S.study_file,
        fingerprint=S.fingerprint("eval", "limits", "numerics"),
        **S.gpu_params(),
    threads: S.rule_threads("evaluate", S.study.eval.threads)
    resources:
        **S.rule_resources("evaluate"),
    benchmark:
        S.benchmarks / "eval" / "{arm}_seed{seed}.tsv"
    log:
        S.logs / "eval" / "{arm}_seed{seed}.log",
    shell:
        S.gpu_wrap(
            "{params.lb} evaluate --study {params.study} --model {input.model} --seed {wildcards.seed} "
            "--out {output} > {log} 2>&1"
        )
