"""Browse: any image by person, path or label filters (or a chart click), with the relabeling actions."""

from __future__ import annotations

from app import ui, views

store = ui.page_start("Browse")
views.browse_view(store, key="browse", source="browse")
