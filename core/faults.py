"""Crash-safety test hooks: ``LABELFIX_FAULT=<kind>:N`` SIGKILLs the process at the N-th ``<kind>`` point.

Kinds: ``commit`` (core.store, just before a write transaction's COMMIT: every row written, none committed)
and ``replace`` (train.checkpoint, just before an atomic file replace: the temp file complete, not in place).
Points are counted per kind from when the variable is set; unset, a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def fault_point(kind: str, what: str) -> None:
    """SIGKILL this process if ``LABELFIX_FAULT`` asks for this ``kind`` and this is its N-th point."""
    spec = os.environ.get("LABELFIX_FAULT", "")
    if not spec.startswith(f"{kind}:"):
        return
    _counts[kind] = _counts.get(kind, 0) + 1
    if _counts[kind] == int(spec.split(":", 1)[1]):
        print(f"fault injection: SIGKILL {what}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
