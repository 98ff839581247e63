rule make_data:
    """Synthetic arithmetic problems: train/test splits and SFT demonstrations."""
    output:
        train=S.data / "train.jsonl",
        test=S.data / "test.jsonl",
        sft=S.data / "sft.jsonl",
    params:
        lb=LB,
        study=S.study_file,
        out=S.data,
        fingerprint=S.fingerprint("data"),
    log:
        S.logs / "make_data.log",
    shell:
        "{params.lb} data --study {params.study} --out {params.out} > {log} 2>&1"
