"""History: the corrections log with filters, revert any entry, import a corrections CSV (dry run first),
download the cleaned table with its snapshot hash."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app import ui, views
from core.export import export, read_table
from core.store import ConflictError, StoreError

store = ui.page_start("History")
schema = store.schema

log = store.history()
cells = st.columns(4)
annotators = sorted(log["annotator"].unique()) if len(log) else []
who = cells[0].selectbox("Annotator", ["all", *annotators], key="history_annotator")
attribute = cells[1].selectbox("Attribute", ["all", *schema.names], key="history_attribute")
sources = sorted(log["source"].unique()) if len(log) else []
source = cells[2].selectbox("Source", ["all", *sources], key="history_source")
target = cells[3].text_input("Target contains", key="history_target")
shown = store.history(annotator=None if who == "all" else who, attribute=None if attribute == "all" else attribute,
                      source=None if source == "all" else source)
if target.strip() and len(shown):
    shown = shown[shown["target"].str.contains(target.strip(), case=False, regex=False)]
st.caption(f"{len(shown):,} of {len(log):,} logged change(s), newest first. Reverting logs the inverse change.")
st.dataframe(views.history_table(shown), hide_index=True, key="history_table",
             column_config={"entry": st.column_config.TextColumn("entry", width="medium")})

# Review decisions that change no label ("label is correct", skip, and undo's reopen): the other half of
# what reviewers did. A verdict belongs to the label (its value then) and stands while the label keeps it.
verdicts = store.reviews()
with st.expander(f"Review decisions ({len(verdicts):,}): label is correct, skip, reopen (undo)"):
    if len(verdicts):
        mine = verdicts if who == "all" else verdicts[verdicts["annotator"] == who]
        if attribute != "all":
            mine = mine[mine["attribute"] == attribute]
        if target.strip():
            mine = mine[mine["target"].str.contains(target.strip(), case=False, regex=False)]
        table = mine[["id", "verdict", "attribute", "value", "target", "annotator", "score_run", "created_at"]].copy()
        table["verdict"] = table["verdict"].map({"correct": "label is correct", "skip": "skip",
                                                 "reopen": "reopen (undo)"}).fillna(table["verdict"])
        table["created_at"] = table["created_at"].astype(str).str[:19].str.replace("T", " ")
        st.caption(f"{len(table):,} of {len(verdicts):,} decision(s), newest first (the filters above apply).")
        st.dataframe(table, hide_index=True, key="history_verdicts",
                     column_config={"verdict": st.column_config.TextColumn("verdict", width="medium"),
                                    "score_run": st.column_config.NumberColumn("score run", format="#%d")})
    else:
        st.caption("No review decisions yet.")


def _revert(correction_id: int, reason_key: str) -> None:
    name = ui.annotator()
    if not name:
        ui.flash(ui.Flash(False, "Type your name in the sidebar (Annotator) first."))
        return
    try:
        new_id = ui.get_store().revert(correction_id, annotator=name, reason=st.session_state.get(reason_key, ""))
    except StoreError as error:  # a ConflictError when the label changed again since that entry
        ui.flash(ui.Flash(False, str(error), conflict=isinstance(error, ConflictError)))
        return
    ui.flash(ui.Flash(True, f"Correction #{correction_id} reverted by #{new_id}."))


if len(shown):
    st.subheader("Revert an entry")
    standing = shown[shown["reverted_by"].isna()]
    default = int(standing["id"].iloc[0]) if len(standing) else int(shown["id"].iloc[0])
    left, middle, right = st.columns([1, 3, 1], vertical_alignment="bottom")
    chosen = int(left.number_input("Correction #", min_value=1, value=default, step=1, key="history_revert_id"))
    middle.text_input("Reason", key="history_revert_reason", placeholder="why (optional)")
    right.button("Revert", key="history_revert", on_click=_revert, args=(chosen, "history_revert_reason"),
                 disabled=not ui.annotator())
    entry = log[log["id"] == chosen]
    if len(entry):
        row = entry.iloc[0]
        st.text(f"#{chosen}: {row['target']} {row['attribute']}: {row['old_value']} -> {row['new_value']}"
                f" by {row['annotator']} ({row['source']})"
                + (f", already reverted by #{int(row['reverted_by'])}" if pd.notna(row["reverted_by"]) else ""))

st.subheader("Import corrections")
st.caption("CSV columns: target (image path or person folder), attribute, value; optional expected, reason, "
           "annotator. Every row is checked first; nothing is applied unless all rows are valid.")
upload = st.file_uploader("Corrections CSV", type=["csv", "parquet"], key="history_upload")
if upload is not None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(upload.name).name
        path.write_bytes(upload.getvalue())
        try:
            frame = read_table(path)
            plan = store.import_corrections(frame, annotator=ui.annotator() or "import", dry_run=True,
                                            file=upload.name)
        except StoreError as error:
            st.error(ui.plain(str(error)))
            plan = None
    if plan is not None:
        st.write(f"Dry run: {len(plan)} correction(s) would be applied.")
        st.dataframe(plan, hide_index=True)

        def _apply(frame=frame, name=upload.name) -> None:  # bound to this file's rows
            try:
                applied = ui.get_store().import_corrections(frame, annotator=ui.annotator(), file=name)
            except StoreError as error:
                ui.flash(ui.Flash(False, str(error), conflict=isinstance(error, ConflictError)))
                return
            ui.flash(ui.Flash(True, f"Imported {len(applied)} correction(s) from {name}."))

        st.button(f"Apply {len(plan)} correction(s)", key="history_apply", on_click=_apply,
                  disabled=not ui.annotator() or len(plan) == 0, type="primary")

st.subheader("Export")
st.caption("The cleaned table (one row per labelled image, current labels, corrected 0/1) and the snapshot hash "
           "that identifies exactly these labels.")
version = store.version()
if st.button("Prepare cleaned CSV", key="history_export"):
    out = store.files_dir / "exports" / "cleaned.csv"
    snapshot = export(store, out)
    st.session_state["history_export_file"] = (version, out.read_bytes(), snapshot.hash)
prepared = st.session_state.get("history_export_file")
if prepared and prepared[0] == version:
    st.download_button("Download cleaned.csv", prepared[1], file_name="cleaned.csv", mime="text/csv",
                       key="history_download")
    st.text(f"snapshot {prepared[2]}")
elif prepared:
    st.caption("Labels changed since the last export: prepare it again.")
