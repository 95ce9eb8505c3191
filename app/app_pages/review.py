"""Review queue: the current score run's most suspicious images and people, with relabeling actions."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import actions, charts, similar_views, ui, views
from core import review
from core.unit_view import decision_text, unit_view

store = ui.page_start("Review queue", compact=True)
schema = store.schema

run_id = store.current_score_run()
if run_id is None:
    st.info("No score run yet, so there is no ranked queue. Create one with `python -m train score` "
            "(cross-validated model disagreement; add `--db` for another store), or Rescore on the Train page. "
            "Meanwhile every image can be browsed and relabeled below.")
    views.browse_view(store, key="review_browse", source="review")
    st.stop()

# The ranked queue lives in the store (built when the score run was saved): this page reads counts
# and the visible page of it, never the whole queue. Decisions belong to the label, not to the run: every
# standing one counts, whichever run it was made under.
status_table = ui.statuses(store)
reviewed, flagged = review.queue_progress(store, run_id, status_table)
facts = ui.queue_facts(store, run_id)
st.progress(reviewed / flagged if flagged else 1.0,
            text=f"Reviewed {reviewed:,} of {flagged:,} flagged (score run #{run_id}, "
                 f"{store.review_summary(run_id)['n_units']:,} units ranked; decisions carry over between runs "
                 "while the label is unchanged)")

similar_views.learning_panel(store, run_id)  # the learning queue: before the filters (it sets focus and filters)
# Collapsed by default; open or closed, it stays as the reviewer left it (its state is kept by key).
FILTER_DEFAULTS = {"review_attribute": "all", "review_given": "any", "review_suggested": "any",
                   "review_status": "unreviewed", "review_min_score": 0.0, "review_flagged": True, "review_issue": "-"}
# A constant label: the expander's identity (and so its kept state) includes it.
with st.expander("Filters", key="review_filters_open", on_change="rerun"):
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

active = [f"{k.removeprefix('review_').replace('_', ' ')} {st.session_state[k]}" for k, v in FILTER_DEFAULTS.items()
          if st.session_state.get(k, v) != v]
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
    ui.apply_scroll()
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
    """Focus the unit at ``to`` (clamped) of the list as drawn, and start at the top of the page."""
    to = max(0, min(to, total - 1))
    if to in keys:
        st.session_state["review_focus"] = keys[to]
    st.session_state["review_pos"] = to
    ui.scroll_to_top()


page_rows = window.iloc[offset - start:offset - start + ui.PAGE_SIZE]
unit: dict[str, Any] = window.iloc[position - start].to_dict()
spec = schema.attribute(unit["stored"])
n_classes = len(spec.classes) if spec.kind == "categorical" else 0
view = unit_view(store, run_id, unit, status_table)  # photos, probabilities, reason: one store query
for warning in view.warnings:
    st.warning(ui.plain(warning))

# The unit, all in one screen: what and why on the left with the photos in one row under it, the decision
# on the right.
ui.caption(f"{total:,} unit(s) · showing {offset + 1:,}–{offset + len(page_rows):,} · unit {position + 1:,} · "
           f"filters: {', '.join(active) if active else 'unreviewed, flagged only'}")
st.markdown(f"**{ui.plain(view.title)}**")
left, right = st.columns([2, 1], gap="medium")
with left:
    if view.swap:
        st.info(ui.plain(view.swap))
    lines = [f"**Why:** {ui.plain(view.reason)}"]
    if view.edge:
        lines.append(f"**Near a group edge:** {ui.plain(view.edge)}: the photos cannot tell this apart; "
                     "ranked below clear errors")
    shown_text = "?" if view.shown is None else view.shown_text
    lines.append(f"Given {ui.plain(unit['attribute'])}: **{ui.plain(unit['given'])}** · suggested: "
                 f"**{ui.plain(unit['suggested'])}** · score **{unit['score']:.3f}** · current "
                 f"{ui.plain(unit['stored'])}: **{ui.plain(shown_text)}**")
    if view.probabilities:
        lines.append("Model (recalibrated, what the score reads): " + ui.plain(" · ".join(f"{k} {v:.2f}" for k, v in
                                                     sorted(view.probabilities.items(), key=lambda kv: -kv[1]))))
    decided = decision_text(view.decision)
    lines.append(f"Status: {ui.plain(unit['status'])}" + (f" ({ui.plain(decided)})" if decided else "")
                 + f" · flagged: {'yes' if unit['is_issue'] else 'no'}")
    st.markdown("  \n".join(lines))
    if view.count_note:
        ui.caption(view.count_note)
    ui.model_said(unit["path"])
    ui.photo_row(store, view.photos)
with right:
    actions.unit_actions(schema, {"target": unit["target"], "attribute": unit["stored"], "scored": unit["attribute"],
                                  "shown": view.shown, "suggested": unit["suggested"], "seen_review": view.review_id,
                                  "estimate": view.estimate},
                         key="review_act", source="review", score_run=run_id,
                         on_next=lambda: focus_on(position + 1), on_previous=lambda: focus_on(position - 1),
                         on_undo=focus_undone)
    st.caption(actions.shortcut_caption(n_classes))  # our own words, no data
    similar_views.more_like_this_button(store, run_id, unit)

# Below the decision: the numbers behind it, then the rest of this page of the queue.
if view.probabilities or view.evidence:  # drawn only while open: no chart to build on every decision
    numbers = st.expander("Probabilities and evidence (numbers)", key="review_numbers_open", on_change="rerun")
    with numbers:
        if view.probabilities and numbers.open:
            st.plotly_chart(charts.probabilities(view.probabilities), key="review_probs", width="stretch")
        if view.evidence and numbers.open:
            st.dataframe(pd.DataFrame({"measure": list(view.evidence),
                                       "value": [str(v) for v in view.evidence.values()]}), hide_index=True)
st.divider()
st.subheader(f"Queue: units {offset + 1:,}–{offset + len(page_rows):,} of {total:,}")
paging = st.columns([1, 1, 6])
paging[0].button("◀ Page", key="review_page_back", on_click=focus_on, args=(offset - ui.PAGE_SIZE,), disabled=offset == 0)
paging[1].button("Page ▶", key="review_page_next", on_click=focus_on, args=(offset + ui.PAGE_SIZE,),
                 disabled=offset + ui.PAGE_SIZE >= total)
captions = [f"{r.attribute}: {r.given} → {r.suggested} · score {r.score:.2f}" for r in page_rows.itertuples(index=False)]
ui.gallery(store, page_rows, captions, focus=position - offset, key="review_gallery",
           on_pick=lambda i: focus_on(offset + i))
ui.apply_scroll()
