"""The image browser (Browse page, and the Review page before any score run exists).

Filters become ``store.select_items`` arguments; only the visible page of 24 images is read and
thumbnailed. A chart click on the Distributions page arrives as ``?filter=<json>`` in the URL, so a
refresh keeps the selection.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from app import actions, ui
from core.chart_filter import CHART_FILTER_KEYS, parse_chart_filter
from core.schema import Schema
from core.store import LabelStore
from train import predictions

# Keys a chart filter may carry (anything else in the URL is ignored, never passed to the store).
CHART_KEYS = CHART_FILTER_KEYS


def chart_filter(schema: Schema) -> dict[str, Any]:
    """The chart selection from ``?filter=``, checked against the schema (``core.chart_filter.parse_chart_filter``); what a
    malformed or edited link holds beyond that is ignored with a warning, never raised."""
    selection, ignored = parse_chart_filter(st.query_params.get("filter"), schema)
    if ignored:
        st.warning(ui.plain("Ignored part of the link's filter: " + "; ".join(ignored[:5])))
    return selection


def describe(selection: dict[str, Any]) -> str:
    """Plain words for a chart filter: ``mask = wear, gender = male (original labels)``."""
    parts = [f"{k} = {v}" for k, v in selection.get("labels", {}).items()]
    parts += [f"{k} = {lo}" if lo == hi else f"{k} in {lo}..{hi}" for k, (lo, hi) in selection.get("ranges", {}).items()]
    if selection.get("corrected"):
        parts.append(f"{selection['corrected']} corrected")
    return ", ".join(parts) + (" (original labels)" if selection.get("original") else "")


def _filters(store: LabelStore, key: str) -> dict[str, Any]:
    """Filter widgets -> ``select_items`` keyword arguments."""
    schema = store.schema
    kwargs: dict[str, Any] = {"labels": {}, "ranges": {}}
    with st.expander("Filters", expanded=True):
        top = st.columns(4)
        split = top[0].selectbox("Split", ["train", "eval", "all"], key=f"{key}_split",
                                 help="train: labelled images; eval: unlabelled images to predict")
        person = top[1].text_input("Person (id or folder name)", key=f"{key}_person", placeholder="e.g. 000050",
                                   help="Folder names starting with this text: 000050 finds 000050_female_Asian_45.")
        path = top[2].text_input("Path contains", key=f"{key}_path")
        issue = top[3].selectbox("Data issue", ["-", "any", *_issue_kinds(store)], key=f"{key}_issue")
        labels = st.columns(len(schema.targets) + 1)
        for column, target in zip(labels, schema.targets):
            chosen = column.multiselect(target, list(schema.target_classes(target)), key=f"{key}_{target}")
            if chosen:
                kwargs["labels"][target] = chosen
        corrected = labels[-1].selectbox("Corrected", ["all", "corrected", "unchanged"], key=f"{key}_corrected")
        for attribute in schema.attributes:
            if attribute.kind == "integer":
                low, high = attribute.minimum or 0, attribute.maximum or 120
                chosen = st.slider(attribute.name, low, high, (low, high), key=f"{key}_{attribute.name}_range")
                if tuple(chosen) != (low, high):
                    kwargs["ranges"][attribute.name] = chosen
    kwargs.update(split=None if split == "all" else split, person_prefix=person.strip() or None,
                  path_contains=path.strip() or None, issue_kind=None if issue == "-" else issue,
                  corrected={"all": None, "corrected": True, "unchanged": False}[corrected])
    return kwargs


def _issue_kinds(store: LabelStore) -> list[str]:
    return store.data_issue_kinds()


def _merge(widgets: dict[str, Any], selection: dict[str, Any]) -> dict[str, Any]:
    """Chart selection AND widget filters (the chart's label source decides ``original``)."""
    merged = dict(widgets)
    merged["labels"] = {**widgets["labels"], **selection.get("labels", {})}
    merged["ranges"] = {**widgets["ranges"], **{k: tuple(v) for k, v in selection.get("ranges", {}).items()}}
    merged["original"] = bool(selection.get("original", False))
    if selection.get("corrected"):
        merged["corrected"] = selection["corrected"]
    return merged


def browse_view(store: LabelStore, *, key: str, source: str) -> None:
    """Filters, a paged thumbnail gallery and the focused image with its relabeling actions."""
    schema = store.schema
    selection = chart_filter(schema)
    if selection:
        info, clear = st.columns([5, 1], vertical_alignment="center")
        info.info(ui.plain(f"Chart selection: {describe(selection)}"))
        if clear.button("Clear selection", key=f"{key}_clear"):
            del st.query_params["filter"]
            st.rerun()
    kwargs = _merge(_filters(store, key), selection)
    picked = st.session_state.get(f"{key}_items")  # a Map selection (app/map_views.py): exactly those images
    if picked:
        info, clear = st.columns([5, 1], vertical_alignment="center")
        info.info(f"Map selection: {len(picked):,} image(s)")
        if clear.button("Clear map selection", key=f"{key}_items_clear"):
            del st.session_state[f"{key}_items"]
            st.rerun()
        kwargs["item_ids"] = picked
    signature = json.dumps(kwargs, sort_keys=True, default=str)
    if st.session_state.get(f"{key}_signature") != signature:  # new filters: start at the top
        st.session_state[f"{key}_signature"] = signature
        st.session_state[f"{key}_pos"] = 0
    undone = st.session_state.pop(f"{key}_undone", None)
    if undone is not None:  # after an undo: back to the image (or the person's first image) taken back
        found = _position_of(store, kwargs, undone)
        if found is None:
            st.info(ui.plain(f"Undone: {undone[0]} (not in the images these filters show)."))
        else:
            st.session_state[f"{key}_pos"] = found
    _, total = store.select_items(**kwargs, limit=0)
    if total == 0:
        prefix = kwargs.get("person_prefix")
        st.warning(ui.plain(f"No person's id or folder name starts with {prefix!r}." if prefix and
                            store.select_items(person_prefix=prefix, limit=0)[1] == 0 else
                            "No image matches these filters."))
        return
    position = min(int(st.session_state.get(f"{key}_pos", 0)), total - 1)
    offset = position - position % ui.PAGE_SIZE
    rows, _ = store.select_items(**kwargs, offset=offset, limit=ui.PAGE_SIZE)

    def go(to: int) -> None:
        st.session_state[f"{key}_pos"] = max(0, min(to, total - 1))
        ui.scroll_to_top()

    st.caption(f"{total:,} image(s) · showing {offset + 1:,}–{offset + len(rows):,} · "
               "shortcuts: N next, P previous, K all labels correct, U undo")
    paging = st.columns([1, 1, 6])
    paging[0].button("◀ Page", key=f"{key}_page_back", on_click=go, args=(offset - ui.PAGE_SIZE,),
                     disabled=offset == 0)
    paging[1].button("Page ▶", key=f"{key}_page_next", on_click=go, args=(offset + ui.PAGE_SIZE,),
                     disabled=offset + ui.PAGE_SIZE >= total)
    captions = [_caption(schema.names, row) for row in rows.to_dict("records")]
    ui.gallery(store, rows, captions, focus=position - offset, key=key, on_pick=lambda i: go(offset + i))
    st.divider()
    with st.container(key=f"{key}_panel"):
        image_panel(store, rows.iloc[position - offset].to_dict(), key=key, source=source,
                    on_next=lambda: go(position + 1), on_previous=lambda: go(position - 1),
                    on_undo=lambda: _remember_undone(key))
    ui.apply_scroll(anchor=f"{key}_panel")  # after a move or an action: the image at hand, not the gallery


def _remember_undone(key: str) -> None:
    """Undo's ``after``: the browser lands on what was taken back (``_undone``: target, attribute)."""
    st.session_state[f"{key}_undone"] = st.session_state.pop("_undone", None)
    ui.scroll_to_top()


def _position_of(store: LabelStore, kwargs: dict[str, Any], undone: tuple[str, str]) -> int | None:
    """Where the undone target (an image path, or a person's first image) stands among the filtered images."""
    target, attribute = undone
    person_scope = store.schema.scope(attribute) == "person"
    if person_scope:
        first, _ = store.select_items(**{**kwargs, "person": target}, limit=1)
    else:
        first, _ = store.select_items(**kwargs, path_is=target, limit=1)
    if first.empty:
        return None
    return store.select_items(**kwargs, path_before=first["path"].iloc[0], limit=0)[1]


def _caption(names: list[str], row: dict[str, Any]) -> str:
    """Short gallery caption: file name and current labels (or 'eval')."""
    name = str(row["path"]).rsplit("/", 1)[-1]
    if row.get("split") == "eval" or row.get(names[0]) is None:
        return f"{name} · eval"
    return f"{name} · " + "/".join(str(row[n]) for n in names) + (" ✎" if row.get("corrected") else "")


def image_panel(store: LabelStore, item: dict[str, Any], *, key: str, source: str, on_next: Any,
                on_previous: Any, on_undo: Any = None) -> None:
    """One image large, its labels (current vs original), its person's images and the actions."""
    schema = store.schema
    left, right = st.columns([2, 3])
    with left:
        # Natural size (a small image is enlarged by whole factors, nearest neighbour): never blurred.
        st.image(ui.thumb(store, item["path"], item.get("hash"), 384))
        st.text(item["path"])
        ui.model_said(item["path"])
    with right:
        if item.get("split") == "eval" or item.get(schema.names[0]) is None:
            st.subheader("Eval image (unlabelled)")
            _predictions(store, item)
            return
        grouped = bool(item.get("person")) and ui.has_groups(store)  # else every image is its own "person"
        st.subheader(ui.plain(f"Person {item.get('person')}") if grouped else ui.plain(f"Image {item['path']}"))
        original = {n: item.get(f"{n}_original") for n in schema.names}
        st.dataframe(ui.label_table(schema.names, item, original), hide_index=True)
        actions.image_actions(schema, item, key=f"{key}_act", source=source, on_next=on_next,
                              on_previous=on_previous, on_undo=on_undo)
    if grouped:
        with st.expander("All images of this person", expanded=True):
            ui.person_strip(store, item["person"], highlight=item["path"])


def _predictions(store: LabelStore, item: dict[str, Any]) -> None:
    """Predicted classes and probabilities of an eval image from the newest prediction run, if any."""
    found = ui.predictions(store)
    if found is None:
        st.caption("No prediction yet: run `python -m train predict` (or Predict eval on the Train page).")
        return
    run_id, table = found
    image_id = str(item.get("source_id") or str(item["path"]).rsplit("/", 1)[-1])
    prediction = predictions.prediction_of(table, store.schema, image_id)
    if prediction is None:
        st.caption(f"Prediction run #{run_id} has no row for this image.")
        return
    st.caption(f"Prediction run #{run_id}")
    st.dataframe(prediction, hide_index=True)


# The change first (attribute, old -> new, revert links), then who, what and when: the new value is visible
# without scrolling sideways even beside long paths.
HISTORY_COLUMNS = ["id", "attribute", "old_value", "new_value", "entry", "target", "annotator", "created_at",
                   "reason", "source"]  # target_kind left out: a path or a person key says it (and it fits at 1280)
REVERT_ROW, REVERTED_ROW = "background-color: #fdecea", "color: #8a8a8a"


def history_table(log: pd.DataFrame) -> Any:
    """The corrections log for ``st.dataframe``: change columns first, an ``entry`` column naming
    reverts ("revert of #3", "reverted by #7"), revert rows tinted and reverted rows greyed (a Styler)."""
    if log.empty:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    frame = log.copy()
    reverts = pd.to_numeric(frame["reverts"], errors="coerce")
    reverted = pd.to_numeric(frame["reverted_by"], errors="coerce")
    frame["entry"] = [f"revert of #{int(a)}" if pd.notna(a) else (f"reverted by #{int(b)}" if pd.notna(b) else "")
                      for a, b in zip(reverts, reverted)]
    frame["created_at"] = frame["created_at"].astype(str).str[:19].str.replace("T", " ")
    frame = frame[HISTORY_COLUMNS].reset_index(drop=True)
    styles = [REVERT_ROW if pd.notna(a) else (REVERTED_ROW if pd.notna(b) else "") for a, b in zip(reverts, reverted)]
    return frame.style.apply(lambda row: [styles[row.name]] * len(row), axis=1)
