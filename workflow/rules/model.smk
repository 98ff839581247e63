rule build_base_model:
    """Train the tiny Qwen2 base model (tokenizer + SFT) into a model directory."""
    input:
        sft=rules.make_data.output.sft,
    output:
        directory(S.base_model),
    params:
        lb=LB,
        study=S.study_file,
        fingerprint=S.fingerprint("model", "data"),
    threads: 2
    benchmark:
        S.benchmarks / "build_base_model.tsv"
    log:
        S.logs / "build_base_model.log",
    shell:
        "{params.lb} build-model --study {params.study} --sft {input.sft} --out {output} "
        "--threads {threads} > {log} 2>&1"
