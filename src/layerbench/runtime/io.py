"""Atomic file output: a killed job never leaves a half-written result.

Every result file is written to a temporary sibling and renamed into place;
rename is atomic on POSIX file systems, so readers (and Snakemake) see either
the old file, no file, or the complete new one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def atomic_write_text(path: Path | str, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path | str, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: Path | str, rows: Iterable[dict], columns: list[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def atomic_write_jsonl(path: Path | str, records: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def sha256_file(path: Path | str) -> str:
    """Streamed in chunks: a multi-GB weight shard is never held in memory whole."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def link_or_copy(source: Path, dest: Path) -> None:
    """A hard link (no second copy of a multi-GB weight file) where both are on
    one file system, else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def read_csv(path: Path | str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def scratch_beside(path: Path, tag: str = "") -> Path:
    """A new scratch folder ``.<name>.<tag><random>.tmp`` beside ``path``,
    after removing the ones a killed earlier writer of ``path`` left (one
    writer per path at a time: Snakemake runs one job per output)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{tag}"
    for stale in path.parent.glob(f"{glob_escape(prefix)}{'?' * 8}.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=".tmp"))


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


@contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Yield a scratch directory that replaces ``path`` only if the block
    finishes; on error the scratch copy is removed and ``path`` is untouched."""
    path = Path(path)
    scratch = scratch_beside(path)
    try:
        yield scratch
        os.chmod(scratch, 0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(scratch, path)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block:
    processes that would otherwise race to create one shared thing take turns."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
