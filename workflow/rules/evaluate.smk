rule evaluate:
    """lm-eval on the base model or a checkpoint, at every eval budget."""
    input:
        model=lambda w: S.model_for(w.arm, w.seed),
        test=rules.make_data.output.test,
    output:
        directory(S.results / "eval" / "{arm}" / "seed{seed}"),
    params:
        lb=LB,
        study=S.study_file,
        fingerprint=S.fingerprint("eval", "limits"),
    threads: S.study.eval.threads
    benchmark:
        S.benchmarks / "eval" / "{arm}_seed{seed}.tsv"
    log:
        S.logs / "eval" / "{arm}_seed{seed}.log",
    shell:
        "{params.lb} evaluate --study {params.study} --model {input.model} --seed {wildcards.seed} "
        "--out {output} > {log} 2>&1"
