"""Connection, schema creation and migrations, errors and helpers shared by every part of the store.

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import pandas as pd

from core.faults import fault_point
from core.schema import Schema, SchemaError

SCHEMA_VERSION = 6


IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


RESERVED = {"item_id", "path", "person", "split", "class", "corrected", "id", "hash", "width", "height"}


class StoreError(Exception):
    """A store operation was refused; the message says which target and why. Nothing was written."""


class ConflictError(StoreError):
    """Someone changed the label meanwhile: the expected value differs from the current one."""


def default_db() -> str:
    """Every command's ``--db`` default: ``$LABELS_DB``, else ``labels.db``."""
    return os.environ.get("LABELS_DB") or "labels.db"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def quote(name: str) -> str:
    """Quote a schema attribute as a column name (validated: attribute names are identifiers)."""
    if not IDENTIFIER.match(name) or name in RESERVED:
        raise SchemaError(f"{name!r} cannot be a label column name (use lower-case letters, digits, _)")
    return f'"{name}"'


@dataclass(frozen=True)
class Snapshot:
    hash: str
    path: Path
    n_items: int
    n_corrections: int


@dataclass(frozen=True)
class IngestReport:
    ingest_id: int
    n_items: int
    n_new: int
    n_labelled: int
    n_unlabelled: int
    n_problems: int


_TABLES = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS persons(
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, source_id TEXT, info TEXT);
CREATE TABLE IF NOT EXISTS items(
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, person_id INTEGER REFERENCES persons(id),
    split TEXT NOT NULL, width INTEGER, height INTEGER, bytes INTEGER, hash TEXT, source_id TEXT);
CREATE INDEX IF NOT EXISTS items_person ON items(person_id);
CREATE INDEX IF NOT EXISTS items_hash ON items(hash);
CREATE TABLE IF NOT EXISTS corrections(
    id INTEGER PRIMARY KEY, target_kind TEXT NOT NULL CHECK (target_kind IN ('image', 'person')),
    target TEXT NOT NULL, attribute TEXT NOT NULL, old_value TEXT, new_value TEXT NOT NULL,
    annotator TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', source TEXT NOT NULL,
    created_at TEXT NOT NULL, reverts INTEGER REFERENCES corrections(id), batch TEXT);
CREATE INDEX IF NOT EXISTS corrections_target ON corrections(target_kind, target, attribute);
CREATE TRIGGER IF NOT EXISTS corrections_no_update BEFORE UPDATE ON corrections
    BEGIN SELECT RAISE(ABORT, 'the corrections log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS corrections_no_delete BEFORE DELETE ON corrections
    BEGIN SELECT RAISE(ABORT, 'the corrections log is append-only'); END;
CREATE TABLE IF NOT EXISTS reviews(
    id INTEGER PRIMARY KEY, target_kind TEXT NOT NULL, target TEXT NOT NULL, attribute TEXT NOT NULL,
    verdict TEXT NOT NULL, annotator TEXT NOT NULL, score_run INTEGER, note TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reviews_target ON reviews(target_kind, target, attribute);
CREATE TABLE IF NOT EXISTS ingests(
    id INTEGER PRIMARY KEY, root TEXT NOT NULL, format TEXT NOT NULL, created_at TEXT NOT NULL,
    n_items INTEGER, n_new INTEGER, n_problems INTEGER);
CREATE TABLE IF NOT EXISTS problems(
    id INTEGER PRIMARY KEY, ingest_id INTEGER REFERENCES ingests(id), path TEXT NOT NULL,
    reason TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'ingest');
CREATE TABLE IF NOT EXISTS snapshots(
    hash TEXT PRIMARY KEY, path TEXT NOT NULL, created_at TEXT NOT NULL, n_items INTEGER NOT NULL,
    n_corrections INTEGER NOT NULL, last_correction INTEGER, counts TEXT);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, config TEXT NOT NULL,
    snapshot_hash TEXT, n_corrections INTEGER, git_commit TEXT, git_dirty INTEGER, environment TEXT,
    seed INTEGER, host TEXT, pid INTEGER, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
    heartbeat_at TEXT, progress TEXT, metrics TEXT, best_checkpoint TEXT, run_dir TEXT,
    log_path TEXT, error_tail TEXT, note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS epochs(
    run_id INTEGER NOT NULL REFERENCES runs(id), epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY(run_id, epoch));
CREATE TABLE IF NOT EXISTS scores(
    run_id INTEGER NOT NULL REFERENCES runs(id), item_id INTEGER NOT NULL REFERENCES items(id),
    attribute TEXT NOT NULL, given TEXT, suggested TEXT, score REAL, is_issue INTEGER,
    detail TEXT, PRIMARY KEY(run_id, item_id, attribute));
CREATE TABLE IF NOT EXISTS data_issues(
    id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id), kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', score REAL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS locks(
    name TEXT PRIMARY KEY, run_id INTEGER, pid INTEGER, host TEXT, acquired_at TEXT NOT NULL);
"""


# Version 2: derived tables that keep the dashboard's first visit cheap. ``review_units`` is a score
# run's ranked review queue (one row per image or person and target, ``rank`` 0 = most suspicious),
# written with the run's scores; ``review_runs`` marks runs whose queue is built and keeps its
# summary. ``ingest_aggregates`` holds reads that only an ingest changes (original label counts,
# people per image count, item counts), keyed by the ingest they describe. Stores of version 1
# build these lazily on first use. ``corrections_reverts`` makes "is this correction reverted" a lookup.
_V2 = """
CREATE TABLE IF NOT EXISTS review_units(
    run_id INTEGER NOT NULL, rank INTEGER NOT NULL, item_id INTEGER NOT NULL, attribute TEXT NOT NULL,
    stored TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT NULL, given TEXT, suggested TEXT, score REAL,
    is_issue INTEGER NOT NULL, PRIMARY KEY(run_id, rank)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS review_units_target ON review_units(run_id, target, attribute);
CREATE INDEX IF NOT EXISTS review_units_flagged ON review_units(run_id, is_issue, score);
CREATE TABLE IF NOT EXISTS review_runs(
    run_id INTEGER PRIMARY KEY, n_units INTEGER NOT NULL, summary TEXT NOT NULL, built_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ingest_aggregates(
    ingest_id INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(ingest_id, name));
CREATE INDEX IF NOT EXISTS corrections_reverts ON corrections(reverts);
"""


# Version 3: repeat groups. ``python -m train fit --repeats N`` trains one config on one snapshot with N
# seeds; its runs share ``repeat_group`` = the id of the group's first run (NULL: a single run).
_V3 = """
ALTER TABLE runs ADD COLUMN repeat_group INTEGER;
CREATE INDEX IF NOT EXISTS runs_repeat_group ON runs(repeat_group);
"""


# Version 4: patterns (core.patterns). ``items.meta`` keeps a dataset's metadata per image as a JSON object
# (a CSV's extra columns, the sub-folder of a folder dataset, the competition csv's columns besides the labels).
# ``bulks`` records one reviewed step over many units (a pattern applied, or its undo: ``reverts``); the
# corrections and verdicts it wrote carry its id in ``bulk``.
_V4 = """
ALTER TABLE items ADD COLUMN meta TEXT;
CREATE TABLE IF NOT EXISTS bulks(
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, pattern TEXT NOT NULL DEFAULT '', annotator TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, reverts INTEGER REFERENCES bulks(id),
    n_corrected INTEGER NOT NULL DEFAULT 0, n_kept INTEGER NOT NULL DEFAULT 0, n_refused INTEGER NOT NULL DEFAULT 0,
    refused TEXT NOT NULL DEFAULT '[]');
ALTER TABLE corrections ADD COLUMN bulk INTEGER;
ALTER TABLE reviews ADD COLUMN bulk INTEGER;
CREATE INDEX IF NOT EXISTS corrections_bulk ON corrections(bulk);
CREATE INDEX IF NOT EXISTS reviews_bulk ON reviews(bulk);
"""


# Version 5: "did cleaning help?" (train/experiment.py). A training run records which labels it trained on
# (``labels``: original / current / snapshot) and the answer key its epoch metrics were measured on
# (``answer_key``: an ``answer_keys`` hash; NULL = its own snapshot's labels of its own validation fold).
# ``answer_keys`` are frozen, hashed tables of (image, true label) a model is judged against; ``evaluations`` are a
# run's best-checkpoint metrics on another answer key (re-evaluation without retraining); ``experiment_runs`` are
# the pairs of an experiment (a run of kind ``experiment``): one seed trained on the original and on the current
# labels, both judged on the experiment's answer key.
_V5 = """
ALTER TABLE runs ADD COLUMN labels TEXT;
ALTER TABLE runs ADD COLUMN answer_key TEXT;
CREATE TABLE IF NOT EXISTS answer_keys(
    hash TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT NOT NULL, people_hash TEXT NOT NULL,
    n_items INTEGER NOT NULL, n_people INTEGER NOT NULL, n_reviewed INTEGER NOT NULL, created_at TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS evaluations(
    run_id INTEGER NOT NULL REFERENCES runs(id), answer_key TEXT NOT NULL, checkpoint TEXT, metrics TEXT NOT NULL,
    n_items INTEGER NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY(run_id, answer_key));
CREATE TABLE IF NOT EXISTS experiment_runs(
    experiment INTEGER NOT NULL REFERENCES runs(id), run_id INTEGER NOT NULL REFERENCES runs(id),
    side TEXT NOT NULL, seed INTEGER NOT NULL, reused INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(experiment, run_id));
"""


# Version 6: review decisions belong to the label they judged, not to a score run. ``reviews.value`` is the
# label's value when it was judged (a verdict stands while the label still has it), ``tab`` the browser tab
# that made a decision (undo takes back only that tab's), ``corrections.score_run`` the run a correction was
# made under (NULL: not from the queue). The ``*_label`` indexes find a label's newest decision.
_V6 = """
ALTER TABLE reviews ADD COLUMN value TEXT;
ALTER TABLE reviews ADD COLUMN tab TEXT;
ALTER TABLE corrections ADD COLUMN tab TEXT;
ALTER TABLE corrections ADD COLUMN score_run INTEGER;
CREATE INDEX IF NOT EXISTS reviews_label ON reviews(target, attribute, id);
CREATE INDEX IF NOT EXISTS corrections_label ON corrections(target, attribute, id);
"""


# Migrations from version N-1 to N; each runs inside the transaction that bumps the version.
MIGRATIONS: dict[int, str] = {1: _TABLES, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6}


def remove_store_files(path: str | os.PathLike[str]) -> None:
    """Delete a label store file with its SQLite companions (``-wal``, ``-shm``, ``-journal``) and its files
    folder when empty: what a failed first ingest must not leave behind."""
    path = Path(path)
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
        path.with_name(name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.with_name(path.name + ".d").rmdir()


# The unit's place in core.scoring's ranked queue, stored in the score row's detail by train.oof.score_rows (NULL when
# absent or when detail is not JSON). The store only pages this order; how it is computed is core.scoring's policy.
RANK_OF_SCORE = "CASE WHEN json_valid(s.detail) THEN json_extract(s.detail, '$.rank') END"


def count_sql(columns: Sequence[str], table: str, where: str = "") -> str:
    """Images and persons per combination of ``columns`` in ``table`` (original or current)."""
    cols = ", ".join(f"c.{quote(c)}" for c in columns)
    return (f"SELECT {cols}, count(*) AS images, count(DISTINCT i.person_id) AS persons"
            f" FROM {table} c JOIN items i ON i.id = c.item_id {where} GROUP BY {cols} ORDER BY {cols}")


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (trigger bodies keep their inner semicolons)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return [s for s in statements if s]


def _sql_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


class StoreBase:
    """The connection and its plumbing; the other parts of the store are mixins on top of it."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0):
        self.path = Path(path or default_db())
        self._schema: Schema | None = None
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a label store file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"{self.path}: cannot create its folder ({error.strerror or error})") from None
        try:
            self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            from core.errors import sqlite_reason

            raise StoreError(f"{self.path}: {sqlite_reason(error)}") from None
        try:
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._migrate()
        except sqlite3.Error as error:  # not SQLite, damaged, read-only file or folder: one line, not a traceback
            self.conn.close()
            from core.errors import sqlite_reason

            raise StoreError(f"{self.path}: {sqlite_reason(error)}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): all of it lands or none of it does."""
        if self.conn.in_transaction:  # nested: join the outer transaction
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:  # SQLite ends the transaction itself on some errors (disk full)
                self.conn.execute("ROLLBACK")
            raise
        else:
            fault_point("commit", "before COMMIT")  # LABELFIX_FAULT=commit:N (crash tests)
            self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store version {version} is newer than this code ({SCHEMA_VERSION})")
        while version < SCHEMA_VERSION:
            with self.transaction() as conn:
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                if current == version:  # another process may have migrated meanwhile
                    for statement in _split_sql(MIGRATIONS[version + 1]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={version + 1}")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                          (key, value))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        cursor = self.conn.execute(sql, params)
        columns = [c[0] for c in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)
