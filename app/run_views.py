"""The Train page's journal views: runs table with notes, comparing two runs, run detail, disk.

Everything is read from the store (``runs``, ``epochs``) and the run folders; the tables come from
``app.journal_views``, the comparison from ``train.compare`` (what ``python -m train diff`` prints),
file sizes and deletion from ``train.disk``. User text (notes, paths) only reaches data widgets
or ``ui.plain``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import journal_views as jv
from app import train_charts, ui
from app.train_views import run_label, start_job
from core import review
from core.files import csv_unescape
from core.store import LabelStore, StoreError
from train import cache as image_cache
from train import disk, jobs
from train.compare import IMPROVED, WORSE, AnswerKeyMismatch, compare_runs, describe_key, diff_runs, group_summaries
from train.run_folder import VAL_PREDICTIONS

GALLERY_SIZE = 12
SUBMISSION = "submission.csv"


def runs_table(store: LabelStore) -> None:
    """Every run with status, metric, labels, duration, checkpoint size and an editable note; CSV export."""
    runs = store.runs()
    table = jv.runs_overview(runs, disk.checkpoint_bytes(runs))
    if table.empty:
        st.caption("No runs yet.")
        return
    groups, group_of = group_summaries(runs), runs.set_index("id")["repeat_group"].dropna()
    table.insert(5, "repeat_group", [groups.get(int(group_of[i]), "") if i in group_of.index else ""
                                     for i in table["id"]])
    for column in ("macro_f1", "flagged", "new_corrections", "duration_min", "checkpoint_mb"):
        if column in table:  # numbers or NaN (an empty cell), never the text "None"
            table[column] = pd.to_numeric(table[column], errors="coerce")
    cells = st.columns([2, 2, 3])
    kinds = cells[0].multiselect("Kind", sorted(table["kind"].unique()), key="runs_kinds")
    statuses = cells[1].multiselect("Status", sorted(table["status"].unique()), key="runs_statuses")
    text = cells[2].text_input("Model or note contains", key="runs_text")
    shown = jv.filter_overview(table, kinds=kinds, statuses=statuses, text=text).reset_index(drop=True)
    # Training and score runs in separate tables: a score run's macro F1 is out-of-fold on the noisy labels it
    # scores, not a training result, and never sits in the same column as one.
    for kind, title in RUN_TABLES:
        part = shown[shown["kind"] == kind].reset_index(drop=True) if kind else \
            shown[~shown["kind"].isin([k for k, _ in RUN_TABLES if k])].reset_index(drop=True)
        if len(part):
            st.caption(ui.plain(f"{title} ({len(part)})"))
            _runs_editor(store, part, kind or "other")
    st.caption(f"{len(shown)} of {len(table)} run(s). Click a column header to sort; double-click a note to edit it.")
    st.download_button("Download CSV", jv.csv_bytes(shown), file_name="runs.csv", mime="text/csv", key="runs_csv")


RUN_TABLES = (("train", "Training runs"), ("experiment", "Experiments: did cleaning help?"),
              ("score", "Score runs (macro F1 out-of-fold, on the noisy labels they score: not a training result)"),
              (None, "Other runs"))
_TABLE_COLUMNS = {"train": ["id", "status", "model", "macro_f1", "repeat_group", "labels", "measured_on", "note"],
                  "experiment": ["id", "status", "model", "verdict", "note"],
                  "score": ["id", "status", "model", "macro_f1", "flagged", "note"]}
_NOT_SHOWN = {"train": ["kind", "flagged", "verdict"], "experiment": ["kind", "macro_f1", "flagged", "repeat_group",
                                                                      "measured_on", "epochs", "checkpoint_mb"],
              "score": ["kind", "repeat_group", "labels", "measured_on", "verdict"]}


def _runs_editor(store: LabelStore, shown: pd.DataFrame, kind: str) -> None:
    """One kind's runs as an editable table (the note column); notes saved on edit."""
    # Edits are kept by row position: a new key whenever the rows or notes change, so an edit never lands on another run.
    key = f"runs_editor_{kind}_" + hashlib.sha1(shown[["id", "note"]].to_json().encode()).hexdigest()[:12]
    first = _TABLE_COLUMNS.get(kind, ["id", "kind", "status", "model", "note"])  # the point first, details after
    hidden = set(_NOT_SHOWN.get(kind, ["macro_f1", "repeat_group", "labels", "measured_on", "verdict"]))
    edited = st.data_editor(
        shown, key=key, hide_index=True, disabled=[c for c in shown.columns if c != "note"],
        column_order=[*first, *(c for c in shown.columns if c not in first and c not in hidden)], column_config={
            "macro_f1": st.column_config.NumberColumn("macro F1", format="%.4f", help=(
                "score runs: mean out-of-fold macro F1 of the folds, on the labels being scored" if kind == "score"
                else "best validation macro F1, on the answer key in 'measured on'")),
            "labels": st.column_config.TextColumn("trained on", help="original (the labels as ingested), current "
                                                                     "(the corrected labels, frozen at its start) "
                                                                     "or a snapshot file named by the user"),
            "measured_on": st.column_config.TextColumn(
                "measured on", help="the answer key of its numbers: its own labels' validation fold, or an "
                                    "experiment's key (the same for both sides); Compare refuses mixed keys"),
            "verdict": st.column_config.TextColumn("verdict", width="large"),
            "repeat_group": st.column_config.TextColumn("repeat group: mean ± SD", width="large", help=(
                "fit --repeats / × N: the group's runs (one config, one snapshot, N seeds) and the mean and "
                "standard deviation of their macro F1: the run-to-run spread")),
            "new_corrections": st.column_config.NumberColumn("new corrections",
                                                             help="corrections since the previous run of this kind"),
            "status": st.column_config.TextColumn("status", width=100),  # fits "cancelled" whatever the first rows
            "model": st.column_config.TextColumn("model", width="medium",
                                                 help="prediction runs: the model and the run it came from"),
            "flagged": st.column_config.NumberColumn(
                "flagged", help="score runs: flagged review units (an image, or a person for gender/age), "
                                "the number the Review page counts"),
            "snapshot": st.column_config.TextColumn("labels", help="label snapshot hash"),
            "duration_min": st.column_config.NumberColumn("minutes", format="%.1f"),
            "checkpoint_mb": st.column_config.NumberColumn("checkpoints MB", format="%.1f"),
            "note": st.column_config.TextColumn("note", help="the hypothesis this run tests (editable)",
                                                max_chars=500)})
    for run_id, note in jv.changed_notes(shown, edited).items():
        store.update_run(run_id, note=note)
        st.toast(ui.plain(f"Note of run #{run_id} saved."))


def _train_runs(store: LabelStore) -> dict[int, str]:
    runs = store.runs("train")
    return {int(r["id"]): run_label(r) for r in runs.to_dict("records")}


def compare_defaults(runs: pd.DataFrame, experiment_pair: tuple[int, int] | None = None) -> tuple[int, int]:
    """(before, after) the Compare tab opens on, before < after in run order: the newest experiment's pair
    (``experiment_pair``: its newest runs on the original and on the current labels), else, with two or more
    finished training runs, after = the newest finished one and before = the newest finished run on other labels
    (another snapshot), else the newest finished run older than it (and not of its repeat group); otherwise the
    two newest runs."""
    ids = sorted(int(i) for i in runs["id"])
    if experiment_pair is not None and all(int(i) in ids for i in experiment_pair):
        return tuple(sorted(int(i) for i in experiment_pair))  # type: ignore[return-value]
    done = runs[runs["status"] == "done"].sort_values("id")
    if len(done) >= 2 and "snapshot_hash" in done:
        after = int(done["id"].iloc[-1])
        others = done[done["snapshot_hash"] != done["snapshot_hash"].iloc[-1]]
        if len(others):
            return tuple(sorted((int(others["id"].iloc[-1]), after)))  # type: ignore[return-value]
    if len(done) >= 2:
        after = int(done["id"].iloc[-1])
        group = runs.set_index("id")["repeat_group"].get(after) if "repeat_group" in runs else None
        first = int(group) if group is not None and group == group else after  # NaN: no group
        earlier = done[done["id"] < first]
        return (int(earlier["id"].iloc[-1]) if len(earlier) else int(done["id"].iloc[-2])), after
    return ids[-2], ids[-1]


def experiment_pair(store: LabelStore) -> tuple[int, int] | None:
    """The newest experiment's newest finished runs on the original and on the current labels, or None."""
    experiments = store.runs("experiment")
    for experiment in experiments["id"] if len(experiments) else []:
        members = store.experiment_runs(int(experiment))
        done = members[members["status"] == "done"]
        sides = [done.loc[done["side"] == side, "run_id"] for side in ("original", "current")]
        if all(len(s) for s in sides):
            return int(sides[0].max()), int(sides[1].max())
    return None


def _interval_text(row: dict[str, Any], spec: str = "+.4f") -> str:
    if row["change"] is None:
        return "—"
    if row["low"] is None:
        return f"{row['change']:{spec}} (no interval)"
    return f"{row['change']:{spec}} [{row['low']:{spec}}, {row['high']:{spec}}]"


def verdict_table(rows: list[dict[str, Any]], before: str, after: str, spec: str = ".4f") -> pd.DataFrame:
    """``compare_runs`` rows as the page's table: metric, verdict, change [95 % interval], before, after."""
    return pd.DataFrame([{"metric": r["metric"], "verdict": r["verdict"],
                          "change [95 % interval]": _interval_text(r, "+" + spec),
                          before: None if r["before"] is None else round(r["before"], 4),
                          after: None if r["after"] is None else round(r["after"], 4)} for r in rows])


def compare(store: LabelStore) -> None:
    """Two runs in run order (before = the earlier): config and label-snapshot differences, and each metric's
    and class's change with its run-to-run interval and verdict (``train.compare.compare_runs``)."""
    runs = store.runs("train")  # newest first
    labels = {int(r["id"]): run_label(r) for r in runs.to_dict("records")}
    if len(labels) < 2:
        st.caption("Compare needs two training runs.")
        return
    ids = list(labels)
    before_default, after_default = compare_defaults(runs, experiment_pair(store))
    # Keyed by the newest finished run: when another run finishes, the pickers open on the new defaults.
    fresh = max([i for i, status in store.run_states() if status == "done"], default=0)
    cells = st.columns(2)
    pick_a = cells[0].selectbox("Before (the earlier run)", ids, index=ids.index(before_default),
                                format_func=labels.get, key=f"compare_a_{fresh}")
    pick_b = cells[1].selectbox("After (the later run)", ids, index=ids.index(after_default),
                                format_func=labels.get, key=f"compare_b_{fresh}")
    if pick_a == pick_b:
        st.info("Pick two different runs.")
        return
    run_a, run_b = sorted((int(pick_a), int(pick_b)))
    if (run_a, run_b) != (int(pick_a), int(pick_b)):
        st.info(ui.plain(f"Compared in run order: run #{run_a} is before, run #{run_b} after (the earlier run "
                         "is always \"before\", whichever box it is in)."))
    try:
        verdicts = compare_runs(store, run_a, run_b)
    except AnswerKeyMismatch as error:  # numbers on different answer keys are never put side by side
        st.warning(ui.plain(f"Not compared: {error}."))
        verdicts = {"runs_before": [run_a], "runs_after": [run_b], "metrics": [], "per_class": [], "source": "",
                    "refused": True}
    name_a = f"#{run_a}" + (f" (×{len(verdicts['runs_before'])})" if len(verdicts["runs_before"]) > 1 else "")
    name_b = f"#{run_b}" + (f" (×{len(verdicts['runs_after'])})" if len(verdicts["runs_after"]) > 1 else "")
    f1 = next((m for m in verdicts["metrics"] if m["metric"] == "macro_f1"), None)
    if f1 is not None and f1["change"] is not None:
        significant = f1["verdict"] in (IMPROVED, WORSE)
        # Only a change beyond run-to-run noise gets an arrow; inside the interval it is no evidence either way.
        st.metric(f"Validation macro F1, after {name_b} vs before {name_a}", f"{f1['after']:.4f}",
                  delta=f"{f1['change']:+.4f}" if significant else None)
        line = f"Change {_interval_text(f1)}: **{f1['verdict']}**."
        (st.success if f1["verdict"] == IMPROVED else st.error if f1["verdict"] == WORSE else st.info)(
            ui.plain(line.replace("**", "")))
    if verdicts["source"]:
        st.caption(ui.plain(verdicts["source"] + "." + (
            f" Measured on {describe_key(verdicts['answer_key'])}." if verdicts.get("answer_key") else "")))
    try:
        diff = diff_runs(store, run_a, run_b)
    except StoreError as error:
        st.warning(ui.plain(f"Label differences unavailable: {error}"))
        diff = None
    # Full width, the answer first: no verdict, value or label change is pushed out of view at 1280-1400 px.
    if not verdicts.get("refused"):
        st.subheader("Did it help")
        st.dataframe(verdict_table(verdicts["metrics"], f"before {name_a}", f"after {name_b}"), hide_index=True,
                     key="compare_metrics", width="stretch")
    st.subheader("What changed")
    if diff is not None:
        changed = dict(diff["config"])
        seeds_a, seeds_b = _seeds(store, verdicts["runs_before"]), _seeds(store, verdicts["runs_after"])
        if len(seeds_a) > 1 or len(seeds_b) > 1:  # a repeat group trains several seeds: list them, not one run's
            changed.pop("seed", None)
            if seeds_a != seeds_b:
                changed["seed"] = (", ".join(seeds_a), ", ".join(seeds_b))
        config = pd.DataFrame([{"setting": k, f"before {name_a}": str(a), f"after {name_b}": str(b)}
                               for k, (a, b) in changed.items()])
        settings, label_changes = st.columns([2, 3])
        settings.caption("Settings")
        settings.dataframe(config, hide_index=True) if len(config) else settings.text("same settings")
        label_changes.caption(ui.plain(f"Labels (before #{run_a} -> after #{run_b})"))
        label_changes.dataframe(_label_changes(diff["labels"]), hide_index=True, width="stretch")
    if verdicts["per_class"]:
        classes = pd.DataFrame([{"class": r["metric"], "run_a": r["before"], "run_b": r["after"],
                                 "change": r["change"]} for r in verdicts["per_class"]])
        st.plotly_chart(train_charts.per_class_f1(classes, (f"before {name_a}", f"after {name_b}")), width="stretch",
                        key="compare_f1")
        st.dataframe(verdict_table(verdicts["per_class"], f"before {name_a}", f"after {name_b}", ".3f").rename(
            columns={"metric": "class"}), hide_index=True, key="compare_classes")


def _seeds(store: LabelStore, run_ids: list[int]) -> list[str]:
    """The training seeds of these runs (a repeat group's members), in run order."""
    return [str((store.run(int(i)).get("config") or {}).get("seed", "?")) for i in run_ids]


def _label_changes(labels: dict[str, Any]) -> pd.DataFrame:
    """``diff_runs``' label part as rows: attribute, images changed, people, most common changes."""
    if labels.get("same"):
        return pd.DataFrame({"labels": [f"same snapshot {str(labels['hash_a'])[:12]}"]})
    rows = [{"attribute": "images", "images changed": labels["added"] + labels["removed"], "people": None,
             "changes": f"{labels['added']} added, {labels['removed']} removed"}]
    rows += [{"attribute": name, "images changed": info["images"], "people": info["people"],
              "changes": ", ".join(f"{k} ({v})" for k, v in list(info["changes"].items())[:6])}
             for name, info in labels["attributes"].items()]
    frame = pd.DataFrame(rows)
    frame["people"] = ["" if p is None or pd.isna(p) else str(int(p)) for p in frame["people"]]  # never "None"
    return frame


def run_detail(store: LabelStore) -> None:
    """One training run: curves, confusion matrices, per-class F1, misclassified images, Predict eval."""
    labels = _train_runs(store)
    if not labels:
        st.caption("No training runs yet.")
        return
    finished = [int(i) for i, status in zip(store.runs("train")["id"], store.runs("train")["status"]) if status == "done"]
    ids = list(labels)  # newest first: open on the newest finished run
    if finished and st.session_state.get("detail_run_newest") != finished[0]:  # a run finished since: show it
        st.session_state["detail_run_newest"] = finished[0]
        st.session_state["detail_run"] = finished[0]
    run_id = st.selectbox("Run", ids, index=ids.index(finished[0]) if finished else 0, format_func=labels.get,
                          key="detail_run")
    run = store.run(run_id)
    epochs = store.epochs(run_id)
    facts = st.columns(4)
    ui.metric(facts[0], "Status", run["status"])
    best = (run.get("metrics") or {}).get("best_macro_f1")
    facts[1].metric("Best macro F1", f"{best:.4f}" if best is not None else "-")  # a failed run measured nothing
    ui.metric(facts[2], "Labels", str(run.get("snapshot_hash") or "")[:10] or "-")
    seconds = jv.duration_seconds(run)
    facts[3].metric("Minutes", f"{seconds / 60:.1f}" if seconds is not None else "-")
    if run["status"] == "failed":
        st.code(str(run.get("error_tail") or ""), language=None, wrap_lines=True)  # the error line in full
    if epochs.empty:
        st.caption("No finished epoch yet.")
        return
    st.plotly_chart(train_charts.curves(epochs), key="detail_curves", width="stretch")
    record = jv.best_record(run, epochs)
    st.subheader(f"Best epoch ({record.get('epoch')}) on the validation people")
    schema = store.schema
    heads = [t for t in schema.targets if f"confusion_{t}" in record]
    for column, target in zip(st.columns(max(len(heads), 1)), heads):
        matrix = jv.confusion_frame(record, target, list(schema.target_classes(target)))
        if matrix is not None:
            column.plotly_chart(train_charts.confusion(matrix, target), key=f"detail_confusion_{target}",
                                width="stretch")
    per_class = pd.DataFrame({"class": list((record.get("f1_per_class") or {}).keys()),
                              "run_a": list((record.get("f1_per_class") or {}).values())})
    if len(per_class):
        st.plotly_chart(train_charts.per_class_f1(per_class), key="detail_f1", width="stretch")
    _misclassified(store, run)
    _predict_eval(store, run)


def _misclassified(store: LabelStore, run: dict[str, Any]) -> None:
    path = Path(run["run_dir"]) / VAL_PREDICTIONS if run.get("run_dir") else None
    st.subheader("Misclassified validation images")
    if path is None or not path.exists():
        st.caption("This run recorded no validation predictions (runs before this feature, or no epoch finished).")
        return
    wrong = jv.misclassified(csv_unescape(pd.read_csv(path, dtype=str, keep_default_na=False)))
    if wrong.empty:
        st.success("Every validation image was classified correctly.")
        return
    st.caption(f"{len(wrong)} image(s) with a wrong prediction (true → predicted). A wrong label looks like a "
               "model mistake: Review opens the image where it can be relabeled.")
    offset = ui.pager(len(wrong), "detail_gallery_page") if len(wrong) > ui.PAGE_SIZE else 0
    page = wrong.iloc[offset:offset + ui.PAGE_SIZE]
    grid = st.columns(6)
    for position, row in enumerate(page.itertuples(index=False)):
        with grid[position % 6]:
            st.image(ui.thumb(store, row.path), width="stretch")
            st.caption(ui.plain(row.mistakes))
            if st.button("Review", key=f"detail_review_{offset + position}"):
                open_in_review(store, row.path, row.person, row.first_target,
                               said=f"Run #{run['id']} on this validation image (true → predicted): {row.mistakes}")


def open_in_review(store: LabelStore, path: str, person: str, target: str, said: str = "") -> None:
    """Go to where this image's label can be fixed: its unit in the review queue when flagged and
    unreviewed, the review page's browser (no score run yet), or Browse filtered to the image.
    ``said`` (what the model predicted) is shown beside the image there."""
    schema = store.schema
    st.session_state["_model_said"] = {"path": path, "text": said}
    run_id = store.current_score_run()
    if run_id is None:
        st.session_state["review_browse_path"] = path
        ui.switch_page("app_pages/review.py")
    unit = f"{review.target_of(schema, target, path, person or None)}|{target}"
    pending = review.queue_position(store, run_id, ui.statuses(store), unit,  # decisions of any run count
                                    flagged_only=True, status="unreviewed")
    if pending is not None:
        st.session_state["review_focus"] = unit
        ui.switch_page("app_pages/review.py")
    st.session_state["browse_path"] = path
    ui.switch_page("app_pages/browse.py")


def _predict_eval(store: LabelStore, run: dict[str, Any]) -> None:
    """Predict eval with this run's best checkpoint; its progress, then the file, right here."""
    st.subheader("Predict eval")
    out = Path(run["run_dir"]) / SUBMISSION if run.get("run_dir") else None
    info = store.root / "eval" / "info.csv"
    best = run.get("best_checkpoint")
    ready = out is not None and best and Path(best).exists() and run["status"] not in jv.ACTIVE
    mine = _predictions_of(store, out)
    if mine is not None and mine["status"] in jv.ACTIVE:
        st.caption(ui.plain(f"Predicting with run #{run['id']} (prediction run #{mine['id']}, {mine['status']}); "
                            "the file appears here when it is written."))
        return
    if out is not None and out.exists():
        st.download_button(f"Download {SUBMISSION} (run #{run['id']})", out.read_bytes(), file_name=SUBMISSION,
                           mime="text/csv", key="detail_submission", type="primary")
        st.caption(ui.plain(f"{out}" + (f" · written by prediction run #{mine['id']}" if mine is not None else "")))
    if not info.exists():
        st.caption(ui.plain(f"No eval/info.csv under {store.root}: nothing to predict."))
    elif not ready:
        st.caption("Predict needs a finished run with its best checkpoint on disk.")
    elif st.button("Predict eval" if out is None or not out.exists() else "Predict again", key="detail_predict",
                   help="Runs `python -m train predict` with this run's best checkpoint as a background job."):
        if start_job("predict", None, f"prediction with run #{run['id']}",
                     options={"run": [int(run["id"])], "out": str(out), "threads": 2}) is not None:
            st.rerun()


def _predictions_of(store: LabelStore, out: Path | None) -> dict[str, Any] | None:
    """The newest prediction run writing ``out`` (this training run's submission), or None."""
    if out is None:
        return None
    runs = store.runs("predict")
    for run in runs.to_dict("records"):  # newest first
        written = (run.get("config") or {}).get("out")
        options = (run.get("config") or {}).get("options") or []
        if (written and Path(written) == out) or str(out) in [str(o) for o in options]:
            return run
    return None


def _megabytes(value: Any) -> str:
    return f"{value} MB" if value else "none"


def _cache_budget(value: Any) -> str:
    try:
        return f"{image_cache.budget_mb(value):.0f} MB"
    except ValueError as error:  # a malformed $LABELS_CACHE_MB: say so rather than fail the page
        return f"invalid ({error})"


def disk_view(store: LabelStore) -> None:
    """Sizes of checkpoints and caches, the retention settings, deleting a run's files."""
    usage = disk.disk_usage(store)
    usage["MB"] = (usage["bytes"] / 1e6).round(2)
    st.metric("Checkpoints and caches", f"{usage['bytes'].sum() / 1e6:.1f} MB")
    st.dataframe(usage[["category", "files", "MB", "folder"]], hide_index=True)
    last = store.runs("train")
    config = (last.iloc[0]["config"] or {}) if len(last) else {}
    st.caption(ui.plain(
        f"Retention: each run keeps last.safetensors (to resume) and its {config.get('keep_top', 1)} best epoch "
        "checkpoint(s); best.safetensors is a hard link to the top one, never a second copy. Disk budgets: "
        f"this run {_megabytes(config.get('keep_mb'))}, all runs {_megabytes(config.get('keep_mb_all'))} "
        "(python -m train fit --keep-mb / --keep-mb-all; best checkpoints are never deleted by a budget). "
        "Best checkpoints kept per run: Advanced in the form above. "
        f"Image cache budget: {_cache_budget(config.get('cache_mb'))} (--cache-mb, $LABELS_CACHE_MB); "
        "writing a new cache deletes the least recently used ones beyond it, never one a job holds "
        "(python -m train cache lists them)."))
    busy = jobs.running_job(store) is not None
    if st.button("Clear the image cache", key="disk_clear_cache", disabled=busy,
                 help="Decoded images; the next run decodes them again (disabled while a job runs)."):
        freed = disk.clear_cache(store)
        ui.flash(ui.Flash(True, f"Image cache cleared ({freed / 1e6:.1f} MB)."))
        st.rerun()
    st.subheader("Delete a run's files")
    all_runs = store.runs()
    with_files = all_runs[all_runs["run_dir"].notna()]
    if with_files.empty:
        st.caption("No run has files.")
        return
    labels = {int(r["id"]): f"#{r['id']} · {r['kind']} · {r['status']}" for r in with_files.to_dict("records")}
    cells = st.columns([2, 3])
    run_id = cells[0].selectbox("Run", list(labels), format_func=labels.get, key="disk_run")
    scope = cells[1].radio("Delete", ["checkpoints except the best", "the whole run folder, best checkpoint too"],
                           key="disk_scope", horizontal=True,
                           help="last.safetensors is only needed to resume a cancelled run.")
    plan = disk.deletion_plan(store.run(run_id), include_best=scope.startswith("the whole"))
    if plan.refused:
        st.info(ui.plain(plan.refused))
        return
    st.caption(ui.plain(f"Deletes {len(plan.files)} file(s), {plan.bytes / 1e6:.1f} MB:"))
    st.dataframe(pd.DataFrame({"file": [str(p) for p in plan.files]}), hide_index=True)
    if plan.kept:
        st.caption(ui.plain("Kept: " + ", ".join(p.name for p in plan.kept) + " (the best checkpoint)"))
    confirmed = True
    if plan.includes_best:
        confirmed = st.checkbox(f"Yes, delete run #{run_id}'s best checkpoint: it cannot be used for prediction "
                                "or resumed afterwards. The journal row and its metrics stay.", key="disk_confirm")
    if st.button(f"Delete {len(plan.files)} file(s)", key="disk_delete", disabled=not confirmed, type="primary"):
        freed = disk.delete(plan)
        ui.flash(ui.Flash(True, f"Deleted {len(plan.files)} file(s) of run #{run_id} ({freed / 1e6:.1f} MB)."))
        st.session_state.pop("disk_confirm", None)
        st.rerun()
