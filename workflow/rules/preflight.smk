rule preflight_train:
    """The token limits training depends on (prompt cap and policy, prompt +
    completion cap vs the context), checked with the real tokenizer before any
    training. A rule of its own, fingerprinting only what it reads, so that an
    eval-only edit never retrains."""
    input:
        image=IMAGE,
        model=S.base_model,
        train=rules.make_data.output.train,
    output:
        checks=S.results / "preflight_train.json",
        train=S.results / "train_checked.jsonl",
    params:
        lb=LB_JOB,
        study=S.study_file,
        fingerprint=S.train_preflight_fingerprint(),
    log:
        S.logs / "preflight_train.log",
    shell:
        "{params.lb} preflight --part train --study {params.study} --model {input.model} "
        "--train {input.train} > {log} 2>&1"


rule preflight:
    """The evaluation limits (every eval context as lm-eval builds it + the
    largest budget vs the context, budgets vs the training cap), before any
    evaluation; preflight.json is the whole table, training checks first."""
    input:
        image=IMAGE,
        model=S.base_model,
        test=rules.make_data.output.test,
        train_checks=rules.preflight_train.output.checks,
        **S.eval_data_inputs(),
        **S.eval_task_inputs(),
    output:
        report=report(S.results / "preflight.json", category="Checks", caption="../report/preflight.rst"),
    params:
        lb=LB_JOB,
        study=S.study_file,
        fingerprint=S.fingerprint("limits", "eval"),
    # ready together with the first training jobs: run it first, so a bad eval
    # limit stops the study before most of the training is spent
    priority: 10
    log:
        S.logs / "preflight.log",
    shell:
        "{params.lb} preflight --part eval --study {params.study} --model {input.model} > {log} 2>&1"
