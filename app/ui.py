"""Shared pieces of the dashboard pages: the session's store, the annotator, messages, the cached
review queue and thumbnails. No SQL here: everything goes through ``core``.

Invariant: no string from data (labels, class and person names, paths, annotators, reasons, notes) is rendered
as markdown or HTML. Streamlit renders button labels, metric labels *and values*, captions, messages and
subheaders as markdown (images included: a class named ``![t](http://host/x.png)`` would make the browser fetch
that URL), and plotly renders ``<a href>`` in tick and hover text. So data text reaches the page only through
the widget-boundary helpers here: ``plain()`` (markdown escaped), ``button()``, ``metric()``, ``caption()``,
``chart_text()`` (HTML escaped, for plotly categories and hover text), or data widgets (``st.dataframe``,
``st.text``).
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from core import review, stats
from core.images import thumbnail
from core.store import LabelStore, StoreError, default_db
from train.predictions import latest_predictions

PAGE_SIZE = 24
_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~:$>])")


# GFM turns bare URLs, www. names and e-mail addresses in text into links after parsing, escapes or not; an
# invisible WORD JOINER after the scheme, the "www" or the "@" keeps them plain text.
_AUTOLINK = re.compile(r"(?i)\b(?:https?|ftp|mailto|www)(?=[:.])|@")


def plain(text: Any) -> str:
    """``text`` escaped so markdown renders it literally (no links, autolinks, images, emphasis, colours or HTML)."""
    unlinked = _AUTOLINK.sub(lambda match: match.group(0) + "\u2060", str(text))
    return _MARKDOWN.sub(r"\\\1", unlinked)


def button(label: Any, *, container: Any = None, **kwargs: Any) -> bool:
    """``st.button`` (or ``container.button``) whose label renders literally, whatever data it holds."""
    return (container if container is not None else st).button(plain(label), **kwargs)


def metric(container: Any, label: Any, value: Any, **kwargs: Any) -> None:
    """``container.metric`` with label and value rendered literally (Streamlit renders both as markdown)."""
    container.metric(plain(label), plain(value), **kwargs)


def caption(text: Any, *, container: Any = None) -> None:
    """``st.caption`` of literal text."""
    (container if container is not None else st).caption(plain(text))


def chart_text(values: Iterable[Any]) -> list[str]:
    """Category names, tick and hover text for plotly, HTML-escaped: plotly renders ``<a href>``, ``<img>``-like
    tags and ``<br>`` in them, so a class named ``<a href=...>`` would become a live link. Plotly shows the
    escaped text as the original characters."""
    return [html.escape(str(v)) for v in values]


def safe_figure(figure: Any) -> Any:
    """A plotly figure with every text value of its traces (categories on x/y, ``text``, ``hovertext``) and of
    its annotations passed through ``chart_text``; numbers are left alone. Returns the same figure."""
    for trace in figure.data:
        for name in ("x", "y", "text", "hovertext", "labels"):
            values = getattr(trace, name, None) if name in trace else None
            if isinstance(values, list | tuple) and any(isinstance(v, str) for v in values):
                trace[name] = [chart_text([v])[0] if isinstance(v, str) else v for v in values]
            elif isinstance(values, str):
                trace[name] = chart_text([values])[0]
    for annotation in figure.layout.annotations or ():
        if isinstance(annotation.text, str):
            annotation.text = chart_text([annotation.text])[0]
    return figure


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


# The name outlives the sidebar widget: Streamlit drops a widget's state on some page switches
# (st.switch_page, chart clicks), so it is also kept under a plain session key that nothing clears.
_KEPT = "_annotator_kept"


def _keep_annotator() -> None:
    st.session_state[_KEPT] = st.session_state.get("annotator", "")


def annotator_sidebar() -> None:
    """The sidebar name field. The name lasts the whole browser session, across every in-app
    navigation (page links, chart clicks, buttons that open another page), and is kept in the URL
    (``?annotator=``) so a refresh or a link with the parameter keeps it too."""
    if "annotator" not in st.session_state:
        kept = st.session_state.get(_KEPT)
        st.session_state["annotator"] = kept if kept is not None else st.query_params.get("annotator", "")
    st.sidebar.text_input("Annotator", key="annotator", placeholder="your name", on_change=_keep_annotator,
                          help="Recorded with every correction and verdict you make.")
    _keep_annotator()
    tab_id()
    name = annotator()
    if name and st.query_params.get("annotator") != name:
        st.query_params["annotator"] = name
    if not name:
        st.sidebar.caption("Type your name to enable relabeling.")


_TAB = re.compile(r"^[0-9a-f]{8}$")


def tab_id() -> str:
    """This browser tab's id: every correction and verdict made here carries it, and Undo takes back only
    this tab's actions. Kept in the session and in the URL (``?tab=``), so a refresh keeps it; a new tab
    opened on the dashboard gets its own."""
    tab = st.session_state.get("_tab")
    if not tab:
        given = str(st.query_params.get("tab", ""))
        tab = given if _TAB.match(given) else secrets.token_hex(4)
        st.session_state["_tab"] = tab
    if st.query_params.get("tab") != tab:
        st.query_params["tab"] = tab
    return str(tab)


def scroll_to_top() -> None:
    """Ask the next run of the page to bring the view back to its top (after a decision or a move)."""
    st.session_state["_scroll_top"] = True


def apply_scroll(anchor: str | None = None) -> None:
    """Bring the view back to the page's top, or to the container keyed ``anchor``, if ``scroll_to_top``
    asked for it (once). The script is ours, no data (``anchor`` is a key of this code)."""
    if st.session_state.pop("_scroll_top", False):
        nonce = secrets.token_hex(4)
        to = f"const a = document.querySelector('.st-key-{anchor}'); if (a) {{ a.scrollIntoView(); }}" if anchor \
            else ("for (const e of document.querySelectorAll('[data-testid=\"stMain\"],"
                  " [data-testid=\"stAppViewContainer\"], section.main')) { e.scrollTop = 0; } window.scrollTo(0, 0);")
        st.sidebar.html(f"<script>/* {nonce} */ setTimeout(() => {{ {to} }}, 50);</script>",
                        unsafe_allow_javascript=True)


def compact_page() -> None:
    """Less padding above and beside the page's content and a smaller title (the Review page: one unit a
    screen). Our own CSS, no data."""
    st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 2.2rem; padding-left: 2rem;"
            " padding-right: 2rem; } [data-testid='stMainBlockContainer'] h1 { font-size: 1.9rem;"
            " padding: 0.2rem 0 0.4rem 0; }</style>")


def switch_page(page: str, **query: str) -> None:
    """``st.switch_page`` that keeps the annotator (and the tab id) in the URL of the page it opens."""
    if st.session_state.get("_tab"):
        query = {**query, "tab": st.session_state["_tab"]}
    if annotator():
        query = {**query, "annotator": annotator()}
    st.switch_page(page, query_params=query or None)


def flash(outcome: review.Outcome) -> None:
    """Keep an action's outcome for the next run of the page (actions run in callbacks)."""
    st.session_state["_flash"] = outcome


def show_flash() -> None:
    """Show (once) the outcome of the last action: conflicts and failures stand out."""
    outcome = st.session_state.pop("_flash", None)
    if outcome is None:
        return
    box = st.container(key="flash")  # its class st-key-flash: where scripts and tests read the outcome
    if outcome.conflict:
        box.error(plain(outcome.message), icon="⚠️")
    elif outcome.ok:
        box.success(plain(outcome.message))
    else:
        box.warning(plain(outcome.message))


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
    for position, (row, caption) in enumerate(zip(rows.itertuples(index=False), captions)):
        with grid[position % columns]:
            st.image(thumb(store, row.path, getattr(row, "hash", None)), width="stretch")
            st.caption(plain(caption))
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
                st.caption(plain(f"{marker}{row.caption}") + (f"  \n{plain(opinion)}" if opinion else ""))


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
