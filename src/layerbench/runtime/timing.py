"""A study's wall time, recorded by Snakemake's onstart/onsuccess handlers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from layerbench.runtime.io import atomic_write_json

MARKER = ".started"


def _started(results: Path) -> float | None:
    marker = results / MARKER
    return float(marker.read_text()) if marker.exists() else None


def record(results: Path, event: str) -> None:
    results.mkdir(parents=True, exist_ok=True)
    if event == "start":
        (results / MARKER).write_text(str(time.time()))
        return
    started = _started(results)
    finished = time.time()
    atomic_write_json(results / "wall_time.json", {
        "started": started, "finished": finished,
        "wall_seconds": None if started is None else round(finished - started, 1),
    })


def latest_wall_time(results: Path) -> dict | None:
    """{"seconds", "complete"} of the study's latest Snakemake run. The report
    is rendered before Snakemake's onsuccess handler writes wall_time.json, so
    while that run is still going (its start marker is not the one in
    wall_time.json) it is measured up to now, and marked incomplete."""
    wall_file = results / "wall_time.json"
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else None
    started = _started(results)
    if started is not None and (wall is None or wall.get("started") != started):
        return {"seconds": round(time.time() - started, 1), "complete": False}
    if wall is None or wall.get("wall_seconds") is None:
        return None
    return {"seconds": float(wall["wall_seconds"]), "complete": True}
