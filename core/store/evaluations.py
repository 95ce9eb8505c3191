"""Answer keys, re-evaluations and experiments' pairs ("did cleaning help?", ``train/experiment.py``).

An answer key is a frozen, hashed table of images and the labels a model is judged against (a CSV + JSON
pair like a snapshot, written by ``train.experiment``); the store keeps its identity and counts. An
evaluation is one run's best-checkpoint metrics on one answer key. An experiment's pairs say which runs
stand for which side (``original`` / ``current``) and seed.

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from core.store.base import StoreBase, StoreError, now


class EvaluationsMixin(StoreBase):
    """Answer keys, evaluations of runs on them, and experiments' pairs."""

    def save_answer_key(self, hash_: str, path: str, *, kind: str, people_hash: str, n_items: int, n_people: int,
                        n_reviewed: int, description: str = "") -> None:
        """Record an answer key file (same hash, same key: recording it again changes nothing)."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO answer_keys(hash, path, kind, people_hash, n_items, n_people,"
                         " n_reviewed, created_at, description) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (hash_, str(path), kind, people_hash, int(n_items), int(n_people), int(n_reviewed), now(),
                          description))

    def answer_key(self, hash_: str) -> dict[str, Any]:
        """An answer key's row by its hash (or a unique prefix of at least 8 characters)."""
        rows = self.conn.execute("SELECT * FROM answer_keys WHERE hash LIKE ? || '%' LIMIT 2",
                                 (str(hash_),)).fetchall() if len(str(hash_)) >= 8 else []
        if len(rows) != 1:
            raise StoreError(f"no answer key {str(hash_)[:16]!r}" if not rows else
                             f"answer key prefix {hash_!r} is ambiguous; give more of its hash")
        return dict(rows[0])

    def answer_keys(self) -> pd.DataFrame:
        return self._query("SELECT * FROM answer_keys ORDER BY created_at DESC")

    def record_evaluation(self, run_id: int, answer_key: str, metrics: dict[str, Any], *, n_items: int,
                          checkpoint: str | None) -> None:
        """A run's metrics on an answer key (replacing an older evaluation of the same pair)."""
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO evaluations(run_id, answer_key, checkpoint, metrics, n_items,"
                         " created_at) VALUES(?, ?, ?, ?, ?, ?)",
                         (int(run_id), answer_key, checkpoint, json.dumps(metrics, default=float), int(n_items),
                          now()))

    def evaluation(self, run_id: int, answer_key: str) -> dict[str, Any] | None:
        """The run's metrics on the answer key ({} keys: metrics, n_items, checkpoint, created_at), or None."""
        row = self.conn.execute("SELECT * FROM evaluations WHERE run_id = ? AND answer_key = ?",
                                (int(run_id), answer_key)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["metrics"] = json.loads(out["metrics"])
        return out

    def evaluations(self, run_id: int | None = None) -> pd.DataFrame:
        """Evaluations (of one run, or all), newest first; ``metrics`` decoded."""
        where, params = ("WHERE run_id = ?", (int(run_id),)) if run_id is not None else ("", ())
        frame = self._query(f"SELECT * FROM evaluations {where} ORDER BY created_at DESC", params)
        if len(frame):
            frame["metrics"] = [json.loads(m) for m in frame["metrics"]]
        return frame

    def add_experiment_run(self, experiment: int, run_id: int, *, side: str, seed: int, reused: bool = False) -> None:
        if side not in ("original", "current"):
            raise StoreError(f"an experiment's side is original or current, not {side!r}")
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO experiment_runs(experiment, run_id, side, seed, reused)"
                         " VALUES(?, ?, ?, ?, ?)", (int(experiment), int(run_id), side, int(seed), int(reused)))

    def experiment_runs(self, experiment: int) -> pd.DataFrame:
        """An experiment's runs: run_id, side, seed, reused, with the run's status; by seed, original first."""
        return self._query(
            "SELECT e.run_id, e.side, e.seed, e.reused, r.status FROM experiment_runs e JOIN runs r ON r.id = e.run_id"
            " WHERE e.experiment = ? ORDER BY e.seed, e.side DESC", (int(experiment),))

    def experiments_of(self, run_id: int) -> list[int]:
        """The experiments a run is part of, newest first."""
        return [int(r[0]) for r in self.conn.execute(
            "SELECT experiment FROM experiment_runs WHERE run_id = ? ORDER BY experiment DESC", (int(run_id),))]
