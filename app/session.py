"""The browser session: its connection to the store, the annotator's name, page switches and the one-line
messages an action leaves for the next run of the page. Pages import these from ``app.ui``, which re-exports them.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app.boundary import plain
from core import review
from core.store import LabelStore, default_db


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


@dataclass(frozen=True)
class Flash:
    """A one-line message for the next run of the page: ``ok`` (success) or not (a warning), ``conflict`` (an
    error: refused because the data changed meanwhile). Plain text: shown through ``plain``."""

    ok: bool
    message: str
    conflict: bool = False


def flash(outcome: Flash | review.Outcome) -> None:
    """Keep a message, or an action's outcome (``core.review.Outcome``), for the next run of the page (actions
    run in callbacks)."""
    st.session_state["_flash"] = Flash(bool(outcome.ok), str(outcome.message), bool(outcome.conflict))


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


def page_start(title: str, *, compact: bool = False) -> LabelStore:
    """Every page's first lines: the store, (``compact``: the Review page's tighter layout), the title, the last
    action's message, and a stop with how to fill the store when it is empty. Returns the store."""
    store = get_store()
    if compact:
        compact_page()
    st.title(title)
    show_flash()
    if not require_data(store):
        st.stop()
    return store
