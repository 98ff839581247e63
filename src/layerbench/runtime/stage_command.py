"""What every ``layerbench stage <name>`` command shares.

Each stage module owns its command: its ``main(argv)`` declares the flags
and calls the stage, so a rule file leads straight to the module that runs
it (``cli.py`` only hands the flags over, after setting the study's CPU
numerics). Here: the parser every stage starts from, and the usage error for
a flag that only some cases need.
"""

from __future__ import annotations

import argparse

from layerbench.paths import StudyPaths

STUDY_HELP = "results/<study>/study.yaml"


def stage_parser(stage: str, description: str | None, study: bool = True) -> argparse.ArgumentParser:
    """``layerbench stage <stage>``'s parser; with ``--study`` unless the stage's sub-commands add it."""
    parser = argparse.ArgumentParser(prog=f"layerbench stage {stage}", description=description)
    if study:
        parser.add_argument("--study", required=True, help=STUDY_HELP)
    return parser


def first_line(doc: str | None) -> str | None:
    return doc.strip().splitlines()[0] if doc else None


def study_paths(args) -> StudyPaths:
    return StudyPaths.from_study_file(args.study)


def require(parser: argparse.ArgumentParser, args, when: str, *flags: str) -> None:
    """A usage error (exit 2) naming the flags this case needs, like argparse's own for required flags."""
    missing = [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_")) is None]
    if missing:
        parser.error(f"{' and '.join(missing)} required {when}")
