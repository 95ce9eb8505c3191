"""Review queue: the current score run's most suspicious images and people, with relabeling actions."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import actions, charts, similar_views, ui, views
from core import review
from core.store import StoreError

store = ui.get_store()
st.title("Review queue")
ui.show_flash()
if not ui.require_data(store):
    st.stop()
schema = store.schema

run_id = store.current_score_run()
if run_id is None:
    st.info("No score run yet, so there is no ranked queue. Create one with `python -m train score` "
            "(cross-validated model disagreement; add `--db` for another store), or Rescore on the Train page. "
            "Meanwhile every image can be browsed and relabeled below.")
    views.browse_view(store, key="review_browse", source="review")
    st.stop()

run = store.run(run_id)
# The ranked queue lives in the store (built when the score run was saved): this page reads counts
# and the visible page of it, never the whole queue.
status_table = ui.statuses(store, run["created_at"])
reviewed, flagged = review.queue_progress(store, run_id, status_table)
facts = ui.queue_facts(store, run_id)
st.progress(reviewed / flagged if flagged else 1.0,
            text=f"Reviewed {reviewed:,} of {flagged:,} flagged (score run #{run_id}, "
                 f"{store.review_summary(run_id)['n_units']:,} units ranked)")

similar_views.learning_panel(store, run_id)  # the learning queue: before the filters (it sets focus and filters)
with st.expander("Filters", expanded=True):
    top = st.columns(4)
    attribute = top[0].selectbox("Attribute", ["all", *facts["attributes"]], key="review_attribute")
    classes = facts["classes"].get(attribute) or sorted({c for cs in facts["classes"].values() for c in cs})
    given = top[1].selectbox("Given label", ["any", *classes], key="review_given")
    suggested = top[2].selectbox("Suggested label", ["any", *classes], key="review_suggested")
    status = top[3].selectbox("Status", ["unreviewed", "all", "skipped", "reviewed", "corrected"], key="review_status")
    bottom = st.columns([2, 1, 1])
    min_score = bottom[0].slider("Score at least", 0.0, max(facts["max_score"], 1.0), 0.0, key="review_min_score")
    flagged_only = bottom[1].toggle("Flagged only", value=True, key="review_flagged")
    issue = bottom[2].selectbox("Data issue", ["-", "any", *store.data_issue_kinds()], key="review_issue")

filters = {"attribute": None if attribute == "all" else attribute, "given": None if given == "any" else given,
           "suggested": None if suggested == "any" else suggested, "min_score": min_score,
           "flagged_only": flagged_only, "status": None if status == "all" else status,
           "issue_kind": None if issue == "-" else issue}


def focus_undone() -> None:
    """After an undo, show the unit taken back (not the one the reviewer had moved on to)."""
    target, stored = st.session_state.pop("_undone", (None, None))
    found, _ = store.review_units(run_id, units=[f"{target}|{stored}"], limit=1, count=False)
    if len(found):
        st.session_state["review_focus"] = found.iloc[0]["key"]


_, total = review.queue_page(store, run_id, status_table, limit=0, **filters)
if total == 0:
    st.success("Nothing left to review with these filters.")
    actions.undo_button("review_empty_undo", after=focus_undone)
    st.stop()

# Focus follows a unit (key), not a position: after a verdict the unit may leave the filtered list.
focus = st.session_state.get("review_focus")
found = review.queue_position(store, run_id, status_table, focus, **filters) if focus else None
position = found if found is not None else min(int(st.session_state.get("review_pos", 0)), total - 1)
st.session_state["review_pos"] = position
offset = position - position % ui.PAGE_SIZE
# The page plus one page before and one unit after it: every unit a button below can focus.
start = max(offset - ui.PAGE_SIZE, 0)
window, _ = review.queue_page(store, run_id, status_table, offset=start, limit=offset + ui.PAGE_SIZE + 1 - start,
                              count=False, **filters)
keys = dict(zip(range(start, start + len(window)), window["key"]))


def focus_on(to: int) -> None:
    """Focus the unit at ``to`` (clamped) of the list as drawn."""
    to = max(0, min(to, total - 1))
    if to in keys:
        st.session_state["review_focus"] = keys[to]
    st.session_state["review_pos"] = to


page_rows = window.iloc[offset - start:offset - start + ui.PAGE_SIZE]
unit: dict[str, Any] = window.iloc[position - start].to_dict()
spec = schema.attribute(unit["stored"])
n_classes = len(spec.classes) if spec.kind == "categorical" else 0
st.caption(f"{total:,} unit(s) · showing {offset + 1:,}–{offset + len(page_rows):,} · "
           + actions.shortcut_caption(n_classes))

try:
    shown = store.label_of(unit["target"], unit["stored"])
except StoreError as error:
    shown = None
    st.warning(ui.plain(str(error)))
shown_text = shown
if unit["attribute"] != unit["stored"] and shown is not None:  # age_group: show the age and its bin
    binned = next(b for b in schema.binned if b.name == unit["attribute"])
    shown_text = f"{shown} ({binned.classes[int(binned.codes([shown])[0])]})"
classes = schema.target_classes(unit["attribute"])
detail = store.score_detail(run_id, unit["item_id"], unit["attribute"])
person_scope = unit["scope"] == "person"
opinions: dict[str, str] = {}
said: list[Any] = []
if person_scope:  # the model's own opinion of each of the person's photos
    photos, _ = store.select_items(person=unit["target"], limit=None)
    for photo in photos.itertuples(index=False):
        opinion = review.photo_opinion(store.score_detail(run_id, photo.item_id, unit["attribute"]), classes)
        said.append(opinion)
        if opinion is not None:
            opinions[photo.path] = f"model: {opinion[0]} {opinion[1]:.2f}"

if person_scope:
    st.subheader(ui.plain(f"Person {unit['target']}: {unit['attribute']}"))
    left, right = st.columns([1, 1])
else:
    st.subheader(ui.plain(f"Image: {unit['attribute']}"))
    picture, left, right = st.columns([2, 2, 3])
    with picture:
        st.image(ui.thumb(store, unit["path"], None, 384))
        st.text(unit["path"])
with left:
    swap = review.swap_pair(detail, unit["given"], unit["suggested"], classes)
    if swap:
        st.info(ui.plain(f"Flagged as a swap: this person's {swap[0]} and {swap[1]} images look exchanged. "
                         "Accept here, then on the partner image (next in the queue)."))
    else:
        st.markdown("**Why:** " + ui.plain(review.reason(unit["attribute"], unit["given"], unit["suggested"], detail,
                                                         said)))
    ui.model_said(unit["path"])
    # Plain lines, not metric tiles: a tile cuts a long label ("Suggested not_…"); these wrap.
    st.markdown("  \n".join([
        f"Given ({ui.plain(unit['attribute'])}): **{ui.plain(unit['given'])}**",
        f"Suggested: **{ui.plain(unit['suggested'])}**",
        f"Score: **{unit['score']:.3f}** (how strongly the out-of-fold model disagrees with the given label)",
        f"Current {ui.plain(unit['stored'])}: **{ui.plain(shown_text)}**",
        f"Status: {ui.plain(unit['status'])} · flagged: {'yes' if unit['is_issue'] else 'no'}"]))
    probs = review.probabilities(detail, classes)
    if probs:
        st.plotly_chart(charts.probabilities(probs), key="review_probs", width="stretch")
    numbers = review.evidence(detail)
    if numbers:
        with st.expander("Evidence (numbers)"):
            st.dataframe(pd.DataFrame({"measure": list(numbers), "value": [str(v) for v in numbers.values()]}),
                         hide_index=True)
with right:
    actions.unit_actions(schema, {"target": unit["target"], "attribute": unit["stored"], "scored": unit["attribute"],
                                  "shown": shown, "suggested": unit["suggested"]},
                         key="review_act", source="review", score_run=run_id,
                         on_next=lambda: focus_on(position + 1), on_previous=lambda: focus_on(position - 1),
                         on_undo=focus_undone)
    similar_views.more_like_this_button(store, run_id, unit)
if person_scope:
    st.markdown(f"**All {len(opinions) or ''} photos of this person** (the evidence; the model's opinion of each "
                "photo under it; hover a photo and use its full-screen button to zoom)")
    ui.person_strip(store, unit["target"], highlight=unit["path"], opinions=opinions)
elif unit.get("person") and ui.has_groups(store):
    with st.expander("All images of this person"):
        ui.person_strip(store, unit["person"], highlight=unit["path"])

# The rest of this page of the queue, under the decision (the unit at hand comes first, without scrolling).
st.divider()
st.subheader(f"Queue: units {offset + 1:,}–{offset + len(page_rows):,} of {total:,}")
paging = st.columns([1, 1, 6])
paging[0].button("◀ Page", key="review_page_back", on_click=focus_on, args=(offset - ui.PAGE_SIZE,), disabled=offset == 0)
paging[1].button("Page ▶", key="review_page_next", on_click=focus_on, args=(offset + ui.PAGE_SIZE,),
                 disabled=offset + ui.PAGE_SIZE >= total)
captions = [f"{r.attribute}: {r.given} → {r.suggested} · score {r.score:.2f}" for r in page_rows.itertuples(index=False)]
ui.gallery(store, page_rows, captions, focus=position - offset, key="review_gallery",
           on_pick=lambda i: focus_on(offset + i))
