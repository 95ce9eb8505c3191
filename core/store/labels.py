"""Reading labels: items, persons, current/original labels and the dashboard's aggregates.

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.store.base import StoreError, count_sql, quote
from core.store.dataset import DatasetMixin

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


class LabelsMixin(DatasetMixin):
    """Reading labels: items, persons, current/original labels and the dashboard's aggregates."""

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

    def resolve_target(self, target: str | int, attribute: str) -> tuple[str, list[int], str]:
        """(target kind, item ids, canonical target text) of a labelled image (path or item id) or a person (key) for
        ``attribute``: ``("person", the person's labelled item ids, key)`` for a person-scope attribute (an image
        names its person), else ``("image", [item id], path)``. Raises ``StoreError`` for an unknown target."""
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

    def label_of(self, target: str | int, attribute: str) -> Any:
        """Current value of one attribute for an image (path or item id) or a person (key)."""
        kind, ids, _ = self.resolve_target(target, attribute)
        values = {r[0] for r in self.conn.execute(
            f"SELECT DISTINCT {quote(attribute)} FROM current WHERE item_id IN ({','.join('?' * len(ids))})", ids)}
        if len(values) != 1:
            raise StoreError(f"{target}: its images disagree on {attribute}: {sorted(map(str, values))}")
        return values.pop()

    def count_by(self, columns: Sequence[str], *, original: bool = False) -> pd.DataFrame:
        """Label counts grouped by attributes (SQL GROUP BY): columns + ``images`` + ``persons``."""
        return self._query(count_sql(columns, "original" if original else "current"))

    def changed_counts(self) -> dict[str, int]:
        """Per stored attribute, how many labelled images differ from their original label now."""
        names = self.schema.names
        sums = ", ".join(f"coalesce(sum(c.{quote(a)} IS NOT o.{quote(a)}), 0)" for a in names)
        # Only images some correction touched can differ: the query reads those, not the whole table.
        row = self.conn.execute(f"{_TOUCHED} SELECT {sums} FROM current c JOIN original o ON o.item_id = c.item_id"
                                " WHERE c.item_id IN (SELECT id FROM touched)").fetchone()
        return {name: int(value) for name, value in zip(names, row)}

    def label_counts(self, columns: Sequence[str], *, original: bool = False) -> pd.DataFrame:
        """``count_by(columns, original=...)``, at a cost that grows with the corrections, not the dataset.

        Original counts are saved with each ingest (``ingest_aggregates``); current counts are those
        minus the original rows plus the current rows of the images of every person a correction
        touched (persons are counted per person, so the difference is exact).
        """
        columns = list(columns)
        base = self.ingest_aggregate(f"count_by:{','.join(columns)}", count_sql(columns, "original"))
        if original or not self.conn.execute("SELECT 1 FROM corrections LIMIT 1").fetchone():
            return base
        parts = [base]
        for table, sign in (("original", -1), ("current", 1)):
            part = self._query(_TOUCHED + count_sql(columns, table, "WHERE c.item_id IN (SELECT id FROM touched)"))
            parts.append(part.assign(images=part["images"] * sign, persons=part["persons"] * sign))
        both = pd.concat([p for p in parts if len(p)] or [base], ignore_index=True)
        summed = both.groupby(columns, dropna=False, sort=False, as_index=False)[["images", "persons"]].sum()
        summed = summed[summed["images"] != 0].astype({"images": "int64", "persons": "int64"})
        return summed.sort_values(columns, na_position="first", kind="stable").reset_index(drop=True)

    def correction_counts(self) -> pd.DataFrame:
        """Per stored attribute with log entries: ``corrections`` (not reverts) and ``reverts`` logged."""
        return self._query("SELECT attribute, coalesce(sum(source != 'revert'), 0) AS corrections,"
                           " coalesce(sum(source = 'revert'), 0) AS reverts FROM corrections GROUP BY attribute")

    def select_items(self, *, split: str | None = None, person: str | None = None, path_contains: str | None = None,
                     labels: dict[str, Any] | None = None, ranges: dict[str, tuple[int, int]] | None = None,
                     original: bool = False, corrected: bool | str | None = None, issue_kind: str | None = None,
                     offset: int = 0, limit: int | None = 50, person_prefix: str | None = None,
                     path_is: str | None = None, path_before: str | None = None,
                     item_ids: Sequence[int] | None = None) -> tuple[pd.DataFrame, int]:
        """One page of items matching every filter (ordered by path) and how many match in total.

        ``labels`` maps a stored attribute or a binned target (``age_group``: class name or code) to
        one value or a list of values; ``ranges`` maps an integer attribute to an inclusive
        (low, high). Label filters read the current labels, or the ingested ones with
        ``original=True`` (so a chart of original labels opens exactly its images). ``person`` is a
        person key; ``path_contains`` a case-insensitive substring; ``corrected`` True/False for images
        with/without any changed label, or an attribute name for images where that one changed;
        ``issue_kind`` a data-issue kind (``"any"`` for any); ``person_prefix`` person keys starting with it
        (``000050`` finds ``000050_female_Asian_45``); ``path_is`` one exact path; ``path_before`` paths
        sorting before it (so ``limit=0`` counts an image's position); ``item_ids`` only these items (a Map selection). Rows: item_id, path, person, split, hash,
        width, height, the current <attributes> (None for unlabelled items), corrected (0/1) and
        ``<attribute>_original`` (the ingested labels).
        Only the requested page is read.
        """
        schema = self.schema
        source = "o" if original else "c"
        clauses, params = _label_clauses(schema, source, labels or {}, dict(ranges or {}))
        simple = (("i.split = ?", split or None), ("p.key = ?", person or None), ("i.path = ?", path_is),
                  ("i.path < ?", path_before), ("instr(lower(i.path), ?) > 0", (path_contains or "").lower() or None),
                  ("i.id IN (SELECT value FROM json_each(?))",
                   None if item_ids is None else json.dumps([int(i) for i in item_ids])))
        for clause, value in simple:
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if person_prefix:
            clauses.append("substr(p.key, 1, ?) = ?")
            params += [len(person_prefix), person_prefix]
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


def _label_clauses(schema: Any, source: str, labels: dict[str, Any],
                   ranges: dict[str, tuple[int, int]]) -> tuple[list[str], list[Any]]:
    """``select_items``' label and range filters on the ``source`` table alias (``c`` current, ``o`` original): a
    bin is an inclusive range of its stored attribute (``Binned.bounds``); other attributes match their values."""
    clauses: list[str] = []
    params: list[Any] = []
    for name, wanted in labels.items():
        binned = next((b for b in schema.binned if b.name == name), None)
        values = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        if binned is not None:
            parts = []
            for value in values:
                low, high = binned.bounds(value)
                parts.append(f"{source}.{quote(binned.source)} BETWEEN ? AND ?")
                params += [-(2**62) if low is None else low, 2**62 if high is None else high]
            clauses.append("(" + " OR ".join(parts or ["0"]) + ")")
            continue
        attribute = schema.attribute(name)
        clauses.append(f"{source}.{quote(name)} IN ({', '.join('?' * len(values))})" if values else "0")
        params += [attribute.parse(v) for v in values]
    for name, (low, high) in ranges.items():
        clauses.append(f"{source}.{quote(schema.attribute(name).name)} BETWEEN ? AND ?")
        params += [int(low), int(high)]
    return clauses, params
