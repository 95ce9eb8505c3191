"""Cached reads of the store for the pages: a score run's queue and its facts, review statuses, the newest
predictions. Each is keyed so it is read again only when the store changed. Pages import these from ``app.ui``,
which re-exports them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import review
from core.store import LabelStore
from train.predictions import latest_predictions


def queue_facts(store: LabelStore, run_id: int) -> dict[str, Any]:
    """Filter choices of a score run's queue: attributes, classes per attribute, highest score
    (saved with the run's ranked queue: one small read)."""
    summary = store.review_summary(run_id)
    return {"attributes": summary["attributes"], "classes": summary["classes"],
            "max_score": 1.0 if summary["max_score"] is None else float(summary["max_score"])}


@st.cache_resource(show_spinner=False, max_entries=4)
def _queue(_store: LabelStore, db: str, run_id: int) -> pd.DataFrame:
    # A finished score run never changes, so its queue is read once per run and shared read-only
    # between sessions (cache_resource: no copy on every rerun).
    return review.queue_units(_store, run_id)


def queue(store: LabelStore, run_id: int) -> pd.DataFrame:
    """The whole ranked review queue of a score run (shared, read-only; the Train page compares two).
    The Review page reads only counts and its visible page (``review.queue_page``)."""
    return _queue(store, str(store.path), run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _statuses(_store: LabelStore, db: str, version: tuple[int, ...], since: str | None) -> pd.DataFrame:
    return review.statuses(_store, since)


def statuses(store: LabelStore, since: str | None = None) -> pd.DataFrame:
    """Review status of acted-on units, cached until the store's next write."""
    return _statuses(store, str(store.path), store.version(), since)


def run_statuses(store: LabelStore, run_id: int) -> dict[str, str]:
    """``target|attribute`` -> status of the units decided since score run ``run_id`` (``review.status_lookup``),
    cached with ``statuses``: what the Map, More like this and the learning queue mark."""
    from core import review

    return review.status_lookup(statuses(store, store.run(run_id)["created_at"]))


@st.cache_data(show_spinner=False, max_entries=4)
def _predictions(_store: LabelStore, db: str, runs: tuple[tuple[int, str], ...]) -> tuple[int, pd.DataFrame] | None:
    return latest_predictions(_store)


def predictions(store: LabelStore) -> tuple[int, pd.DataFrame] | None:
    """The newest prediction run's probabilities (cached until another prediction run appears)."""
    runs = store.runs(kind="predict")
    key = tuple((int(i), str(status)) for i, status in zip(runs["id"], runs["status"]))
    return _predictions(store, str(store.path), key) if len(runs) else None
