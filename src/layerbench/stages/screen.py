"""The layer screen's choice: rank the single-layer arms by their screen runs, keep the top ``rl.screen_keep``.

Each screen run is the train stage's (``layerbench stage train --screen``):
an arm's first ``rl.screen_steps`` steps on the whole run's schedule, with
the checkpoint at that step. This stage ranks the arms by
``analysis.sureness.pooled_screen_scores`` and writes
``screen.json``; Snakemake reads it (a ``checkpoint`` rule) to train only the
kept arms on, each resuming from its screen run, and every later stage sees
the study ``Study.after_screen`` makes, the others listed as screened out.
"""

from __future__ import annotations

from pathlib import Path

from layerbench.analysis.sureness import pooled_screen_scores, screen_ranking
from layerbench.config import Arm
from layerbench.paths import RunFolder
from layerbench.runtime.io import atomic_write_json, read_csv
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths


def rank_screen(study, runs: dict[tuple[str, int], Path], out: Path) -> dict:
    """``runs``: (arm, seed) -> its screen run folder."""
    scores = pooled_screen_scores({key: read_csv(RunFolder(path).metrics) for key, path in runs.items()},
                                  study.rl.screen_steps)
    record = {"screen_steps": study.rl.screen_steps, "steps": study.rl.steps, "keep": study.screen_keep,
              "seeds": list(study.seeds), **screen_ranking(scores, study.screen_keep)}
    atomic_write_json(out, record)
    return record


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage screen``: the screen runs and where their ranking goes."""
    parser = stage_parser("screen", first_line(__doc__))
    parser.add_argument("--runs", nargs="+", required=True,
                        help="the screen runs' folders (results/<study>/screen/<arm>/seed<s>)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    study = study_paths(args).study
    runs = {}
    for folder in map(Path, args.runs):
        runs[(Arm.parse(folder.parent.name).name, int(folder.name.removeprefix("seed")))] = folder
    print(rank_screen(study, runs, Path(args.out)))
