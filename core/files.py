"""Atomic file writes: a reader (or a resumed run) sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write; on success it is fsynced and renamed onto ``path``.

    The temp name is ``.<name>.<pid>.tmp`` (what the cleanup of a killed process's leftovers looks for); on
    an error it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace
