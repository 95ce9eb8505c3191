"""Widgets of the learning queue and "more like this" (``core.learning``): the Review page's hooks
(``learning_panel``, ``more_like_this_button``) and the More-like-this page's gallery with bulk decisions.

Embeddings come from the current score run's folder (``core.embeddings``); a run without them, or with a
stale file, gets the loader's one-line message, never an exception box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import ui
from core import embeddings, learning, review
from core.store import LabelStore

SIMILAR_PAGE = "app_pages/similar.py"
ANCHORS = "similar_anchors"  # session key: unit keys "more like this" starts from


def _stamp(store: LabelStore, run_id: int) -> float:
    """The embeddings file's modification time (a rescored or replaced file is read again)."""
    run = store.run(run_id) or {}
    path = Path(run.get("run_dir") or ".") / "embeddings.npy"
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_resource(show_spinner="Reading the score run's embeddings (once a score run; about 10 s at 200,000 images)…",
                   max_entries=2)
def _prepared(_store: LabelStore, db: str, run_id: int, stamp: float) -> tuple[Any, str | None]:
    try:
        emb = embeddings.load_run(_store, run_id)
    except embeddings.EmbeddingsUnavailable as error:
        return None, str(error)
    units = learning.unit_table(_store, run_id)
    vectors = embeddings.unit_vectors(emb, units)
    return {"emb": emb, "units": units, "vectors": vectors, "index": learning.UnitIndex(units, vectors)}, None


def prepared(store: LabelStore, run_id: int) -> tuple[dict[str, Any] | None, str | None]:
    """({emb, units, vectors, index}, None), or (None, the plain reason there are no embeddings)."""
    return _prepared(store, str(store.path), int(run_id), _stamp(store, run_id))


def unavailable(message: str) -> None:
    st.info(ui.plain(f"No embeddings for this view: {message}"))


# ---- the learning queue on the Review page ------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=4)
def _fit(_store: LabelStore, db: str, run_id: int, stamp: float, used: tuple[tuple[str, int], ...]) -> Any:
    """``learning.learn`` on one epoch's decisions: refitted once every ``every`` decisions, not on each click."""
    ready, _ = prepared(_store, run_id)
    return learning.learn(ready["units"], ready["vectors"], pd.DataFrame(list(used), columns=["unit", "error"]))


@st.cache_data(show_spinner=False, max_entries=8)
def _learned(_store: LabelStore, db: str, run_id: int, stamp: float, version: tuple[int, ...], every: int) -> Any:
    ready, _ = prepared(_store, run_id)
    decided = learning.decisions(_store, run_id)
    used = learning.used_decisions(decided, every)
    fitted = _fit(_store, db, run_id, stamp, tuple(zip(used["unit"].astype(str), used["error"].astype(int))))
    return learning.learned_queue(ready["units"], ready["vectors"], decided, every=every, learned=fitted)


def learned(store: LabelStore, run_id: int, every: int = learning.EVERY) -> learning.LearnedQueue:
    """The learned queue now (cached until the store's next write)."""
    return _learned(store, str(store.path), int(run_id), _stamp(store, run_id), store.version(), every)


def learning_panel(store: LabelStore, run_id: int) -> bool:
    """The Review page's "Learning queue" switch and, when it is on, what the order learned and why; it moves the
    page's focus to the next unit of the learned order once the unit it proposed is decided. Returns whether
    the learning queue is on. Call it before the page's filters (it turns "Flagged only" off: the learned
    order walks every unreviewed unit, flagged or not)."""
    on = st.toggle("Learning queue", key="review_learning",
                   help="Re-rank the unreviewed units after every 10 decisions from what you decided: units like "
                        "the errors you confirmed come first. Off: the plain ranking.")
    if not on:
        st.session_state.pop("_learning_proposed", None)
        return False
    ready, problem = prepared(store, run_id)
    if ready is None:
        unavailable(problem or "")
        return False
    queue = learned(store, run_id)
    if queue.order.empty:
        st.success("Every unit has a decision.")
        return True
    st.session_state["review_flagged"] = False
    st.session_state["review_status"] = "unreviewed"
    last_epoch = st.session_state.get("_learning_epoch")
    st.session_state["_learning_epoch"] = queue.epoch
    changed = last_epoch is not None and last_epoch != queue.epoch and queue.active
    box = st.container(border=True)
    box.markdown(("**The order just changed.** " if changed else "") + ui.plain(queue.note))
    moved = queue.order[queue.order["why"] != ""].head(5)
    if len(moved):
        box.caption("Why the next units are where they are:")
        box.dataframe(pd.DataFrame({"unit": [f"{r.target} · {r.attribute}" for r in moved.itertuples()],
                                    "given": moved["given"].astype(str), "why": moved["why"],
                                    "places moved": moved["moved"].astype(int)}), hide_index=True)
    proposed = st.session_state.get("_learning_proposed")
    statuses = ui.run_statuses(store, run_id)
    if proposed is None or statuses.get(proposed[1], "unreviewed") != "unreviewed" or changed:
        head = queue.order.iloc[0]
        st.session_state["review_focus"] = head["key"]
        st.session_state["_learning_proposed"] = (head["key"], head["unit"])
    return True


def more_like_this_button(store: LabelStore, run_id: int, unit: dict[str, Any], *, key: str = "review_similar") -> None:
    """"More like this": opens the More-like-this page on this unit."""
    def go() -> None:
        st.session_state[ANCHORS] = [unit["key"]]

    if st.button("More like this", key=key, on_click=go,
                 help="Units that look like this one and carry the same given label, to decide together"):
        ui.switch_page(SIMILAR_PAGE)


# ---- the More-like-this page -------------------------------------------------------------------------------------
def _thumb_row(store: LabelStore, row: Any) -> str:
    return ui.thumb(store, row.path, None, 160)


def similar_page(store: LabelStore, run_id: int) -> None:
    """Anchors (one unit, or the errors confirmed for one attribute and given label), their nearest units with the
    same given label as a gallery with checkboxes, and bulk decisions on the checked ones."""
    ready, problem = prepared(store, run_id)
    if ready is None:
        unavailable(problem or "")
        return
    units, index = ready["units"], ready["index"]
    statuses = ui.run_statuses(store, run_id)
    anchors = [k for k in st.session_state.get(ANCHORS, []) if k in index.position.index]
    errors = units[units["unit"].map(statuses).eq("corrected").to_numpy()]  # the errors confirmed since the run
    with st.expander("Start from the errors you confirmed", expanded=not anchors):
        if errors.empty:
            st.caption("No error confirmed since this score run yet: open a unit's \"More like this\" on the Review "
                       "page, or correct a label first.")
        else:
            groups = errors.groupby(["attribute", "given"]).size().reset_index(name="n")
            labels = [f"{r.attribute}: given {r.given} ({r.n} confirmed error(s))" for r in groups.itertuples()]
            pick = st.selectbox("Confirmed errors", range(len(labels)), format_func=lambda i: labels[i],
                                key="similar_group")
            if st.button("Find more like these", key="similar_from_errors"):
                g = groups.iloc[int(pick)]
                chosen = errors[(errors["attribute"] == g["attribute"]) & (errors["given"] == g["given"])]
                st.session_state[ANCHORS] = list(chosen["key"])
                st.rerun()
    if not anchors:
        st.info("Pick a unit on the Review page (\"More like this\") or start from your confirmed errors above.")
        return
    first = units.iloc[int(index.position[anchors[0]])]
    attribute, given = str(first["attribute"]), str(first["given"])
    st.subheader(ui.plain(f"Like {len(anchors)} unit(s): {attribute}, given {given}"))
    strip = st.columns(8)  # a thumbnail an eighth of the width, however many anchors
    for column, key in zip(strip, anchors[:8]):
        row = units.iloc[int(index.position[key])]
        column.image(_thumb_row(store, row), width="stretch")
        column.caption(ui.plain(f"{row['target'] if row['scope'] == 'person' else row['path'].rsplit('/', 1)[-1]}"
                                f" · {statuses.get(row['unit'], 'unreviewed')}"))
    options = st.columns([2, 2, 3])
    k = options[0].slider("How many", 6, 60, 18, step=6, key="similar_k")
    hide = options[1].toggle("Hide decided units", value=True, key="similar_hide")
    done = {u for u, s in statuses.items() if s in ("corrected", "reviewed")}
    exclude = set(units.loc[units["unit"].isin(done), "key"]) if hide else set()
    found = index.similar(anchors, k=k, exclude=exclude)
    options[2].caption(f"Nearest units with the same given label ({attribute} = {given}) by the score run's "
                       "out-of-fold embeddings; a person is the mean of their photos.")
    if found.empty:
        st.success("No other unit with this given label is left.")
        return
    found["status"] = found["unit"].map(statuses).fillna("unreviewed")
    st.caption(f"{len(found)} unit(s), most similar first. Tick the ones to decide together.")
    grid = st.columns(6)
    for i, row in enumerate(found.itertuples(index=False)):
        with grid[i % 6]:
            st.image(_thumb_row(store, row), width="stretch")
            name = row.target if row.scope == "person" else row.path.rsplit("/", 1)[-1]
            st.caption(ui.plain(f"{name} · given {row.given} · similarity {row.similarity:.2f} · {row.status}"))
            st.checkbox("select", key=f"similar_pick_{row.key}", value=st.session_state.get(f"similar_pick_{row.key}",
                                                                                             True))
    chosen = [row for row in found.itertuples(index=False) if st.session_state.get(f"similar_pick_{row.key}", True)]
    st.divider()
    st.markdown(f"**Decide the {len(chosen)} ticked unit(s) together**")
    classes = list(store.schema.target_classes(attribute))
    cols = st.columns([2, 2, 2])
    value = cols[0].selectbox(f"Set {attribute} to", classes, index=0 if classes[0] != given else min(1, len(classes) - 1),
                              key="similar_value")
    payload = [{"target": str(r.target), "stored": str(r.stored), "scored": attribute} for r in chosen]
    cols[1].button(ui.plain(f"Set {len(chosen)} to {value}"), key="similar_set", on_click=_bulk,
                   args=("set", payload, value, run_id), disabled=not chosen or not ui.annotator(), type="primary")
    cols[2].button(ui.plain(f"All {len(chosen)} labels are correct"), key="similar_correct", on_click=_bulk,
                   args=("correct", payload, None, run_id), disabled=not chosen or not ui.annotator())
    if not ui.annotator():
        st.caption("Type your name in the sidebar (Annotator) to decide.")


def _bulk(action: str, payload: list[dict[str, str]], value: Any, run_id: int) -> None:
    name = ui.annotator()
    if not name:
        ui.flash(review.Outcome(False, "Type your name in the sidebar (Annotator) first: every change is signed."))
        return
    outcome = learning.decide_many(ui.get_store(), payload, action, value=value, annotator=name, score_run=run_id)
    ui.flash(outcome)

