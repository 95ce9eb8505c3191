"""Map: the current score run's image embeddings in 2-D (PCA by default), coloured by given label, flagged and
decided units marked; a box or lasso selection opens exactly those images in Browse."""

from __future__ import annotations

import streamlit as st

from app import map_views, ui

store = ui.get_store()
st.title("Map of the dataset")
ui.show_flash()
if not ui.require_data(store):
    st.stop()
map_views.map_page(store, store.current_score_run())
