"""Score runs' per-item scores, the ranked review queue (paged in SQL) and data issues.

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.store.base import RANK_OF_SCORE, now, quote
from core.store.dataset import DatasetMixin


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


class ScoresMixin(DatasetMixin):
    """Score runs' per-item scores, the ranked review queue (paged in SQL) and data issues."""

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

    def _build_review_units(self, run_id: int) -> None:
        """(Re)build a score run's review units inside the caller's transaction.

        One unit per scored image for image-scope targets and one per person for person-scope ones
        (``age_group`` is decided on ``age``, a person attribute), represented by the person's most
        suspicious image; attributes that are not targets of the schema are left out. Class codes in
        the scores (``0``, ``"2"``) become class names. ``rank`` follows the ranking ``core.scoring``
        computed (``detail["rank"]`` of the scores, the unit's place in ``review_queue``); scores saved
        without one are ordered by score, highest first; ties keep image units before person units,
        then item / person order.
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
                    f" s.is_issue, {grouped} AS grouped, {tie} AS tie, {RANK_OF_SCORE} AS ranked"
                    " FROM scores s JOIN items i ON i.id = s.item_id"
                    " LEFT JOIN persons p ON p.id = i.person_id"
                    f" WHERE s.run_id = ? AND s.attribute IN ({', '.join('?' * len(by_scope[scope]))})"
                    + (" GROUP BY s.attribute, coalesce(i.person_id, -s.item_id)" if grouped else ""))
                params += [run_id, *by_scope[scope]]
        if selects:
            pairs = " WHEN ? THEN ?" * len(targets)
            self.conn.execute(
                "INSERT INTO review_units(run_id, rank, item_id, attribute, stored, scope, target, given, suggested,"
                " score, is_issue) SELECT ?, row_number() OVER (ORDER BY u.ranked IS NULL, u.ranked, u.score DESC, u.grouped,"
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
            name = schema.class_name(attribute, value)
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
        clauses: list[str] = ["q.run_id = ?"]
        params: list[Any] = [int(run_id)]
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

    def unit_evidence(self, run_id: int, item_id: int, attribute: str, stored: str, target: str,
                      scope: str) -> pd.DataFrame:
        """Everything the Review page shows of one unit, in one query: the photos of the unit (a person's
        images for a person-scope unit; an image unit's image with the other images of its person), each
        with its current labels, ``stored_value`` (the unit's stored attribute, e.g. ``age``) and its
        score row's ``detail``, ``given``, ``suggested``, ``is_issue`` for ``attribute`` in run ``run_id``
        (None where unscored); ``review_id``: the label's newest verdict id (0 for none). Ordered by path."""
        names = self.schema.names
        where = ("i.person_id = (SELECT id FROM persons WHERE key = ?)" if scope == "person" else
                 "(i.id = ? OR i.person_id = (SELECT person_id FROM items WHERE id = ?))")
        params: list[Any] = [str(target)] if scope == "person" else [int(item_id), int(item_id)]
        return self._query(
            "SELECT i.id AS item_id, i.path, i.hash, p.key AS person, i.split,"
            f" {', '.join('c.' + quote(a) for a in names)}, c.{quote(stored)} AS stored_value, s.detail,"
            " s.given, s.suggested, s.is_issue,"
            " (SELECT coalesce(max(r.id), 0) FROM reviews r WHERE r.target = ? AND r.attribute = ?) AS review_id"
            " FROM items i LEFT JOIN persons p ON p.id = i.person_id LEFT JOIN current c ON c.item_id = i.id"
            " LEFT JOIN scores s ON s.run_id = ? AND s.item_id = i.id AND s.attribute = ?"
            f" WHERE {where} ORDER BY i.path", [str(target), stored, int(run_id), attribute, *params])

    def score_detail(self, run_id: int, item_id: int, attribute: str) -> str | None:
        """The ``detail`` text of one score row (probabilities and the numbers behind the verdict)."""
        row = self.conn.execute("SELECT detail FROM scores WHERE run_id = ? AND item_id = ? AND attribute = ?",
                                (int(run_id), int(item_id), attribute)).fetchone()
        return row[0] if row else None

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
