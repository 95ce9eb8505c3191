"""A run's folder and journal row over its life: open it (or adopt a queued row, or resume a run), check
the disk first, save the best epoch's validation predictions, summarise the epochs, finish it.

Every write goes through store verbs (``create_run``, ``update_run``, ``record_epoch``).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.files import csv_safe, replacing
from core.processes import pid_alive
from core.schema import Schema
from core.store import LabelStore, StoreError, now, read_snapshot
from train.logs import environment, git_state

LAST = "last.safetensors"  # the newest epoch's checkpoint, with resume state (train.checkpoint.retention)
BEST = "best.safetensors"  # hard link to the top epoch's checkpoint
VAL_PREDICTIONS = "val_predictions.csv"  # the best epoch's validation predictions (dashboard gallery)


MIN_FREE_MB = 256  # checkpoints, logs and headroom beyond the image cache


def ensure_free_disk(out: Path, n_images: int, config: Any) -> None:
    """Refuse to start (nothing written) when the disk under ``out`` lacks room for the image cache
    (uint8 W×H×3 per image, if not cached yet) plus checkpoints and logs."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    width, height = config.img_size
    need_mb = n_images * width * height * 3 / 2**20 + MIN_FREE_MB
    free_mb = shutil.disk_usage(probe).free / 2**20
    if free_mb < need_mb:
        raise StoreError(f"not enough free disk under {probe}: {free_mb:.0f} MB free, this run needs about "
                         f"{need_mb:.0f} MB (image cache + checkpoints); free some space or choose --out elsewhere")


def open_run(store: LabelStore, config: Any, *, run_id: int | None = None, resume: int | None = None,
             world_size: int = 1) -> dict[str, Any]:
    """Create (or adopt, or resume) the journal row and run folder; returns the plan every rank follows.

    The plan: ``run_id``, ``run_dir``, ``config`` (full, with the snapshot file and output folder
    filled in) and ``resume_from`` (the ``last`` checkpoint when resuming, else None).
    """
    if resume is not None:
        row = reopen(store, resume, "train")
        last = Path(row["run_dir"]) / LAST
        return {"run_id": int(resume), "run_dir": row["run_dir"], "config": row["config"],
                "resume_from": str(last) if last.exists() else None}
    snapshot_path, snap = take_snapshot(store, config.snapshot, getattr(config, "labels", None))
    out = Path(config.out).resolve() if config.out else store.path.resolve().parent / "runs"
    ensure_free_disk(out, int(snap.get("n_items", 0)), config)
    full = {**asdict(config), "snapshot": str(snapshot_path), "out": str(out)}
    run_id, run_dir = start_run(store, "train", full, snap, run_id=run_id, world_size=world_size)
    store.update_run(run_id, labels=labels_kind(config), answer_key=answer_key_hash(config))
    return {"run_id": run_id, "run_dir": str(run_dir), "config": full, "resume_from": None}


def start_run(store: LabelStore, kind: str, config: dict[str, Any], snap: dict[str, Any], *,
              run_id: int | None = None, world_size: int = 1) -> tuple[int, Path]:
    """Write (or adopt, ``run_id``) a ``running`` journal row for ``config`` (its ``out`` folder and snapshot) and
    create its run folder ``<out>/NNNN[-score]-<time>``; returns (run id, run folder). One place for training and
    score runs: config, snapshot hash, git state, environment, host, pid and the log file's path."""
    if run_id is None:
        run_id = store.create_run(kind, config, status="running")
    label = "" if kind == "train" else f"-{kind}"
    run_dir = Path(config["out"]) / f"{run_id:04d}{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=False)
    commit, dirty = git_state()
    store.update_run(run_id, status="running", config=config, snapshot_hash=snap["hash"],
                     n_corrections=snap["n_corrections"], git_commit=commit,
                     git_dirty=None if dirty is None else int(dirty), environment=environment(world_size),
                     seed=config.get("seed"), host=socket.gethostname(), pid=os.getpid(), started_at=now(),
                     run_dir=str(run_dir), log_path=str(run_dir / ("train.log" if kind == "train" else f"{kind}.log")))
    return int(run_id), run_dir



def reopen(store: LabelStore, run_id: int, kind: str) -> dict[str, Any]:
    """Mark run ``run_id`` (of ``kind``: train or score) running again in this process, for ``--resume``.

    Refuses a run of another kind, a finished one, and one whose process is still alive on this host;
    deletes temp files its killed process left half-written (never in place). Returns its journal row.
    """
    row = store.run(run_id)
    name = {"train": "training run", "score": "score run"}[kind]
    if row["kind"] != kind:
        raise StoreError(f"run #{run_id} is a {row['kind']} run, not a {name}")
    if row["status"] == "done":
        raise StoreError(f"{name} #{run_id} already finished; start a new one instead")
    if row["status"] == "running" and row["host"] == socket.gethostname() and pid_alive(row["pid"]) \
            and row["pid"] != os.getpid():
        raise StoreError(f"{name} #{run_id} is still running (pid {row['pid']}); stop it first")
    for stray in Path(row["run_dir"]).glob(".*.tmp"):
        stray.unlink(missing_ok=True)
    store.update_run(run_id, status="running", pid=os.getpid(), host=socket.gethostname(), finished_at=None,
                     error_tail=None)
    return row


def labels_kind(config: Any) -> str:
    """What a run trains on, for the journal: ``original`` (the ingest snapshot), ``current`` (the corrected
    labels, frozen when it started) or ``snapshot`` (a snapshot file named by the user)."""
    labels = getattr(config, "labels", None)
    if labels in ("original", "current"):
        return labels
    return "snapshot" if labels or config.snapshot else "current"


def answer_key_hash(config: Any) -> str | None:
    """The hash of the answer key a run is measured on (None: its own snapshot's labels)."""
    key = getattr(config, "answer_key", None)
    if not key:
        return None
    from train.answer_key import read_answer_key

    return read_answer_key(key)[1]["hash"]


def resolve_snapshot(store: LabelStore, name: str) -> Path:
    """A snapshot file from its path or from a prefix (>= 8 characters) of its hash in the store's snapshots."""
    if Path(name).is_file():
        return Path(name).resolve()
    table = store.snapshots()
    found = table[table["hash"].str.startswith(name)] if len(name) >= 8 and len(table) else table.iloc[0:0]
    if len(found) != 1:
        raise StoreError(f"--labels {name}: not original, current, a snapshot file or a unique snapshot hash prefix"
                         + (" (ambiguous)" if len(found) > 1 else ""))
    return Path(found["path"].iloc[0]).resolve()


def take_snapshot(store: LabelStore, given: str | None, labels: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The run's input: a given snapshot file (its hash verified), else ``labels``: ``original`` (the labels as
    ingested), a snapshot file or hash prefix, or ``current`` (default: the store's current labels frozen now)."""
    if not given and labels not in (None, "current"):
        given = str(store.snapshot(original=True).path) if labels == "original" else str(resolve_snapshot(store, labels))
    if given:
        path = Path(given).resolve()
        _, snap = read_snapshot(path)
        return path, snap
    taken = store.snapshot()
    return taken.path.resolve(), {"hash": taken.hash, "n_corrections": taken.n_corrections, "n_items": taken.n_items}

def check_options(config: Any, resumed: dict[str, Any] | None = None) -> None:
    """What ``fit`` and ``score`` check before a run writes anything: the experiment writers' packages of the
    run's config (``resumed``: a resumed run's own, from its journal row), and for a new run the model options
    (an unknown or hub model name, a bad weights file) and hub weights (fetched now, or refused offline)."""
    from train.model import check_model_options, fetch_pretrained
    from train.writers import check as check_writers

    check_writers(resumed if resumed is not None else config)
    if resumed is None:
        check_model_options(config)
        if config.pretrained:
            fetch_pretrained(config.model)


def finish_run(store: LabelStore, run_id: int, status: str, *, error_tail: str | None = None) -> None:
    fields: dict[str, Any] = {"status": status, "finished_at": now()}
    if error_tail is not None:
        fields["error_tail"] = error_tail
    store.update_run(run_id, **fields)


def save_val_predictions(path: Path, labels: Any, schema: Schema, truth: dict[str, Any],
                         predicted: dict[str, Any]) -> Path:
    """Write one row per validation image: ``path``, ``person``, then ``true_<target>`` and
    ``pred_<target>`` (class names) for every target both dicts hold (codes, shape (n,)); atomic."""
    table = labels[["path", "person"]].reset_index(drop=True).copy()
    for name in (n for n in predicted if n in truth):
        classes = schema.target_classes(name)
        table[f"true_{name}"] = [classes[int(c)] for c in truth[name]]
        table[f"pred_{name}"] = [classes[int(c)] for c in predicted[name]]
    with replacing(path, fsync=False) as tmp:
        csv_safe(table).to_csv(tmp, index=False)
    return path


def summary(store: LabelStore, run_id: int) -> dict[str, Any]:
    """The run row's ``metrics``: epochs done, best epoch by val macro F1, and that epoch's and the last's scalars."""
    epochs = store.epochs(run_id)
    if epochs.empty:
        return {"epochs_done": 0}
    records = epochs.to_dict("records")
    key = "macro_f1" if "macro_f1" in epochs else "val_loss"
    best = max(records, key=lambda r: (r[key] if key == "macro_f1" else -r[key], -r["epoch"]))

    def scalars(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    return {"epochs_done": int(epochs["epoch"].max()), "best_epoch": int(best["epoch"]),
            "best_macro_f1": best.get("macro_f1"), "best": scalars(best), "last": scalars(records[-1])}
