"""Train: retrain on the cleaned labels, rescore, watch progress live, and keep the experiment journal."""

from __future__ import annotations

import streamlit as st

from app import experiment_views, run_views, train_views, ui

store = ui.page_start("Train")

st.caption("Relabel on the Review page, retrain here on a snapshot of the corrected labels, then compare the runs: "
           "what changed and did it help. Jobs run in the background; this page (and any other tab) follows them.")
train_views.live_progress()
experiment_views.cleaning_helped(store)

# Keyed: the open tab stays open when a job ends and the page reruns (Predict eval stays on Run detail).
retrain, journal, versus, detail, space = st.tabs(["Retrain", "Runs", "Compare", "Run detail", "Disk"],
                                                  key="train_tab", on_change="rerun")
with retrain:
    train_views.retrain_form(store)
with journal:
    run_views.runs_table(store)
with versus:
    run_views.compare(store)
with detail:
    run_views.run_detail(store)
with space:
    run_views.disk_view(store)
