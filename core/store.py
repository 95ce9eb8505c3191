"""The label store: every SQL statement of the project lives in this module.

One SQLite file (WAL) holds a dataset's items, its immutable original labels, the append-only
corrections log, review verdicts, ingest problems, snapshots, the experiment journal (runs, epochs),
scores and job locks. Callers speak in domain verbs::

    store = LabelStore("labels.db")
    store.correct("000001_female_Asian_45", "gender", "male", expected="female", annotator="ana")
    labels = store.current_labels()          # pandas DataFrame, one row per labelled image
    snap = store.snapshot()                  # frozen CSV + content hash, the trainer's input

Labels are kept wide (one column per schema attribute) in ``original`` (immutable, enforced by
triggers) and ``current`` (originals overlaid by the corrections log, maintained in the same
transaction as each correction). ``verify_current()`` replays the log to prove the overlay.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import numbers
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.faults import fault_point
from core.files import replacing
from core.schema import Schema, SchemaError

SCHEMA_VERSION = 3
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

# Migrations from version N-1 to N; each runs inside the transaction that bumps the version.
MIGRATIONS: dict[int, str] = {1: _TABLES, 2: _V2, 3: _V3}

# Corrections name their target by person key or image path; these are the labelled images of every
# person (or person-less image) any correction ever touched. Only their labels can differ from the
# originals, so current counts = original counts - their original rows + their current rows.
_TOUCHED = """
WITH touched_persons(id) AS (
    SELECT p.id FROM corrections c JOIN persons p ON p.key = c.target WHERE c.target_kind = 'person'
    UNION SELECT i.person_id FROM corrections c JOIN items i ON i.path = c.target
    WHERE c.target_kind = 'image' AND i.person_id IS NOT NULL),
touched(id) AS (
    SELECT i.id FROM items i WHERE i.person_id IN (SELECT id FROM touched_persons)
    UNION SELECT i.id FROM corrections c JOIN items i ON i.path = c.target WHERE c.target_kind = 'image')
"""



class LabelStore:
    """A dataset's label store in one SQLite file. Safe to open from several processes at once."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0):
        self.path = Path(path or default_db())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._migrate()
        self._schema: Schema | None = None

    # ---- plumbing -----------------------------------------------------------------------------
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

    def __enter__(self) -> LabelStore:
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

    # ---- dataset --------------------------------------------------------------------------------
    @property
    def schema(self) -> Schema:
        if self._schema is None:
            text = self._meta("schema")
            if text is None:
                raise StoreError(f"{self.path} holds no dataset yet: run `python -m core ingest ROOT --db {self.path}`")
            self._schema = Schema.from_json(text)
        return self._schema

    @property
    def is_empty(self) -> bool:
        return self._meta("schema") is None

    @property
    def root(self) -> Path:
        text = self._meta("root")
        if text is None:
            raise StoreError(f"{self.path} holds no dataset yet")
        return Path(text)

    @property
    def dataset_format(self) -> str | None:
        return self._meta("format")

    @property
    def files_dir(self) -> Path:
        """Where files that belong to this store live (snapshots, thumbnails): ``<db>.d/``."""
        return self.path.with_name(self.path.name + ".d")

    def version(self) -> tuple[int, int, int, int]:
        """Cheap token that changes after every write that affects labels or reviews (cache key)."""
        row = self.conn.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM ingests), (SELECT coalesce(max(id), 0) FROM corrections),"
            " (SELECT coalesce(max(id), 0) FROM reviews), (SELECT coalesce(max(id), 0) FROM runs)").fetchone()
        return tuple(row)  # type: ignore[return-value]

    def ingest(self, *, root: Path, schema: Schema, dataset_format: str, persons: pd.DataFrame,
               items: pd.DataFrame, problems: Sequence[tuple[str, str]]) -> IngestReport:
        """Register a dataset scan in one transaction; idempotent, never touches corrections.

        persons: columns ``person`` (unique key, e.g. the folder name), ``source_id``, ``info`` (JSON text).
        items:   columns ``path`` (relative to root, forward slashes), ``person``, ``split``
                 (``train`` labelled / ``eval`` unlabelled), ``width``, ``height``, ``bytes``, ``hash``,
                 ``source_id``, plus one column per schema attribute (stored values; NaN for eval).
        problems: (path, reason) pairs, one per bad file or row; they replace the previous ingest's.
        Items already in the store keep their original labels; labels that differ now are reported as
        problems (the store never rewrites an original label).
        """
        root = Path(root).resolve()
        columns = [quote(a) for a in schema.names]
        with self.transaction() as conn:
            old_schema, old_root = self._meta("schema"), self._meta("root")
            if old_root is not None and Path(old_root) != root:
                raise StoreError(f"{self.path} already holds the dataset at {old_root}; use another --db for {root}")
            if old_schema is not None and Schema.from_json(old_schema).names != schema.names:
                raise StoreError(f"{self.path}: the dataset's attributes changed ({Schema.from_json(old_schema).names}"
                                 f" -> {schema.names}); use another --db")
            if old_schema is None:
                defs = ", ".join(f"{c} {'INTEGER' if schema.attribute(a).kind == 'integer' else 'TEXT'}"
                                 for c, a in zip(columns, schema.names))
                for table in ("original", "current"):
                    conn.execute(f"CREATE TABLE {table}(item_id INTEGER PRIMARY KEY REFERENCES items(id), {defs})")
                conn.execute("CREATE TRIGGER original_no_update BEFORE UPDATE ON original"
                             " BEGIN SELECT RAISE(ABORT, 'original labels are immutable'); END")
                conn.execute("CREATE TRIGGER original_no_delete BEFORE DELETE ON original"
                             " BEGIN SELECT RAISE(ABORT, 'original labels are immutable'); END")
            self._set_meta("schema", schema.to_json())
            self._set_meta("root", str(root))
            self._set_meta("format", dataset_format)
            self._schema = schema
            ingest_id = conn.execute("INSERT INTO ingests(root, format, created_at) VALUES(?, ?, ?)",
                                     (str(root), dataset_format, now())).lastrowid
            conn.executemany(
                "INSERT INTO persons(key, source_id, info) VALUES(?, ?, ?) ON CONFLICT(key) DO UPDATE"
                " SET source_id = excluded.source_id, info = excluded.info",
                persons[["person", "source_id", "info"]].itertuples(index=False, name=None))
            person_ids = dict(conn.execute("SELECT key, id FROM persons").fetchall())
            known = dict(conn.execute("SELECT path, id FROM items").fetchall())
            rows = items.assign(person_id=items["person"].map(person_ids))
            new = rows[~rows["path"].isin(known)]
            conn.executemany(
                "INSERT INTO items(path, person_id, split, width, height, bytes, hash, source_id)"
                " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.path, _int(r.person_id), r.split, _int(r.width), _int(r.height), _int(r.bytes), r.hash,
                  r.source_id) for r in new.itertuples(index=False)])
            # Refresh file facts (size, hash) of known items: the file may have been replaced.
            conn.executemany("UPDATE items SET width = ?, height = ?, bytes = ?, hash = ? WHERE path = ?",
                             [(_int(r.width), _int(r.height), _int(r.bytes), r.hash, r.path)
                              for r in rows[rows["path"].isin(known)].itertuples(index=False)])
            ids = dict(conn.execute("SELECT path, id FROM items").fetchall())
            labelled = rows[rows["split"] == "train"]
            values = [[ids[p]] + [_sql_value(v) for v in vals]
                      for p, *vals in labelled[["path", *schema.names]].itertuples(index=False, name=None)]
            placeholders = ", ".join("?" * (len(columns) + 1))
            for table in ("original", "current"):
                conn.executemany(f"INSERT OR IGNORE INTO {table}(item_id, {', '.join(columns)}) VALUES({placeholders})",
                                 values)
            problems = list(problems) + self._changed_originals(labelled, ids, schema)
            conn.execute("DELETE FROM problems WHERE kind = 'ingest'")
            conn.executemany("INSERT INTO problems(ingest_id, path, reason, kind) VALUES(?, ?, ?, 'ingest')",
                             [(ingest_id, p, r) for p, r in problems])
            conn.execute("UPDATE ingests SET n_items = ?, n_new = ?, n_problems = ? WHERE id = ?",
                         (len(rows), len(new), len(problems), ingest_id))
            self._save_ingest_aggregates(int(ingest_id))
        return IngestReport(ingest_id, len(rows), len(new), len(labelled), len(rows) - len(labelled), len(problems))

    def _changed_originals(self, labelled: pd.DataFrame, ids: dict[str, int], schema: Schema) -> list[tuple[str, str]]:
        stored = self._query(f"SELECT i.path, {', '.join('o.' + quote(a) for a in schema.names)}"
                             " FROM original o JOIN items i ON i.id = o.item_id")
        merged = labelled[["path", *schema.names]].merge(stored, on="path", suffixes=("", "_stored"))
        out = []
        for name in schema.names:
            given, stored = merged[name].map(_canonical), merged[f"{name}_stored"].map(_canonical)
            changed = merged[given != stored]
            out += [(p, f"{name} is now {v!r} in the source but was ingested as {s!r}; the original is kept"
                        " (record a correction instead)")
                    for p, v, s in changed[["path", name, f"{name}_stored"]].itertuples(index=False, name=None)]
        return out

    # ---- reading labels -------------------------------------------------------------------------------
    def items(self, split: str | None = None) -> pd.DataFrame:
        """All items: id, path, person, split, width, height, bytes, hash, source_id."""
        where, params = ("WHERE i.split = ?", (split,)) if split else ("", ())
        return self._query("SELECT i.id AS item_id, i.path, p.key AS person, i.split, i.width, i.height, i.bytes,"
                           f" i.hash, i.source_id FROM items i LEFT JOIN persons p ON p.id = i.person_id {where}"
                           " ORDER BY i.path", params)

    def persons(self) -> pd.DataFrame:
        return self._query("SELECT p.key AS person, p.source_id, p.info, count(i.id) AS n_images FROM persons p"
                           " LEFT JOIN items i ON i.person_id = p.id GROUP BY p.id ORDER BY p.key")

    def current_labels(self, *, original: bool = False, derived: bool = True) -> pd.DataFrame:
        """One row per labelled image: item_id, path, person, hash, <attributes>, [binned, class], corrected.

        ``original=True`` gives the ingested labels instead. ``corrected`` is 1 where any attribute
        differs from the original.
        """
        schema = self.schema
        table = "original" if original else "current"
        differs = " OR ".join(f"c.{quote(a)} IS NOT o.{quote(a)}" for a in schema.names)
        frame = self._query(
            f"SELECT i.id AS item_id, i.path, p.key AS person, i.hash, i.width, i.height,"
            f" {', '.join('c.' + quote(a) for a in schema.names)}, ({differs}) AS corrected"
            f" FROM {table} c JOIN items i ON i.id = c.item_id JOIN original o ON o.item_id = c.item_id"
            " LEFT JOIN persons p ON p.id = i.person_id ORDER BY i.path")
        if original:
            frame["corrected"] = 0
        for name in schema.names:
            if schema.attribute(name).kind == "integer":
                frame[name] = frame[name].astype("int64")
        if derived and len(frame):
            frame = schema.add_derived(frame)
            frame["corrected"] = frame.pop("corrected").astype("int64")
        return frame

    def label_of(self, target: str | int, attribute: str) -> Any:
        """Current value of one attribute for an image (path or item id) or a person (key)."""
        kind, ids, _ = self._resolve(target, attribute)
        values = {r[0] for r in self.conn.execute(
            f"SELECT DISTINCT {quote(attribute)} FROM current WHERE item_id IN ({','.join('?' * len(ids))})", ids)}
        if len(values) != 1:
            raise StoreError(f"{target}: its images disagree on {attribute}: {sorted(map(str, values))}")
        return values.pop()

    def count_by(self, columns: Sequence[str], *, original: bool = False) -> pd.DataFrame:
        """Label counts grouped by attributes (SQL GROUP BY): columns + ``images`` + ``persons``."""
        return self._query(self._count_sql(columns, "original" if original else "current"))

    def changed_counts(self) -> dict[str, int]:
        """Per stored attribute, how many labelled images differ from their original label now."""
        names = self.schema.names
        sums = ", ".join(f"coalesce(sum(c.{quote(a)} IS NOT o.{quote(a)}), 0)" for a in names)
        # Only images some correction touched can differ: the query reads those, not the whole table.
        row = self.conn.execute(f"{_TOUCHED} SELECT {sums} FROM current c JOIN original o ON o.item_id = c.item_id"
                                " WHERE c.item_id IN (SELECT id FROM touched)").fetchone()
        return {name: int(value) for name, value in zip(names, row)}

    # ---- aggregates for the dashboard -------------------------------------------------------------------
    def label_counts(self, columns: Sequence[str], *, original: bool = False) -> pd.DataFrame:
        """``count_by(columns, original=...)``, at a cost that grows with the corrections, not the dataset.

        Original counts are saved with each ingest (``ingest_aggregates``); current counts are those
        minus the original rows plus the current rows of the images of every person a correction
        touched (persons are counted per person, so the difference is exact).
        """
        columns = list(columns)
        base = self._ingest_aggregate(f"count_by:{','.join(columns)}", self._count_sql(columns, "original"))
        if original or not self.conn.execute("SELECT 1 FROM corrections LIMIT 1").fetchone():
            return base
        parts = [base]
        for table, sign in (("original", -1), ("current", 1)):
            part = self._query(_TOUCHED + self._count_sql(columns, table, "WHERE c.item_id IN (SELECT id FROM touched)"))
            parts.append(part.assign(images=part["images"] * sign, persons=part["persons"] * sign))
        both = pd.concat([p for p in parts if len(p)] or [base], ignore_index=True)
        summed = both.groupby(columns, dropna=False, sort=False, as_index=False)[["images", "persons"]].sum()
        summed = summed[summed["images"] != 0].astype({"images": "int64", "persons": "int64"})
        return summed.sort_values(columns, na_position="first", kind="stable").reset_index(drop=True)

    def person_image_counts(self) -> pd.DataFrame:
        """How many persons have n images: ``images`` (n, 0 for a person without images), ``persons``.
        Saved with each ingest (only an ingest changes it)."""
        return self._ingest_aggregate(
            "person_image_counts", "SELECT n AS images, count(*) AS persons FROM (SELECT count(i.id) AS n"
            " FROM persons p LEFT JOIN items i ON i.person_id = p.id GROUP BY p.id) GROUP BY n ORDER BY n")

    def count_items(self, split: str | None = None) -> int:
        """Number of items (of one split); saved with each ingest."""
        if split is None:
            frame = self._ingest_aggregate("count_items", "SELECT count(*) AS n FROM items")
        else:
            frame = self._ingest_aggregate(f"count_items:{split}", "SELECT count(*) AS n FROM items WHERE split = ?",
                                           (split,))
        return int(frame["n"].iloc[0])

    def correction_counts(self) -> pd.DataFrame:
        """Per stored attribute with log entries: ``corrections`` (not reverts) and ``reverts`` logged."""
        return self._query("SELECT attribute, coalesce(sum(source != 'revert'), 0) AS corrections,"
                           " coalesce(sum(source = 'revert'), 0) AS reverts FROM corrections GROUP BY attribute")

    @staticmethod
    def _count_sql(columns: Sequence[str], table: str, where: str = "") -> str:
        """Images and persons per combination of ``columns`` in ``table`` (original or current)."""
        cols = ", ".join(f"c.{quote(c)}" for c in columns)
        return (f"SELECT {cols}, count(*) AS images, count(DISTINCT i.person_id) AS persons"
                f" FROM {table} c JOIN items i ON i.id = c.item_id {where} GROUP BY {cols} ORDER BY {cols}")

    def _ingest_aggregate(self, name: str, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """A query whose answer only an ingest changes, read from ``ingest_aggregates`` when saved for
        the newest ingest, else run and saved (stores from before version 2, or a new grouping)."""
        ingest_id = self.last_ingest_id() or 0
        row = self.conn.execute("SELECT value FROM ingest_aggregates WHERE ingest_id = ? AND name = ?",
                                (ingest_id, name)).fetchone()
        if row is not None:
            saved = json.loads(row[0])
            return pd.DataFrame(saved["rows"], columns=saved["columns"])
        cursor = self.conn.execute(sql, params)
        columns = [c[0] for c in cursor.description]
        rows = cursor.fetchall()
        with self.transaction() as conn:
            if (self.last_ingest_id() or 0) == ingest_id:  # an ingest meanwhile makes this answer stale
                conn.execute("INSERT OR REPLACE INTO ingest_aggregates(ingest_id, name, value) VALUES(?, ?, ?)",
                             (ingest_id, name, json.dumps({"columns": columns, "rows": [list(r) for r in rows]})))
        return pd.DataFrame(rows, columns=columns)

    def _save_ingest_aggregates(self, ingest_id: int) -> None:
        """Inside the ingest's transaction: drop older ingests' aggregates and save the ones the
        dashboard reads (original counts by all attributes and by the person-scope ones, people per
        image count, item counts), so a first visit after an ingest does not scan the dataset."""
        self.conn.execute("DELETE FROM ingest_aggregates WHERE ingest_id <> ?", (ingest_id,))
        schema = self.schema
        person_scope = [n for n in schema.names if schema.scope(n) == "person"]
        for columns in (schema.names, person_scope):
            if columns:
                self.label_counts(columns, original=True)
        self.person_image_counts()
        self.count_items()
        self.count_items("eval")

    def select_items(self, *, split: str | None = None, person: str | None = None, path_contains: str | None = None,
                     labels: dict[str, Any] | None = None, ranges: dict[str, tuple[int, int]] | None = None,
                     original: bool = False, corrected: bool | str | None = None, issue_kind: str | None = None,
                     offset: int = 0, limit: int | None = 50) -> tuple[pd.DataFrame, int]:
        """One page of items matching every filter (ordered by path) and how many match in total.

        ``labels`` maps a stored attribute or a binned target (``age_group``: class name or code) to
        one value or a list of values; ``ranges`` maps an integer attribute to an inclusive
        (low, high). Label filters read the current labels, or the ingested ones with
        ``original=True`` (so a chart of original labels opens exactly its images). ``person`` is a
        person key; ``path_contains`` a case-insensitive substring; ``corrected`` True/False for images
        with/without any changed label, or an attribute name for images where that one changed;
        ``issue_kind`` a data-issue kind (``"any"`` for any). Rows: item_id, path, person, split, hash,
        width, height, the current <attributes> (None for unlabelled items), corrected (0/1) and
        ``<attribute>_original`` (the ingested labels).
        Only the requested page is read.
        """
        schema = self.schema
        source = "o" if original else "c"
        clauses: list[str] = []
        params: list[Any] = []
        ranges = dict(ranges or {})
        for name, wanted in (labels or {}).items():
            binned = next((b for b in schema.binned if b.name == name), None)
            values = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
            if binned is not None:  # a bin is an inclusive age range on the stored attribute
                parts = []
                for value in values:
                    code = binned.classes.index(value) if value in binned.classes else int(value)
                    low = binned.edges[code - 1] if code > 0 else -(2**62)
                    high = binned.edges[code] - 1 if code < len(binned.edges) else 2**62
                    parts.append(f"{source}.{quote(binned.source)} BETWEEN ? AND ?")
                    params += [low, high]
                clauses.append("(" + " OR ".join(parts or ["0"]) + ")")
                continue
            attribute = schema.attribute(name)
            clauses.append(f"{source}.{quote(name)} IN ({', '.join('?' * len(values))})" if values else "0")
            params += [attribute.parse(v) for v in values]
        for name, (low, high) in ranges.items():
            clauses.append(f"{source}.{quote(schema.attribute(name).name)} BETWEEN ? AND ?")
            params += [int(low), int(high)]
        if split:
            clauses.append("i.split = ?")
            params.append(split)
        if person:
            clauses.append("p.key = ?")
            params.append(person)
        if path_contains:
            clauses.append("instr(lower(i.path), ?) > 0")
            params.append(path_contains.lower())
        differs = " OR ".join(f"c.{quote(a)} IS NOT o.{quote(a)}" for a in schema.names)
        if isinstance(corrected, str):  # images whose value of this attribute differs from the original
            clauses.append(f"c.item_id IS NOT NULL AND c.{quote(schema.attribute(corrected).name)}"
                           f" IS NOT o.{quote(corrected)}")
        elif corrected is not None:
            clauses.append(f"c.item_id IS NOT NULL AND ({differs}) = ?")
            params.append(int(bool(corrected)))
        if issue_kind:
            kind_clause = "" if issue_kind == "any" else " AND d.kind = ?"
            clauses.append(f"EXISTS (SELECT 1 FROM data_issues d WHERE d.item_id = i.id{kind_clause})")
            params += [] if issue_kind == "any" else [issue_kind]
        joins = (" FROM items i LEFT JOIN persons p ON p.id = i.person_id"
                 " LEFT JOIN current c ON c.item_id = i.id LEFT JOIN original o ON o.item_id = i.id")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        total = int(self.conn.execute(f"SELECT count(*){joins}{where}", params).fetchone()[0])
        page = f" LIMIT {int(limit)} OFFSET {max(int(offset), 0)}" if limit is not None else ""
        originals = ", ".join(f'o.{quote(a)} AS "{a}_original"' for a in schema.names)
        frame = self._query(
            "SELECT i.id AS item_id, i.path, p.key AS person, i.split, i.hash, i.width, i.height,"
            f" {', '.join('c.' + quote(a) for a in schema.names)}, coalesce(({differs}), 0) AS corrected,"
            f" {originals}{joins}{where} ORDER BY i.path{page}", params)
        return frame, total

    # ---- corrections ------------------------------------------------------------------------------------
    def _resolve(self, target: str | int, attribute: str) -> tuple[str, list[int], str]:
        """(target kind, item ids, canonical target text) for an image path / item id / person key."""
        scope = self.schema.scope(attribute)
        by = "i.id = ?" if isinstance(target, numbers.Integral) else "i.path = ?"  # ints are item ids, text is a path
        if scope == "person":
            row = self.conn.execute("SELECT id, key FROM persons WHERE key = ?", (str(target),)).fetchone()
            if row is None:  # an image of the person names the person too
                row = self.conn.execute("SELECT p.id, p.key FROM items i JOIN persons p ON p.id = i.person_id"
                                        f" WHERE {by}", (target,)).fetchone()
            if row is None:
                raise StoreError(f"unknown person {target!r}")
            ids = [r[0] for r in self.conn.execute(
                "SELECT i.id FROM items i JOIN current c ON c.item_id = i.id WHERE i.person_id = ?", (row[0],))]
            if not ids:
                raise StoreError(f"person {row[1]!r} has no labelled images")
            return "person", ids, row[1]
        row = self.conn.execute(f"SELECT i.id, i.path FROM items i JOIN current c ON c.item_id = i.id WHERE {by}",
                                (target,)).fetchone()
        if row is None:
            raise StoreError(f"unknown labelled image {target!r}")
        return "image", [row[0]], row[1]

    def correct(self, target: str | int, attribute: str, value: Any, *, expected: Any, annotator: str,
                reason: str = "", source: str = "review", batch: str | None = None,
                reverts: int | None = None) -> int:
        """Set one attribute of an image (path/id) or a person (key); returns the correction id.

        ``expected`` is the value the caller saw; if the current value differs, ``ConflictError``
        is raised and nothing is written. Person-scope attributes change all of the person's images
        in the same transaction.
        """
        attr = self.schema.attribute(attribute)
        new_value = attr.parse(value)
        expected_value = attr.parse(expected) if expected is not None else None
        if not str(annotator).strip():
            raise StoreError("an annotator name is required")
        with self.transaction() as conn:
            target = int(target) if isinstance(target, numbers.Integral) else target
            kind, ids, canonical = self._resolve(target, attribute)
            current = self.label_of(canonical if kind == "person" else ids[0], attribute)
            if expected_value is not None and str(current) != str(expected_value):
                raise ConflictError(f"{canonical}: {attribute} is now {current!r}, not {expected_value!r}"
                                    " (someone changed it meanwhile); reload and decide again")
            if str(current) == str(new_value):
                raise StoreError(f"{canonical}: {attribute} is already {new_value!r}")
            correction_id = conn.execute(
                "INSERT INTO corrections(target_kind, target, attribute, old_value, new_value, annotator, reason,"
                " source, created_at, batch, reverts) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, canonical, attribute, str(current), str(new_value), str(annotator).strip(), reason, source,
                 now(), batch, reverts)).lastrowid
            conn.execute(f"UPDATE current SET {quote(attribute)} = ? WHERE item_id IN ({','.join('?' * len(ids))})",
                         (new_value, *ids))
        return int(correction_id)

    def revert(self, correction_id: int, *, annotator: str, reason: str = "") -> int:
        """Undo a correction by logging its inverse; refused if the value changed again since."""
        with self.transaction():
            row = self.conn.execute("SELECT * FROM corrections WHERE id = ?", (int(correction_id),)).fetchone()
            if row is None:
                raise StoreError(f"no correction #{correction_id}")
            if self.conn.execute("SELECT 1 FROM corrections WHERE reverts = ?", (row["id"],)).fetchone():
                raise StoreError(f"correction #{row['id']} is already reverted")
            return self.correct(row["target"], row["attribute"], row["old_value"], expected=row["new_value"],
                                annotator=annotator, reason=reason or f"revert #{row['id']}", source="revert",
                                reverts=int(row["id"]))

    def history(self, *, target: str | None = None, attribute: str | None = None, annotator: str | None = None,
                source: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """The corrections log, newest first, with ``reverted_by`` filled where a revert exists."""
        clauses, params = [], []
        for column, value in (("c.target", target), ("c.attribute", attribute), ("c.annotator", annotator),
                              ("c.source", source)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        tail = f"LIMIT {int(limit)}" if limit else ""
        return self._query(
            "SELECT c.*, (SELECT r.id FROM corrections r WHERE r.reverts = c.id) AS reverted_by"
            f" FROM corrections c {where} ORDER BY c.id DESC {tail}", params)

    def n_corrections(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM corrections").fetchone()[0])

    # ---- reviews ------------------------------------------------------------------------------------------
    def mark_reviewed(self, target: str | int, attribute: str, *, annotator: str, verdict: str = "correct",
                      score_run: int | None = None, note: str = "") -> int:
        """Record a verdict (``correct`` = label checked and right, ``skip``) so items can leave a queue.

        ``reopen`` withdraws the earlier verdicts on the target (the dashboard's undo of a verdict):
        the reviews table stays append-only and the newest verdict is the one that counts.
        """
        if verdict not in ("correct", "skip", "reopen"):
            raise StoreError(f"unknown verdict {verdict!r}")
        if not str(annotator).strip():
            raise StoreError("an annotator name is required")
        kind, _, canonical = self._resolve(target, attribute)
        with self.transaction() as conn:
            return int(conn.execute(
                "INSERT INTO reviews(target_kind, target, attribute, verdict, annotator, score_run, note, created_at)"
                " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, canonical, attribute, verdict, str(annotator).strip(), score_run, note, now())).lastrowid)

    def reviews(self) -> pd.DataFrame:
        return self._query("SELECT * FROM reviews ORDER BY id DESC")

    def problems(self) -> pd.DataFrame:
        return self._query("SELECT id, path, reason, kind FROM problems ORDER BY kind, path")


    # ---- import --------------------------------------------------------------------------------------------
    def import_corrections(self, frame: pd.DataFrame, *, annotator: str = "import", source: str = "import",
                           dry_run: bool = False, file: str = "corrections") -> pd.DataFrame:
        """Apply a table of corrections all-or-nothing; returns the plan (one row per correction).

        Columns: ``target`` (image path, person key, or a person's source id when unique),
        ``attribute``, ``value``; optional ``expected`` (conflict check), ``reason``, ``annotator``.
        Every row is validated first; the first bad rows raise ``StoreError`` naming their line
        (line 2 = first data row of a CSV) and nothing is applied.
        """
        missing = {"target", "attribute", "value"} - set(frame.columns)
        if missing:
            raise StoreError(f"{file}: missing column(s) {', '.join(sorted(missing))}; expected target,attribute,value"
                             "[,expected,reason,annotator]")
        schema = self.schema
        by_source: dict[str, list[str]] = {}
        for key, source_id in self.conn.execute("SELECT key, source_id FROM persons"):
            if source_id:
                by_source.setdefault(str(source_id), []).append(key)
        paths = {r[0] for r in self.conn.execute("SELECT i.path FROM items i JOIN current c ON c.item_id = i.id")}
        stems: dict[str, list[str]] = {}
        for path in paths:
            stems.setdefault(path.rsplit(".", 1)[0], []).append(path)
            parts = path.split("/")
            if len(parts) >= 2:  # "person/file" without the dataset's leading folders
                stems.setdefault("/".join(parts[-2:]).rsplit(".", 1)[0], []).append(path)
        persons = {r[0] for r in self.conn.execute("SELECT key FROM persons")}
        plan, errors = [], []
        pending: dict[tuple[str, str], Any] = {}
        with self.transaction():  # read a consistent view; the apply below joins this transaction
            for line, row in zip(range(2, len(frame) + 2), frame.to_dict("records")):
                try:
                    attribute = str(row["attribute"]).strip()
                    attr = schema.attribute(attribute)
                    raw_target = str(row["target"]).strip()
                    if attr.scope == "person":
                        if raw_target in persons:
                            target = raw_target
                        elif raw_target in by_source and len(by_source[raw_target]) == 1:
                            target = by_source[raw_target][0]
                        elif raw_target in by_source:
                            raise StoreError(f"id {raw_target!r} names {len(by_source[raw_target])} people "
                                             f"({', '.join(by_source[raw_target])}); use the folder name")
                        else:
                            raise StoreError(f"unknown person {raw_target!r}")
                    else:
                        key = raw_target.rsplit(".", 1)[0] if raw_target not in paths else None
                        if raw_target in paths:
                            target = raw_target
                        elif key in stems and len(stems[key]) == 1:
                            target = stems[key][0]
                        else:
                            raise StoreError(f"unknown image {raw_target!r}")
                    new_value = attr.parse(row["value"])
                    current = pending.get((target, attribute), self.label_of(target, attribute))
                    expected = row.get("expected")
                    if expected is not None and not pd.isna(expected) and str(expected).strip() != "":
                        if str(attr.parse(expected)) != str(current):
                            raise ConflictError(f"{target}: {attribute} is {current!r}, not the expected {expected!r}")
                    if str(current) == str(new_value):
                        raise StoreError(f"{target}: {attribute} is already {new_value!r}")
                    pending[(target, attribute)] = new_value
                    reason = row.get("reason")
                    who = row.get("annotator")
                    plan.append({"line": line, "target": target, "attribute": attribute, "old_value": current,
                                 "new_value": new_value,
                                 "reason": "" if reason is None or pd.isna(reason) else str(reason),
                                 "annotator": annotator if who is None or pd.isna(who) or not str(who).strip()
                                 else str(who)})
                except (StoreError, SchemaError) as error:
                    errors.append(f"{file}, line {line}: {error}")
            if errors:
                shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
                raise StoreError(f"{len(errors)} bad row(s), nothing applied:\n" + "\n".join(shown))
            if not dry_run:
                batch = f"{source}-{now()}"
                for step in plan:
                    step["correction_id"] = self.correct(step["target"], step["attribute"], step["new_value"],
                                                         expected=step["old_value"], annotator=step["annotator"],
                                                         reason=step["reason"], source=source, batch=batch)
        return pd.DataFrame(plan)

    def verify_current(self) -> list[str]:
        """Replay originals + corrections log and list every cell where ``current`` disagrees (empty = ok)."""
        schema = self.schema
        replay = self.current_labels(original=True, derived=False).set_index("item_id")[schema.names].astype(str)
        members: dict[str, list[int]] = {}
        for item_id, person in self.conn.execute("SELECT i.id, p.key FROM items i JOIN persons p ON p.id = i.person_id"):
            members.setdefault(person, []).append(item_id)
        path_ids = dict(self.conn.execute("SELECT path, id FROM items"))
        for row in self.conn.execute("SELECT * FROM corrections ORDER BY id"):
            ids = members[row["target"]] if row["target_kind"] == "person" else [path_ids[row["target"]]]
            replay.loc[[i for i in ids if i in replay.index], row["attribute"]] = row["new_value"]
        current = self.current_labels(derived=False).set_index("item_id")[schema.names].astype(str)
        current = current.loc[replay.index]
        rows, cols = (replay != current).to_numpy().nonzero()
        return [f"item {replay.index[r]}: {replay.columns[c]} replay={replay.iat[r, c]!r} current={current.iat[r, c]!r}"
                for r, c in zip(rows, cols)]

    # ---- snapshots ---------------------------------------------------------------------------------------
    def snapshot(self, directory: str | os.PathLike[str] | None = None) -> Snapshot:
        """Freeze the current label table to ``<dir>/<hash16>.csv`` + ``.json``; same labels, same hash.

        The CSV has one row per labelled image sorted by path: path, person, hash, width, height,
        the stored attributes and ``corrected``. The hash covers the schema and the CSV bytes.
        """
        with self.transaction():  # one consistent read
            labels = self.current_labels(derived=False)
            n_corrections = self.n_corrections()
            last = self.conn.execute("SELECT max(id) FROM corrections").fetchone()[0]
        schema = self.schema
        columns = ["path", "person", "hash", "width", "height", *schema.names, "corrected"]
        text = labels[columns].to_csv(index=False, lineterminator="\n")
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

    # ---- experiment journal ----------------------------------------------------------------------------------
    def create_run(self, kind: str, config: dict[str, Any], *, status: str = "queued", **fields: Any) -> int:
        """A new journal row (kind: train / score / predict). Extra fields are runs-table columns."""
        with self.transaction() as conn:
            run_id = conn.execute("INSERT INTO runs(kind, status, config, created_at, host) VALUES(?, ?, ?, ?, ?)",
                                  (kind, status, json.dumps(config, sort_keys=True, default=str), now(),
                                   socket.gethostname())).lastrowid
        if fields:
            self.update_run(int(run_id), **fields)
        return int(run_id)

    _RUN_JSON = {"config", "environment", "progress", "metrics"}
    _RUN_FIELDS = {"kind", "status", "config", "snapshot_hash", "n_corrections", "git_commit", "git_dirty",
                   "environment", "seed", "host", "pid", "started_at", "finished_at", "heartbeat_at", "progress",
                   "metrics", "best_checkpoint", "run_dir", "log_path", "error_tail", "note", "repeat_group"}

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
        return pd.DataFrame([_run_dict(r) for r in rows], columns=[
            "id", "kind", "status", "config", "snapshot_hash", "n_corrections", "git_commit", "git_dirty",
            "environment", "seed", "host", "pid", "created_at", "started_at", "finished_at", "heartbeat_at",
            "progress", "metrics", "best_checkpoint", "run_dir", "log_path", "error_tail", "note", "repeat_group"])

    def run_states(self) -> tuple[tuple[int, str], ...]:
        """(id, status) of every run, oldest first: a cheap signature of the journal for pages to notice a run
        starting or finishing."""
        return tuple((int(r[0]), str(r[1])) for r in self.conn.execute("SELECT id, status FROM runs ORDER BY id"))

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

    # ---- scores and data issues ---------------------------------------------------------------------------
    def save_scores(self, run_id: int, scores: pd.DataFrame) -> None:
        """Replace a score run's rows. Columns: item_id, attribute, given, suggested, score, is_issue, detail.

        The run's ranked review queue (``review_units``) is built in the same transaction, so the
        first visit of the Review page after a score run reads it instead of ranking every row.
        """
        rows = [(int(run_id), int(r.item_id), r.attribute, _text(r.given), _text(r.suggested), float(r.score),
                 int(bool(r.is_issue)), r.detail if isinstance(r.detail, str) else json.dumps(r.detail, default=float))
                for r in scores.itertuples(index=False)]
        with self.transaction() as conn:
            conn.execute("DELETE FROM scores WHERE run_id = ?", (int(run_id),))
            conn.executemany("INSERT INTO scores(run_id, item_id, attribute, given, suggested, score, is_issue,"
                             " detail) VALUES(?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._build_review_units(int(run_id))

    def scores(self, run_id: int) -> pd.DataFrame:
        return self._query("SELECT s.item_id, i.path, p.key AS person, s.attribute, s.given, s.suggested, s.score,"
                           " s.is_issue, s.detail FROM scores s JOIN items i ON i.id = s.item_id"
                           " LEFT JOIN persons p ON p.id = i.person_id WHERE s.run_id = ? ORDER BY s.score DESC",
                           (int(run_id),))

    # ---- the ranked review queue of a score run ----------------------------------------------------------
    def _build_review_units(self, run_id: int) -> None:
        """(Re)build a score run's review units inside the caller's transaction.

        One unit per scored image for image-scope targets and one per person for person-scope ones
        (``age_group`` is decided on ``age``, a person attribute), represented by the person's most
        suspicious image; attributes that are not targets of the schema are left out. Class codes in
        the scores (``0``, ``"2"``) become class names. ``rank`` orders by score, highest first; ties
        keep image units before person units, then item / person order.
        """
        schema = self.schema
        self.conn.execute("DELETE FROM review_units WHERE run_id = ?", (run_id,))
        self.conn.execute("DELETE FROM review_runs WHERE run_id = ?", (run_id,))
        scored = [r[0] for r in self.conn.execute("SELECT DISTINCT attribute FROM scores WHERE run_id = ?", (run_id,))]
        targets = {name: schema.target_source(name) for name in scored if name in schema.targets}
        scopes = {name: schema.scope(stored) for name, stored in targets.items()}
        by_scope = {scope: [n for n in targets if scopes[n] == scope] for scope in ("image", "person")}
        selects, params = [], []
        for scope, grouped, target, score, tie in (
                ("image", 0, "i.path", "s.score", "s.item_id"),
                # SQLite takes the bare columns of a max() group from the row holding the maximum.
                ("person", 1, "coalesce(p.key, i.path)", "max(s.score)", "coalesce(i.person_id, -s.item_id)")):
            if by_scope[scope]:
                selects.append(
                    f"SELECT s.item_id, s.attribute, {target} AS target, s.given, s.suggested, {score} AS score,"
                    f" s.is_issue, {grouped} AS grouped, {tie} AS tie FROM scores s JOIN items i ON i.id = s.item_id"
                    " LEFT JOIN persons p ON p.id = i.person_id"
                    f" WHERE s.run_id = ? AND s.attribute IN ({', '.join('?' * len(by_scope[scope]))})"
                    + (" GROUP BY s.attribute, coalesce(i.person_id, -s.item_id)" if grouped else ""))
                params += [run_id, *by_scope[scope]]
        if selects:
            pairs = " WHEN ? THEN ?" * len(targets)
            self.conn.execute(
                "INSERT INTO review_units(run_id, rank, item_id, attribute, stored, scope, target, given, suggested,"
                " score, is_issue) SELECT ?, row_number() OVER (ORDER BY u.score DESC, u.grouped,"
                " CASE WHEN u.grouped THEN u.attribute END, u.tie, u.attribute) - 1, u.item_id, u.attribute,"
                f" CASE u.attribute{pairs} END, CASE u.attribute{pairs} END, u.target, u.given, u.suggested, u.score,"
                f" coalesce(u.is_issue, 0) FROM ({' UNION ALL '.join(selects)}) u",
                [run_id, *[v for pair in targets.items() for v in pair], *[v for pair in scopes.items() for v in pair],
                 *params])
        # Scores may hold class codes: name them (few distinct values; most runs already hold names).
        values: dict[str, set[str]] = {}
        renames: list[tuple[str, str, Any]] = []
        for attribute, value in self.conn.execute(
                "SELECT DISTINCT attribute, given FROM review_units WHERE run_id = ? AND given IS NOT NULL UNION"
                " SELECT DISTINCT attribute, suggested FROM review_units WHERE run_id = ? AND suggested IS NOT NULL",
                (run_id, run_id)):
            name = _class_name(schema, attribute, value)
            values.setdefault(attribute, set()).add(str(name))
            if name != value:
                renames.append((attribute, value, name))
        if renames:
            cases = " WHEN attribute = ? AND {0} = ? THEN ?" * len(renames)
            flat = [v for rename in renames for v in rename]
            self.conn.execute(f"UPDATE review_units SET given = CASE{cases.format('given')} ELSE given END,"
                              f" suggested = CASE{cases.format('suggested')} ELSE suggested END WHERE run_id = ?",
                              (*flat, *flat, run_id))
        order = [r[0] for r in self.conn.execute(
            "SELECT attribute FROM review_units WHERE run_id = ? GROUP BY attribute ORDER BY min(rank)", (run_id,))]
        n_units, n_flagged, max_score = self.conn.execute(
            "SELECT count(*), coalesce(sum(is_issue = 1), 0), max(score) FROM review_units WHERE run_id = ?",
            (run_id,)).fetchone()
        summary = {"n_units": n_units, "n_flagged": n_flagged, "attributes": order,
                   "classes": {a: sorted(values.get(a, ())) for a in order}, "max_score": max_score}
        self.conn.execute("INSERT INTO review_runs(run_id, n_units, summary, built_at) VALUES(?, ?, ?, ?)",
                          (run_id, n_units, json.dumps(summary), now()))

    def _ensure_review_units(self, run_id: int) -> None:
        """Build a run's review units if missing (score runs saved by a store before version 2)."""
        if self.conn.execute("SELECT 1 FROM review_runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            with self.transaction() as conn:
                if conn.execute("SELECT 1 FROM review_runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                    self._build_review_units(run_id)

    def review_summary(self, run_id: int) -> dict[str, Any]:
        """A score run's queue at a glance: ``n_units``, ``n_flagged``, ``attributes`` (scored names, in
        order of their first unit), ``classes`` (attribute -> sorted given and suggested values),
        ``max_score`` (None without units)."""
        self._ensure_review_units(int(run_id))
        row = self.conn.execute("SELECT summary FROM review_runs WHERE run_id = ?", (int(run_id),)).fetchone()
        return json.loads(row[0])

    def _review_where(self, run_id: int, *, attribute: str | None = None, given: str | None = None,
                      suggested: str | None = None, min_score: float | None = None, flagged_only: bool = False,
                      issue_kind: str | None = None, units: Sequence[str] | None = None,
                      exclude_units: Sequence[str] | None = None) -> tuple[str, list[Any]]:
        """WHERE clause over ``review_units q`` (and its parameters) for ``review_units``' filters."""
        clauses, params = ["q.run_id = ?"], [int(run_id)]
        for column, value in (("attribute", attribute), ("given", given), ("suggested", suggested)):
            if value:
                clauses.append(f"q.{column} = ?")
                params.append(str(value))
        if min_score is not None:
            clauses.append("q.score >= ?")
            params.append(float(min_score))
        if flagged_only:
            clauses.append("q.is_issue = 1")
        if issue_kind:
            clauses.append("q.item_id IN (SELECT item_id FROM data_issues" + ("" if issue_kind == "any" else
                                                                           " WHERE kind = ?") + ")")
            params += [] if issue_kind == "any" else [issue_kind]
        if units is not None:  # the targets first, so the lookup can use the target index
            listed = list(units)
            clauses.append("q.target IN (SELECT value FROM json_each(?))"
                           " AND q.target || '|' || q.stored IN (SELECT value FROM json_each(?))")
            params += [json.dumps([u.rpartition("|")[0] for u in listed]), json.dumps(listed)]
        if exclude_units is not None:
            clauses.append("q.target || '|' || q.stored NOT IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(exclude_units)))
        return " AND ".join(clauses), params

    def _review_count(self, run_id: int, extra: str = "", extra_params: Sequence[Any] = (), **filters: Any) -> int:
        """How many units match ``filters`` (and the SQL condition ``extra``). A long list of units to
        leave out (every unit reviewed so far) is subtracted rather than tested on every row, and a
        list of units to keep is looked up by target: both cost what the list costs, not the run."""
        excluded = filters.pop("exclude_units", None)
        if excluded is not None:
            kept = set(filters["units"]) if filters.get("units") is not None else None
            minus = [u for u in excluded if kept is None or u in kept]
            return (self._review_count(run_id, extra, extra_params, **filters)
                    - (self._review_count(run_id, extra, extra_params, **{**filters, "units": minus}) if minus else 0))
        where, params = self._review_where(run_id, **filters)
        hint = " INDEXED BY review_units_target" if filters.get("units") is not None else ""
        return int(self.conn.execute(f"SELECT count(*) FROM review_units q{hint} WHERE {where}{extra}",
                                     (*params, *extra_params)).fetchone()[0])

    def review_units(self, run_id: int, *, offset: int = 0, limit: int | None = None, count: bool = True,
                     **filters: Any) -> tuple[pd.DataFrame, int | None]:
        """One page of a score run's ranked review queue (most suspicious first) and how many units match.

        Filters (all optional, combined with AND): ``attribute`` (as scored, e.g. ``age_group``),
        ``given``, ``suggested`` (class names), ``min_score``, ``flagged_only``, ``issue_kind`` (the
        unit's image has a data issue of this kind, ``"any"`` for any), ``units`` / ``exclude_units``
        (``target|stored`` names to keep / leave out). Columns: ``key`` (``target|attribute``),
        ``unit`` (``target|stored``), ``target``, ``scope``, ``attribute``, ``stored``, ``item_id``,
        ``path``, ``person``, ``given``, ``suggested``, ``score``, ``is_issue``. ``limit=0`` only
        counts; ``count=False`` skips the count (None).
        """
        self._ensure_review_units(int(run_id))
        total = self._review_count(run_id, **filters) if count else None
        columns = ["key", "unit", "target", "scope", "attribute", "stored", "item_id", "path", "person", "given",
                   "suggested", "score", "is_issue"]
        if limit == 0:
            return pd.DataFrame(columns=columns), total
        where, params = self._review_where(run_id, **filters)
        hint = " INDEXED BY review_units_target" if filters.get("units") is not None else ""
        page = f" LIMIT {int(limit)} OFFSET {max(int(offset), 0)}" if limit is not None else ""
        frame = self._query(
            "SELECT q.target || '|' || q.attribute AS key, q.target || '|' || q.stored AS unit, q.target, q.scope,"
            " q.attribute, q.stored, q.item_id, i.path, p.key AS person, q.given, q.suggested, q.score, q.is_issue"
            f" FROM review_units q{hint} JOIN items i ON i.id = q.item_id LEFT JOIN persons p ON p.id = i.person_id"
            f" WHERE {where} ORDER BY q.rank{page}", params)
        return frame[columns], total

    def review_unit_position(self, run_id: int, key: str, **filters: Any) -> int | None:
        """Where the unit ``key`` (``target|attribute``) stands among the units matching ``filters``
        (0 = first, as ``review_units`` orders them); None when it does not match them."""
        target, _, attribute = str(key).rpartition("|")
        self._ensure_review_units(int(run_id))
        where, params = self._review_where(run_id, **filters)
        row = self.conn.execute("SELECT q.rank FROM review_units q INDEXED BY review_units_target"
                                f" WHERE {where} AND q.target = ? AND q.attribute = ?",
                                (*params, target, attribute)).fetchone()
        return None if row is None else self._review_count(run_id, " AND q.rank < ?", (row[0],), **filters)

    def score_detail(self, run_id: int, item_id: int, attribute: str) -> str | None:
        """The ``detail`` text of one score row (probabilities and the numbers behind the verdict)."""
        row = self.conn.execute("SELECT detail FROM scores WHERE run_id = ? AND item_id = ? AND attribute = ?",
                                (int(run_id), int(item_id), attribute)).fetchone()
        return row[0] if row else None

    def current_score_run(self) -> int | None:
        """The newest finished score run, or None."""
        row = self.conn.execute("SELECT id FROM runs WHERE kind = 'score' AND status = 'done'"
                                " ORDER BY id DESC LIMIT 1").fetchone()
        return int(row[0]) if row else None

    def save_data_issues(self, issues: pd.DataFrame, kinds: Sequence[str]) -> None:
        """Replace data issues of the given kinds. Columns: item_id, kind, detail, score."""
        with self.transaction() as conn:
            conn.executemany("DELETE FROM data_issues WHERE kind = ?", [(k,) for k in kinds])
            conn.executemany("INSERT INTO data_issues(item_id, kind, detail, score, created_at) VALUES(?, ?, ?, ?, ?)",
                             [(int(r.item_id), r.kind, str(r.detail), None if pd.isna(r.score) else float(r.score),
                               now()) for r in issues.itertuples(index=False)])

    def data_issues(self) -> pd.DataFrame:
        return self._query("SELECT d.id, d.item_id, i.path, d.kind, d.detail, d.score FROM data_issues d"
                           " JOIN items i ON i.id = d.item_id ORDER BY d.kind, d.score DESC")

    def data_issue_kinds(self) -> list[str]:
        """The kinds of data issue present, sorted (a filter's choices, without reading the issues)."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT kind FROM data_issues ORDER BY kind")]

    def last_ingest_id(self) -> int | None:
        """Id of the newest ingest, None before the first."""
        return self.conn.execute("SELECT max(id) FROM ingests").fetchone()[0]

    def data_checks_ingest(self) -> int | None:
        """The ingest whose items the data checks last ran on (``record_data_checks``), None if never."""
        value = self._meta("data_checks_ingest")
        return None if value is None else int(value)

    def record_data_checks(self, ingest_id: int) -> None:
        """Note that the data checks ran on the items of ingest ``ingest_id`` (read before they started)."""
        with self.transaction():
            self._set_meta("data_checks_ingest", str(int(ingest_id)))

    # ---- job lock ----------------------------------------------------------------------------------------------
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


def read_snapshot(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load a snapshot written by ``LabelStore.snapshot``: (labels with derived columns, metadata).

    The hash is verified: an edited snapshot file is refused.
    """
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    text = path.read_bytes().decode()
    schema = Schema.from_dict(meta["schema"])
    digest = hashlib.sha256((schema.to_json() + "\n" + text).encode()).hexdigest()
    if digest != meta["hash"]:
        raise StoreError(f"{path}: content does not match its hash {meta['hash'][:16]} (file edited?)")
    labels = pd.read_csv(io.StringIO(text), dtype={"path": str, "person": str, "hash": str},
                         keep_default_na=False)
    return schema.add_derived(labels), meta


def _atomic_write(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in LabelStore._RUN_JSON:
        if out.get(key):
            out[key] = json.loads(out[key])
    return out


def _canonical(value: Any) -> str:
    """Text form of a label for comparisons (45, 45.0 and "45" are the same age)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(_sql_value(value))


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (trigger bodies keep their inner semicolons)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return [s for s in statements if s]


def _class_name(schema: Schema, target: str, value: Any) -> Any:
    """A class code (0, "2", 2.0) -> its name; names and integer-attribute values pass through."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    try:
        classes = schema.target_classes(target)
    except SchemaError:
        return value
    if str(value) in classes:
        return str(value)
    try:
        return classes[int(float(value))]
    except (ValueError, IndexError):
        return value


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _sql_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value
