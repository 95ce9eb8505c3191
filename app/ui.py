"""Shared pieces of the dashboard pages: the session's store, the annotator, messages, the cached
review queue and thumbnails. No SQL here: everything goes through ``core``.

User text (paths, person keys, reasons, names) reaches the page only through ``plain()`` (markdown
escaped) or through data widgets (``st.dataframe``), never as HTML.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from core import review
from core.images import thumbnail
from core.store import LabelStore, StoreError, default_db
from train.predictions import latest_predictions

PAGE_SIZE = 24
_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~:$>])")


def plain(text: Any) -> str:
    """``text`` escaped so markdown renders it literally (no links, emphasis, colours or HTML)."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def get_store() -> LabelStore:
    """This session's connection to the store named by ``$LABELS_DB`` (default ``labels.db``).

    One connection per browser session: a SQLite connection shared between sessions would mix
    their transactions.
    """
    path = str(Path(default_db()).resolve())
    key = f"_store::{path}"
    if key not in st.session_state:
        st.session_state[key] = LabelStore(path)
    return st.session_state[key]


def annotator() -> str:
    """The annotator name typed in the sidebar ('' when none); it goes with every action."""
    return str(st.session_state.get("annotator", "")).strip()


def annotator_sidebar() -> None:
    """The sidebar name field; kept in the URL (``?annotator=``) so a refresh keeps it."""
    if "annotator" not in st.session_state:
        st.session_state["annotator"] = st.query_params.get("annotator", "")
    st.sidebar.text_input("Annotator", key="annotator", placeholder="your name",
                          help="Recorded with every correction and verdict you make.")
    name = annotator()
    if name and st.query_params.get("annotator") != name:
        st.query_params["annotator"] = name
    if not name:
        st.sidebar.caption("Type your name to enable relabeling.")


def flash(outcome: review.Outcome) -> None:
    """Keep an action's outcome for the next run of the page (actions run in callbacks)."""
    st.session_state["_flash"] = outcome


def show_flash() -> None:
    """Show (once) the outcome of the last action: conflicts and failures stand out."""
    outcome = st.session_state.pop("_flash", None)
    if outcome is None:
        return
    if outcome.conflict:
        st.error(plain(outcome.message), icon="⚠️")
    elif outcome.ok:
        st.success(plain(outcome.message))
    else:
        st.warning(plain(outcome.message))


def require_data(store: LabelStore) -> bool:
    """False (after saying how to fill it) when the store holds no dataset yet."""
    if store.is_empty:
        st.info("The label store is empty. Generate and ingest the demo with "
                "`python -m core demo --out data/demo` and `python -m core ingest data/demo` "
                "(or restart the dashboard with `LABELS_AUTO_DEMO=1`, the default), or ingest your own dataset.")
        return False
    return True


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
    return review.queue(_store, run_id)


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


@st.cache_data(show_spinner=False, max_entries=4)
def _predictions(_store: LabelStore, db: str, runs: tuple[tuple[int, str], ...]) -> tuple[int, pd.DataFrame] | None:
    return latest_predictions(_store)


def predictions(store: LabelStore) -> tuple[int, pd.DataFrame] | None:
    """The newest prediction run's probabilities (cached until another prediction run appears)."""
    runs = store.runs(kind="predict")
    key = tuple((int(i), str(status)) for i, status in zip(runs["id"], runs["status"]))
    return _predictions(store, str(store.path), key) if len(runs) else None


@st.cache_resource(show_spinner=False)
def placeholder(folder: str, size: int) -> str:
    """A grey 'no preview' tile (a file, so Streamlit serves it without re-encoding on every run)."""
    path = Path(folder) / f"placeholder_{size}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tile = Image.new("RGB", (size * 3 // 4, size), (222, 222, 226))
        ImageDraw.Draw(tile).text((8, size // 2 - 6), "no preview", fill=(110, 110, 120))
        tile.save(path)
    return str(path)


def thumb(store: LabelStore, path: str, content_hash: str | None = None, size: int = 160) -> str:
    """A thumbnail file for ``st.image``: the cached one, or the placeholder when the image is missing,
    unreadable or outside the dataset root (those are Data health's business, not a crash here)."""
    try:
        return str(thumbnail(store, path, size, content_hash_hex=content_hash if isinstance(content_hash, str) else None))
    except (OSError, ValueError, StoreError, Image.DecompressionBombError):
        return placeholder(str(store.files_dir / "thumbs"), size)


def gallery(store: LabelStore, rows: pd.DataFrame, captions: list[str], *, focus: int | None,
            on_pick: Callable[[int], None], key: str, columns: int = 6) -> None:
    """A grid of thumbnails (only these rows are loaded) with a button under each to open it."""
    if rows.empty:
        return
    grid = st.columns(columns)
    for position, (row, caption) in enumerate(zip(rows.itertuples(index=False), captions)):
        with grid[position % columns]:
            st.image(thumb(store, row.path, getattr(row, "hash", None)), width="stretch")
            st.button(plain(caption), key=f"{key}_open_{position}", on_click=on_pick, args=(position,),
                      type="primary" if position == focus else "secondary", width="stretch")


def thumbnail_grid(store: LabelStore, rows: pd.DataFrame, caption: Callable[[Any], str], columns: int = 6) -> None:
    """Thumbnails of ``rows`` (a ``path`` column) with a plain-text caption each, no actions."""
    grid = st.columns(columns)
    for position, row in enumerate(rows.itertuples(index=False)):
        with grid[position % columns]:
            st.image(thumb(store, row.path), width="stretch")
            st.caption(plain(caption(row)))


def person_strip(store: LabelStore, person: str, highlight: str | None = None) -> None:
    """All images of a person with their per-image labels (the person view)."""
    images, _ = store.select_items(person=person, limit=None)
    if images.empty:
        return
    image_attributes = [a.name for a in store.schema.attributes if a.scope == "image"]
    grid = st.columns(max(len(images), 1))
    for column, row in zip(grid, images.itertuples(index=False)):
        with column:
            st.image(thumb(store, row.path, row.hash, 128), width="stretch")
            labels = ", ".join(str(getattr(row, a)) for a in image_attributes)
            marker = "▶ " if row.path == highlight else ""
            st.caption(plain(f"{marker}{row.path.rsplit('/', 1)[-1]}: {labels}"))


def pager(total: int, key: str) -> int:
    """Page number input for a gallery of ``total`` entries; returns the offset of the page."""
    pages = max((total - 1) // PAGE_SIZE + 1, 1)
    if st.session_state.get(key, 1) > pages:
        st.session_state[key] = pages
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=key)
    return (int(page) - 1) * PAGE_SIZE


def label_table(schema_names: list[str], current: dict[str, Any], original: dict[str, Any] | None) -> pd.DataFrame:
    """Current vs original labels of one image, one row per attribute (for ``st.dataframe``)."""
    return pd.DataFrame({
        "attribute": schema_names,
        "current": [str(current.get(n)) for n in schema_names],
        "original": [str((original or {}).get(n, "")) for n in schema_names],
    })
