"""layerbench: the commands users run, and under `layerbench stage` the ones rules run.

User commands: ``contribution`` (C(k) from any scores table), ``truncation-audit``
(truncation in any lm-eval samples file), ``check-limits`` (a study config's
token limits, offline), ``compare`` (two studies side by side),
``readme-table`` (the README's results block from a run), ``weight-hashes``
(every weight file's sha256, to compare machines), ``numerics-probe`` (which
kernel's bits differ on this CPU).

Stage commands: ``layerbench stage <name> FLAGS``, one per DAG stage, named as
its rule file (``workflow/rules/<name>.smk``) and its module
(``layerbench.stages.<name>``), whose ``main`` declares the flags and runs
the stage: this file only sets the study's CPU numerics first. Each reads the
study from ``--study results/<study>/study.yaml`` and writes only the paths
it is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerbench import __version__


# --- user commands --------------------------------------------------------------
def cmd_contribution(args) -> int:
    from layerbench.commands.contribution import contribution_command

    return contribution_command(Path(args.scores), Path(args.csv) if args.csv else None)


def cmd_truncation_audit(args) -> int:
    from layerbench.commands.truncation_audit import truncation_audit_command

    return truncation_audit_command(Path(args.samples), args.tokenizer, args.max_gen_toks, args.json)


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


def cmd_numerics_probe(args) -> int:
    from layerbench.commands.numerics_probe import numerics_probe_command

    return numerics_probe_command(Path(args.check) if args.check else None, Path(args.write) if args.write else None,
                                  args.numerics)


# --- stage commands -------------------------------------------------------------
# name: help. Each stage's flags live in its module (``layerbench.stages.<name>.main``), imported only
# after the study's CPU numerics are set: torch must not load before them.
STAGES = {
    "download": "Hub downloads: model, data sample, lm-eval tasks, benchmark problems",
    "data": "train/test splits (and SFT demonstrations of the synthetic task)",
    "model": "train the tiny base model",
    "preflight": "check every token limit before the compute that depends on it",
    "train": "RL for one (arm, seed)",
    "screen": "rank the layer screen's runs and keep the top rl.screen_keep",
    "evaluate": "lm-eval a model at every budget",
    "checks": "pairing check and parameter audit (arms), or a re-run's comparison (repro)",
    "collect": "tidy tables, verdicts, sample browser, provenance",
    "track": "log the study to MLflow",
    "report": "render the HTML report",
}


def run_stage(name: str, argv: list[str]) -> int:
    """Set the study's CPU numerics (``--study``, if given), then hand ``argv`` to the stage's own command."""
    import importlib

    from layerbench.config import ConfigError
    from layerbench.runtime.numerics import configure_for_study_file

    study = argparse.ArgumentParser(add_help=False)
    study.add_argument("--study")
    known, _ = study.parse_known_args(argv)
    if known.study:
        try:
            configure_for_study_file(known.study)
        except ValueError as exc:  # an unknown mode, before the loader could say so
            raise ConfigError(str(exc)) from None
    return importlib.import_module(f"layerbench.stages.{name}").main(argv) or 0


def _user_commands(sub) -> None:
    p = sub.add_parser("contribution", help="C(k) with CIs from a CSV with columns arm,seed,score")
    p.add_argument("scores")
    p.add_argument("--csv", help="also write arm,C,ci_low,ci_high to this file")
    p.set_defaults(func=cmd_contribution)

    p = sub.add_parser("truncation-audit", help="truncation audit of an lm-eval samples file made anywhere")
    p.add_argument("samples", help="lm-eval samples_*.jsonl (stock hf or vllm backend)")
    p.add_argument("--tokenizer", help="model directory or Hub id used to re-tokenise responses")
    p.add_argument("--max-gen-toks", type=int, help="budget (default: from each sample's generation arguments)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_truncation_audit)

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

    p = sub.add_parser("numerics-probe", help="sha256 of each kernel the default study runs, under portable "
                                              "numerics at 1 and 2 threads: which one differs on this CPU")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="CSV", help="exit 1 listing the probes that differ, "
                                                      "e.g. docs/default-study/numerics_probe.csv")
    mode.add_argument("--write", metavar="CSV", help="write the probes' hashes, the CPU named in every row")
    p.add_argument("--numerics", choices=("portable", "native"), default="portable",
                   help="the mode to probe (native: this CPU's fastest kernels, to see what portable changes)")
    p.set_defaults(func=cmd_numerics_probe)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"layerbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _user_commands(sub)
    stages = sub.add_parser("stage", help="the DAG's stage commands (run by workflow/rules/*.smk)",
                            description="stages: " + "; ".join(f"{k}: {v}" for k, v in STAGES.items()))
    stages.add_argument("name", choices=STAGES, metavar="STAGE", help=", ".join(STAGES))
    stages.add_argument("argv", nargs=argparse.REMAINDER, help="the stage's flags (layerbench stage STAGE --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from layerbench.config import ConfigError
    from layerbench.runtime.checkpoints import IntegrityError
    from layerbench.runtime.numerics import NumericsError

    try:
        return run_stage(args.name, args.argv) if args.command == "stage" else args.func(args) or 0
    except ConfigError as exc:
        print(f"layerbench: config error: {exc}", file=sys.stderr)
        return 2
    except (IntegrityError, NumericsError) as exc:
        print(f"layerbench: {exc}", file=sys.stderr)
        return 3
    except RuntimeError as exc:  # a limit the preflight refuses, a checkpoint of another run: no traceback
        from layerbench.stages.preflight import PreflightError
        from layerbench.stages.train.resume import ResumeMismatch

        if not isinstance(exc, (PreflightError, ResumeMismatch)):
            raise
        print(f"layerbench: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
