"""Corrections (append-only log, conflicts refused), reverts, review verdicts and CSV imports.

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import json
import numbers
from typing import Any

import pandas as pd

from core.schema import SchemaError
from core.store.base import ConflictError, StoreError, now, quote
from core.store.labels import LabelsMixin


def _import_target(raw_target: str, person_scope: bool, persons: set[str], by_source: dict[str, list[str]],
                   paths: set[str], stems: dict[str, list[str]]) -> str:
    """The store target an import row names: a person key (or a person's unique source id) for a person-scope
    attribute, else an image path (or its unique path without extension, also as ``person/file``)."""
    if person_scope:
        if raw_target in persons:
            return raw_target
        if raw_target in by_source and len(by_source[raw_target]) == 1:
            return by_source[raw_target][0]
        if raw_target in by_source:
            raise StoreError(f"id {raw_target!r} names {len(by_source[raw_target])} people "
                             f"({', '.join(by_source[raw_target])}); use the folder name")
        raise StoreError(f"unknown person {raw_target!r}")
    key = raw_target.rsplit(".", 1)[0] if raw_target not in paths else None
    if raw_target in paths:
        return raw_target
    if key in stems and len(stems[key]) == 1:
        return stems[key][0]
    raise StoreError(f"unknown image {raw_target!r}")


class CorrectionsMixin(LabelsMixin):
    """Corrections (append-only log, conflicts refused), reverts, review verdicts and CSV imports."""

    def correct(self, target: str | int, attribute: str, value: Any, *, expected: Any, annotator: str,
                reason: str = "", source: str = "review", batch: str | None = None,
                reverts: int | None = None, tab: str | None = None, score_run: int | None = None,
                seen_review: int | None = None, bulk: int | None = None) -> int:
        """Set one attribute of an image (path/id) or a person (key); returns the correction id.

        ``expected`` is the value the caller saw; if the current value differs, ``ConflictError``
        is raised and nothing is written. Person-scope attributes change all of the person's images
        in the same transaction. ``seen_review`` (optional): the id of the label's newest verdict the
        caller saw (0 for none); a newer verdict (someone decided meanwhile) is a conflict too. ``tab``
        names the browser tab and ``score_run`` the score run the correction was made under.
        """
        attr = self.schema.attribute(attribute)
        new_value = attr.parse(value)
        expected_value = attr.parse(expected) if expected is not None else None
        if not str(annotator).strip():
            raise StoreError("an annotator name is required")
        with self.transaction() as conn:
            target = int(target) if isinstance(target, numbers.Integral) else target
            kind, ids, canonical = self.resolve_target(target, attribute)
            current = self.label_of(canonical if kind == "person" else ids[0], attribute)
            if expected_value is not None and str(current) != str(expected_value):
                raise ConflictError(f"{canonical}: {attribute} is now {current!r}, not {expected_value!r}"
                                    " (someone changed it meanwhile); reload and decide again")
            if seen_review is not None:
                self._check_seen_review(canonical, attribute, seen_review)
            if str(current) == str(new_value):
                raise StoreError(f"{canonical}: {attribute} is already {new_value!r}")
            correction_id = int(conn.execute(
                "INSERT INTO corrections(target_kind, target, attribute, old_value, new_value, annotator, reason,"
                " source, created_at, batch, reverts, tab, score_run, bulk)"
                " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, canonical, attribute, str(current), str(new_value), str(annotator).strip(), reason, source,
                 now(), batch, reverts, tab, score_run, bulk)).lastrowid or 0)
            conn.execute(f"UPDATE current SET {quote(attribute)} = ? WHERE item_id IN ({','.join('?' * len(ids))})",
                         (new_value, *ids))
        return correction_id

    def revert(self, correction_id: int, *, annotator: str, reason: str = "", tab: str | None = None,
               bulk: int | None = None) -> int:
        """Undo a correction by logging its inverse; refused if the value changed again since. ``tab``: the
        browser tab that undid it (the dashboard's undo)."""
        with self.transaction():
            row = self.conn.execute("SELECT * FROM corrections WHERE id = ?", (int(correction_id),)).fetchone()
            if row is None:
                raise StoreError(f"no correction #{correction_id}")
            if self.conn.execute("SELECT 1 FROM corrections WHERE reverts = ?", (row["id"],)).fetchone():
                raise StoreError(f"correction #{row['id']} is already reverted")
            return self.correct(row["target"], row["attribute"], row["old_value"], expected=row["new_value"],
                                annotator=annotator, reason=reason or f"revert #{row['id']}", source="revert",
                                reverts=int(row["id"]), tab=tab, bulk=bulk)

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
                      score_run: int | None = None, note: str = "", expected: Any = None, tab: str | None = None,
                      seen_review: int | None = None, bulk: int | None = None) -> int:
        """Record a verdict (``correct`` = label checked and right, ``skip``) so items can leave a queue.

        The verdict belongs to the label it judged (target, attribute and its value now, kept in
        ``value``): it stands, through later score runs, while the label keeps that value. ``expected``
        (optional) is the value the caller saw: a different current value is a ``ConflictError``, and
        so is a verdict newer than ``seen_review`` (the label's newest verdict id the caller saw, 0 for
        none). ``reopen`` withdraws the earlier verdicts on the target (the dashboard's undo of a
        verdict): the reviews table stays append-only and the newest verdict is the one that counts.
        """
        if verdict not in ("correct", "skip", "reopen"):
            raise StoreError(f"unknown verdict {verdict!r}")
        if not str(annotator).strip():
            raise StoreError("an annotator name is required")
        with self.transaction() as conn:
            kind, _, canonical = self.resolve_target(target, attribute)
            current = self.label_of(canonical, attribute)
            if expected is not None and str(current) != str(self.schema.attribute(attribute).parse(expected)):
                raise ConflictError(f"{canonical}: {attribute} is now {current!r}, not {expected!r}"
                                    " (someone changed it meanwhile); look again")
            if seen_review is not None:
                self._check_seen_review(canonical, attribute, seen_review)
            return int(conn.execute(
                "INSERT INTO reviews(target_kind, target, attribute, verdict, annotator, score_run, note, created_at,"
                " value, tab, bulk) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, canonical, attribute, verdict, str(annotator).strip(), score_run, note, now(),
                 None if current is None else str(current), tab, bulk)).lastrowid or 0)

    def _check_seen_review(self, target: str, attribute: str, seen: int) -> None:
        """``ConflictError`` when the label has a verdict newer than ``seen`` (someone decided meanwhile)."""
        row = self.conn.execute("SELECT id, verdict, annotator FROM reviews WHERE target = ? AND attribute = ?"
                                " ORDER BY id DESC LIMIT 1", (target, attribute)).fetchone()
        if row is not None and int(row["id"]) > int(seen):
            said = {"correct": "marked it correct", "skip": "skipped it", "reopen": "reopened it"}[row["verdict"]]
            raise ConflictError(f"{target}: {attribute}: {row['annotator']} {said} meanwhile (verdict"
                                f" #{row['id']}); look again")

    def reviews(self) -> pd.DataFrame:
        return self._query("SELECT * FROM reviews ORDER BY id DESC")

    def newest_review(self, target: str, attribute: str) -> int:
        """Id of the newest verdict on a label (0 for none): what ``seen_review`` compares against."""
        row = self.conn.execute("SELECT max(id) FROM reviews WHERE target = ? AND attribute = ?",
                                (str(target), attribute)).fetchone()
        return int(row[0] or 0)

    def decisions(self, *, units: list[str] | None = None) -> pd.DataFrame:
        """The review decisions that still stand, one row per label (target, stored attribute).

        A decision belongs to the label it judged, not to a score run, so it carries over to later
        runs while the label is unchanged: ``corrected`` when the label's newest correction is not a
        revert and the label still has the value it set; else ``reviewed`` ("label is correct") or
        ``skipped`` when its newest verdict is one and the label still has the value it judged (a
        verdict from before store version 6, without a value: while no correction came after it).
        ``units`` (``target|attribute`` names) limits the answer to those labels. Columns: ``target``,
        ``attribute``, ``status``, ``annotator``, ``score_run`` (the run it was made under, None when
        none), ``value``, ``created_at``, ``kind`` (correction | verdict), ``id``, ``review_id``
        (the label's newest verdict id, 0 for none).
        """
        names = self.schema.names
        cases = "".join(f" WHEN '{a}' THEN c.{quote(a)}" for a in names)
        now_value = (
            "CASE x.target_kind WHEN 'person' THEN (SELECT CAST(CASE x.attribute" + cases + " END AS TEXT)"
            " FROM persons p JOIN items i ON i.person_id = p.id JOIN current c ON c.item_id = i.id"
            " WHERE p.key = x.target LIMIT 1) ELSE (SELECT CAST(CASE x.attribute" + cases + " END AS TEXT)"
            " FROM items i JOIN current c ON c.item_id = i.id WHERE i.path = x.target) END")
        only, params = "", []
        if units is not None:
            only = (" AND x.target IN (SELECT value FROM json_each(?))"
                    " AND x.target || '|' || x.attribute IN (SELECT value FROM json_each(?))")
        frames = []
        for table, fields in (
                ("corrections", "x.id, x.target, x.attribute, x.annotator, x.score_run, x.new_value AS value,"
                                " x.created_at, x.source = 'revert' AS withdrawn, 'correction' AS kind"),
                ("reviews", "x.id, x.target, x.attribute, x.annotator, x.score_run, x.value, x.created_at,"
                            " x.verdict = 'reopen' AS withdrawn, x.verdict AS kind")):
            query = (f"SELECT {fields}, {now_value} AS now_value FROM {table} x"
                     f" WHERE x.id = (SELECT max(y.id) FROM {table} y WHERE y.target = x.target"
                     f" AND y.attribute = x.attribute){only}")
            if units is not None:
                listed = list(units)
                params = [json.dumps([u.rpartition("|")[0] for u in listed]), json.dumps(listed)]
            frames.append(self._query(query, params))
        fixes, verdicts = frames
        columns = ["target", "attribute", "status", "annotator", "score_run", "value", "created_at", "kind", "id",
                   "review_id"]
        newest_review = dict(zip(verdicts["target"] + "|" + verdicts["attribute"], verdicts["id"])) if len(verdicts) else {}
        fixes = fixes[(fixes["withdrawn"] == 0) & (fixes["value"] == fixes["now_value"])].assign(
            status="corrected", kind="correction")
        last_fix = self._query("SELECT target, attribute, max(created_at) AS fixed_at FROM corrections"
                               " GROUP BY target, attribute") if len(verdicts) else pd.DataFrame()
        if len(verdicts):
            verdicts = verdicts[verdicts["withdrawn"] == 0]
            verdicts = verdicts.merge(last_fix, on=["target", "attribute"], how="left")
            known = verdicts["value"].notna()
            stands = (known & (verdicts["value"] == verdicts["now_value"])) | (
                ~known & (verdicts["fixed_at"].isna() | (verdicts["fixed_at"] < verdicts["created_at"])))
            verdicts = verdicts[stands].assign(status=verdicts["kind"].map({"correct": "reviewed", "skip": "skipped"}),
                                               kind="verdict")
        both = pd.concat([f for f in (fixes, verdicts) if len(f)], ignore_index=True) if len(fixes) or len(verdicts) \
            else pd.DataFrame(columns=columns)
        both = both.drop_duplicates(["target", "attribute"], keep="first")  # a standing correction comes first
        both["review_id"] = [int(newest_review.get(f"{t}|{a}", 0)) for t, a in zip(both["target"], both["attribute"])]
        return both[columns].reset_index(drop=True)

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
                    target = _import_target(str(row["target"]).strip(), attr.scope == "person", persons, by_source,
                                            paths, stems)
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
