"""Relabeling buttons shared by the Review and Browse pages.

Every button runs its action in an ``on_click`` callback whose arguments were bound when the page
was drawn, so ``shown`` is the value the reviewer actually saw: if someone changed the label in
between, the store refuses the write as a conflict and the page says so (never overwrites).

Keyboard shortcuts (Streamlit reserves C and R):
A accept suggestion · K label is correct (keep) · S skip · 1-9 set class n · N next · P previous · U undo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from app import ui
from core import review
from core.schema import Schema

SHORTCUTS = {"accept": "A", "keep": "K", "skip": "S", "next": "N", "previous": "P", "undo": "U"}


def _run(action: str, payload: dict[str, Any], after: Callable[[], None] | None) -> None:
    """Callback body: perform one action as the sidebar's annotator and keep its outcome."""
    name = ui.annotator()
    if not name:
        ui.flash(review.Outcome(False, "Type your name in the sidebar (Annotator) first: every change is signed."))
        return
    store = ui.get_store()
    if action == "set":
        value = st.session_state[payload["value_key"]] if "value_key" in payload else payload["value"]
        outcome = review.set_label(store, payload["target"], payload["attribute"], value, shown=payload["shown"],
                                   annotator=name, source=payload["source"], reason=payload.get("reason", ""))
    elif action in ("correct", "skip"):
        outcome = review.verdict(store, payload["target"], payload["attribute"], shown=payload["shown"],
                                 annotator=name, kind=action, score_run=payload.get("score_run"))
    elif action == "confirm_all":
        results = [review.verdict(store, target, attribute, shown=shown, annotator=name)
                   for target, attribute, shown in payload["units"]]
        failed = [r for r in results if not r.ok]
        outcome = failed[0] if failed else review.Outcome(True, f"All labels of {payload['label']} marked correct.")
    elif action == "undo":
        outcome = review.undo_last(store, name)
    else:  # a programming error, not a user one
        raise ValueError(f"unknown action {action!r}")
    ui.flash(outcome)
    if outcome.ok and after is not None:
        after()


def button(label: str, action: str, payload: dict[str, Any], *, key: str, shortcut: str | None = None,
           after: Callable[[], None] | None = None, disabled: bool = False, primary: bool = False) -> None:
    """One action button; the label may hold data (class values) and is rendered literally (``ui.plain``)."""
    st.button(ui.plain(label), key=key, on_click=_run, args=(action, payload, after), shortcut=shortcut,
              disabled=disabled or not ui.annotator(), type="primary" if primary else "secondary")


def undo_button(key: str) -> None:
    """Undo the annotator's newest correction or verdict (read from the database)."""
    store = ui.get_store()
    last = review.last_action(store, ui.annotator()) if ui.annotator() else None
    button("Undo", "undo", {}, key=key, shortcut=SHORTCUTS["undo"], disabled=last is None)
    if last is not None:
        st.caption(ui.plain(f"Undo takes back: {last['text']}"))


def value_input(schema: Schema, attribute: str, current: Any, key: str) -> None:
    """The widget choosing a new value of a stored attribute (its value is read in the callback)."""
    spec = schema.attribute(attribute)
    if spec.kind == "integer":
        value = int(current) if current is not None else (spec.minimum or 0)
        st.number_input(f"New {attribute}", min_value=spec.minimum, max_value=spec.maximum, value=value, step=1,
                        key=key)
    else:
        index = spec.classes.index(current) if current in spec.classes else 0
        st.selectbox(f"New {attribute}", spec.classes, index=index, key=key)


def unit_actions(schema: Schema, unit: dict[str, Any], *, key: str, source: str,
                 on_next: Callable[[], None], on_previous: Callable[[], None], score_run: int | None) -> None:
    """Buttons for one review unit: accept, label is correct, skip, set class n / value, navigate, undo.

    ``unit``: target, attribute (stored), scored (e.g. age_group), shown (current stored value),
    suggested (scored value or None).
    """
    target, attribute, shown = unit["target"], unit["attribute"], unit["shown"]
    base = {"target": target, "attribute": attribute, "shown": shown, "source": source, "score_run": score_run}
    # Without a single current value there is nothing to compare a write against: no label actions.
    unknown = shown is None
    suggested = unit.get("suggested")
    accept_value = None
    if suggested is not None and not pd.isna(suggested) and shown is not None:
        accept_value = review.suggestion_value(schema, unit["scored"], suggested, shown)
    row = st.columns(3)
    with row[0]:
        button(f"Accept: {attribute} → {accept_value}" if accept_value is not None else "Accept suggestion",
               "set", {**base, "value": accept_value}, key=f"{key}_accept", shortcut=SHORTCUTS["accept"],
               after=on_next, primary=True, disabled=accept_value is None or str(accept_value) == str(shown))
    with row[1]:
        button("Label is correct", "correct", base, key=f"{key}_keep", shortcut=SHORTCUTS["keep"], after=on_next,
               disabled=unknown)
    with row[2]:
        button("Skip", "skip", base, key=f"{key}_skip", shortcut=SHORTCUTS["skip"], after=on_next, disabled=unknown)

    spec = schema.attribute(attribute)
    if spec.kind == "categorical":
        ui.caption(f"Set {attribute}:")
        classes = st.columns(len(spec.classes))
        for number, (column, value) in enumerate(zip(classes, spec.classes), start=1):
            with column:
                button(f"{number}: {value}", "set", {**base, "value": value}, key=f"{key}_set_{number}",
                       shortcut=str(number) if number <= 9 else None, after=on_next, disabled=unknown or value == shown)
    else:
        value_key = f"{key}_value_{target}"
        value_input(schema, attribute, shown, value_key)
        button(f"Set {attribute}", "set", {**base, "value_key": value_key}, key=f"{key}_set_value", after=on_next,
               disabled=unknown)

    nav = st.columns(2)
    with nav[0]:
        st.button("Previous", key=f"{key}_previous", on_click=on_previous, shortcut=SHORTCUTS["previous"])
    with nav[1]:
        st.button("Next", key=f"{key}_next", on_click=on_next, shortcut=SHORTCUTS["next"])
    undo_button(f"{key}_undo")


def image_actions(schema: Schema, item: dict[str, Any], *, key: str, source: str,
                  on_next: Callable[[], None], on_previous: Callable[[], None]) -> None:
    """Per-attribute relabeling of one image (person-scope attributes change all the person's images)."""
    units = []
    for attribute in schema.names:
        shown = item.get(attribute)
        target = review.target_of(schema, attribute, item["path"], item.get("person"))
        units.append((target, attribute, shown))
        value_key = f"{key}_{attribute}_{item['item_id']}"
        left, right = st.columns([3, 2], vertical_alignment="bottom")
        with left:
            value_input(schema, attribute, shown, value_key)
        with right:
            scope = "person" if schema.scope(attribute) == "person" else "image"
            button(f"Set {attribute} ({scope})", "set",
                   {"target": target, "attribute": attribute, "shown": shown, "source": source, "value_key": value_key},
                   key=f"{key}_set_{attribute}")
    button("All labels correct", "confirm_all", {"units": units, "label": item["path"]}, key=f"{key}_keep",
           shortcut=SHORTCUTS["keep"], after=on_next)
    nav = st.columns(2)
    with nav[0]:
        st.button("Previous", key=f"{key}_previous", on_click=on_previous, shortcut=SHORTCUTS["previous"])
    with nav[1]:
        st.button("Next", key=f"{key}_next", on_click=on_next, shortcut=SHORTCUTS["next"])
    undo_button(f"{key}_undo")
