"""The dataset: schema, root and format, and ingest (items, persons, original labels).

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.schema import Schema
from core.store.base import IngestReport, StoreBase, StoreError, _sql_value, count_sql, now, quote


def _canonical(value: Any) -> str:
    """Text form of a label for comparisons (45, 45.0 and "45" are the same age)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(_sql_value(value))


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


class DatasetMixin(StoreBase):
    """The dataset: schema, root and format, and ingest (items, persons, original labels)."""

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
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    def ingest(self, *, root: Path, schema: Schema, dataset_format: str, persons: pd.DataFrame,
               items: pd.DataFrame, problems: Sequence[tuple[str, str]]) -> IngestReport:
        """Register a dataset scan in one transaction; idempotent, never touches corrections.

        persons: columns ``person`` (unique key, e.g. the folder name), ``source_id``, ``info`` (JSON text).
        items:   columns ``path`` (relative to root, forward slashes), ``person``, ``split``
                 (``train`` labelled / ``eval`` unlabelled), ``width``, ``height``, ``bytes``, ``hash``,
                 ``source_id``, plus one column per schema attribute (stored values; NaN for eval); optional
                 ``meta`` (JSON object text: the item's metadata, e.g. a CSV's extra columns).
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
            ingest_id = int(conn.execute("INSERT INTO ingests(root, format, created_at) VALUES(?, ?, ?)",
                                         (str(root), dataset_format, now())).lastrowid or 0)
            conn.executemany(
                "INSERT INTO persons(key, source_id, info) VALUES(?, ?, ?) ON CONFLICT(key) DO UPDATE"
                " SET source_id = excluded.source_id, info = excluded.info",
                persons[["person", "source_id", "info"]].itertuples(index=False, name=None))
            person_ids = dict(conn.execute("SELECT key, id FROM persons").fetchall())
            known = dict(conn.execute("SELECT path, id FROM items").fetchall())
            rows = items.assign(person_id=items["person"].map(person_ids))
            new = rows[~rows["path"].isin(known)]
            has_meta = "meta" in rows.columns  # JSON object per item (store v4), or None
            conn.executemany(
                "INSERT INTO items(path, person_id, split, width, height, bytes, hash, source_id, meta)"
                " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.path, _int(r.person_id), r.split, _int(r.width), _int(r.height), _int(r.bytes), r.hash,
                  r.source_id, r.meta if has_meta else None) for r in new.itertuples(index=False)])
            if has_meta:  # metadata is not a label: a re-ingest refreshes it
                conn.executemany("UPDATE items SET meta = ? WHERE path = ?",
                                 [(r.meta, r.path) for r in rows[rows["path"].isin(known)].itertuples(index=False)])
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
            self._save_ingest_aggregates(ingest_id)
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

    def problems(self) -> pd.DataFrame:
        return self._query("SELECT id, path, reason, kind FROM problems ORDER BY kind, path")

    def person_image_counts(self) -> pd.DataFrame:
        """How many persons have n images: ``images`` (n, 0 for a person without images), ``persons``.
        Saved with each ingest (only an ingest changes it)."""
        return self.ingest_aggregate(
            "person_image_counts", "SELECT n AS images, count(*) AS persons FROM (SELECT count(i.id) AS n"
            " FROM persons p LEFT JOIN items i ON i.person_id = p.id GROUP BY p.id) GROUP BY n ORDER BY n")

    def count_items(self, split: str | None = None) -> int:
        """Number of items (of one split); saved with each ingest."""
        if split is None:
            frame = self.ingest_aggregate("count_items", "SELECT count(*) AS n FROM items")
        else:
            frame = self.ingest_aggregate(f"count_items:{split}", "SELECT count(*) AS n FROM items WHERE split = ?",
                                           (split,))
        return int(frame["n"].iloc[0])

    def ingest_aggregate(self, name: str, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
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
                self.ingest_aggregate(f"count_by:{','.join(columns)}", count_sql(columns, "original"))
        self.person_image_counts()
        self.count_items()
        self.count_items("eval")
