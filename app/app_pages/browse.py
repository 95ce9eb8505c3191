"""Browse: any image by person, path or label filters (or a chart click), with the relabeling actions."""

from __future__ import annotations

import streamlit as st

from app import ui, views

store = ui.get_store()
st.title("Browse")
ui.show_flash()
if not ui.require_data(store):
    st.stop()
views.browse_view(store, key="browse", source="browse")
