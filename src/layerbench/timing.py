"""A study's wall time, recorded by Snakemake's onstart/onsuccess handlers."""

from __future__ import annotations

import time
from pathlib import Path

from layerbench.io import atomic_write_json


def record(results: Path, event: str) -> None:
    marker = results / ".started"
    results.mkdir(parents=True, exist_ok=True)
    if event == "start":
        marker.write_text(str(time.time()))
        return
    started = float(marker.read_text()) if marker.exists() else None
    finished = time.time()
    atomic_write_json(results / "wall_time.json", {
        "started": started, "finished": finished,
        "wall_seconds": None if started is None else round(finished - started, 1),
    })
