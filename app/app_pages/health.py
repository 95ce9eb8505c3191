"""Data health: ingest problems (files left out) and image issues (duplicates, dark, blurry, unreadable)."""

from __future__ import annotations

import streamlit as st

from app import ui

store = ui.page_start("Data health")

problems = store.problems()
issues = store.data_issues()
cells = st.columns(3)
cells[0].metric("Ingest problems", f"{len(problems):,}")
cells[1].metric("Image issues", f"{len(issues):,}")
cells[2].metric("Images with an issue", f"{issues['item_id'].nunique() if len(issues) else 0:,}")

st.subheader("Ingest problems")
if problems.empty:
    st.success("Every file ingested cleanly.")
else:
    st.caption("Files and rows left out of the label table, one reason each (fix them in the dataset and re-ingest).")
    st.dataframe(problems[["path", "reason", "kind"]], hide_index=True)
    with st.expander("Thumbnails of the first files (a grey tile: the file cannot be shown)"):
        ui.thumbnail_grid(store, problems.head(ui.PAGE_SIZE), lambda row: f"{row.reason}: {row.path}")

st.subheader("Image issues")
if issues.empty:
    if store.data_checks_ingest() is None:
        st.info("No image checks stored yet. Run `python -m core check` (exact and near duplicates, dark or blurry "
                "images); the scoring job runs them too.")
    else:
        st.success("The image checks found no duplicate, dark, blurry or unreadable image.")
    st.stop()
counts = issues["kind"].value_counts()
kind = st.selectbox("Kind", ["all", *counts.index], key="health_kind",
                    format_func=lambda k: k if k == "all" else f"{k} ({counts[k]:,})")
chosen = issues if kind == "all" else issues[issues["kind"] == kind]
st.dataframe(chosen[["path", "kind", "detail", "score"]], hide_index=True,  # details are long: room to read them
             column_config={"detail": st.column_config.TextColumn("detail", width="large"),
                            "path": st.column_config.TextColumn("path", width="medium"),
                            "kind": st.column_config.TextColumn("kind", width="small")})
offset = ui.pager(len(chosen), "health_page")
page = chosen.iloc[offset:offset + ui.PAGE_SIZE]
ui.thumbnail_grid(store, page, lambda row: f"{row.kind}: {row.path}" + (f" ({row.detail})" if row.detail else ""))
