"""Snapshots: the frozen, hashed label table that is the trainer's only input.

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from core.files import csv_safe, csv_unescape, replacing
from core.schema import Schema
from core.store.base import Snapshot, StoreError, now
from core.store.corrections import CorrectionsMixin


def read_snapshot(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load a snapshot written by ``LabelStore.snapshot``: (labels with derived columns, metadata).

    The hash is verified: an edited snapshot file is refused.
    """
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    return verified_table(path, path.read_bytes().decode(), meta), meta


def verified_table(path: Path, text: str, meta: dict[str, Any], *salt: str) -> pd.DataFrame:
    """A hashed label table's ``text`` (a snapshot, an answer key) as a frame with its schema's derived columns,
    after checking ``meta["hash"]`` = sha256 of the schema's JSON, ``salt`` and the text, newline-joined; an edited
    file is refused (``StoreError`` naming ``path``)."""
    schema = Schema.from_dict(meta["schema"])
    digest = hashlib.sha256("\n".join([schema.to_json(), *salt, text]).encode()).hexdigest()
    if digest != meta["hash"]:
        raise StoreError(f"{path}: content does not match its hash {meta['hash'][:16]} (file edited?)")
    labels = csv_unescape(pd.read_csv(io.StringIO(text), dtype={"path": str, "person": str, "hash": str},
                                      keep_default_na=False))
    return schema.add_derived(labels)


def _atomic_write(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


class SnapshotsMixin(CorrectionsMixin):
    """Snapshots: the frozen, hashed label table that is the trainer's only input."""

    def snapshot(self, directory: str | os.PathLike[str] | None = None, *, original: bool = False) -> Snapshot:
        """Freeze the current label table to ``<dir>/<hash16>.csv`` + ``.json``; same labels, same hash.

        ``original=True`` freezes the labels as ingested instead (corrections ignored): the same file and hash
        as a snapshot taken before the first correction.

        The CSV has one row per labelled image sorted by path: path, person, hash, width, height,
        the stored attributes and ``corrected``. The hash covers the schema and the CSV bytes.
        """
        with self.transaction():  # one consistent read
            labels = self.current_labels(derived=False, original=original)
            n_corrections = 0 if original else self.n_corrections()
            last = None if original else self.conn.execute("SELECT max(id) FROM corrections").fetchone()[0]
        schema = self.schema
        columns = ["path", "person", "hash", "width", "height", *schema.names, "corrected"]
        text = csv_safe(labels[columns]).to_csv(index=False, lineterminator="\n")  # same bytes unless a cell needs it
        digest = hashlib.sha256((schema.to_json() + "\n" + text).encode()).hexdigest()
        directory = Path(directory) if directory else self.files_dir / "snapshots"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{digest[:16]}.csv"
        counts = {name: {str(k): int(v) for k, v in labels[name].value_counts().sort_index().items()}
                  for name in schema.names if schema.attribute(name).kind == "categorical"}
        meta = {"hash": digest, "root": str(self.root), "schema": schema.to_dict(), "created_at": now(),
                "n_items": len(labels), "n_corrections": n_corrections, "last_correction": last,
                "n_corrected_items": int(labels["corrected"].sum()), "counts": counts, "store": str(self.path.resolve())}
        if not path.exists():
            _atomic_write(path, text.encode())
        _atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO snapshots(hash, path, created_at, n_items, n_corrections,"
                         " last_correction, counts) VALUES(?, ?, ?, ?, ?, ?, ?)",
                         (digest, str(path.resolve()), meta["created_at"], len(labels), n_corrections, last,
                          json.dumps(counts)))
        return Snapshot(digest, path, len(labels), n_corrections)

    def snapshots(self) -> pd.DataFrame:
        return self._query("SELECT * FROM snapshots ORDER BY created_at DESC")
