"""The Map page's figure and selection (``core.maps`` on ``core.embeddings``): one WebGL scatter trace per given
label, marker symbols for flagged / corrected / confirmed units, selection -> Browse."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import similar_views, ui
from core import maps
from core.store import LabelStore

BROWSE_PAGE = "app_pages/browse.py"
BROWSE_ITEMS = "browse_items"  # session key views.browse_view reads: the item ids of a Map selection
SYMBOLS = {"-": "circle", "flagged": "diamond", "corrected": "x", "confirmed": "circle-open"}
MARK_NAMES = {"-": "not flagged", "flagged": "flagged", "corrected": "corrected (confirmed error)",
              "confirmed": "confirmed correct"}


@st.cache_resource(show_spinner="Projecting the embeddings to 2-D (once a score run and method)…", max_entries=4)
def _coordinates(_emb: Any, db: str, run_id: int, stamp: float, method: str) -> np.ndarray:
    return maps.project(_emb.normalised(), method)


def figure(points: pd.DataFrame, xy: np.ndarray, rows: np.ndarray) -> tuple[go.Figure, list[np.ndarray]]:
    """The scatter of ``points`` rows ``rows`` at ``xy``: one WebGL trace per given label and mark (a label keeps
    its colour across its marks; scalar symbols keep the figure cheap at 60,000 points); returns the figure and
    each trace's item ids (what a selection's curve and point index refer to)."""
    fig, traces = go.Figure(), []
    drawn = points.iloc[rows]
    given_all = drawn["given"].astype(str).to_numpy()
    marks_all = drawn["mark"].to_numpy()
    paths = drawn["path"].astype(str).to_numpy()
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d", "#bab0ac",
               "#ff9da6"]
    for c, given in enumerate(sorted(set(given_all))):
        first = True  # one legend entry per given label (its colour); the symbols have their own entries
        for mark in ("-", "flagged", "corrected", "confirmed"):
            part = np.flatnonzero((given_all == given) & (marks_all == mark))
            if not len(part):
                continue
            # data text is HTML-escaped here (plotly renders tags in hover and legend text); an object array, so
            # ui.safe_figure leaves it as it is
            text = np.array(ui.chart_text(f"{p} · given {given} · {MARK_NAMES[mark]}" for p in paths[part]),
                            dtype=object)
            fig.add_trace(go.Scattergl(
                x=xy[rows[part], 0], y=xy[rows[part], 1], mode="markers", name=ui.chart_text([given])[0],
                legendgroup=str(c),
                showlegend=first,
                marker={"size": 6 if mark == "-" else 10, "symbol": SYMBOLS[mark], "color": palette[c % len(palette)],
                        "line": {"width": 1}, "opacity": 0.8},
                hovertext=text, hoverinfo="text",
                customdata=drawn["item_id"].to_numpy()[part]))
            traces.append(drawn["item_id"].to_numpy()[part])
            first = False
    for mark in ("flagged", "corrected", "confirmed"):  # legend entries for the symbols (no points: after the data)
        fig.add_trace(go.Scattergl(x=[None], y=[None], mode="markers", name=MARK_NAMES[mark],
                                   marker={"symbol": SYMBOLS[mark], "size": 10, "color": "#555"}, hoverinfo="skip"))
    fig.update_layout(height=620, dragmode="lasso", margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"title": {"text": "given label / mark"}}, xaxis={"showticklabels": False},
                      yaxis={"showticklabels": False})
    return fig, traces


@st.cache_resource(show_spinner=False, max_entries=4)
def _drawing(_store: LabelStore, _emb: Any, _units: pd.DataFrame, _xy: np.ndarray, db: str, run_id: int,
             stamp: float, method: str, attribute: str, version: tuple[int, ...]) -> tuple[Any, ...]:
    """(points, drawn rows, escaped figure, trace item ids): built once per score run, projection, colouring and
    store version, not again on each selection (a selection reruns the page). The figure is shared: read only."""
    points = maps.point_table(_emb.items, _units, attribute, ui.run_statuses(_store, run_id))
    rows = maps.sample(points)
    fig, traces = figure(points, _xy, rows)
    return points, rows, ui.safe_figure(fig), traces


def map_page(store: LabelStore, run_id: int | None) -> None:
    if run_id is None:
        st.info("No score run yet: the map draws a score run's embeddings. Score first (python -m train score, or "
                "Rescore on the Train page).")
        return
    ready, problem = similar_views.prepared(store, run_id)
    if ready is None:
        similar_views.unavailable(problem or "")
        return
    emb, units = ready["emb"], ready["units"]
    attributes = list(dict.fromkeys(units["attribute"]))
    top = st.columns([2, 2, 3])
    attribute = top[0].selectbox("Colour by given", attributes, key="map_attribute")
    method = top[1].selectbox("Projection", maps.methods(len(emb.items)), key="map_method",
                              help="PCA is instant; UMAP appears when the umap package is installed; t-SNE "
                                   f"(scikit-learn) up to {maps.TSNE_MAX:,} images and takes a while.")
    stamp = similar_views._stamp(store, run_id)
    with st.spinner(f"Projecting {len(emb.items):,} images ({method})…"):
        xy = _coordinates(emb, str(store.path), int(run_id), stamp, method)
    points, rows, fig, traces = _drawing(store, emb, units, xy, str(store.path), int(run_id), stamp, method, attribute,
                                         store.version())
    top[2].caption(f"{len(points):,} images of score run #{run_id} ({similar_views.embeddings.KIND_NAMES[emb.kind]}, "
                   f"{emb.vectors.shape[1]} dims)" + (f"; {len(rows):,} drawn (every marked one)" if len(rows) <
                                                       len(points) else "") +
                   ". Draw a box or lasso (toolbar) to select images, or click a point to see its thumbnail below; hover a "
                   "point for its file and labels.")
    event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("points", "box", "lasso"),
                            width="stretch", config={"displaylogo": False})
    selected = maps.selected_items(event.get("selection") if isinstance(event, dict) else
                                   getattr(event, "selection", None), traces)
    if not selected:
        st.caption("Nothing selected.")
        return
    chosen = points.set_index("item_id").loc[selected]
    st.markdown(f"**{len(selected):,} image(s) selected** · " + ui.plain(", ".join(
        f"{g}: {n}" for g, n in chosen["given"].value_counts().items())))

    def open_browse() -> None:
        st.session_state[BROWSE_ITEMS] = [int(i) for i in selected]

    if st.button(f"Open the {len(selected):,} selected in Browse", key="map_open", type="primary",
                 on_click=open_browse):
        ui.switch_page(BROWSE_PAGE)
    preview = chosen.head(12).reset_index()
    grid = st.columns(6)
    for i, row in enumerate(preview.itertuples(index=False)):
        with grid[i % 6]:
            st.image(ui.thumb(store, row.path, None, 160), width="stretch")
            st.caption(ui.plain(ui.breakable(f"{row.path.rsplit('/', 1)[-1]} · {row.given} · {MARK_NAMES[row.mark]}")))
