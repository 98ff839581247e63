# Stage download: everything a study fetches from the Hugging Face Hub
# (nothing for the default study). All need network, so all are localrules:
# on SLURM they run where Snakemake runs, and no compute job downloads.
# Module: layerbench.stages.download.
from layerbench.stages.download import EXPORTS as BENCHMARK_EXPORTS, benchmark_exports

if STUDY.model.source == "hub":

    localrules:
        download_model,

    rule download_model:
        """Snapshot-download model.id at model.revision (resolved to a commit) into base_model/."""
        input:
            image=IMAGE,
        output:
            directory(P.base_model),
        params:
            lb=LB_JOB,
            study=P.study_file,
            fingerprint=R.fingerprint("model"),
        log:
            P.logs / "download_model.log",
        shell:
            "{params.lb} stage download model --study {params.study} --out {output} > {log} 2>&1"


if STUDY.data_source == "hub":

    localrules:
        download_data,

    rule download_data:
        """Draw the training sample from the Hub dataset (data.hub): seeded shuffle, answers extracted."""
        input:
            image=IMAGE,
        output:
            sample=P.hub_sample,
            record=record_of(P.hub_sample),
        params:
            lb=LB_JOB,
            study=P.study_file,
            fingerprint=R.fingerprint("data"),
        log:
            P.logs / "download_data.log",
        shell:
            "{params.lb} stage download data --study {params.study} --out {output.sample} > {log} 2>&1"


if P.eval_task_inputs():

    localrules:
        download_eval_tasks,

    rule download_eval_tasks:
        """Download (into the HF cache) and build every lm-eval Hub task of the study."""
        input:
            image=IMAGE,
        output:
            P.eval_tasks,
        params:
            lb=LB_JOB,
            study=P.study_file,
            fingerprint=R.fingerprint("eval"),
        log:
            P.logs / "download_eval_tasks.log",
        shell:
            "{params.lb} stage download eval-tasks --study {params.study} --out {output} > {log} 2>&1"


if benchmark_exports(P):

    localrules:
        download_benchmark,

    rule download_benchmark:
        """Export a local eval task's problems from the Hub ({problem, answer} jsonl + record);
        shared by every study (results/benchmarks/, recipe in benchmarks/README.md)."""
        input:
            image=IMAGE,
        output:
            data="results/benchmarks/{benchmark}.jsonl",
            record="results/benchmarks/{benchmark}.json",
        wildcard_constraints:
            benchmark="|".join(sorted(BENCHMARK_EXPORTS)),
        params:
            lb=LB_JOB,
        log:
            "results/benchmarks/{benchmark}.log",
        shell:
            "{params.lb} stage download benchmark {wildcards.benchmark} --out {output.data} > {log} 2>&1"
