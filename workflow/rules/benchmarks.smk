# Evaluation data a GPU study needs before its evaluate jobs start (nothing for the default study).
#
# prepare_benchmark   results/benchmarks/<name>.jsonl for layerbench's own lm-eval tasks
#                     (benchmarks/amc, benchmarks/olympiadbench), exported from the Hub;
#                     shared by every study. Recipe: layerbench.stages.download, benchmarks/README.md.
# prepare_eval_tasks  builds every lm-eval Hub task of the study once (datasets land in the
#                     HF cache) and records task names, dataset ids and document counts.
# All need network: localrules, so on SLURM they run where Snakemake runs, as does the
# preflight of a GPU study (it builds the same tasks to measure every eval context).
from layerbench.stages.download import EXPORTS as BENCHMARK_EXPORTS

if S.benchmark_exports():

    localrules:
        prepare_benchmark,

    rule prepare_benchmark:
        """Export a local eval task's problems from the Hub ({problem, answer} jsonl + provenance)."""
        input:
            image=IMAGE,
        output:
            data="results/benchmarks/{benchmark}.jsonl",
            info="results/benchmarks/{benchmark}.json",
        wildcard_constraints:
            benchmark="|".join(sorted(BENCHMARK_EXPORTS)),
        params:
            lb=LB_JOB,
        log:
            "results/benchmarks/{benchmark}.log",
        shell:
            "{params.lb} export-benchmark {wildcards.benchmark} --out {output.data} > {log} 2>&1"


if S.eval_task_inputs():

    localrules:
        prepare_eval_tasks,

    rule prepare_eval_tasks:
        """Download (into the HF cache) and build every lm-eval Hub task of the study."""
        input:
            image=IMAGE,
        output:
            S.results / "eval_tasks.json",
        params:
            lb=LB_JOB,
            study=S.study_file,
            fingerprint=S.fingerprint("eval"),
        log:
            S.logs / "prepare_eval_tasks.log",
        shell:
            "{params.lb} prepare-eval-tasks --study {params.study} --out {output} > {log} 2>&1"


if S.study.gpus:

    localrules:
        preflight_train,
        preflight,
