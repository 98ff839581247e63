"""Render ``reports/<study>/index.html``: one self-contained file.

The page answers, in the order a reader asks: does a single layer match full
RL (headline), C(k) by layer, the scores, training curves, the truncation
audit, the preflight, the pairing / parameter / re-run checks, where the
full arm's update lives, provenance, what freezing saves, and a sample browser. It shows what collect and the checks wrote under
``results/<study>/`` and decides nothing itself; a section whose file does
not exist says so instead of disappearing.

``gather`` reads the files into one study's view, ``charts`` and ``cost``
draw it, ``compare`` puts two studies side by side. Inline CSS, PNG charts as data
URIs and one tiny inline script (open every ``<details>`` before printing);
no network. Jinja2 autoescaping is on, so model answers, prompts, dataset
fields and config strings are shown as text, never interpreted as HTML.
"""

from __future__ import annotations

from pathlib import Path

from layerbench.config import Arm
from layerbench.paths import StudyPaths
from layerbench.runtime.io import atomic_write_text
from layerbench.runtime.stage_command import first_line, stage_parser, study_paths
from layerbench.stages.report.gather import study_view


def missing(name) -> str:
    return f"not produced by this study: {name} missing"


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("layerbench", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["missing"] = missing
    env.filters["pct"] = _pct
    env.filters["arm_label"] = Arm.label_of
    env.filters["num"] = lambda x, d=2: "n/a" if x is None else f"{x:.{d}f}"
    env.filters["signed"] = lambda x, d=2: "n/a" if x is None else f"{x:+.{d}f}"
    return env


def render_page(views: list[dict], title: str, comparison: dict | None = None) -> str:
    return _environment().get_template("report.html.j2").render(views=views, title=title, comparison=comparison)


def render_study_report(paths: StudyPaths, out: Path) -> Path:
    view = study_view(paths)
    return atomic_write_text(out, render_page([view], f"layerbench: {paths.study.name}"))


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage report``."""
    parser = stage_parser("report", first_line(__doc__))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    render_study_report(study_paths(args), Path(args.out))
