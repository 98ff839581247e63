rule preflight:
    """Every token limit checked against the real tokenizer before any training."""
    input:
        image=IMAGE,
        model=S.base_model,
        train=rules.make_data.output.train,
        test=rules.make_data.output.test,
    output:
        report=report(S.results / "preflight.json", category="Checks", caption="../report/preflight.rst"),
        train=S.results / "train_checked.jsonl",
    params:
        lb=LB_JOB,
        study=S.study_file,
        fingerprint=S.fingerprint("limits", "eval", "rl"),
    log:
        S.logs / "preflight.log",
    shell:
        "{params.lb} preflight --study {params.study} --model {input.model} --train {input.train} > {log} 2>&1"
