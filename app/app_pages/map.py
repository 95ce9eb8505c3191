"""Map: the current score run's image embeddings in 2-D (PCA by default), coloured by given label, flagged and
decided units marked; a box or lasso selection opens exactly those images in Browse."""

from __future__ import annotations

from app import map_views, ui

store = ui.page_start("Map of the dataset")
map_views.map_page(store, store.current_score_run())
