# Stage model: the tiny Qwen2 base model of a study with model.source: build
# (Hub models come from stage download). Module: layerbench.stages.model.

if STUDY.model.source == "build":

    rule model:
        """Train the tiny Qwen2 base model (tokenizer + SFT) into a model directory."""
        input:
            image=IMAGE,
            sft=rules.data.output.sft,
        output:
            directory(P.base_model),
        params:
            lb=LB_JOB,
            study=P.study_file,
            fingerprint=R.fingerprint("model", "data", "numerics"),
        threads: STUDY.model_spec.threads
        benchmark:
            P.benchmarks / "model.tsv"
        log:
            P.logs / "model.log",
        shell:
            "{params.lb} stage model --study {params.study} --sft {input.sft} --out {output} > {log} 2>&1"
