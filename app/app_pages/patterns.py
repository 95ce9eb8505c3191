"""Patterns: errors that repeat (runs in upload order, metadata slices, heaping), each reviewed as one step."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import streamlit as st

from app import pattern_charts, ui
from core import pattern_actions
from core.review import Outcome
from core.store import StoreError

UNITS_PER_PAGE = 12
CHOICES = ("undecided", "fix", "keep")

store = ui.page_start("Patterns")
run_id = store.current_score_run()


@st.cache_data(show_spinner="Scanning for patterns (runs, slices, heaps)…", max_entries=4)
def _scan(db: str, run: int, ingest: int | None) -> tuple[list[Any], int]:
    """A score run's patterns (on the labels it scored: they stay put while units are decided)."""
    tests: list[dict[str, Any]] = []
    _, found = pattern_actions.scan(store, run, tests=tests)
    return found, len(tests)


@st.cache_data(show_spinner=False, max_entries=16)
def _progress(_pattern: Any, db: str, key: str, version: tuple[int, ...]) -> tuple[set[str], dict[str, Any]]:
    """(units decided through the pattern, suspected targets changed since): read again only after a store write,
    not on each tick of a radio (every tick reruns the page)."""
    return pattern_actions.decided_units(store, _pattern), pattern_actions.changed_since(store, _pattern)


def _key(*parts: Any) -> str:
    return "pat_" + hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def bulk_history() -> None:
    """Bulk steps taken through patterns, each undoable as one logged revert."""
    bulks = store.bulks()
    st.subheader("Bulk steps")
    if bulks.empty:
        st.caption("None yet: a pattern applied here is one bulk step (one id, one reason), undone as one.")
        return
    table = bulks[["id", "kind", "annotator", "created_at", "n_corrected", "n_kept", "n_refused", "reverts",
                   "reverted_by", "reason"]].copy()
    for column in ("reverts", "reverted_by"):  # numbers or NaN (an empty cell), never the text "None"
        table[column] = pd.to_numeric(table[column], errors="coerce")
    st.dataframe(table, hide_index=True)
    live = bulks[(bulks["kind"] != "revert") & bulks["reverted_by"].isna()].head(5)
    for row in live.itertuples(index=False):
        st.button(f"Undo bulk #{int(row.id)} ({int(row.n_corrected)} corrected, {int(row.n_kept)} kept)",
                  key=f"pat_undo_{int(row.id)}", on_click=undo, args=(int(row.id),), disabled=not ui.annotator())


def undo(bulk_id: int) -> None:
    try:
        result = pattern_actions.undo(store, bulk_id, annotator=ui.annotator())
    except StoreError as error:
        ui.flash(Outcome(False, str(error)))
        return
    ui.flash(Outcome(not result.refused, "Undone: " + pattern_actions.outcome_text(result), conflict=bool(result.refused)))


if run_id is None:
    st.info("No score run yet. Patterns compare the given labels with a model's out-of-fold opinion: create one with "
            "`python -m train score` (or Rescore on the Train page). Heaping is read from the labels alone, but "
            "who moved into a heap needs the model too.")
    bulk_history()
    st.stop()

found, n_tests = _scan(str(store.path), int(run_id), store.last_ingest_id())
st.caption(f"Score run #{run_id}: {len(found)} pattern(s) survive a 5 % false discovery rate over all {n_tests} tests "
           "run (Benjamini-Hochberg): runs in upload order, slices of metadata, heaps of numeric labels.")
if not found:
    st.success("No pattern: the disagreements between labels and model look like independent errors (the Review "
               "queue is the place for them).")
    bulk_history()
    st.stop()

for i, p in enumerate(found):  # every summary in full (a table cell would cut it), plain text
    ui.caption(f"{i + 1}. {p.kind} · {p.attribute} · {len(p.units)} suspected · q {p.q_value:.3g}: {p.summary}")
index = st.selectbox("Pattern", list(range(len(found))), key="patterns_pick",
                     format_func=lambda i: f"{i + 1}. {found[i].kind} · {found[i].attribute} · "
                                           f"{len(found[i].units)} suspected")
pattern = found[index]
st.subheader(f"{index + 1}. {pattern.kind} of {ui.plain(pattern.attribute)}")
st.markdown(ui.plain(pattern.summary))
figure = pattern_charts.evidence_chart(pattern)
if figure is not None:
    st.plotly_chart(figure, key="patterns_chart", width="stretch")
with st.expander("Evidence (numbers)"):
    flat = {k: v for k, v in pattern.evidence.items() if not isinstance(v, dict | list)}
    flat.update({"p value": pattern.p_value, "q value (false discovery rate)": pattern.q_value})
    st.dataframe(pd.DataFrame({"measure": list(flat), "value": [str(v) for v in flat.values()]}), hide_index=True)

if not pattern.units:
    st.info("A property of the data, not an error: no unit is suspected, nothing to apply.")
    bulk_history()
    st.stop()

decided, changed = _progress(pattern, str(store.path), pattern.key, store.version())
moved = {u for u, t in zip(pattern.suspected["unit"], pattern.suspected["target"]) if str(t) in changed} - decided
pending = [u for u in pattern.units if u not in decided and u not in moved]
st.caption(f"{len(pattern.units)} suspected unit(s), most confident first; {len(decided)} decided through this pattern "
           f"already (they left the Review queue), {len(moved)} changed elsewhere since the score run. Tick **fix** (write the proposal) or **keep** (the label is right) "
           f"per unit, then Apply: one bulk step, undoable as one. Units left undecided stay in the Review queue.")


def tick_all(units: list[str], choice: str) -> None:
    for unit in units:
        st.session_state[_key(pattern.key, unit)] = choice


def apply() -> None:
    choices = {u: st.session_state.get(_key(pattern.key, u), "undecided") for u in pending}
    choices = {u: c for u, c in choices.items() if c in ("fix", "keep")}
    if not choices:
        ui.flash(Outcome(False, "Nothing ticked: tick fix or keep on at least one unit."))
        return
    try:
        result = pattern_actions.apply_pattern(store, pattern, choices, annotator=ui.annotator())
    except StoreError as error:
        ui.flash(Outcome(False, str(error)))
        return
    for unit in choices:
        st.session_state.pop(_key(pattern.key, unit), None)
    ui.flash(Outcome(not result.refused, "Applied " + pattern_actions.outcome_text(result), conflict=bool(result.refused)))


if not pending:
    st.success("Every suspected unit of this pattern is decided.")
else:
    offset = ui.pager(len(pending), _key("pager", pattern.key))
    shown = pending[offset:offset + UNITS_PER_PAGE]
    bar = st.columns([1, 1, 1, 1])
    bar[0].button("Fix all on this page", key="patterns_all_fix", on_click=tick_all, args=(shown, "fix"),
                  width="stretch")
    bar[1].button("Keep all on this page", key="patterns_all_keep", on_click=tick_all, args=(shown, "keep"),
                  width="stretch")
    ticked = sum(st.session_state.get(_key(pattern.key, u), "undecided") != "undecided" for u in pending)
    bar[2].button(f"Apply ({ticked} ticked)", key="patterns_apply", type="primary", on_click=apply,
                  disabled=not ui.annotator() or ticked == 0, width="stretch")
    if not ui.annotator():
        bar[3].caption("Type your name in the sidebar to apply.")
    suspected = pattern.suspected
    for unit in shown:
        rows = suspected[suspected["unit"] == unit]
        with st.container(border=True):
            head, decision = st.columns([5, 1])
            with head:
                st.text(unit)
                for row in rows.itertuples(index=False):
                    where = "" if row.target == unit else f"{row.target.rsplit('/', 1)[-1]}: "
                    st.text(f"{where}{row.attribute} {row.current} -> {row.proposed} (model {row.confidence:.2f})")
            with decision:
                st.radio("Decision", CHOICES, key=_key(pattern.key, unit), horizontal=False,
                         label_visibility="collapsed")
            images, _ = store.select_items(person=unit, limit=8)
            if images.empty:
                images = pd.DataFrame({"path": [str(p) for p in rows["target"]]})
            flagged = set(rows["target"].astype(str))
            cells = st.columns(8)
            for cell, image in zip(cells, images.itertuples(index=False)):
                with cell:
                    st.image(ui.thumb(store, image.path, getattr(image, "hash", None), 160), width="stretch")
                    mark = "▶ " if image.path in flagged else ""
                    st.caption(ui.plain(ui.breakable(mark + image.path.rsplit("/", 1)[-1])))
bulk_history()
