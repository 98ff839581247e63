rule make_data:
    """Synthetic arithmetic problems: train/test splits and SFT demonstrations."""
    output:
        train=S.data / "train.jsonl",
        test=S.data / "test.jsonl",
        sft=S.data / "sft.jsonl",
    params:
        fingerprint=S.fingerprint("data"),
    log:
        S.logs / "make_data.log",
    shell:
        "{LB} data --study {S.study_file} --out {S.data} > {log} 2>&1"
