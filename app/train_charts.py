"""Plotly figures for the Train page: learning curves, confusion matrices, per-class F1 (plain dicts in, figures out)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from app.ui import safe_figure  # class names are data: HTML-escaped in every figure

LOSS, F1, BEFORE, AFTER = "#3b6fb6", "#27ae60", "#b8c4d6", "#3b6fb6"


def _layout(title: str, height: int, **extra: object) -> dict:
    return {"title": {"text": title}, "height": height, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
            "legend": {"orientation": "h", "y": 1.15, "x": 1, "xanchor": "right"}, **extra}


def curves(epochs: pd.DataFrame, title: str = "Learning curves") -> go.Figure:
    """Train and validation loss (left axis) and validation macro F1 (right axis, 0..1) per epoch."""
    x = [int(e) for e in epochs["epoch"]] if "epoch" in epochs else []
    traces = []
    for column, name, dash in (("train_loss", "train loss", "solid"), ("val_loss", "val loss", "dot")):
        if column in epochs:
            traces.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": x,
                           "y": [None if pd.isna(v) else float(v) for v in epochs[column]],
                           "line": {"color": LOSS, "dash": dash}})
    if "macro_f1" in epochs:
        traces.append({"type": "scatter", "mode": "lines+markers", "name": "val macro F1", "x": x, "yaxis": "y2",
                       "y": [None if pd.isna(v) else float(v) for v in epochs["macro_f1"]], "line": {"color": F1}})
    return go.Figure(data=traces, layout=_layout(
        title, 300, xaxis={"title": {"text": "epoch"}, "dtick": 1}, yaxis={"title": {"text": "loss"}},
        yaxis2={"title": {"text": "macro F1"}, "overlaying": "y", "side": "right", "range": [0, 1],
                "tickmode": "linear", "tick0": 0, "dtick": 0.25, "showgrid": False}))


def confusion(matrix: pd.DataFrame, target: str) -> go.Figure:
    """A confusion matrix heatmap: rows = true class, columns = predicted class, cells = images."""
    cells = matrix.to_numpy().tolist()
    names = [str(c) for c in matrix.columns]
    return safe_figure(go.Figure(data=[{"type": "heatmap", "z": cells, "x": names, "y": [str(i) for i in matrix.index],
                            "colorscale": "Blues", "text": cells, "texttemplate": "%{text}", "showscale": False,
                            "hovertemplate": "true %{y}, predicted %{x}: %{z} images<extra></extra>"}],
                     # A short title (the head): it sits in a third of the page; the axes say true / predicted.
                     layout=_layout(str(target), 260 + 20 * len(names),
                                    xaxis={"title": {"text": "predicted"}, "side": "bottom"},
                                    yaxis={"title": {"text": "true"}, "autorange": "reversed"})))


def per_class_f1(frame: pd.DataFrame, names: tuple[str, str] = ("F1", "")) -> go.Figure:
    """Bars of per-class F1: one series (``run_a``) or two side by side (``run_a``, ``run_b``)."""
    classes = [str(c) for c in frame["class"]]
    traces = [{"type": "bar", "name": names[0], "x": classes, "marker": {"color": BEFORE if names[1] else AFTER},
               "y": [None if pd.isna(v) else float(v) for v in frame["run_a"]]}]
    if names[1] and "run_b" in frame:
        traces.append({"type": "bar", "name": names[1], "x": classes, "marker": {"color": AFTER},
                       "y": [None if pd.isna(v) else float(v) for v in frame["run_b"]]})
    return safe_figure(go.Figure(data=traces, layout=_layout("Validation F1 per class", 340, barmode="group",
                                                             xaxis={"tickangle": -45}, yaxis={"range": [0, 1]})))
