"""Patterns on a label store: read a score run's inputs for ``core.patterns``, apply a reviewed pattern as one bulk
step, undo it as one logged revert. Store verbs only (no SQL here); the page, the CLI and the bench call these.

``scan(store, run_id)`` -> (run id, patterns): the current labels in upload order (ingest order: ids, CSV rows,
file and folder order), the run's out-of-fold probabilities per image and the items' metadata.
``apply_pattern(store, pattern, choices, annotator=...)`` writes one correction per unit ticked *fix* (the
pattern's proposal, or the reviewer's own value) and a verdict "label is correct" per unit ticked *keep*, in one
transaction under one bulk id, reason ``pattern: <summary>``; a unit whose label changed since it was shown is
refused and named while the rest apply. Units decided this way leave the Review queue (their status is
corrected / reviewed); units of the pattern left undecided stay in it. ``undo(store, bulk_id, annotator=...)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core import patterns as P
from core.store import BulkResult, LabelStore, StoreError, read_snapshot

REASON_LIMIT = 200


def load_inputs(store: LabelStore, run_id: int) -> tuple[pd.DataFrame, dict[str, np.ndarray], pd.DataFrame]:
    """(labels, probs, meta) for ``core.patterns.find_patterns`` from score run ``run_id``: current labels of the
    images the run scored, in ingest order, their per-image probabilities per target, and their metadata."""
    schema = store.schema
    labels = _scored_labels(store, run_id)
    scores = store.scores(run_id)
    if scores.empty:
        raise StoreError(f"score run {run_id} has no scores")
    labels = labels[labels["item_id"].isin(set(scores["item_id"]))].sort_values("item_id").reset_index(drop=True)
    labels["order"] = np.arange(len(labels))
    position = pd.Series(np.arange(len(labels)), index=labels["item_id"].to_numpy())
    probs: dict[str, np.ndarray] = {}
    for target in schema.targets:
        rows = scores[scores["attribute"] == target]
        if rows.empty:
            continue
        classes = schema.target_classes(target)
        out = np.full((len(labels), len(classes)), np.nan)
        for item_id, detail in zip(rows["item_id"], rows["detail"]):
            if item_id not in position.index:
                continue
            found = json.loads(detail) if isinstance(detail, str) else (detail or {})
            image = found.get("image_probabilities") or found.get("probabilities") or {}
            out[position[item_id]] = [float(image.get(c, np.nan)) for c in classes]
        if np.isnan(out).any():  # an image without probabilities: uniform (no opinion)
            out[np.isnan(out).any(axis=1)] = 1.0 / len(classes)
        probs[target] = out
    meta = store.item_meta()
    meta = labels[["item_id"]].merge(meta.drop(columns=["path"]), on="item_id", how="left").drop(columns=["item_id"])
    meta = meta.dropna(axis=1, how="all")
    return labels, probs, meta


def _scored_labels(store: LabelStore, run_id: int) -> pd.DataFrame:
    """The labels the run scored (its snapshot), so a run's patterns stay the same while units are decided; the
    current labels when the run names no readable snapshot. A unit changed since is shown as changed, and an
    apply on it is refused as a conflict."""
    current = store.current_labels(derived=False)
    snapshot = ((store.run(run_id) or {}).get("config") or {}).get("snapshot")
    if not snapshot:
        return current
    try:
        scored, _ = read_snapshot(snapshot)
    except (OSError, ValueError, StoreError, KeyError):
        return current
    names = store.schema.names
    merged = current[["item_id", "path"]].merge(scored[["path", "person", *names]], on="path", how="inner")
    return merged if len(merged) else current


def changed_since(store: LabelStore, pattern: P.Pattern) -> dict[str, Any]:
    """Suspected targets whose label is no longer the one the pattern was found on: target -> the value now."""
    out = {}
    for row in pattern.suspected.itertuples(index=False):
        try:
            now = store.label_of(row.target, row.attribute)
        except StoreError:
            continue
        if str(now) != str(row.current):
            out[str(row.target)] = now
    return out


def scan(store: LabelStore, run_id: int | None = None, **options: Any) -> tuple[int, list[P.Pattern]]:
    """The patterns of a score run (default: the current one); ``options`` go to ``find_patterns``."""
    run_id = run_id if run_id is not None else store.current_score_run()
    if run_id is None:
        raise StoreError("no score run yet: patterns compare given labels with a model's; run `python -m train score`")
    labels, probs, meta = load_inputs(store, int(run_id))
    return int(run_id), P.find_patterns(labels, probs, store.schema, meta=meta, **options)


def reason_for(pattern: P.Pattern) -> str:
    """The corrections' reason: ``pattern: <summary>`` (cut to a readable length)."""
    text = f"pattern: {pattern.summary}"
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT - 1] + "…"


def decisions(pattern: P.Pattern, choices: Mapping[str, str], values: Mapping[tuple[str, str], Any] | None = None
              ) -> pd.DataFrame:
    """The bulk's rows from per-unit ticks: ``choices`` unit (or one correction's target) -> ``fix`` | ``keep``
    (other units: undecided, left out). ``values`` (target, attribute) -> the value to write instead of the proposal (the reviewer's own)."""
    rows = []
    for row in pattern.suspected.itertuples(index=False):
        choice = choices.get(str(row.target), choices.get(str(row.unit)))  # a correction's own tick, else its unit's
        if choice not in ("fix", "keep"):
            continue
        value = (values or {}).get((str(row.target), str(row.attribute)), row.proposed) if choice == "fix" else None
        rows.append({"unit": str(row.unit), "target": str(row.target), "attribute": str(row.attribute),
                     "expected": row.current, "value": value})
    return pd.DataFrame(rows, columns=["unit", "target", "attribute", "expected", "value"])


def apply_pattern(store: LabelStore, pattern: P.Pattern, choices: Mapping[str, str], *, annotator: str,
                  values: Mapping[tuple[str, str], Any] | None = None) -> BulkResult:
    """Apply a reviewed pattern: one bulk step (see the module docstring)."""
    rows = decisions(pattern, choices, values)
    if rows.empty:
        raise StoreError("nothing ticked: tick fix or keep on at least one unit")
    return store.apply_bulk(rows.drop(columns=["unit"]), annotator=annotator, reason=reason_for(pattern),
                            pattern=pattern.key)


def undo(store: LabelStore, bulk_id: int, *, annotator: str) -> BulkResult:
    """Undo a bulk step as one logged revert."""
    return store.revert_bulk(bulk_id, annotator=annotator)


def outcome_text(result: BulkResult) -> str:
    """One line for a page or the CLI: what was written, what was refused (named)."""
    text = f"bulk #{result.bulk_id}: {result.n_corrected} corrected, {result.n_kept} kept"
    if result.refused:
        names = "; ".join(f"{r['target']} ({r['reason']})" for r in result.refused[:5])
        more = f" and {len(result.refused) - 5} more" if len(result.refused) > 5 else ""
        text += f"; {len(result.refused)} refused: {names}{more}"
    return text


def decided_units(store: LabelStore, pattern: P.Pattern) -> set[str]:
    """Units of a pattern someone already decided through a bulk step of it (not undone)."""
    bulks = store.bulks()
    if bulks.empty:
        return set()
    mine = bulks[(bulks["pattern"] == pattern.key) & (bulks["kind"] != "revert") & bulks["reverted_by"].isna()]
    if mine.empty:
        return set()
    ids = set(mine["id"].astype(int))
    log = store.history()
    targets = set(log[log["bulk"].isin(ids) & log["reverted_by"].isna()]["target"].astype(str))
    reviews = store.reviews()
    targets |= set(reviews[reviews["bulk"].isin(ids)]["target"].astype(str))
    by_target = dict(zip(pattern.suspected["target"].astype(str), pattern.suspected["unit"].astype(str)))
    return {by_target[t] for t in targets if t in by_target}
