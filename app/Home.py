"""labelfix dashboard: ``streamlit run app/Home.py`` (the README's ``make run``).

The store is ``$LABELS_DB`` (default ``labels.db``). On a first start with an empty store the demo
dataset is generated and ingested (``core.bootstrap``), with a notice. Pages are thin scripts in
``app_pages/`` that call ``core``; shared widgets are in ``app/ui.py``, ``actions.py`` and ``views.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `streamlit run app/Home.py` puts app/ on sys.path, not the repository root that holds core/.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402
from core.bootstrap import auto_demo_enabled, ensure_demo  # noqa: E402
from core.store import StoreError  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost", "::1")
REMOTE_ENV = "LABELFIX_ALLOW_REMOTE"  # =1: serving beyond this machine is intended


def bound_to_loopback() -> bool:
    """True when the server listens on this machine only (``server.address`` a loopback address).

    ``app/.streamlit/config.toml`` (read beside this script, whatever the working directory) sets 127.0.0.1;
    ``--server.address 0.0.0.0`` or an unset address listens on every interface.
    """
    address = st.get_option("server.address")
    return str(address or "").strip().strip("[]") in LOOPBACK or str(address or "").startswith("127.")


def refuse_unless_local() -> None:
    """Stop the page, loudly, when the server is reachable from the network and the user did not opt in."""
    if bound_to_loopback() or os.environ.get(REMOTE_ENV) == "1":
        return
    address = st.get_option("server.address") or "every network interface"
    print(f"labelfix: refusing to serve: the server listens on {address}, not only on this machine; restart "
          f"with --server.address 127.0.0.1, or set {REMOTE_ENV}=1 to share it on purpose", file=sys.stderr)
    st.error(f"This dashboard listens on {ui.plain(address)}: anyone who can reach this machine could read and "
             f"change the labels, so it refuses to run. Restart it with `--server.address 127.0.0.1`, or set "
             f"`{REMOTE_ENV}=1` if sharing it on the network is intended.")
    st.stop()


def main() -> None:
    """Set up the page, fill an empty store with the demo, then run the chosen page."""
    # A local image, not ":material/…" (Streamlit fetches that favicon from fonts.gstatic.com): works offline.
    st.set_page_config(page_title="labelfix", page_icon=ui.favicon(), layout="wide")
    st.set_option("client.showErrorDetails", "none")  # no traceback or server path ever reaches the browser
    refuse_unless_local()

    store = ui.get_store()
    if store.is_empty and auto_demo_enabled():
        with st.status("First start: generating and ingesting the demo dataset (about a minute)…",
                       expanded=True) as first_start:
            try:
                st.session_state["_bootstrap_notice"] = ensure_demo(store)
            except (StoreError, OSError, ValueError) as error:
                st.error(ui.plain(f"Could not create the demo dataset: {error}"))
                first_start.update(label="First start: the demo dataset could not be created", state="error")
            else:  # the box says it is over (not "generating…" beside "done in 14 s")
                first_start.update(label="First start: the demo dataset is ready", state="complete", expanded=False)

    # Not a folder named pages/: Streamlit would treat that as the old automatic multipage layout and
    # run those scripts without this entry point (no sidebar, no first-start demo) on some runs.
    pages = [
        st.Page("app_pages/distributions.py", title="Distributions", icon=":material/bar_chart:", default=True),
        st.Page("app_pages/review.py", title="Review queue", icon=":material/rule:"),
        st.Page("app_pages/patterns.py", title="Patterns", icon=":material/pattern:"),
        st.Page("app_pages/browse.py", title="Browse", icon=":material/photo_library:"),
        st.Page("app_pages/similar.py", title="More like this", icon=":material/join_inner:"),
        st.Page("app_pages/map.py", title="Map", icon=":material/scatter_plot:"),
        st.Page("app_pages/history.py", title="History", icon=":material/history:"),
        st.Page("app_pages/health.py", title="Data health", icon=":material/health_and_safety:"),
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    ]
    page = st.navigation(pages)

    ui.annotator_sidebar()
    st.sidebar.caption(ui.plain(f"Store: {store.path}"))
    if not store.is_empty:
        st.sidebar.caption(ui.plain(f"Dataset: {store.root}"))
    notice = st.session_state.pop("_bootstrap_notice", None)  # said once, not on every page all session
    if notice:
        st.info(ui.plain(notice), icon="ℹ️")
    page.run()


# Streamlit runs this file as __main__. Worker processes started with "spawn" (the demo generator,
# ingest) re-import it as __mp_main__: they must not run the app (that would recurse into the demo).
if __name__ == "__main__":
    main()
