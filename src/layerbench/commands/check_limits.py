"""``layerbench check-limits``: a study's preflight before anything exists."""

from __future__ import annotations

from pathlib import Path

from layerbench.paths import StudyPaths
from layerbench.stages.preflight import run_preflight


def check_limits(config: Path, out: Path | None) -> int:
    """``layerbench check-limits``: the preflight of a study config before
    anything exists (no model, no data, no network). Context from
    ``model.context_length``; prompts unmeasured. With ``out``, the tables
    stay under ``out/results/<study>/``."""
    import tempfile

    from layerbench.config import load_study

    study = load_study(config)
    with tempfile.TemporaryDirectory() as tmp:
        paths = StudyPaths(study, out or Path(tmp))
        empty = Path(tmp) / "no-prompts.jsonl"
        empty.write_text("")
        run_preflight(study, None, empty, paths)
    return 0
