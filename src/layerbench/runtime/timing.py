"""A study's wall time, recorded by Snakemake's onstart/onsuccess handlers.

The handlers pass the wall-time file (``StudyPaths.wall_time``); the start
marker is a hidden file next to it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from layerbench.runtime.io import atomic_write_json

MARKER = ".started"


def _started(wall_time_file: Path) -> float | None:
    marker = wall_time_file.with_name(MARKER)
    return float(marker.read_text()) if marker.exists() else None


def record(wall_time_file: Path, event: str) -> None:
    wall_time_file.parent.mkdir(parents=True, exist_ok=True)
    if event == "start":
        wall_time_file.with_name(MARKER).write_text(str(time.time()))
        return
    started = _started(wall_time_file)
    finished = time.time()
    atomic_write_json(wall_time_file, {
        "started": started, "finished": finished,
        "wall_seconds": None if started is None else round(finished - started, 1),
    })


def latest_wall_time(wall_time_file: Path) -> dict | None:
    """{"seconds", "complete"} of the study's latest Snakemake run. The report
    is rendered before Snakemake's onsuccess handler writes the wall-time file,
    so while that run is still going (its start marker is not the one in the
    file) it is measured up to now, and marked incomplete."""
    wall = json.loads(wall_time_file.read_text()) if wall_time_file.exists() else None
    started = _started(wall_time_file)
    if started is not None and (wall is None or wall.get("started") != started):
        return {"seconds": round(time.time() - started, 1), "complete": False}
    if wall is None or wall.get("wall_seconds") is None:
        return None
    return {"seconds": float(wall["wall_seconds"]), "complete": True}
