"""Is a process alive? The one probe the bootstrap lock, the job launcher, run folders and the image cache use."""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists on this host (signal 0; a process of another user counts)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
