"""Evidence charts of the Patterns page, from a pattern's ``chart`` data (``core.patterns``): the stretch on the
upload-order axis, the heap on the histogram, the slice's confusion beside the rest's. Every text value goes
through ``ui.safe_figure`` (class names and metadata values are data)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from app import ui

EVENT, WINDOW, EXPECTED = "#c0392b", "rgba(192, 57, 43, 0.12)", "#2c3e50"


def _layout(title: str, height: int = 320, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title, "y": 1, "yref": "container", "yanchor": "top", "pad": {"t": 8}},
            "height": height, "margin": {"l": 10, "r": 10, "t": 56, "b": 10},
            "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1, "xanchor": "right"}, **extra}


def run_chart(chart: dict[str, Any], confusion: str) -> go.Figure:
    """Events along the upload order (a tick per unit with the confusion), their running rate, the stretch shaded."""
    events = np.asarray(chart["events"], dtype=float)
    start, end = chart["window"]
    n = len(events)
    width = max(5, n // 40)
    rate = np.convolve(events, np.ones(width) / width, mode="same")
    units = chart.get("units") or [str(i) for i in range(n)]
    hits = np.flatnonzero(events > 0)
    traces = [
        {"type": "scatter", "mode": "lines", "name": f"running rate ({width} units)", "x": list(range(n)),
         "y": rate.round(3).tolist(), "line": {"color": EXPECTED}, "hoverinfo": "skip"},
        {"type": "scatter", "mode": "markers", "name": "unit with the confusion", "x": hits.tolist(),
         "y": [1.02] * len(hits), "marker": {"color": EVENT, "symbol": "line-ns-open", "size": 10},
         "text": [units[i] for i in hits], "hovertemplate": "%{text}<extra></extra>"},
    ]
    shapes = [{"type": "rect", "x0": start - 0.5, "x1": end - 0.5, "y0": 0, "y1": 1, "yref": "paper",
               "fillcolor": WINDOW, "line": {"width": 0}}]
    figure = go.Figure(data=traces, layout=_layout(
        f"{ui.chart_text([confusion])[0]}: where it happens in upload order (shaded: the stretch)", shapes=shapes,
        xaxis={"title": {"text": "position in upload order (eligible units)"}},
        yaxis={"title": {"text": "share of units"}, "range": [0, 1.08]}))
    return ui.safe_figure(figure)


def heap_chart(chart: dict[str, Any], attribute: str) -> go.Figure:
    """Units per value, the heap in red, the smooth expectation over its neighbourhood as a line."""
    values, counts = chart["values"], chart["counts"]
    colors = [EVENT if v == chart["heap"] else "#3b6fb6" for v in values]
    traces = [{"type": "bar", "name": "units", "x": values, "y": counts, "marker": {"color": colors},
               "hovertemplate": f"{ui.chart_text([attribute])[0]} %{{x}}: %{{y}}<extra></extra>"},
              {"type": "scatter", "mode": "lines+markers", "name": "expected from the neighbours",
               "x": chart["window"], "y": chart["expected"], "line": {"color": EXPECTED, "dash": "dash"}}]
    figure = go.Figure(data=traces, layout=_layout(f"{ui.chart_text([attribute])[0]} by value (red: the heap)", bargap=0.05,
                                                   xaxis={"title": {"text": attribute}},
                                                   yaxis={"title": {"text": "units"}}))
    return ui.safe_figure(figure)


def slice_chart(chart: dict[str, Any], column: str, value: str) -> go.Figure:
    """Given -> suggested shares inside the slice beside the rest (one bar per confusion)."""
    classes = chart["classes"]
    inside, outside = np.asarray(chart["inside"], dtype=float), np.asarray(chart["outside"], dtype=float)
    names, shares_in, shares_out = [], [], []
    for a, given in enumerate(classes):
        for b, suggested in enumerate(classes):
            if a == b:
                continue
            names.append(f"{given} -> {suggested}")
            shares_in.append(inside[a, b] / max(1.0, inside[a].sum()))
            shares_out.append(outside[a, b] / max(1.0, outside[a].sum()))
    traces = [{"type": "bar", "name": ui.chart_text([f"{column} = {value}"])[0], "x": names, "y": np.round(shares_in, 4).tolist(),
               "marker": {"color": EVENT}},
              {"type": "bar", "name": "the rest", "x": names, "y": np.round(shares_out, 4).tolist(),
               "marker": {"color": "#b8c4d6"}}]
    figure = go.Figure(data=traces, layout=_layout("given -> model-suggested, share of units given that label",
                                                   barmode="group", yaxis={"title": {"text": "share"}}))
    return ui.safe_figure(figure)


def evidence_chart(pattern: Any) -> go.Figure | None:
    chart = pattern.chart or {}
    if chart.get("type") == "run":
        return run_chart(chart, str(pattern.evidence.get("confusion", pattern.attribute)))
    if chart.get("type") == "heap":
        return heap_chart(chart, pattern.attribute)
    if chart.get("type") == "slice":
        return slice_chart(chart, str(pattern.evidence.get("column")), str(pattern.evidence.get("value")))
    return None
