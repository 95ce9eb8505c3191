"""Bulk steps: many units decided in one reviewed step (a pattern applied), and its undo as one logged revert;
item metadata (store v4).

Part of the ``core.store`` package: all SQL of the project lives in this package."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.schema import SchemaError
from core.store.base import ConflictError, StoreError, now
from core.store.corrections import CorrectionsMixin


@dataclass(frozen=True)
class BulkResult:
    """What a bulk step wrote: its id, the corrections and verdicts (``written``: target, attribute, action,
    record id) and the units refused (``refused``: target, attribute, reason), each named."""

    bulk_id: int
    written: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_corrected(self) -> int:
        return sum(1 for w in self.written if w["action"] in ("corrected", "reverted"))

    @property
    def n_kept(self) -> int:
        return sum(1 for w in self.written if w["action"] in ("kept", "reopened"))


class BulksMixin(CorrectionsMixin):
    """Bulk steps over many units (one transaction, one bulk id) and item metadata."""

    def item_meta(self) -> pd.DataFrame:
        """Item metadata: ``item_id``, ``path`` and one column per metadata key (text; missing = NA)."""
        frame = self._query("SELECT id AS item_id, path, meta FROM items ORDER BY id")
        parsed = [json.loads(m) if isinstance(m, str) and m else {} for m in frame["meta"]]
        extra = pd.DataFrame([{str(k): (None if v is None else str(v)) for k, v in d.items()} for d in parsed],
                             index=frame.index, dtype=object)
        return pd.concat([frame[["item_id", "path"]], extra], axis=1)

    def apply_bulk(self, decisions: pd.DataFrame, *, annotator: str, reason: str, pattern: str = "",
                   source: str = "pattern", kind: str = "pattern") -> BulkResult:
        """Decide many units in one transaction under one bulk id.

        ``decisions``: ``target``, ``attribute`` (stored), ``expected`` (the value the reviewer was shown),
        ``value`` (the correction; None or NA = keep: the label is right, a verdict ``correct``). A unit whose
        label changed meanwhile, or that a correction cannot apply to, is refused and named; the rest apply.
        """
        if not str(annotator).strip():
            raise StoreError("an annotator name is required")
        written: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        with self.transaction() as conn:
            bulk_id = int(conn.execute(
                "INSERT INTO bulks(kind, pattern, annotator, reason, created_at) VALUES(?, ?, ?, ?, ?)",
                (kind, pattern, str(annotator).strip(), reason, now())).lastrowid or 0)
            for row in decisions.to_dict("records"):
                target, attribute, expected = row["target"], str(row["attribute"]), row.get("expected")
                value = row.get("value")
                keep = value is None or (isinstance(value, float) and pd.isna(value))
                try:
                    if keep:  # mark_reviewed refuses (ConflictError) a label that is no longer ``expected``
                        record = self.mark_reviewed(target, attribute, annotator=annotator, verdict="correct",
                                                    note=reason, expected=expected, bulk=bulk_id)
                        action = "kept"
                    else:
                        record = self.correct(target, attribute, value, expected=expected, annotator=annotator,
                                              reason=reason, source=source, bulk=bulk_id)
                        action = "corrected"
                    written.append({"target": str(target), "attribute": attribute, "action": action,
                                    "record_id": int(record)})
                except ConflictError as error:
                    refused.append({"target": str(target), "attribute": attribute, "reason": f"conflict: {error}"})
                except (StoreError, SchemaError) as error:
                    refused.append({"target": str(target), "attribute": attribute, "reason": str(error)})
            result = BulkResult(bulk_id, written, refused)
            conn.execute("UPDATE bulks SET n_corrected = ?, n_kept = ?, n_refused = ?, refused = ? WHERE id = ?",
                         (result.n_corrected, result.n_kept, len(refused), json.dumps(refused), bulk_id))
        return result

    def revert_bulk(self, bulk_id: int, *, annotator: str, reason: str = "") -> BulkResult:
        """Undo a bulk step as one logged revert (a bulk of kind ``revert``): each of its corrections reverted,
        each verdict reopened, in one transaction. A correction changed again since is refused and named."""
        if not str(annotator).strip():
            raise StoreError("an annotator name is required")
        written: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        with self.transaction() as conn:
            row = conn.execute("SELECT * FROM bulks WHERE id = ?", (int(bulk_id),)).fetchone()
            if row is None:
                raise StoreError(f"no bulk step #{bulk_id}")
            if row["kind"] == "revert":
                raise StoreError(f"bulk step #{bulk_id} is itself an undo")
            if conn.execute("SELECT 1 FROM bulks WHERE reverts = ?", (int(bulk_id),)).fetchone():
                raise StoreError(f"bulk step #{bulk_id} is already undone")
            why = reason or f"undo bulk #{bulk_id}"
            undo_id = int(conn.execute(
                "INSERT INTO bulks(kind, pattern, annotator, reason, created_at, reverts) VALUES('revert', ?, ?, ?, ?, ?)",
                (row["pattern"], str(annotator).strip(), why, now(), int(bulk_id))).lastrowid or 0)
            corrections = conn.execute("SELECT id, target, attribute FROM corrections WHERE bulk = ? ORDER BY id",
                                       (int(bulk_id),)).fetchall()
            for c in corrections:
                try:
                    record = self.revert(int(c["id"]), annotator=annotator, reason=why, bulk=undo_id)
                    written.append({"target": c["target"], "attribute": c["attribute"], "action": "reverted",
                                    "record_id": int(record)})
                except StoreError as error:
                    refused.append({"target": c["target"], "attribute": c["attribute"], "reason": str(error)})
            for v in conn.execute("SELECT id, target, attribute FROM reviews WHERE bulk = ? ORDER BY id",
                                  (int(bulk_id),)).fetchall():
                record = self.mark_reviewed(v["target"], v["attribute"], annotator=annotator, verdict="reopen",
                                            note=why, bulk=undo_id)
                written.append({"target": v["target"], "attribute": v["attribute"], "action": "reopened",
                                "record_id": int(record)})
            result = BulkResult(undo_id, written, refused)
            conn.execute("UPDATE bulks SET n_corrected = ?, n_kept = ?, n_refused = ?, refused = ? WHERE id = ?",
                         (result.n_corrected, result.n_kept, len(refused), json.dumps(refused), undo_id))
        return result

    def bulks(self) -> pd.DataFrame:
        """Bulk steps, newest first, with ``reverted_by`` (the undo's id) where one exists."""
        return self._query("SELECT b.*, (SELECT r.id FROM bulks r WHERE r.reverts = b.id) AS reverted_by"
                           " FROM bulks b ORDER BY b.id DESC")
