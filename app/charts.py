"""Plotly figures for the Distributions page, built from ``core.stats`` frames.

Each builder returns ``(figure, filters)`` where ``filters[trace][point]`` are the
``store.select_items`` arguments of the images behind that bar or cell; ``clickable`` draws the
figure and, when a bar is clicked, opens exactly those images on the Browse page.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

Filters = list[list[dict[str, Any]]]
CURRENT, ORIGINAL = "#3b6fb6", "#b8c4d6"


def _layout(fig: go.Figure, title: str, height: int = 320) -> go.Figure:
    fig.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"}, clickmode="event+select")
    return fig


def original_vs_current(frame: pd.DataFrame, x: str, title: str) -> tuple[go.Figure, Filters]:
    """Grouped bars: current and original image counts per class (``target_counts`` / ``class_counts``)."""
    names = [str(v) for v in frame[x]]
    fig = go.Figure([
        go.Bar(name="current", x=names, y=frame["current"], marker_color=CURRENT),
        go.Bar(name="original", x=names, y=frame["original"], marker_color=ORIGINAL),
    ])
    fig.update_layout(barmode="group", yaxis_title="images")
    current = list(frame["filter_current"] if "filter_current" in frame else frame["filter"])
    original = list(frame["filter_original"]) if "filter_original" in frame else [
        {**f, "original": True} for f in current]
    return _layout(fig, title), [current, original]


def age_histogram(frame: pd.DataFrame, edges: list[int], names: list[str], attribute: str) -> tuple[go.Figure, Filters]:
    """People per year of age with the bin edges drawn and each bin named above the bars."""
    fig = go.Figure(go.Bar(x=frame["value"], y=frame["persons"], marker_color=CURRENT, name="people",
                           customdata=frame["images"], hovertemplate="age %{x}: %{y} people, %{customdata} images"))
    if len(frame):
        low, high = int(frame["value"].min()), int(frame["value"].max())
        bounds = [low - 0.5, *[e - 0.5 for e in edges], high + 0.5]
        for edge in edges:
            fig.add_vline(x=edge - 0.5, line_dash="dash", line_color="#c0392b")
        for name, start, stop in zip(names, bounds, bounds[1:]):
            if stop > start:
                fig.add_annotation(x=(start + stop) / 2, y=1.02, yref="paper", text=name, showarrow=False)
    fig.update_layout(xaxis_title=attribute, yaxis_title="people", bargap=0.05)
    return _layout(fig, f"{attribute} by year (dashed: group edges)"), [list(frame["filter"])]


def heatmap(frame: pd.DataFrame, rows: str, columns: str) -> tuple[go.Figure, Filters]:
    """People per (row, column) class; cells are clickable through a transparent marker layer."""
    row_names = list(dict.fromkeys(frame["row"]))
    column_names = list(dict.fromkeys(frame["column"]))
    grid = frame.pivot(index="row", columns="column", values="persons").loc[row_names, column_names]
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=column_names, y=row_names, colorscale="Blues",
                               text=grid.to_numpy(), texttemplate="%{text}", hoverinfo="skip"))
    # Plotly selections report points of scatter/bar traces; a marker per cell makes cells clickable.
    fig.add_trace(go.Scatter(x=frame["column"], y=frame["row"], mode="markers", showlegend=False,
                             marker={"size": 40, "opacity": 0.01, "symbol": "square"},
                             customdata=frame["images"], hovertemplate="%{y} × %{x}: %{customdata} images"))
    fig.update_layout(xaxis_title=columns, yaxis_title=rows)
    return _layout(fig, f"People by {rows} × {columns}"), [[], list(frame["filter"])]


def people_vs_images(frame: pd.DataFrame) -> tuple[go.Figure, Filters]:
    """People and images per combined class, side by side."""
    fig = go.Figure([
        go.Bar(name="images", x=frame["name"], y=frame["current"], marker_color=CURRENT),
        go.Bar(name="people", x=frame["name"], y=frame["persons"], marker_color="#e59866"),
    ])
    fig.update_layout(barmode="group", xaxis_tickangle=-45)
    return _layout(fig, "People vs images per class", 380), [list(frame["filter"]), list(frame["filter"])]


def corrections(frame: pd.DataFrame) -> tuple[go.Figure, Filters]:
    """Per attribute: images whose label differs from the original now, and corrections logged."""
    fig = go.Figure([
        go.Bar(name="images changed", x=frame["attribute"], y=frame["changed_images"], marker_color=CURRENT),
        go.Bar(name="corrections logged", x=frame["attribute"], y=frame["corrections"], marker_color=ORIGINAL),
        go.Bar(name="reverts", x=frame["attribute"], y=frame["reverts"], marker_color="#c0392b"),
    ])
    fig.update_layout(barmode="group")
    filters = list(frame["filter"])
    return _layout(fig, "Corrections per attribute"), [filters, filters, filters]


def probabilities(probs: dict[str, float]) -> go.Figure:
    """Horizontal bars of the model's out-of-fold class probabilities for one unit."""
    figure = go.Figure(go.Bar(x=list(probs.values()), y=list(probs.keys()), orientation="h", marker_color=CURRENT))
    figure.update_layout(height=60 + 28 * len(probs), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                         xaxis={"range": [0, 1], "title": "model probability"})
    return figure


def selected_filter(event: Any, filters: Filters) -> dict[str, Any] | None:
    """The filter of the first clicked point of a chart selection event, or None."""
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    for point in points or []:
        trace, index = point.get("curve_number"), point.get("point_index", point.get("point_number"))
        if trace is not None and index is not None and trace < len(filters) and index < len(filters[trace]):
            return filters[trace][index]
    return None


def clickable(figure: go.Figure, filters: Filters, key: str) -> None:
    """Draw a chart; a click on a bar or cell opens exactly its images on the Browse page."""
    event = st.plotly_chart(figure, key=key, on_select="rerun", selection_mode="points", width="stretch")
    chosen = selected_filter(event, filters)
    if chosen is not None:
        st.switch_page("app_pages/browse.py", query_params={"filter": json.dumps(chosen, default=int)})
