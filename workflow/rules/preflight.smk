# Stage preflight: every token limit, checked with the real tokenizer before the
# compute that depends on it. Module: layerbench.stages.preflight.
# A GPU study's preflight builds lm-eval's tasks (network), so there it is a
# localrule: on SLURM it runs where Snakemake runs.

if STUDY.resources.gpu:

    localrules:
        preflight_train,
        preflight_eval,


rule preflight_train:
    """The limits training depends on (prompt cap and policy, prompt + completion
    cap vs the context), before any training. A rule of its own, fingerprinting
    only what it reads, so that an eval-only edit never retrains."""
    input:
        image=IMAGE,
        model=P.base_model,
        train=rules.data.output.train,
    output:
        checks=P.preflight_train,
        train=P.train_checked,
    params:
        lb=LB_JOB,
        study=P.study_file,
        fingerprint=R.train_preflight_fingerprint(),
    log:
        P.logs / "preflight_train.log",
    shell:
        "{params.lb} stage preflight train --study {params.study} --model {input.model} "
        "--train {input.train} --out {output.checks} --kept {output.train} > {log} 2>&1"


rule preflight_eval:
    """The evaluation limits (every eval context as lm-eval builds it + the largest
    budget vs the context, budgets vs the training cap), before any evaluation;
    preflight.json is the whole table, training checks first."""
    input:
        image=IMAGE,
        model=P.base_model,
        test=rules.data.output.test,
        train_checks=rules.preflight_train.output.checks,
        **P.eval_data_inputs(),
        **P.eval_task_inputs(),
    output:
        report(P.preflight, category="Checks", caption="../report/preflight.rst"),
    params:
        lb=LB_JOB,
        study=P.study_file,
        fingerprint=R.fingerprint("limits", "eval"),
    # ready together with the first training jobs: run it first, so a bad eval
    # limit stops the study before most of the training is spent
    priority: 10
    log:
        P.logs / "preflight_eval.log",
    shell:
        "{params.lb} stage preflight eval --study {params.study} --model {input.model} "
        "--train-checks {input.train_checks} --out {output} > {log} 2>&1"
