"""The image cache folder: locks, last use, a size budget (least recently used first), listing and clearing.

One cache is three files named by its image size and key (``train.data.ImageCache`` writes them):

* ``images-<W>x<H>-<key>.u8``: raw uint8 pixels (n, h, w, 3); written to a temp name and renamed last,
  so it exists only complete. A file of the wrong size (truncated) is never trusted: it is rebuilt.
* ``images-<W>x<H>-<key>.json``: shape and image keys; its modification time is the cache's last use
  (touched by every open, so eviction does not depend on the file system's atime setting).
* ``images-<W>x<H>-<key>.lock``: ``flock`` held exclusive while one process decodes or deletes the cache,
  shared for as long as a process uses it (a run, a score job, a prediction, each DDP rank). Eviction
  takes it exclusive without waiting, so a cache in use by any process on this machine is never deleted.

    budget = budget_mb()                           # --cache-mb, else $LABELS_CACHE_MB, else 2048
    deleted = evict(folder, budget * 2**20, keep={path})   # [Evicted(path, bytes, last_used, reason)]
    table = entries_frame(folder)                  # name, size, images, MB, last_used, in_use
    freed, busy = clear(folder)                    # every cache not in use
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd

from core.processes import pid_alive

CACHE_MB = 2048.0  # default budget of a cache folder
ENV = "LABELS_CACHE_MB"  # overrides the default; --cache-mb overrides both
NAME = re.compile(r"^images-(\d+)x(\d+)-[0-9a-f]+\.u8$")
TEMP = re.compile(r"^\.images-.*\.(\d+)\.tmp$")  # ".<final name>.<pid>.tmp", half-written by that process


def budget_mb(value: float | None = None) -> float:
    """The cache budget in MB: ``value`` when given, else ``$LABELS_CACHE_MB``, else 2048."""
    if value is None:
        text = os.environ.get(ENV, "").strip()
        if not text:
            return CACHE_MB
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"${ENV} must be a number of megabytes, got {text!r}") from None
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"the image cache budget must be >= 0 MB, got {value}")
    return float(value)


def lock(path: Path, *, shared: bool = False, wait: bool = True) -> IO[str] | None:
    """Open and ``flock`` the lock file ``path`` (created if missing); the lock lasts until the handle
    closes (or the process dies). Returns None when ``wait`` is False and another process holds it.

    A lock file is deleted together with its cache, by a holder of the exclusive lock; a process that
    opened the old file before that finds the name pointing elsewhere after locking and tries again.
    """
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    while True:
        handle = open(path, "a")
        try:
            fcntl.flock(handle, mode)
        except BlockingIOError:
            handle.close()
            return None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def lock_path(path: Path) -> Path:
    return path.with_suffix(".lock")


def touch(path: Path) -> None:
    """Record a use of the cache ``path`` (its sidecar's modification time)."""
    try:
        os.utime(sidecar(path))
    except FileNotFoundError:
        pass


@dataclass
class Entry:
    """One cache file of a folder."""

    path: Path
    width: int
    height: int
    images: int
    bytes: int  # the pixels, sidecar and lock file
    last_used: float  # seconds since the epoch
    in_use: bool


def entries(folder: str | os.PathLike[str]) -> list[Entry]:
    """The caches in ``folder``, least recently used first. ``in_use``: some process holds its lock."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = NAME.match(path.name)
        if not match:
            continue
        width, height = int(match[1]), int(match[2])
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # deleted meanwhile
            continue
        meta = sidecar(path)
        last_used = meta.stat().st_mtime if meta.exists() else path.stat().st_mtime
        extra = sum(p.stat().st_size for p in (meta, lock_path(path)) if p.exists())
        handle = lock(lock_path(path), wait=False)
        if handle is not None:
            handle.close()
        found.append(Entry(path, width, height, size // max(1, width * height * 3), size + extra, last_used,
                           handle is None))
    return sorted(found, key=lambda e: (e.last_used, e.path.name))


def entries_frame(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """``entries`` as a table: name, size (WxH), images, MB, last_used (local time), in_use."""
    rows = [{"name": e.path.name, "size": f"{e.width}x{e.height}", "images": e.images, "MB": round(e.bytes / 2**20, 2),
             "last_used": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used)), "in_use": e.in_use}
            for e in entries(folder)]
    return pd.DataFrame(rows, columns=["name", "size", "images", "MB", "last_used", "in_use"])


def folder_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes of every file in the cache folder (caches, sidecars, locks, temp files)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    total = 0
    for path in folder.iterdir():
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:
            pass
    return total


@dataclass
class Evicted:
    """A file eviction deleted: a cache (``reason`` "budget") or a dead process's temp file ("stale temp")."""

    path: Path
    bytes: int
    last_used: float
    reason: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.last_used))
        return f"{self.path.name} ({self.bytes / 2**20:.1f} MB, last used {when}, {self.reason})"


def stale_temps(folder: Path) -> list[Path]:
    """Temp files of decodes whose process is gone (killed mid-write): never used, safe to delete."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if (m := TEMP.match(p.name)) and not pid_alive(int(m[1]))]


def evict(folder: str | os.PathLike[str], budget_bytes: float, keep: Iterable[Path] = ()) -> list[Evicted]:
    """Delete dead processes' temp files, then caches least recently used first until the folder holds at
    most ``budget_bytes``. Never a cache in ``keep`` nor one whose lock another process holds (in use);
    returns what was deleted. The folder may stay above the budget when only such caches remain."""
    folder = Path(folder)
    deleted = []
    for temp in stale_temps(folder):
        try:
            stat = temp.stat()
            temp.unlink()
        except FileNotFoundError:
            continue
        deleted.append(Evicted(temp, stat.st_size, stat.st_mtime, "stale temp"))
    used = folder_bytes(folder)
    kept = {Path(p).resolve() for p in keep}
    for entry in entries(folder):
        if used <= budget_bytes:
            break
        if entry.in_use or entry.path.resolve() in kept:
            continue
        handle = lock(lock_path(entry.path), wait=False)
        if handle is None:  # taken since the listing
            continue
        try:
            if not entry.path.exists():  # deleted by another evictor meanwhile
                continue
            for path in (entry.path, sidecar(entry.path), lock_path(entry.path)):  # the lock file last
                path.unlink(missing_ok=True)
        finally:
            handle.close()
        used -= entry.bytes
        deleted.append(Evicted(entry.path, entry.bytes, entry.last_used, "budget"))
    return deleted


def clear(folder: str | os.PathLike[str]) -> tuple[int, list[Path]]:
    """Delete every cache of ``folder`` that no process uses; returns (bytes freed, caches kept as in use)."""
    deleted = evict(folder, 0)
    return sum(e.bytes for e in deleted), [e.path for e in entries(folder) if e.in_use]
