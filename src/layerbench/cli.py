"""``layerbench``: the commands users run and the stage commands rules run.

User commands: ``contribution`` (C(k) from any scores table), ``audit``
(truncation in any lm-eval samples file), ``compare`` (two studies side by
side), ``check-limits`` (a study config's token limits, offline), ``readme-table``
(the README's results block from a run),
``--version``.
Stage commands (called by workflow/rules/*.smk with ``--study
results/<study>/study.yaml``): data, build-model, train, evaluate, collect,
track, report, timing, preflight, check-arms, check-repro; for Hub studies
(config/paper/) also prepare-data, prepare-model and export-benchmark (the
data recipe of benchmarks/amc and benchmarks/olympiadbench).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerbench import __version__


def _paths(args):
    from layerbench.paths import StudyPaths

    return StudyPaths.from_study_file(args.study)


def cmd_data(args) -> None:
    paths = _paths(args)
    if paths.study.data_source == "hub":
        from layerbench.stages.data import write_hub_splits

        write_hub_splits(paths.study.data["hub"], paths.hub_sample, Path(args.out))
        return
    from layerbench.stages.data import write_splits

    write_splits(paths.study.task_spec, Path(args.out))


def cmd_prepare_data(args) -> None:
    from layerbench.stages.download import draw_sample

    print(draw_sample(_paths(args).study.data["hub"], Path(args.out)))


def cmd_prepare_model(args) -> None:
    from layerbench.stages.download import download_model

    print(download_model(_paths(args).study.model, Path(args.out)))


def cmd_prepare_eval_tasks(args) -> None:
    from layerbench.stages.download import cache_eval_tasks

    print(cache_eval_tasks(_paths(args).study.eval.suites, Path(args.out)))


def cmd_export_benchmark(args) -> None:
    from layerbench.stages.download import export_benchmark

    print(export_benchmark(args.name, Path(args.out)))


def cmd_build_model(args) -> None:
    from layerbench.stages.model import build_base_model

    summary = build_base_model(Path(args.sft), Path(args.out), _paths(args).study.model_spec)
    print(summary)


def cmd_train(args) -> None:
    from layerbench.config import Arm
    from layerbench.stages.train import train_arm

    study = _paths(args).study
    arm = Arm.parse(args.arm)
    summary = train_arm(Path(args.base), Path(args.train), arm, args.seed, study.rl_for(arm),
                        study.limits.max_completion_tokens, Path(args.out),
                        max_prompt_tokens=study.limits.max_prompt_tokens, verifier_name=study.verifier)
    print(summary)


def cmd_evaluate(args) -> None:
    from layerbench.stages.evaluate import evaluate_model

    study = _paths(args).study
    model = Path(args.model)
    if (model / "checkpoint").is_dir():
        model = model / "checkpoint"
    print(evaluate_model(model, study.eval, study.limits.eval_budgets, args.seed, Path(args.out),
                         context_length=study.model.get("context_length")))


def cmd_preflight(args) -> None:
    from layerbench.stages.preflight import eval_preflight, train_preflight

    paths = _paths(args)
    model = Path(args.model) if args.model else None
    if args.part == "train":
        if not args.train:
            raise SystemExit("layerbench preflight --part train needs --train")
        train_preflight(paths.study, model, Path(args.train), paths.results)
    else:
        eval_preflight(paths.study, model, paths.results)


def cmd_check_arms(args) -> None:
    from layerbench.stages.checks import run_audits

    paths = _paths(args)
    runs = {(a.name, s): paths.run_dir(a, s) for a in paths.study.trained_arms for s in paths.study.seeds}
    run_audits(paths.base_model, runs, paths.results)


def cmd_check_repro(args) -> None:
    from layerbench.config import Arm
    from layerbench.stages.checks import write_repro

    print(write_repro(Arm.parse(args.arm), args.seed, Path(args.original), Path(args.rerun), Path(args.out)))


def cmd_collect(args) -> None:
    from layerbench.stages.collect import collect

    collect(_paths(args))


def cmd_track(args) -> None:
    from layerbench.stages.track import track_study

    print(track_study(_paths(args)))


def cmd_report(args) -> None:
    from layerbench.stages.report import render_study_report

    render_study_report(_paths(args), Path(args.out))


def cmd_timing(args) -> None:
    from layerbench.runtime.timing import record

    record(Path(args.results), args.event)


def cmd_contribution(args) -> int:
    from layerbench.commands.contribution import contribution_command

    return contribution_command(Path(args.scores), Path(args.csv) if args.csv else None)


def cmd_audit(args) -> int:
    from layerbench.commands.audit import audit_command

    return audit_command(Path(args.samples), args.tokenizer, args.max_gen_toks, args.json)


def cmd_check_limits(args) -> int:
    """The preflight of a study config before anything exists: no model, no
    data, no network. Context from ``model.context_length``; prompts unmeasured."""
    import tempfile

    from layerbench.config import load_study
    from layerbench.stages.preflight import run_preflight

    study = load_study(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "train.jsonl"
        empty.write_text("")
        run_preflight(study, None, empty, Path(args.out) if args.out else Path(tmp) / "out")
    return 0


def cmd_compare(args) -> int:
    from layerbench.stages.report import compare_command

    return compare_command(Path(args.study_a), Path(args.study_b), Path(args.o) if args.o else None, args.force)


def cmd_readme_table(args) -> int:
    from layerbench.commands.readme_table import readme_table_command

    return readme_table_command(Path(args.results), Path(args.check) if args.check else None,
                                Path(args.write) if args.write else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"layerbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("contribution", help="C(k) with CIs from a CSV with columns arm,seed,score")
    p.add_argument("scores")
    p.add_argument("--csv", help="also write arm,C,ci_low,ci_high to this file")
    p.set_defaults(func=cmd_contribution)

    p = sub.add_parser("audit", help="truncation audit of an lm-eval samples file made anywhere")
    p.add_argument("samples", help="lm-eval samples_*.jsonl (stock hf or vllm backend)")
    p.add_argument("--tokenizer", help="model directory or Hub id used to re-tokenise responses")
    p.add_argument("--max-gen-toks", type=int, help="budget (default: from each sample's generation arguments)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("check-limits", help="offline token-limit check of a study config (declared context; "
                                            "downloads nothing)")
    p.add_argument("config", help="study config, e.g. config/paper/qwen3-1.7b-grpo-scripts.yaml")
    p.add_argument("--out", help="also keep preflight.json/.md in this folder")
    p.set_defaults(func=cmd_check_limits)

    p = sub.add_parser("readme-table",
                       help="the README's results block from a study's tables (print, --check, --write)")
    p.add_argument("results", help="results/<study>/ folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="README", help="exit 1 when README's results block differs")
    mode.add_argument("--write", metavar="README", help="replace README's results block")
    p.set_defaults(func=cmd_readme_table)

    p = sub.add_parser("compare", help="one report page for two studies side by side")
    p.add_argument("study_a", help="results/<study>/ folder")
    p.add_argument("study_b", help="results/<study>/ folder")
    p.add_argument("-o", help="output HTML (default: reports/compare-<a>-<b>/index.html)")
    p.add_argument("--force", action="store_true", help="render even when the studies are not comparable")
    p.set_defaults(func=cmd_compare)

    def stage(name, func, help, *extra):
        p = sub.add_parser(name, help=help)
        p.add_argument("--study", required=True, help="results/<study>/study.yaml")
        for flag, kw in extra:
            p.add_argument(flag, **kw)
        p.set_defaults(func=func)

    stage("data", cmd_data, "stage: generate the synthetic task", ("--out", {"required": True}))
    stage("prepare-data", cmd_prepare_data, "stage: draw the training sample from a Hub dataset (data.source hub)",
          ("--out", {"required": True}))
    stage("prepare-model", cmd_prepare_model, "stage: snapshot-download the Hub base model (model.source hub)",
          ("--out", {"required": True}))
    stage("prepare-eval-tasks", cmd_prepare_eval_tasks, "stage: download and build the study's lm-eval Hub tasks",
          ("--out", {"required": True}))
    p = sub.add_parser("export-benchmark", help="write a local eval task's data (benchmarks/README.md) from the Hub")
    p.add_argument("name", help="amc or olympiadbench")
    p.add_argument("--out", required=True, help="jsonl to write, e.g. results/benchmarks/amc.jsonl")
    p.set_defaults(func=cmd_export_benchmark)
    stage("build-model", cmd_build_model, "stage: train the tiny base model",
          ("--sft", {"required": True}), ("--out", {"required": True}))
    stage("train", cmd_train, "stage: RL for one (arm, seed)",
          ("--arm", {"required": True}), ("--seed", {"type": int, "required": True}),
          ("--base", {"required": True}), ("--train", {"required": True}), ("--out", {"required": True}))
    stage("evaluate", cmd_evaluate, "stage: lm-eval a model at every budget",
          ("--model", {"required": True}), ("--seed", {"type": int, "required": True}),
          ("--out", {"required": True}))
    stage("preflight", cmd_preflight, "stage: check every token limit before training (--part train) "
                                      "and before evaluation (--part eval)",
          ("--part", {"choices": ("train", "eval"), "required": True}),
          ("--model", {"help": "model directory (omit when it is not available offline)"}),
          ("--train", {"help": "training prompts (--part train)"}))
    stage("check-arms", cmd_check_arms, "stage: pairing check and parameter audit")
    stage("check-repro", cmd_check_repro, "stage: compare a re-run with the original run",
          ("--arm", {"required": True}), ("--seed", {"type": int, "required": True}),
          ("--original", {"required": True}), ("--rerun", {"required": True}), ("--out", {"required": True}))
    stage("collect", cmd_collect, "stage: tidy tables")
    stage("track", cmd_track, "stage: log the study to MLflow")
    stage("report", cmd_report, "stage: render the HTML report", ("--out", {"required": True}))

    p = sub.add_parser("timing", help="stage: record a study's wall time")
    p.add_argument("event", choices=["start", "finish"])
    p.add_argument("results")
    p.set_defaults(func=cmd_timing)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "study", None):  # stage commands: the study's CPU numerics, before torch loads
        from layerbench.runtime.numerics import configure_for_study_file

        configure_for_study_file(args.study)

    from layerbench.config import ConfigError
    from layerbench.stages.checks import IntegrityError
    from layerbench.stages.preflight import PreflightError

    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"layerbench: config error: {exc}", file=sys.stderr)
        return 2
    except (PreflightError, IntegrityError) as exc:
        print(f"layerbench: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
