"""The ranked review queue of a score run as a table (``python -m core queue``): for a notebook or a teammate.

It reads the queue the store ranked when the run was saved (``LabelStore.review_units``, what the Review page
pages through), so units, order and flags are the page's by construction, not recomputed.
"""

from __future__ import annotations

import os

import pandas as pd

from core.files import csv_safe, replacing
from core.review import queue_units, statuses
from core.store import LabelStore, StoreError

QUEUE_CSV_COLUMNS = ["unit", "attribute", "given", "suggested", "score", "flagged", "rank", "status"]


def score_run(store: LabelStore, run_id: int | None) -> int:
    """``run_id`` checked to be a finished score run (default: the current one); ``StoreError`` naming the
    score runs there are otherwise."""
    runs = store.runs("score")
    done = runs[runs["status"] == "done"]["id"].astype(int).tolist() if len(runs) else []
    listed = ", ".join(f"#{r}" for r in sorted(done)) or "none yet; run `python -m train score`"
    if run_id is None:
        current = store.current_score_run()
        if current is None:
            raise StoreError(f"{store.path}: no finished score run ({listed})")
        return current
    if int(run_id) not in done:
        what = "not a finished score run" if int(run_id) in set(store.runs()["id"].astype(int)) else "no such run"
        raise StoreError(f"run #{run_id} in {store.path}: {what} (finished score runs: {listed})")
    return int(run_id)


def queue_table(store: LabelStore, run_id: int | None = None, attribute: str | None = None) -> pd.DataFrame:
    """One row per review unit of a score run, most suspicious first (the Review page's order and flags).

    Columns: ``unit`` (person key for a person-scope attribute, else image path: what ``core correct``
    takes), ``attribute`` (as scored, e.g. ``age_group``), ``given``, ``suggested`` (class names),
    ``score`` (P(given label is wrong)), ``flagged`` (bool, the one meaning of *flagged*:
    ``core.review.flagged_counts``), ``rank`` (1 = most suspicious; within ``attribute`` when one is
    named, as the Review page numbers a filtered queue), ``status`` (unreviewed, skipped, reviewed or
    corrected since the run, as the page's Status filter reads it). ``attribute`` must be one of the
    run's attributes (``StoreError`` otherwise).
    """
    run_id = score_run(store, run_id)
    attributes = store.review_summary(run_id)["attributes"]
    if attribute is not None and attribute not in attributes:
        raise StoreError(f"score run #{run_id} has no attribute {attribute!r} "
                         f"(its attributes: {', '.join(attributes) or 'none'})")
    units = queue_units(store, run_id)
    if attribute is not None:
        units = units[units["attribute"] == attribute]
    status_table = statuses(store, store.run(run_id)["created_at"])
    lookup = dict(zip(status_table["target"] + "|" + status_table["attribute"], status_table["status"]))
    return pd.DataFrame({
        "unit": units["target"].to_numpy(), "attribute": units["attribute"].to_numpy(),
        "given": units["given"].to_numpy(), "suggested": units["suggested"].to_numpy(),
        "score": units["score"].astype(float).to_numpy(), "flagged": (units["is_issue"] == 1).to_numpy(),
        "rank": range(1, len(units) + 1), "status": units["unit"].map(lookup).fillna("unreviewed").to_numpy(),
    }, columns=QUEUE_CSV_COLUMNS)


def write_queue(store: LabelStore, out: str | os.PathLike[str], run_id: int | None = None,
                attribute: str | None = None) -> pd.DataFrame:
    """Write ``queue_table`` to ``out`` as CSV (formula-safe cells, ``flagged`` as true/false), atomically:
    a reader sees the old file or the whole new one. Returns the table written."""
    table = queue_table(store, run_id, attribute)
    written = table.assign(flagged=table["flagged"].map({True: "true", False: "false"}))
    with replacing(out) as tmp:
        csv_safe(written).to_csv(tmp, index=False)
    return table
