if S.study.data_source == "hub":

    localrules:
        prepare_data,

    rule prepare_data:
        """Draw the training sample from the Hub dataset (data.hub): seeded shuffle, answers extracted.
        Needs network (or the HF cache); a localrule, so on SLURM it runs where Snakemake runs."""
        input:
            image=IMAGE,
        output:
            sample=S.hub_sample,
            info=S.data / "hub_sample.json",
        params:
            lb=LB_JOB,
            study=S.study_file,
            fingerprint=S.fingerprint("data"),
        log:
            S.logs / "prepare_data.log",
        shell:
            "{params.lb} prepare-data --study {params.study} --out {output.sample} > {log} 2>&1"


rule make_data:
    """Train/test splits in the {prompt, answer} format every later stage reads: the synthetic
    arithmetic task (with SFT demonstrations), or prompts built from the drawn Hub sample."""
    input:
        image=IMAGE,
        **S.data_inputs(),
    output:
        **S.data_outputs(),
    params:
        lb=LB_JOB,
        study=S.study_file,
        out=S.data,
        fingerprint=S.fingerprint("data"),
    log:
        S.logs / "make_data.log",
    shell:
        "{params.lb} data --study {params.study} --out {params.out} > {log} 2>&1"
