"""First start: an empty store gets the built-in demo dataset, so the dashboard has something to show.

``ensure_demo(store)`` generates ``data/demo`` (unless a demo is already there) and ingests it, once:
a ``bootstrap`` lock in the store makes a second browser tab (or process) wait for the first instead
of generating twice. Settings come from the environment so tests and the README command share one
code path: ``LABELS_AUTO_DEMO=0`` turns it off, ``LABELS_DEMO_DIR`` (default ``data/demo``) and
``LABELS_DEMO_PERSONS`` (default 480) choose where and how big.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from core.processes import pid_alive
from core.store import LabelStore, StoreError

LOCK = "bootstrap"
DEFAULT_DIR = "data/demo"
DEFAULT_PERSONS = 480


def auto_demo_enabled() -> bool:
    """Whether an empty store should get the demo (``LABELS_AUTO_DEMO``, default on)."""
    return os.environ.get("LABELS_AUTO_DEMO", "1").strip().lower() not in ("0", "false", "no", "off")


def demo_settings() -> tuple[Path, int]:
    """(folder, persons) of the demo to generate, from the environment."""
    folder = Path(os.environ.get("LABELS_DEMO_DIR") or DEFAULT_DIR)
    persons = int(os.environ.get("LABELS_DEMO_PERSONS") or DEFAULT_PERSONS)
    return folder, persons


def ensure_demo(store: LabelStore, *, folder: Path | None = None, persons: int | None = None,
                wait_s: float = 900.0) -> str | None:
    """Fill an empty store with the demo; returns a notice saying what happened, or None if not empty.

    Generation is skipped when ``folder`` already holds a demo (``train/train.csv``). If another
    process holds the bootstrap lock this waits (up to ``wait_s``) for it to finish; a lock left by
    a dead process on this host is taken over.
    """
    if not store.is_empty:
        return None
    default_folder, default_persons = demo_settings()
    folder = Path(folder or default_folder)
    persons = int(persons or default_persons)
    deadline = time.monotonic() + wait_s
    while (holder := store.acquire_lock(LOCK, run_id=None, pid=os.getpid())) is not None:
        if holder.get("host") == socket.gethostname() and not pid_alive(holder.get("pid")):
            store.release_lock(LOCK)  # its process died mid-way: take over
            continue
        if not store.is_empty:
            return None
        if time.monotonic() > deadline:
            raise StoreError(f"waited {wait_s:.0f} s for another process to create the demo; try again")
        time.sleep(0.5)
    try:
        if not store.is_empty:  # someone finished between our check and the lock
            return None
        from core.demo import generate  # the demo and ingest are only needed on a first start
        from core.ingest import ingest

        started = time.perf_counter()
        generated = not (folder / "train" / "train.csv").is_file()
        if generated:
            generate(folder, persons=persons)
        result = ingest(folder, store)
        seconds = time.perf_counter() - started
    finally:
        store.release_lock(LOCK)
    made = f"generated the demo dataset in {folder} ({persons} people) and " if generated else ""
    return (f"First start on an empty store: {made}ingested {result.report.n_items:,} images "
            f"({result.report.n_labelled:,} labelled) in {seconds:.0f} s. It has injected label noise to find.")
