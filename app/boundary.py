"""The widget boundary: data text reaches a page only through these.

Invariant: no string from data (labels, class and person names, paths, annotators, reasons, notes) is rendered
as markdown or HTML. Streamlit renders button labels, metric labels *and values*, captions, messages and
subheaders as markdown (images included: a class named ``![t](http://host/x.png)`` would make the browser fetch
that URL), and plotly renders ``<a href>`` in tick and hover text. So data text reaches the page only through
``plain()`` (markdown escaped), ``button()``, ``metric()``, ``caption()``, ``chart_text()`` (HTML escaped, for
plotly categories and hover text), ``safe_figure()``, or data widgets (``st.dataframe``, ``st.text``).
Pages import these from ``app.ui``, which re-exports them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

import streamlit as st

_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~:$>])")


# GFM turns bare URLs, www. names and e-mail addresses in text into links after parsing, escapes or not; an
# invisible WORD JOINER after the scheme, the "www" or the "@" keeps them plain text.
_AUTOLINK = re.compile(r"(?i)\b(?:https?|ftp|mailto|www)(?=[:.])|@")


def plain(text: Any) -> str:
    """``text`` escaped so markdown renders it literally (no links, autolinks, images, emphasis, colours or HTML)."""
    unlinked = _AUTOLINK.sub(lambda match: match.group(0) + "\u2060", str(text))
    return _MARKDOWN.sub(r"\\\1", unlinked)


_BREAK_AFTER = re.compile(r"([_\-./])")


def breakable(text: Any) -> str:
    """``text`` with an invisible break opportunity (ZERO WIDTH SPACE) after each ``_ - . /``, so a file name in a
    narrow column wraps at its parts (``incorrect_`` / ``mask``), not mid-word (``incorrect_m`` / ``ask``). Pass
    the result through ``plain``/``caption`` as any data text."""
    return _BREAK_AFTER.sub("\\1\u200b", str(text))


def button(label: Any, *, container: Any = None, **kwargs: Any) -> bool:
    """``st.button`` (or ``container.button``) whose label renders literally, whatever data it holds."""
    return (container if container is not None else st).button(plain(label), **kwargs)


def metric(container: Any, label: Any, value: Any, **kwargs: Any) -> None:
    """``container.metric`` with label and value rendered literally (Streamlit renders both as markdown)."""
    container.metric(plain(label), plain(value), **kwargs)


def caption(text: Any, *, container: Any = None) -> None:
    """``st.caption`` of literal text."""
    (container if container is not None else st).caption(plain(text))


def chart_text(values: Iterable[Any]) -> list[str]:
    """Category names, tick and hover text for plotly, HTML-escaped: plotly renders ``<a href>``, ``<img>``-like
    tags and ``<br>`` in them, so a class named ``<a href=...>`` would become a live link. Plotly shows the
    escaped text as the original characters."""
    return [html.escape(str(v)) for v in values]


def safe_figure(figure: Any) -> Any:
    """A plotly figure with every text value of its traces (categories on x/y, ``text``, ``hovertext``) and of
    its annotations passed through ``chart_text``; numbers are left alone. Returns the same figure."""
    for trace in figure.data:
        for name in ("x", "y", "text", "hovertext", "labels"):
            values = getattr(trace, name, None) if name in trace else None
            if isinstance(values, list | tuple) and any(isinstance(v, str) for v in values):
                trace[name] = [chart_text([v])[0] if isinstance(v, str) else v for v in values]
            elif isinstance(values, str):
                trace[name] = chart_text([values])[0]
    for annotation in figure.layout.annotations or ():
        if isinstance(annotation.text, str):
            annotation.text = chart_text([annotation.text])[0]
    return figure
