# Stage data: train/test splits in the {prompt, answer} format every later stage
# reads. Module: layerbench.stages.data.


rule data:
    """The synthetic arithmetic task (with SFT demonstrations for the tiny model),
    or prompts built from the downloaded Hub sample."""
    input:
        image=IMAGE,
        **({"sample": P.hub_sample} if STUDY.data_source == "hub" else {}),
    output:
        train=P.train_data,
        test=P.test_data,
        **({"sft": P.sft_data} if STUDY.data_source == "synthetic" else {}),
    params:
        lb=LB_JOB,
        study=P.study_file,
        sample=f"--sample {P.hub_sample}" if STUDY.data_source == "hub" else "",
        sft=f"--sft {P.sft_data}" if STUDY.data_source == "synthetic" else "",
        fingerprint=R.fingerprint("data"),
    log:
        P.logs / "data.log",
    shell:
        "{params.lb} stage data --study {params.study} {params.sample} --train {output.train} "
        "--test {output.test} {params.sft} > {log} 2>&1"
