if S.study.model["source"] == "build":

    rule build_base_model:
        """Train the tiny Qwen2 base model (tokenizer + SFT) into a model directory."""
        input:
            image=IMAGE,
            sft=rules.make_data.output.sft,
        output:
            directory(S.base_model),
        params:
            lb=LB_JOB,
            study=S.study_file,
            fingerprint=S.fingerprint("model", "data", "numerics"),
        threads: S.study.model_spec.threads
        benchmark:
            S.benchmarks / "build_base_model.tsv"
        log:
            S.logs / "build_base_model.log",
        shell:
            "{params.lb} build-model --study {params.study} --sft {input.sft} --out {output} > {log} 2>&1"

elif S.study.model["source"] == "hub":

    localrules:
        prepare_model,

    rule prepare_model:
        """Snapshot-download model.id at model.revision (resolved to a commit) into base_model/.
        Needs network; a localrule, so on SLURM it runs where Snakemake runs."""
        input:
            image=IMAGE,
        output:
            directory(S.base_model),
        params:
            lb=LB_JOB,
            study=S.study_file,
            fingerprint=S.fingerprint("model"),
        log:
            S.logs / "prepare_model.log",
        shell:
            "{params.lb} prepare-model --study {params.study} --out {output} > {log} 2>&1"
