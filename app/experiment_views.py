"""The Train page's "Did cleaning help?": one click starts ``python -m train experiment`` as a background job
(``train.jobs``), and the newest experiment's answer is shown: the verdict, the accuracy line, the power line and,
when one was given, the held-out set's verdict (``train.experiment.experiment_report``, torch-free).

Settings come from the Retrain form (model, size, epochs, ...); the number of pairs from the box beside the button.
All text from the journal reaches the page through ``ui.plain``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import ui
from app.journal_views import ACTIVE
from app.train_views import form_values, start_job
from core.store import LabelStore
from train.config import TrainConfig, defaults
from train.experiment import TARGET, experiment_report, format_report

PAIRS = (3, 5, 10)


def _start() -> None:
    """Callback of "Did cleaning help?": the experiment with the form's settings and the chosen pairs."""
    values = {**defaults(), **(form_values(st.session_state) if "train_width" in st.session_state else {})}
    config = TrainConfig.from_dict(values)
    pairs = int(st.session_state.get("experiment_pairs", PAIRS[0]))
    start_job("experiment", config, f"\"Did cleaning help?\" ({pairs} pairs of {config.model} runs)",
              options={"repeats": pairs, "target": float(st.session_state.get("experiment_target", TARGET))})


def ask_controls() -> None:
    """Inside the Retrain form (so the form's settings as shown are the ones used): the button and the pairs and
    difference boxes."""
    ask = st.columns([2, 1, 1, 4], vertical_alignment="bottom")
    ask[0].form_submit_button("Did cleaning help?", key="experiment_start", on_click=_start,
                              help="Trains these settings on the original labels (as ingested) and on the current "
                                   "(corrected) labels with the same seeds and the same validation people, and "
                                   "judges both on one answer key: the current labels of the validation people.")
    ask[1].selectbox("Pairs", PAIRS, key="experiment_pairs", format_func=lambda n: f"{n} pairs",
                     help="One pair = one seed trained on each labelling. More pairs see smaller differences; "
                          "running again with more reuses the pairs that finished.")
    ask[2].number_input("Difference to see", 0.001, 0.5, step=0.005, format="%.3f", key="experiment_target",
                        help="The power line says how many pairs would see a difference this large.")
    ask[3].caption("Original vs cleaned labels, same seeds and validation people, one answer key: the paired "
                   "difference of macro F1 with its 95 % interval. Runs as a background job; the answer shows at "
                   "the top of this page.")


def cleaning_helped(store: LabelStore) -> None:
    """The newest experiment's answer (verdict, power line, held-out line) at the top of the Train page."""
    st.session_state.setdefault("experiment_target", TARGET)
    experiments = store.runs("experiment")
    if experiments.empty:
        return
    row = experiments.iloc[0].to_dict()
    with st.container(border=True):
        if row["status"] in ACTIVE:
            progress = row.get("progress") or {}
            ui.caption(f"Did cleaning help? Experiment #{row['id']} running: {progress.get('phase', 'starting')}")
            return
        _answer(store, row)


def _answer(store: LabelStore, row: dict[str, Any]) -> None:
    """A finished (or stopped) experiment's verdict, accuracy and power lines, per answer key."""
    if row["status"] == "failed":
        last = (str(row.get("error_tail") or "").strip().splitlines() or ["no error text recorded"])[-1]
        ui.caption(f"Experiment #{row['id']} failed: {last}")
        return
    report = experiment_report(store, int(row["id"]))
    if not report["pairs"]:
        ui.caption(f"Experiment #{row['id']} {row['status']} before a pair finished.")
        return
    validation = report["keys"].get("validation")
    if validation:
        show = st.success if validation["verdict"].startswith("cleaning helped") else \
            st.error if validation["verdict"].startswith("cleaning hurt") else st.info
        show(ui.plain(f"Did cleaning help? Experiment #{row['id']}, {report['pairs']} pairs: {validation['verdict']}"))
        ui.caption(f"Power: {validation['power']}.")
        ui.caption(f"{validation['accuracy']}. Judged on {validation['description']}: the current labels of the "
                   "validation people, the same for both sides.")
    held = report["keys"].get("heldout")
    if held:
        ui.caption(f"On the held-out set ({held['description']}): {held['verdict']}; {held['accuracy']}.")
    if row["status"] != "done":
        ui.caption(f"Stopped ({row['status']}): {row.get('error_tail') or ''}")
    with st.expander("The experiment's runs"):
        st.code("\n".join(format_report(report)), language=None, wrap_lines=True)
