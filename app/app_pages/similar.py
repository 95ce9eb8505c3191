"""More like this: units that look like a chosen unit (or like the errors you confirmed) and carry the same given
label, as a gallery with bulk decisions."""

from __future__ import annotations

import streamlit as st

from app import similar_views, ui

store = ui.page_start("More like this")
run_id = store.current_score_run()
if run_id is None:
    st.info("No score run yet: similarity comes from a score run's embeddings. Score first (python -m train score).")
    st.stop()
similar_views.similar_page(store, run_id)
if st.button("Back to the Review queue", key="similar_back"):
    ui.switch_page("app_pages/review.py")
