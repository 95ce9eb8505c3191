"""Relabeling buttons shared by the Review and Browse pages.

Every button runs its action in an ``on_click`` callback whose arguments were bound when the page
was drawn, so ``shown`` is the value the reviewer actually saw: if someone changed the label in
between, the store refuses the write as a conflict and the page says so (never overwrites).

Keyboard shortcuts (Streamlit reserves C and R):
A accept suggestion · K label is correct (keep) · S skip · 1-9, 0 set class n (0 = the tenth) · N next ·
P previous · U undo.
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
CLASS_KEYS = "1234567890"  # set class n: the tenth class is 0; classes beyond ten have buttons, no key
CLASSES_PER_ROW = 3  # set-class buttons a row, full column width: each label readable in full
SHORT_CLASS = 6  # longest class name three buttons a row hold at 1280 px ("female 2"); longer ones go two a row


def class_key(number: int) -> str | None:
    """The key that sets class ``number`` (1-based), None beyond ten."""
    return CLASS_KEYS[number - 1] if 1 <= number <= len(CLASS_KEYS) else None


def class_keys_text(n_classes: int) -> str:
    """The set-class keys of an attribute with ``n_classes`` classes, for the shortcut caption:
    ``1-3``, ``1-9, 0``; '' for fewer than two."""
    if n_classes < 2:
        return ""
    last = min(n_classes, 9)
    return f"1-{last}" + (", 0" if n_classes >= 10 else "")


def shortcut_caption(n_classes: int) -> str:
    """The Review page's shortcut line, derived from the number of classes of the attribute shown."""
    keys = class_keys_text(n_classes)
    return ("shortcuts: A accept, K label is correct, S skip, " + (f"{keys} set class, " if keys else "")
            + "N next, P previous, U undo")


def _run(action: str, payload: dict[str, Any], after: Callable[[], None] | None) -> None:
    """Callback body: perform one action as the sidebar's annotator and keep its outcome."""
    ui.scroll_to_top()  # the outcome is said at the top, and the next unit starts there
    name = ui.annotator()
    if not name:
        ui.flash(ui.Flash(False, "Type your name in the sidebar (Annotator) first: every change is signed."))
        return
    store = ui.get_store()
    tab = ui.tab_id()
    seen = payload.get("seen_review")
    if action == "set":
        value = st.session_state[payload["value_key"]] if "value_key" in payload else payload["value"]
        outcome = review.set_label(store, payload["target"], payload["attribute"], value, shown=payload["shown"],
                                   annotator=name, source=payload["source"], reason=payload.get("reason", ""),
                                   tab=tab, score_run=payload.get("score_run"), seen_review=seen)
    elif action == "accept_binned":  # an age group: the age is the reviewer's, never invented
        outcome = review.accept_binned(store, payload["target"], payload["scored"], payload["group"],
                                       st.session_state.get(payload["value_key"]), shown=payload["shown"],
                                       annotator=name, source=payload["source"], tab=tab,
                                       score_run=payload.get("score_run"), seen_review=seen)
    elif action in ("correct", "skip"):
        outcome = review.verdict(store, payload["target"], payload["attribute"], shown=payload["shown"],
                                 annotator=name, kind=action, score_run=payload.get("score_run"), tab=tab,
                                 seen_review=seen)
    elif action == "confirm_all":
        results = [review.verdict(store, target, attribute, shown=shown, annotator=name, tab=tab)
                   for target, attribute, shown in payload["units"]]
        failed = [r for r in results if not r.ok]
        outcome = failed[0] if failed else ui.Flash(True, f"All labels of {payload['label']} marked correct.")
    elif action == "undo":
        undone = review.last_action(store, name, tab)
        outcome = review.undo_last(store, name, tab)
        if outcome.ok and undone is not None:  # where the reviewer lands: the unit taken back
            st.session_state["_undone"] = (undone["target"], undone["attribute"])
    else:  # a programming error, not a user one
        raise ValueError(f"unknown action {action!r}")
    ui.flash(outcome)
    if outcome.ok and after is not None:
        after()


def button(label: str, action: str, payload: dict[str, Any], *, key: str, shortcut: str | None = None,
           after: Callable[[], None] | None = None, disabled: bool = False, primary: bool = False,
           stretch: bool = False, help: str | None = None) -> None:
    """One action button; the label may hold data (class values) and is rendered literally (``ui.plain``);
    ``stretch``: as wide as its column; ``help``: a tooltip (already plain text)."""
    st.button(ui.plain(label), key=key, on_click=_run, args=(action, payload, after), shortcut=shortcut,
              disabled=disabled or not ui.annotator(), type="primary" if primary else "secondary",
              width="stretch" if stretch else "content", help=help)


def undo_button(key: str, after: Callable[[], None] | None = None, stretch: bool = False,
                caption_to: Any = None) -> None:
    """Undo the annotator's newest correction or verdict (read from the database); ``after`` runs
    once it is undone, with ``st.session_state["_undone"]`` = (target, stored attribute) taken back."""
    store = ui.get_store()
    last = review.last_action(store, ui.annotator(), ui.tab_id()) if ui.annotator() else None
    button("Undo", "undo", {}, key=key, shortcut=SHORTCUTS["undo"], disabled=last is None, after=after,
           stretch=stretch)
    if last is not None:
        ui.caption(f"Undo (this tab) takes back: {last['text']}", container=caption_to)


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
                 on_next: Callable[[], None], on_previous: Callable[[], None], score_run: int | None,
                 on_undo: Callable[[], None] | None = None) -> None:
    """Buttons for one review unit: accept, label is correct, skip, set class n / value, navigate, undo.

    ``unit``: target, attribute (stored), scored (e.g. age_group), shown (current stored value),
    suggested (scored value or None), seen_review (the label's newest verdict id when drawn), and for a
    binned target ``estimate`` (the model's own value, if any: the only prefill of the value asked for).
    """
    target, attribute, shown = unit["target"], unit["attribute"], unit["shown"]
    base = {"target": target, "attribute": attribute, "shown": shown, "source": source, "score_run": score_run,
            "seen_review": unit.get("seen_review")}
    # Without a single current value there is nothing to compare a write against: no label actions.
    unknown = shown is None
    suggested = unit.get("suggested")
    has_suggestion = suggested is not None and not pd.isna(suggested)
    binned = unit["scored"] != attribute and has_suggestion
    spec = schema.attribute(attribute)
    if binned:
        _binned_accept(unit, spec, base, key=key, on_next=on_next, disabled=unknown)
    else:
        accept_value = review.suggestion_value(schema, unit["scored"], suggested, shown) \
            if has_suggestion and shown is not None else None
        # The accept button has a row of its own: the value it writes is read in full, never cut.
        button(f"Accept: {attribute} → {accept_value}" if accept_value is not None else
               "Accept suggestion", "set", {**base, "value": accept_value}, key=f"{key}_accept",
               shortcut=SHORTCUTS["accept"], after=on_next, primary=True,
               disabled=accept_value is None or str(accept_value) == str(shown), stretch=True)
    row = st.columns([3, 2])
    with row[0]:
        button("Label is correct", "correct", base, key=f"{key}_keep", shortcut=SHORTCUTS["keep"],
               after=on_next, disabled=unknown, stretch=True)
    with row[1]:
        button("Skip", "skip", base, key=f"{key}_skip", shortcut=SHORTCUTS["skip"], after=on_next,
               disabled=unknown, stretch=True)

    if spec.kind == "categorical":
        numbered = list(enumerate(spec.classes, start=1))
        per_row = CLASSES_PER_ROW if max(len(str(c)) for c in spec.classes) <= SHORT_CLASS else 2
        for start in range(0, len(numbered), per_row):
            columns = st.columns(min(per_row, len(numbered)))
            for column, (number, value) in zip(columns, numbered[start:start + per_row]):
                keyname = class_key(number)
                with column:
                    button(str(value), "set",  # Streamlit shows the key on the button
                           {**base, "value": value}, key=f"{key}_set_{number}", shortcut=keyname, after=on_next,
                           disabled=unknown or value == shown, stretch=True,
                           help=ui.plain(f"Set {attribute} to {value}"))
    elif not binned:
        value_key = f"{key}_value_{target}"
        left, right = st.columns([3, 2], vertical_alignment="bottom")
        with left:
            value_input(schema, attribute, shown, value_key)
        with right:
            button(f"Set {attribute}", "set", {**base, "value_key": value_key}, key=f"{key}_set_value",
                   after=on_next, disabled=unknown, stretch=True)

    nav = st.columns(3)
    below = st.container()  # what undo takes back, under the row at full width
    with nav[0]:
        st.button("Prev", key=f"{key}_previous", on_click=on_previous, shortcut=SHORTCUTS["previous"],
                  width="stretch", help="Previous unit")
    with nav[1]:
        st.button("Next", key=f"{key}_next", on_click=on_next, shortcut=SHORTCUTS["next"], width="stretch")
    with nav[2]:
        undo_button(f"{key}_undo", after=on_undo, stretch=True, caption_to=below)


def _binned_accept(unit: dict[str, Any], spec: Any, base: dict[str, Any], *, key: str, on_next: Callable[[], None],
                   disabled: bool) -> None:
    """A binned target's Accept (an age group): a group says nothing exact about the value, so the reviewer
    types it (prefilled only by the model's own estimate, where it gives one). Accept takes a value inside
    the group; Set takes any."""
    target, attribute, suggested = unit["target"], unit["attribute"], unit.get("suggested")
    value_key = f"{key}_value_{target}"
    estimate = unit.get("estimate")
    st.number_input(ui.plain(f"{attribute.capitalize()} (years): {unit['scored']} suggests {suggested}"),
                    min_value=spec.minimum, max_value=spec.maximum,
                    value=int(round(estimate)) if estimate is not None else None, step=1, key=value_key,
                    placeholder=f"type the {attribute}", help=ui.plain(
                        f"Accepting {suggested} never invents a {attribute}: type the one you see"
                        + (" (prefilled with the model's estimate)" if estimate is not None else "") + "."))
    row = st.columns(2)
    with row[0]:
        button(f"Accept {suggested}", "accept_binned",
               {**base, "scored": unit["scored"], "group": suggested, "value_key": value_key},
               key=f"{key}_accept", shortcut=SHORTCUTS["accept"], after=on_next, primary=True,
               disabled=disabled, stretch=True)
    with row[1]:
        button(f"Set {attribute}", "set", {**base, "value_key": value_key}, key=f"{key}_set_value",
               after=on_next, disabled=disabled, stretch=True)


def image_actions(schema: Schema, item: dict[str, Any], *, key: str, source: str,
                  on_next: Callable[[], None], on_previous: Callable[[], None],
                  on_undo: Callable[[], None] | None = None) -> None:
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
    undo_button(f"{key}_undo", after=on_undo)
