"""Shared pieces of the dashboard pages: thumbnails, galleries, a person's strip, pagers. No SQL here: everything
goes through ``core``.

``app.ui`` is also the one import pages need: it re-exports the widget boundary (``app.boundary``: ``plain``,
``button``, ``metric``, ``caption``, ``chart_text``, ``safe_figure``: data text reaches a page only through these),
the browser session (``app.session``: the store, the annotator, page switches, ``Flash`` messages) and the cached
reads (``app.cached``: queue, statuses, predictions).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from app.boundary import breakable, button, caption, chart_text, metric, plain, safe_figure
from app.cached import predictions, queue, queue_facts, run_statuses, statuses
from app.session import (
    Flash,
    annotator,
    annotator_sidebar,
    apply_scroll,
    compact_page,
    flash,
    get_store,
    page_start,
    require_data,
    scroll_to_top,
    show_flash,
    switch_page,
    tab_id,
)
from core import stats
from core.images import thumbnail
from core.store import LabelStore, StoreError

__all__ = ["PAGE_SIZE", "STRIP_PER_ROW", "STRIP_SIZE", "Flash", "annotator", "annotator_sidebar", "apply_scroll",
           "compact_page", "scroll_to_top", "tab_id", "button",
           "caption", "chart_text", "favicon", "flash", "gallery", "get_store", "has_groups", "label_table", "metric",
           "model_said", "page_start", "pager", "person_strip", "photo_row", "placeholder", "plain", "predictions", "queue", "queue_facts",
           "require_data", "breakable", "run_statuses", "safe_figure", "show_flash", "statuses", "switch_page", "thumb", "thumbnail_grid"]

PAGE_SIZE = 24
@st.cache_resource(show_spinner=False)
def favicon() -> Image.Image:
    """The tab icon, drawn here (nothing is fetched from outside the machine)."""
    icon = Image.new("RGB", (32, 32), (255, 75, 75))
    ImageDraw.Draw(icon).rectangle((8, 6, 13, 25), fill=(255, 255, 255))
    ImageDraw.Draw(icon).rectangle((8, 21, 24, 25), fill=(255, 255, 255))
    return icon


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
    """A grid of thumbnails (only these rows are loaded), each with its caption in full (wrapped,
    never cut) and a button to open it."""
    if rows.empty:
        return
    grid = st.columns(columns)
    for position, (row, text) in enumerate(zip(rows.itertuples(index=False), captions)):
        with grid[position % columns]:
            st.image(thumb(store, row.path, getattr(row, "hash", None)), width="stretch")
            st.caption(plain(text))
            st.button("Open" if position != focus else "Shown ▾", key=f"{key}_open_{position}",
                      on_click=on_pick, args=(position,), type="primary" if position == focus else "secondary",
                      width="stretch")


def thumbnail_grid(store: LabelStore, rows: pd.DataFrame, caption: Callable[[Any], str], columns: int = 6) -> None:
    """Thumbnails of ``rows`` (a ``path`` column) with a plain-text caption each, no actions."""
    grid = st.columns(columns)
    for position, row in enumerate(rows.itertuples(index=False)):
        with grid[position % columns]:
            st.image(thumb(store, row.path), width="stretch")
            st.caption(plain(caption(row)))


# A person's photos are the evidence for a person-scope verdict: one row of up to STRIP_PER_ROW, each as wide
# as its column (the browser scales it; the file is the image at full size, up to 512 px, so the photo's
# full-screen button shows it whole, not a thumbnail).
STRIP_PER_ROW = 7
STRIP_SIZE = 512


def photo_row(store: LabelStore, photos: pd.DataFrame, *, key: str = "person_strip") -> None:
    """Photos side by side (``photos``: path, hash, caption, opinion, highlight), each with its caption
    and the model's opinion under it; the highlighted one is marked ▶. At most ``STRIP_PER_ROW`` a row."""
    if photos.empty:
        return
    # Room above the photos for each photo's full-screen button (it shows on hover, above the image): it covers
    # nothing of the text above. Our own CSS, no data.
    st.html(f"<style>.st-key-{key} {{ padding-top: 1.7rem; }}</style>")
    strip = st.container(key=key)  # one a page; the browser test finds it by its class st-key-<key>
    per_row = max(min(len(photos), STRIP_PER_ROW), 3)  # a lone image: a third of the row, not a tile
    for start in range(0, len(photos), per_row):
        for column, row in zip(strip.columns(per_row, gap="small"), photos.iloc[start:start + per_row].itertuples()):
            with column:
                st.image(thumb(store, row.path, getattr(row, "hash", None), STRIP_SIZE), width="stretch")
                marker = "▶ " if getattr(row, "highlight", False) else ""
                opinion = getattr(row, "opinion", "")
                st.caption(plain(breakable(f"{marker}{row.caption}")) + (f"  \n{plain(opinion)}" if opinion else ""))


def person_strip(store: LabelStore, person: str, highlight: str | None = None,
                 opinions: dict[str, str] | None = None) -> None:
    """All images of a person with their per-image labels and, when given, the model's opinion of each
    photo (``opinions``: path -> plain text), in rows of ``STRIP_PER_ROW`` (``photo_row``)."""
    images, _ = store.select_items(person=person, limit=None)
    if images.empty:
        return
    image_attributes = [a.name for a in store.schema.attributes if a.scope == "image"]
    photo_row(store, pd.DataFrame({
        "path": images["path"], "hash": images["hash"],
        "caption": [f"{p.rsplit('/', 1)[-1]}: " + ", ".join(str(r[a]) for a in image_attributes)
                    for p, (_, r) in zip(images["path"], images.iterrows())],
        "opinion": [(opinions or {}).get(p, "") for p in images["path"]],
        "highlight": images["path"] == highlight}))


def model_said(path: str) -> None:
    """What a run's model predicted for this image, when the page was opened from that run's detail."""
    said = st.session_state.get("_model_said")
    if isinstance(said, dict) and said.get("path") == path and said.get("text"):
        st.info(plain(said["text"]))


def has_groups(store: LabelStore) -> bool:
    """True when some person holds more than one image (else a person panel would repeat the image)."""
    return bool(stats.has_groups(store))


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
