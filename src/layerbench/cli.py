"""layerbench: the commands users run, and under `layerbench stage` the ones rules run.

User commands: ``contribution`` (C(k) from any scores table), ``audit``
(truncation in any lm-eval samples file), ``check-limits`` (a study config's
token limits, offline), ``compare`` (two studies side by side),
``readme-table`` (the README's results block from a run), ``weight-hashes``
(every weight file's sha256, to compare machines).

Stage commands: ``layerbench stage <name>``, one per DAG stage, named as its
rule file (``workflow/rules/<name>.smk``) and its module
(``layerbench.stages.<name>``). Each reads the study from ``--study
results/<study>/study.yaml`` and writes only the paths it is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerbench import __version__


def _paths(args):
    from layerbench.paths import StudyPaths

    return StudyPaths.from_study_file(args.study)


# --- user commands --------------------------------------------------------------
def cmd_contribution(args) -> int:
    from layerbench.commands.contribution import contribution_command

    return contribution_command(Path(args.scores), Path(args.csv) if args.csv else None)


def cmd_audit(args) -> int:
    from layerbench.commands.audit import audit_command

    return audit_command(Path(args.samples), args.tokenizer, args.max_gen_toks, args.json)


def cmd_check_limits(args) -> int:
    from layerbench.commands.check_limits import check_limits

    return check_limits(Path(args.config), Path(args.out) if args.out else None)


def cmd_compare(args) -> int:
    from layerbench.commands.compare import compare_command

    return compare_command(Path(args.study_a), Path(args.study_b), Path(args.o) if args.o else None, args.force)


def cmd_readme_table(args) -> int:
    from layerbench.commands.readme_table import readme_table_command

    return readme_table_command(Path(args.results), Path(args.check) if args.check else None,
                                Path(args.write) if args.write else None)


def cmd_weight_hashes(args) -> int:
    from layerbench.commands.weight_hashes import weight_hashes_command

    return weight_hashes_command(Path(args.results), Path(args.check) if args.check else None,
                                 Path(args.write) if args.write else None)


# --- stage commands -------------------------------------------------------------
def stage_download(args) -> None:
    from layerbench.stages import download

    if args.what == "benchmark":
        print(download.export_benchmark(args.name, Path(args.out)))
        return
    study = _paths(args).study
    if args.what == "model":
        print(download.download_model(study.model, Path(args.out)))
    elif args.what == "data":
        print(download.draw_sample(study.data.hub, Path(args.out)))
    else:
        print(download.cache_eval_tasks(study.eval.suites, Path(args.out)))


def _require(args, command: str, when: str, *flags: str) -> None:
    """A usage error (exit 2) naming the flags a stage command needs in this case."""
    missing = [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_")) is None]
    if missing:
        print(f"usage error: layerbench stage {command}: {' and '.join(missing)} required {when}", file=sys.stderr)
        raise SystemExit(2)


def stage_data(args) -> None:
    from layerbench.stages.data import write_hub_splits, write_splits

    study = _paths(args).study
    _require(args, "data", f"for data.source: {study.data_source}",
             "--sample" if study.data_source == "hub" else "--sft")
    if study.data_source == "hub":
        write_hub_splits(study.data.hub, Path(args.sample), Path(args.train), Path(args.test))
    else:
        write_splits(study.task_spec, Path(args.train), Path(args.test), Path(args.sft))


def stage_model(args) -> None:
    from layerbench.stages.model import build_base_model

    print(build_base_model(Path(args.sft), Path(args.out), _paths(args).study.model_spec))


def stage_preflight(args) -> None:
    from layerbench.stages.preflight import eval_preflight, train_preflight

    study = _paths(args).study
    if args.part == "train":
        _require(args, "preflight train", "for part train", "--train", "--kept")
        train_preflight(study, Path(args.model), Path(args.train), Path(args.out), Path(args.kept))
    else:
        _require(args, "preflight eval", "for part eval", "--train-checks")
        eval_preflight(study, Path(args.model), Path(args.train_checks), Path(args.out))


def stage_train(args) -> None:
    from layerbench.config import Arm
    from layerbench.paths import RunFolder
    from layerbench.stages.train import train_arm

    study = _paths(args).study
    arm = Arm.parse(args.arm)
    print(train_arm(Path(args.base), Path(args.train), arm, args.seed, study.rl_for(arm),
                    study.limits.max_completion_tokens, RunFolder(Path(args.out)),
                    max_prompt_tokens=study.limits.max_prompt_tokens, verifier_name=study.verifier,
                    gpus_per_arm=study.resources.gpus_per_arm))


def stage_evaluate(args) -> None:
    from layerbench.stages.evaluate import evaluate_arm

    print(evaluate_arm(_paths(args).study, Path(args.model), Path(args.base), args.seed, Path(args.out)))


def stage_checks(args) -> None:
    from layerbench.config import Arm
    from layerbench.paths import RunFolder
    from layerbench.stages.checks import run_audits, write_repro

    if args.what == "repro":
        print(write_repro(Arm.parse(args.arm), args.seed, RunFolder(Path(args.original)),
                          RunFolder(Path(args.rerun)), Path(args.base), Path(args.out)))
        return
    paths = _paths(args)
    runs = {(a.name, s): paths.run(a, s) for a in paths.study.trained_arms for s in paths.study.seeds}
    run_audits(paths.base_model, runs, Path(args.pairing), Path(args.audit), Path(args.checks))


def stage_collect(args) -> None:
    from layerbench.stages.collect import collect

    collect(_paths(args), **{name: Path(getattr(args, name)) for name in COLLECT_OUTPUTS})


def stage_track(args) -> None:
    from layerbench.stages.track import track_study

    print(track_study(_paths(args), Path(args.out)))


def stage_report(args) -> None:
    from layerbench.stages.report import render_study_report

    render_study_report(_paths(args), Path(args.out))


COLLECT_OUTPUTS = ("scores", "contributions", "training", "decomposition", "ranking", "provenance", "timings",
                   "samples", "verdicts", "costs")


def _user_commands(sub) -> None:
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
    p.add_argument("--out", help="also keep the preflight tables, under OUT/results/<study>/")
    p.set_defaults(func=cmd_check_limits)

    p = sub.add_parser("compare", help="one report page for two studies side by side")
    p.add_argument("study_a", help="results/<study>/ folder")
    p.add_argument("study_b", help="results/<study>/ folder")
    p.add_argument("-o", help="output HTML (default: reports/compare-<a>-<b>/index.html)")
    p.add_argument("--force", action="store_true", help="render even when the studies are not comparable")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("readme-table",
                       help="the README's results block from a study's tables (print, --check, --write)")
    p.add_argument("results", help="results/<study>/ folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="README", help="exit 1 when README's results block differs")
    mode.add_argument("--write", metavar="README", help="replace README's results block")
    p.set_defaults(func=cmd_readme_table)

    p = sub.add_parser("weight-hashes", help="sha256 of the base model and every checkpoint of a study "
                                             "(print, --check against a reference, --write one)")
    p.add_argument("results", help="results/<study>/ folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="SHA256SUMS", help="exit 1 naming the first weight file that differs, "
                                                             "e.g. docs/default-study/weights.sha256")
    mode.add_argument("--write", metavar="SHA256SUMS", help="write the hashes in sha256sum's format")
    p.set_defaults(func=cmd_weight_hashes)


def _stage_commands(sub) -> None:
    def stage(name, func, help, *args):
        p = sub.add_parser(name, help=help)
        p.add_argument("--study", required=True, help="results/<study>/study.yaml")
        for flag, kw in args:
            p.add_argument(flag, **kw)
        p.set_defaults(func=func)
        return p

    out = ("--out", {"required": True})
    p = sub.add_parser("download", help="Hub downloads: model, data sample, lm-eval tasks, benchmark problems")
    what = p.add_subparsers(dest="what", required=True)
    for name, help in (("model", "snapshot of model.id at model.revision"), ("data", "seeded sample of data.hub"),
                       ("eval-tasks", "build (and cache) the study's lm-eval Hub tasks")):
        q = what.add_parser(name, help=help)
        q.add_argument("--study", required=True, help="results/<study>/study.yaml")
        q.add_argument("--out", required=True)
        q.set_defaults(func=stage_download)
    q = what.add_parser("benchmark", help="a local eval task's problems (benchmarks/README.md)")
    q.add_argument("name", help="amc or olympiadbench")
    q.add_argument("--out", required=True, help="jsonl to write, e.g. results/benchmarks/amc.jsonl")
    q.set_defaults(func=stage_download)

    stage("data", stage_data, "train/test splits (and SFT demonstrations of the synthetic task)",
          ("--sample", {"help": "downloaded Hub sample (data.source hub)"}), ("--train", {"required": True}),
          ("--test", {"required": True}), ("--sft", {"help": "SFT demonstrations (data.source synthetic)"}))
    stage("model", stage_model, "train the tiny base model", ("--sft", {"required": True}), out)
    stage("preflight", stage_preflight, "check every token limit before the compute that depends on it",
              ("part", {"choices": ("train", "eval")}), ("--model", {"required": True}), out,
              ("--train", {"help": "training prompts (train)"}),
              ("--kept", {"help": "the prompts that pass the prompt policy (train)"}),
              ("--train-checks", {"help": "preflight_train.json (eval)"}))
    stage("train", stage_train, "RL for one (arm, seed)",
          ("--arm", {"required": True}), ("--seed", {"type": int, "required": True}),
          ("--base", {"required": True}), ("--train", {"required": True}), out)
    stage("evaluate", stage_evaluate, "lm-eval a model at every budget",
          ("--model", {"required": True}), ("--seed", {"type": int, "required": True}),
          ("--base", {"required": True, "help": "the base model (a layer arm's checkpoint holds only its layers)"}),
          out)
    p = sub.add_parser("checks", help="pairing check and parameter audit (arms), or a re-run's comparison (repro)")
    what = p.add_subparsers(dest="what", required=True)
    q = what.add_parser("arms", help="pairing check and parameter audit of every run")
    for flag in ("--study", "--pairing", "--audit", "--checks"):
        q.add_argument(flag, required=True)
    q.set_defaults(func=stage_checks)
    q = what.add_parser("repro", help="compare a re-run with the original run")
    for flag in ("--study", "--arm", "--original", "--rerun", "--base", "--out"):
        q.add_argument(flag, required=True)
    q.add_argument("--seed", type=int, required=True)
    q.set_defaults(func=stage_checks)
    stage("collect", stage_collect, "tidy tables, verdicts, sample browser, provenance",
          *((f"--{name}", {"required": True}) for name in COLLECT_OUTPUTS))
    stage("track", stage_track, "log the study to MLflow", out)
    stage("report", stage_report, "render the HTML report", out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"layerbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _user_commands(sub)
    stages = sub.add_parser("stage", help="the DAG's stage commands (run by workflow/rules/*.smk)")
    _stage_commands(stages.add_subparsers(dest="stage", required=True, metavar="STAGE"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from layerbench.runtime.numerics import NumericsError, configure_for_study_file

    if getattr(args, "study", None):  # stage commands: the study's CPU numerics, before torch loads
        try:
            configure_for_study_file(args.study)
        except ValueError as exc:  # an unknown mode, before the loader could say so
            print(f"layerbench: config error: {exc}", file=sys.stderr)
            return 2
        except NumericsError as exc:
            print(f"layerbench: {exc}", file=sys.stderr)
            return 3

    from layerbench.config import ConfigError
    from layerbench.stages.checks import IntegrityError
    from layerbench.stages.preflight import PreflightError

    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"layerbench: config error: {exc}", file=sys.stderr)
        return 2
    except (PreflightError, IntegrityError, NumericsError) as exc:
        print(f"layerbench: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
