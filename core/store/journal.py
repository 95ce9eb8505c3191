"""The experiment journal (runs, epochs, progress) and the job lock.

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from typing import Any

import pandas as pd

from core.store.base import StoreBase, StoreError, now

# The runs table's columns, in table order (base's migrations create them; tests/test_store.py checks the two agree).
RUN_COLUMNS = ("id", "kind", "status", "config", "snapshot_hash", "n_corrections", "git_commit", "git_dirty",
               "environment", "seed", "host", "pid", "created_at", "started_at", "finished_at", "heartbeat_at",
               "progress", "metrics", "best_checkpoint", "run_dir", "log_path", "error_tail", "note", "repeat_group",
               "labels", "answer_key")


def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in JournalMixin._RUN_JSON:
        if out.get(key):
            out[key] = json.loads(out[key])
    return out


class JournalMixin(StoreBase):
    """The experiment journal (runs, epochs, progress) and the job lock."""

    def create_run(self, kind: str, config: dict[str, Any], *, status: str = "queued", **fields: Any) -> int:
        """A new journal row (kind: train / score / predict). Extra fields are runs-table columns."""
        with self.transaction() as conn:
            run_id = int(conn.execute("INSERT INTO runs(kind, status, config, created_at, host) VALUES(?, ?, ?, ?, ?)",
                                      (kind, status, json.dumps(config, sort_keys=True, default=str), now(),
                                       socket.gethostname())).lastrowid or 0)
        if fields:
            self.update_run(run_id, **fields)
        return run_id

    _RUN_JSON = {"config", "environment", "progress", "metrics"}

    _RUN_FIELDS = set(RUN_COLUMNS) - {"id", "created_at"}  # what update_run may set

    def update_run(self, run_id: int, **fields: Any) -> None:
        unknown = set(fields) - self._RUN_FIELDS
        if unknown:
            raise StoreError(f"unknown run field(s): {', '.join(sorted(unknown))}")
        values = [json.dumps(v, sort_keys=True, default=str) if k in self._RUN_JSON and v is not None else v
                  for k, v in fields.items()]
        with self.transaction() as conn:
            cursor = conn.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                                  (*values, int(run_id)))
            if cursor.rowcount == 0:
                raise StoreError(f"no run #{run_id}")

    def update_progress(self, run_id: int, **progress: Any) -> None:
        """Progress (epoch, step, total, eta_s, ...) and a heartbeat, for live dashboards."""
        self.update_run(run_id, progress={**progress, "updated_at": time.time()}, heartbeat_at=now())

    def record_epoch(self, run_id: int, epoch: int, metrics: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO epochs(run_id, epoch, metrics, created_at) VALUES(?, ?, ?, ?)",
                         (int(run_id), int(epoch), json.dumps(metrics, default=float), now()))

    def run(self, run_id: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise StoreError(f"no run #{run_id}")
        return _run_dict(row)

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        """The journal, newest first; JSON columns decoded to dicts."""
        where, params = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        rows = self.conn.execute(f"SELECT * FROM runs {where} ORDER BY id DESC", params).fetchall()
        return pd.DataFrame([_run_dict(r) for r in rows], columns=list(RUN_COLUMNS))

    def run_states(self) -> tuple[tuple[int, str], ...]:
        """(id, status) of every run, oldest first: a cheap signature of the journal for pages to notice a run
        starting or finishing."""
        return tuple((int(r[0]), str(r[1])) for r in self.conn.execute("SELECT id, status FROM runs ORDER BY id"))

    def current_score_run(self) -> int | None:
        """The newest finished score run, or None."""
        row = self.conn.execute("SELECT id FROM runs WHERE kind = 'score' AND status = 'done'"
                                " ORDER BY id DESC LIMIT 1").fetchone()
        return int(row[0]) if row else None

    def repeat_group(self, group: int) -> pd.DataFrame:
        """The runs of one repeat group (``fit --repeats``), oldest first; JSON columns decoded."""
        rows = self.conn.execute("SELECT * FROM runs WHERE repeat_group = ? ORDER BY id", (int(group),)).fetchall()
        return pd.DataFrame([_run_dict(r) for r in rows])

    def repeat_group_pending(self, group: int) -> bool:
        """Whether a run of the repeat group is still queued or running (the group's job is not over)."""
        row = self.conn.execute("SELECT 1 FROM runs WHERE repeat_group = ? AND status IN ('queued', 'running') "
                                "LIMIT 1", (int(group),)).fetchone()
        return row is not None

    def epochs(self, run_id: int) -> pd.DataFrame:
        rows = self.conn.execute("SELECT epoch, metrics FROM epochs WHERE run_id = ? ORDER BY epoch",
                                 (int(run_id),)).fetchall()
        return pd.DataFrame([{"epoch": r[0], **json.loads(r[1])} for r in rows])

    def acquire_lock(self, name: str, *, run_id: int | None, pid: int | None) -> dict[str, Any] | None:
        """Take a named lock; returns None on success, else the holder's row (caller decides if stale)."""
        with self.transaction() as conn:
            holder = conn.execute("SELECT * FROM locks WHERE name = ?", (name,)).fetchone()
            if holder is not None:
                return dict(holder)
            conn.execute("INSERT INTO locks(name, run_id, pid, host, acquired_at) VALUES(?, ?, ?, ?, ?)",
                         (name, run_id, pid, socket.gethostname(), now()))
        return None

    def lock_holder(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM locks WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def update_lock(self, name: str, *, run_id: int | None, pid: int | None) -> None:
        """Point a held lock at the run and process that now own it."""
        with self.transaction() as conn:
            conn.execute("UPDATE locks SET run_id = ?, pid = ? WHERE name = ?", (run_id, pid, name))

    def release_lock(self, name: str, *, run_id: int | None = None) -> None:
        """Release a lock (only if ``run_id`` holds it, when given)."""
        with self.transaction() as conn:
            if run_id is None:
                conn.execute("DELETE FROM locks WHERE name = ?", (name,))
            else:
                conn.execute("DELETE FROM locks WHERE name = ? AND run_id = ?", (name, int(run_id)))
