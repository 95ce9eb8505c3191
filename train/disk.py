"""Disk use of runs and caches, and deleting a run's files without silently losing its best checkpoint.

    usage = disk_usage(store)                               # category, files, bytes
    plan = deletion_plan(store.run(3))                      # everything but best (and the file it links to)
    plan = deletion_plan(store.run(3), include_best=True)   # the whole run folder: ask first
    freed = delete(plan)

A plan lists exactly the files it removes; a running run's files are never in one. The journal row
stays (the experiment record); only files go.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.store import LabelStore
from train import cache as image_cache
from train.checkpoint import SUFFIX, protected_files

ACTIVE = ("queued", "running")


def files_bytes(paths: Iterable[Path]) -> int:
    """Bytes of these files on disk; hard links of one file (``best`` and its epoch file) count once."""
    seen: dict[tuple[int, int], int] = {}
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        seen[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(seen.values())


def folder_files(folder: str | os.PathLike[str] | None) -> list[Path]:
    """Every file under ``folder`` (none when it is missing)."""
    if not folder or not Path(folder).is_dir():
        return []
    return [p for p in Path(folder).rglob("*") if p.is_file()]


def checkpoint_bytes(runs: pd.DataFrame) -> dict[int, int]:
    """{run id: bytes of its ``*.safetensors`` files} for every run with a folder (``store.runs()`` frame)."""
    sizes = {}
    for run_id, run_dir in zip(runs["id"], runs["run_dir"]):
        if isinstance(run_dir, str) and run_dir:
            sizes[int(run_id)] = files_bytes(Path(run_dir).glob(f"*{SUFFIX}"))
    return sizes


def disk_usage(store: LabelStore) -> pd.DataFrame:
    """What the store's runs and caches use: ``category``, ``folder``, ``files``, ``bytes``.

    Categories: checkpoints (every run folder's ``*.safetensors``), other run files (logs,
    probabilities, predictions), dashboard job logs (``runs/job-N.log``), image cache (its budget: ``train.cache``), thumbnails, label snapshots.
    """
    run_files = [f for d in store.runs()["run_dir"] if isinstance(d, str) for f in folder_files(d)]
    checkpoints = [f for f in run_files if f.suffix == SUFFIX]
    others = [f for f in run_files if f.suffix != SUFFIX]
    runs_folder = store.path.resolve().parent / "runs"
    job_logs = sorted(runs_folder.glob("job-*.log*")) if runs_folder.is_dir() else []
    rows = [("checkpoints", runs_folder, checkpoints), ("other run files", runs_folder, others),
            ("job logs", runs_folder, job_logs)]
    for category, name in (("image cache", "cache"), ("thumbnails", "thumbs"), ("label snapshots", "snapshots")):
        folder = store.files_dir / name
        rows.append((category, folder, folder_files(folder)))
    return pd.DataFrame([{"category": c, "folder": str(f), "files": len(fs), "bytes": files_bytes(fs)}
                         for c, f, fs in rows], columns=["category", "folder", "files", "bytes"])


@dataclass
class DeletionPlan:
    """Files one deletion removes (``files``, ``bytes``) and those it keeps on purpose (``kept``).

    ``refused`` says why nothing may be deleted (a running run); ``includes_best`` is True when
    the run's best checkpoint is among ``files`` (the caller must have asked the user first).
    """

    run_id: int
    run_dir: Path | None
    files: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    bytes: int = 0
    includes_best: bool = False
    refused: str | None = None


def deletion_plan(run: Mapping[str, Any], *, include_best: bool = False) -> DeletionPlan:
    """The files deleting ``run``'s files would remove (``store.run(id)`` row).

    Without ``include_best`` only checkpoints go, except the best (``best.safetensors`` and the epoch
    file it is a hard link to); logs and predictions, tiny, stay with the journal. With it the whole
    run folder goes. Nothing of a queued or running run.
    """
    run_dir = Path(run["run_dir"]) if run.get("run_dir") else None
    plan = DeletionPlan(int(run["id"]), run_dir)
    if run.get("status") in ACTIVE:
        plan.refused = f"run #{run['id']} is {run['status']}: cancel it first"
        return plan
    prefix = f"{int(run['id']):04d}"
    if run_dir is not None and (run_dir.is_symlink() or run_dir.name.partition("-")[0] != prefix):
        # the folder comes from the store: a store from elsewhere must not make this delete another folder
        plan.refused = f"run #{run['id']}'s folder {run_dir} is not named like its run folder; not deleting it"
        return plan
    files = folder_files(run_dir)
    if not files:
        plan.refused = f"run #{run['id']} has no files on disk"
        return plan
    if include_best:
        plan.files = sorted(files)
        plan.includes_best = any(f.name == f"best{SUFFIX}" for f in files)
    else:
        assert run_dir is not None  # a run without a folder has no files (returned above)
        keep = {p.resolve() for p in protected_files(run_dir)}
        plan.files = sorted(f for f in files if f.suffix == SUFFIX and f.resolve() not in keep)
        plan.kept = sorted(f for f in files if f.suffix == SUFFIX and f.resolve() in keep)
    plan.bytes = files_bytes(plan.files)  # kept files include every hard link of best, so nothing is shared
    if not plan.files:
        plan.refused = f"run #{run['id']} has no checkpoint to delete besides its best"
    return plan


def delete(plan: DeletionPlan) -> int:
    """Remove the plan's files (and the run folder once empty); returns the bytes freed."""
    if plan.refused:
        raise ValueError(plan.refused)
    for path in plan.files:
        path.unlink(missing_ok=True)
    if plan.run_dir is not None and plan.run_dir.is_dir() and not any(plan.run_dir.rglob("*")):
        shutil.rmtree(plan.run_dir, ignore_errors=True)
    return plan.bytes


def clear_cache(store: LabelStore) -> int:
    """Delete the decoded image cache (rebuilt by the next run) but the caches a running process holds
    (``train.cache``); returns the bytes freed."""
    freed, _ = image_cache.clear(store.files_dir / "cache")
    return freed
