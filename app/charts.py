"""Plotly figures for the Distributions page, built from ``core.stats`` frames.

Each builder returns ``(figure, filters)`` where ``filters[trace][point]`` are the
``store.select_items`` arguments of the images behind that bar or cell; ``clickable`` draws the
figure and, when a bar is clicked, opens exactly those images on the Browse page. ``cached``
builds a named chart once per store version: building plotly objects costs more than the SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import ui
from core import stats
from core.store import LabelStore

Filters = list[list[dict[str, Any]]]
CURRENT, ORIGINAL = "#3b6fb6", "#b8c4d6"


def _figure(traces: list[dict[str, Any]], title: str, height: int = 320, **layout: Any) -> go.Figure:
    """One validated figure from plain trace and layout dicts (much cheaper than trace objects and
    repeated ``update_layout`` calls, which re-validate every time)."""
    # The title on its own line at the top, the legend on the next one, just above the plot: never overlapping.
    return ui.safe_figure(go.Figure(data=traces, layout={  # class names are data: HTML-escaped
        "title": {"text": title, "y": 1, "yref": "container", "yanchor": "top", "pad": {"t": 8}},
        "height": height, "margin": {"l": 10, "r": 10, "t": 66, "b": 10},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1, "xanchor": "right"},
        "clickmode": "event+select", **layout}))


def _bar(name: str, x: Any, y: Any, color: str, **extra: Any) -> dict[str, Any]:
    return {"type": "bar", "name": name, "x": list(x), "y": [int(v) for v in y], "marker": {"color": color}, **extra}


def original_vs_current(frame: pd.DataFrame, x: str, title: str, **layout: Any) -> tuple[go.Figure, Filters]:
    """Grouped bars: current and original image counts per class (``target_counts`` / ``class_counts``)."""
    names = [str(v) for v in frame[x]]
    figure = _figure([_bar("current", names, frame["current"], CURRENT),
                      _bar("original", names, frame["original"], ORIGINAL)],
                     title, barmode="group", yaxis={"title": {"text": "images"}}, **layout)
    current = list(frame["filter_current"] if "filter_current" in frame else frame["filter"])
    original = list(frame["filter_original"]) if "filter_original" in frame else [
        {**f, "original": True} for f in current]
    return figure, [current, original]


def age_histogram(frame: pd.DataFrame, edges: list[int], names: list[str], attribute: str) -> tuple[go.Figure, Filters]:
    """People per year of age with the bin edges drawn and each bin named above the bars."""
    shapes, annotations = [], []
    if len(frame):
        low, high = int(frame["value"].min()), int(frame["value"].max())
        bounds = [low - 0.5, *[e - 0.5 for e in edges], high + 0.5]
        shapes = [{"type": "line", "x0": e - 0.5, "x1": e - 0.5, "y0": 0, "y1": 1, "yref": "paper",
                   "line": {"dash": "dash", "color": "#c0392b"}} for e in edges]
        # Above the plot (the edge lines end at its top), and a narrow group (">=60" holding only 60) named from
        # its edge rightwards: no line runs through a label.
        annotations = [{"x": (start + stop) / 2 if stop - start >= 8 else start, "y": 1.0, "yref": "paper",
                        "yanchor": "bottom", "xanchor": "center" if stop - start >= 8 else "left",
                        "xshift": 0 if stop - start >= 8 else 3, "text": name, "showarrow": False}
                       for name, start, stop in zip(names, bounds, bounds[1:]) if stop > start]
    bars = _bar("people", [int(v) for v in frame["value"]], frame["persons"], CURRENT,
                customdata=[int(v) for v in frame["images"]], hovertemplate="age %{x}: %{y} people, %{customdata} images")
    figure = _figure([bars], f"{attribute} by year (dashed: group edges)", shapes=shapes, annotations=annotations,
                     bargap=0.05, xaxis={"title": {"text": attribute}}, yaxis={"title": {"text": "people"}})
    return figure, [list(frame["filter"])]


def heatmap(frame: pd.DataFrame, rows: str, columns: str) -> tuple[go.Figure, Filters]:
    """People per (row, column) class; cells are clickable through a transparent marker layer."""
    row_names = list(dict.fromkeys(frame["row"]))
    column_names = list(dict.fromkeys(frame["column"]))
    grid = frame.pivot(index="row", columns="column", values="persons").loc[row_names, column_names]
    cells = grid.to_numpy().tolist()
    figure = _figure([
        {"type": "heatmap", "z": cells, "x": column_names, "y": row_names, "colorscale": "Blues", "text": cells,
         "texttemplate": "%{text}", "hoverinfo": "skip"},
        # Plotly selections report points of scatter/bar traces; a marker per cell makes cells clickable.
        {"type": "scatter", "x": list(frame["column"]), "y": list(frame["row"]), "mode": "markers",
         "showlegend": False, "marker": {"size": 40, "opacity": 0.01, "symbol": "square"},
         "customdata": [int(v) for v in frame["images"]], "hovertemplate": "%{y} × %{x}: %{customdata} images"},
    ], f"People by {rows} × {columns}", xaxis={"title": {"text": columns}}, yaxis={"title": {"text": rows}})
    return figure, [[], list(frame["filter"])]


def people_vs_images(frame: pd.DataFrame) -> tuple[go.Figure, Filters]:
    """People and images per combined class, side by side."""
    figure = _figure([_bar("images", frame["name"], frame["current"], CURRENT),
                      _bar("people", frame["name"], frame["persons"], "#e59866")],
                     "People vs images per class", 380, barmode="group", xaxis={"tickangle": -45})
    return figure, [list(frame["filter"]), list(frame["filter"])]


def _empty(frame: pd.DataFrame) -> bool:
    counts = [frame[c] for c in ("changed_images", "corrections", "reverts") if c in frame]
    return not len(frame) or all(int(c.fillna(0).sum()) == 0 for c in counts)


def corrections(frame: pd.DataFrame) -> tuple[go.Figure, Filters]:
    """Per attribute: images whose label differs from the original now, and corrections logged."""
    figure = _figure([_bar("images changed", frame["attribute"], frame["changed_images"], CURRENT),
                      _bar("corrections logged", frame["attribute"], frame["corrections"], ORIGINAL),
                      _bar("reverts", frame["attribute"], frame["reverts"], "#c0392b")],
                     "Corrections per attribute", barmode="group",
                     # counts: from 0, whole numbers; an empty chart says so instead of drawing a -1..1 axis
                     yaxis={"rangemode": "tozero", "tickformat": "d", "title": {"text": "images / corrections"},
                            **({"range": [0, 1], "dtick": 1} if _empty(frame) else {})},
                     annotations=[{"text": "No corrections yet", "showarrow": False, "xref": "paper",
                                   "yref": "paper", "x": 0.5, "y": 0.5}] if _empty(frame) else [])
    filters = list(frame["filter"])
    return figure, [filters, filters, filters]


def probabilities(probs: dict[str, float]) -> go.Figure:
    """Horizontal bars of the model's out-of-fold class probabilities for one unit."""
    return ui.safe_figure(go.Figure(
        data=[{"type": "bar", "x": list(probs.values()), "y": list(probs.keys()), "orientation": "h",
               "marker": {"color": CURRENT}}],
        layout={"height": 60 + 28 * len(probs), "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
                "xaxis": {"range": [0, 1], "title": {"text": "model probability, recalibrated (what the score reads)"}}}))


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
        ui.switch_page("app_pages/browse.py", filter=json.dumps(chosen, default=int))


@dataclass(frozen=True)
class Distributions:
    """Everything the Distributions page draws for one store version."""

    figures: dict[str, tuple[go.Figure, Filters]]
    overview: dict[str, int]
    images_per_person: pd.DataFrame


def build_all(store: LabelStore, per_ingest: dict | None = None) -> Distributions:
    """Every Distributions chart by name, from one ``stats.Counts`` (a handful of GROUP BY queries).

    Names: ``classes``, ``target_<name>`` per categorical target, ``histogram_<name>`` per integer
    attribute, ``heatmap`` (first two person-scope targets), ``people_vs_images``, ``corrections``.
    ``per_ingest`` is the ``stats.Counts`` memo of what only an ingest changes, kept by the caller.
    """
    counts = stats.Counts(store, per_ingest)
    schema = counts.schema
    out: dict[str, tuple[go.Figure, Filters]] = {}
    classes = stats.class_counts(counts) if schema.class_attributes else None
    if classes is not None and len(schema.class_attributes) > 1:
        out["classes"] = original_vs_current(classes, "name", f"{len(classes)} classes: current vs original",
                                             height=380, xaxis={"tickangle": -45})
    for target in schema.targets:
        out[f"target_{target}"] = original_vs_current(stats.target_counts(counts, target), "value", target)
    for attribute in (a.name for a in schema.attributes if a.kind == "integer"):
        binned = [b for b in schema.binned if b.source == attribute]
        out[f"histogram_{attribute}"] = age_histogram(
            stats.integer_histogram(counts, attribute), stats.bin_edges(counts, attribute),
            list(binned[0].classes) if binned else [], attribute)
    person_targets = [t for t in schema.targets if schema.scope(schema.target_source(t)) == "person"]
    if len(person_targets) >= 2:
        rows, columns = person_targets[:2]
        out["heatmap"] = heatmap(stats.heatmap(counts, rows, columns), rows, columns)
    if classes is not None:
        out["people_vs_images"] = people_vs_images(classes)
    out["corrections"] = corrections(stats.corrections_by_attribute(counts))
    return Distributions(out, stats.overview(counts), stats.images_per_person(counts))


@st.cache_resource(show_spinner=False, max_entries=4)
def _per_ingest(db: str, ingest_id: int) -> dict:
    # Original labels, people and item counts change only with an ingest: kept across corrections.
    return {}


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached(_store: LabelStore, db: str, version: tuple[int, ...]) -> Distributions:
    # cache_resource: shared, not copied; st.plotly_chart only reads a figure (its to_dict copies).
    return build_all(_store, _per_ingest(db, version[0]))


def cached(store: LabelStore) -> Distributions:
    """``build_all`` for the store as it is now, built once per store version."""
    return _cached(store, str(store.path), store.version())
