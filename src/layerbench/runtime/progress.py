"""A progress line a person can read in a job's log (``tail -f`` on a
Snakemake log shows it): step k of N, elapsed, estimated remaining, and the
stage's latest figures. Written on the first step, at most every
``PROGRESS_SECONDS`` after it, and on the last, so a short job logs two
lines and an hours-long one a line every half minute. Flushed at once: a
job's log is a file, which Python would otherwise buffer.
"""

from __future__ import annotations

import sys
import time

PROGRESS_SECONDS = 30.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(done, **figures)`` after each unit of work (a training step, a batch of answers)."""

    def __init__(self, what: str, total: int, unit: str = "step", interval: float = PROGRESS_SECONDS,
                 stream=None, clock=time.monotonic):
        self.what, self.total, self.unit, self.interval = what, total, unit, interval
        self.stream, self.clock = stream or sys.stdout, clock
        self.started = clock()
        self.last_written: float | None = None

    def line(self, done: int, now: float, **figures) -> str:
        elapsed = now - self.started
        remaining = elapsed / done * (self.total - done) if done else None
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in figures.items() if v is not None)
        return (f"[progress] {self.what}: {self.unit} {done} of {self.total}, elapsed {_clock(elapsed)}, "
                f"remaining {'?' if remaining is None else _clock(remaining)}" + (f", {shown}" if shown else ""))

    def update(self, done: int, **figures) -> None:
        now = self.clock()
        due = self.last_written is None or now - self.last_written >= self.interval or done >= self.total
        if due:
            print(self.line(done, now, **figures), file=self.stream, flush=True)
            self.last_written = now
