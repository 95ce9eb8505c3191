"""Corrections (append-only log, conflicts refused), reverts, review verdicts and CSV imports.

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import numbers
from typing import Any

import pandas as pd

from core.schema import SchemaError
from core.store.base import ConflictError, StoreBase, StoreError, now, quote


class CorrectionsMixin(StoreBase):
    """Corrections (append-only log, conflicts refused), reverts, review verdicts and CSV imports."""

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
                reverts: int | None = None, bulk: int | None = None) -> int:
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
                " source, created_at, batch, reverts, bulk) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, canonical, attribute, str(current), str(new_value), str(annotator).strip(), reason, source,
                 now(), batch, reverts, bulk)).lastrowid
            conn.execute(f"UPDATE current SET {quote(attribute)} = ? WHERE item_id IN ({','.join('?' * len(ids))})",
                         (new_value, *ids))
        return int(correction_id)

    def revert(self, correction_id: int, *, annotator: str, reason: str = "", bulk: int | None = None) -> int:
        """Undo a correction by logging its inverse; refused if the value changed again since."""
        with self.transaction():
            row = self.conn.execute("SELECT * FROM corrections WHERE id = ?", (int(correction_id),)).fetchone()
            if row is None:
                raise StoreError(f"no correction #{correction_id}")
            if self.conn.execute("SELECT 1 FROM corrections WHERE reverts = ?", (row["id"],)).fetchone():
                raise StoreError(f"correction #{row['id']} is already reverted")
            return self.correct(row["target"], row["attribute"], row["old_value"], expected=row["new_value"],
                                annotator=annotator, reason=reason or f"revert #{row['id']}", source="revert",
                                reverts=int(row["id"]), bulk=bulk)

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

    def mark_reviewed(self, target: str | int, attribute: str, *, annotator: str, verdict: str = "correct",
                      score_run: int | None = None, note: str = "", bulk: int | None = None) -> int:
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
                "INSERT INTO reviews(target_kind, target, attribute, verdict, annotator, score_run, note, created_at,"
                " bulk) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, canonical, attribute, verdict, str(annotator).strip(), score_run, note, now(), bulk)).lastrowid)

    def reviews(self) -> pd.DataFrame:
        return self._query("SELECT * FROM reviews ORDER BY id DESC")

    def problems(self) -> pd.DataFrame:
        return self._query("SELECT id, path, reason, kind FROM problems ORDER BY kind, path")

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
            lines = frame.attrs.get("lines") or range(2, len(frame) + 2)  # physical lines (read_table)
            for line, row in zip(lines, frame.to_dict("records")):
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
