"""The experiment journal as tables for people: pure pandas over the store's ``runs()`` / ``epochs()`` frames.

Nothing here reads files or the database; callers pass what the store verbs return, so every
function is testable on hand-made frames::

    table = runs_overview(store.runs(), checkpoint_bytes={3: 48_000_000})
    fraction, text = progress_view(store.run(7))
    record = best_record(store.run(3), store.epochs(3))   # the best epoch's metrics (train.compare's)
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import pandas as pd

from core.files import csv_safe
from train.compare import (
    best_record,  # noqa: F401  (one definition: Compare's; the pages call jv.best_record)
    key_text,  # which answer key a run's numbers are on (one definition)
)

ACTIVE = ("queued", "running")
OVERVIEW_COLUMNS = ["id", "kind", "status", "model", "macro_f1", "flagged", "epochs", "snapshot", "corrections",
                    "new_corrections", "created", "duration_min", "checkpoint_mb", "note", "labels", "measured_on",
                    "verdict"]
# Scalars worth comparing between two runs' best epochs, in this order (accuracies follow).


def _timestamp(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def duration_seconds(run: Mapping[str, Any], now: datetime | None = None) -> float | None:
    """Seconds from start (or creation) to finish; up to ``now`` while the run is active; None if unknown."""
    start = _timestamp(run.get("started_at")) or _timestamp(run.get("created_at"))
    end = _timestamp(run.get("finished_at"))
    if end is None and run.get("status") in ACTIVE:
        end = now or datetime.now(UTC)
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _metric(run: Mapping[str, Any]) -> float | None:
    metrics = run.get("metrics") or {}
    value = metrics.get("best_macro_f1", metrics.get("mean_macro_f1"))
    return None if value is None else float(value)


def _flagged(run: Mapping[str, Any]) -> int | None:
    flagged = (run.get("metrics") or {}).get("flagged_units")
    return int(sum(flagged.values())) if isinstance(flagged, dict) else None


def predict_source(config: Mapping[str, Any] | None) -> str:
    """What a prediction run used, in words: ``test_resnet of run #3`` per checkpoint ('' when unknown).

    The source run is read from the checkpoint's folder name (``NNNN-<time>``, the training run's id).
    """
    parts = []
    for used in (config or {}).get("checkpoints") or []:
        if not isinstance(used, Mapping):
            continue
        folder = PurePath(str(used.get("checkpoint", ""))).parent.name
        number = folder.split("-", 1)[0]
        source = f" of run #{int(number)}" if number.isdigit() else ""
        parts.append(f"{used.get('model', '?')}{source}")
    return ", ".join(parts)


def runs_overview(runs: pd.DataFrame, checkpoint_bytes: Mapping[int, int] | None = None,
                  now: datetime | None = None) -> pd.DataFrame:
    """One row per run (``store.runs()`` order, newest first) for the journal table.

    Columns (``OVERVIEW_COLUMNS``): ``macro_f1`` is a training run's best validation macro F1 or a
    score run's mean over folds; ``flagged`` a score run's flagged units (``core.review.flagged_counts``:
    review units whose verdict is an issue, the count the Review page shows); ``model`` of a prediction
    run names the model and its source run (``predict_source``); ``snapshot`` the first 10
    characters of the label snapshot hash; ``corrections`` the corrections logged when it was taken
    and ``new_corrections`` how many more than the previous run of the same kind had (None for the
    first); ``duration_min`` minutes (so far, while active); ``checkpoint_mb`` from ``checkpoint_bytes``
    (run id -> bytes on disk).
    """
    if runs.empty:
        return pd.DataFrame(columns=OVERVIEW_COLUMNS)
    rows = []
    previous: dict[str, float] = {}  # kind -> n_corrections of the last run seen, oldest first
    for record in runs.sort_values("id").to_dict("records"):
        run = {k: None if isinstance(v, float) and pd.isna(v) else v for k, v in record.items()}  # NaN = missing
        config, metrics = run.get("config") or {}, run.get("metrics") or {}
        corrections = run.get("n_corrections")
        corrections = None if corrections is None or pd.isna(corrections) else int(corrections)
        before = previous.get(run["kind"])
        if corrections is not None:
            previous[run["kind"]] = corrections
        seconds = duration_seconds(run, now)
        epochs = f"{metrics.get('epochs_done', 0)}/{config['epochs']}" if run["kind"] == "train" and \
            "epochs" in config else ""
        size = (checkpoint_bytes or {}).get(int(run["id"]))
        rows.append({
            "id": int(run["id"]), "kind": run["kind"], "status": run["status"],
            "model": predict_source(config) if run["kind"] == "predict" else config.get("model", ""),
            "macro_f1": _metric(run), "flagged": _flagged(run), "epochs": epochs,
            "snapshot": (run.get("snapshot_hash") or "")[:10], "corrections": corrections,
            "new_corrections": None if corrections is None or before is None else int(corrections - before),
            "created": str(run.get("created_at") or "")[:19].replace("T", " "),
            "duration_min": None if seconds is None else round(seconds / 60, 2),
            "checkpoint_mb": None if size is None else round(size / 1e6, 2), "note": run.get("note") or "",
            "labels": run.get("labels") or "", "measured_on": key_text(run) if run["kind"] == "train" else "",
            "verdict": metrics.get("verdict", "") if run["kind"] == "experiment" else ""})
    frame = pd.DataFrame(rows, columns=OVERVIEW_COLUMNS).sort_values("id", ascending=False)
    return frame.astype({"flagged": "Int64", "corrections": "Int64", "new_corrections": "Int64"}).reset_index(drop=True)


def filter_overview(table: pd.DataFrame, *, kinds: list[str] | None = None, statuses: list[str] | None = None,
                    text: str = "") -> pd.DataFrame:
    """Rows of ``runs_overview`` with a kind and status among those given (all when None or empty) whose
    model or note contains ``text`` (case-insensitive, literal)."""
    keep = pd.Series(True, index=table.index)
    if kinds:
        keep &= table["kind"].isin(kinds)
    if statuses:
        keep &= table["status"].isin(statuses)
    if text.strip():
        needle = text.strip()
        keep &= table["model"].astype(str).str.contains(needle, case=False, regex=False) | \
            table["note"].astype(str).str.contains(needle, case=False, regex=False)
    return table[keep]


def changed_notes(before: pd.DataFrame, after: pd.DataFrame) -> dict[int, str]:
    """{run id: new note} for rows whose ``note`` differs between two copies of the table (same ids)."""
    old = dict(zip(before["id"].astype(int), before["note"].fillna("").astype(str)))
    return {int(i): str(note) for i, note in zip(after["id"], after["note"].fillna("").astype(str))
            if int(i) in old and old[int(i)] != str(note)}


def csv_bytes(table: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV; text cells that a spreadsheet would run as a formula get a leading quote."""
    buffer = io.StringIO()
    csv_safe(table).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue().encode("utf-8")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_view(run: Mapping[str, Any], now: float | None = None) -> tuple[float, str]:
    """(fraction done in 0..1, one line of text) for a run's progress bar.

    Training: ``epoch e/E · step s/S · ETA``; scoring adds ``fold f/F``; the ETA counts down from
    the last progress write. Finished runs give 1.0 (done) or their status.
    """
    status = run.get("status")
    label = f"{run.get('kind', 'run')} run #{run.get('id')}"
    metric = _metric(run)
    if status == "done":
        if run.get("kind") == "predict":
            config = run.get("config") or {}
            used = predict_source(config)
            written = PurePath(str(config.get("out"))).name if config.get("out") else ""
            return 1.0, f"{label} done" + (f" with {used}" if used else "") + (f" · wrote {written}" if written else "")
        return 1.0, f"{label} done" + (f" · macro F1 {metric:.3f}" if metric is not None else "")
    progress = run.get("progress") or {}
    if status not in ACTIVE:
        return _fraction(progress), f"{label} {status}"
    if not progress:
        return 0.0, f"{label} {status}: starting (loading libraries, caching images)…"
    parts = [f"{label}"]
    if "fold" in progress:
        parts.append(f"fold {progress['fold']}/{progress.get('folds', '?')}")
    if "epoch" in progress:
        parts.append(f"epoch {progress['epoch']}/{progress.get('epochs', '?')}")
    if progress.get("total"):
        parts.append(f"step {progress.get('step', 0)}/{progress['total']}")
    if progress.get("phase") and progress["phase"] != "train":
        parts.append(str(progress["phase"]))
    eta = progress.get("eta_s")
    if eta is not None:
        waited = max(0.0, (now or time.time()) - float(progress.get("updated_at") or now or time.time()))
        parts.append(f"ETA {_clock(max(0.0, float(eta) - waited))}")
    if progress.get("images_per_s"):
        parts.append(f"{progress['images_per_s']:.0f} img/s")
    return _fraction(progress), " · ".join(parts)


def group_eta(run: Mapping[str, Any], members: pd.DataFrame, now: float | None = None) -> str | None:
    """``"repeat 1 of 3 · group ETA 2 min 10 s"`` for a running member of a repeat group (``members``: the
    group's runs, ``store.repeat_group``), else None. The runs still queued each take what the finished ones
    took on average, or, before any finished, what this one will (its elapsed time plus its ETA)."""
    if members is None or len(members) < 2 or run.get("status") not in ACTIVE:
        return None
    progress = run.get("progress") or {}
    eta = progress.get("eta_s")
    if eta is None:
        return None
    clock = now or time.time()
    left = max(0.0, float(eta) - max(0.0, clock - float(progress.get("updated_at") or clock)))
    ids = [int(i) for i in members["id"]]
    done = [duration_seconds(r) for r in members.to_dict("records") if r.get("status") == "done"]
    done = [d for d in done if d]
    elapsed = duration_seconds(run, datetime.fromtimestamp(clock, UTC)) or 0.0
    each = sum(done) / len(done) if done else elapsed + left
    queued = int((members["status"] == "queued").sum())
    position = ids.index(int(run["id"])) + 1 if int(run["id"]) in ids else len(done) + 1
    return f"repeat {position} of {len(ids)} · group ETA {_clock(left + queued * each)}"


def _fraction(progress: Mapping[str, Any]) -> float:
    if progress.get("pairs"):  # an experiment (train/experiment.py): trainings done of 2 per pair
        return min(1.0, max(0.0, float(progress.get("done") or 0) / (2 * int(progress["pairs"]))))
    total, epochs = int(progress.get("total") or 0), int(progress.get("epochs") or 0)
    if not total or not epochs:
        return 0.0
    folds = int(progress.get("folds") or 1)
    done = ((int(progress.get("fold") or 1) - 1) * epochs + int(progress.get("epoch") or 1) - 1) * total + \
        int(progress.get("step") or 0)
    return min(1.0, max(0.0, done / (folds * epochs * total)))


def confusion_frame(record: Mapping[str, Any], target: str, classes: list[str]) -> pd.DataFrame | None:
    """A best-epoch record's confusion matrix of ``target`` (rows = truth, columns = prediction), or None."""
    matrix = record.get(f"confusion_{target}")
    if not isinstance(matrix, list) or len(matrix) != len(classes):
        return None
    return pd.DataFrame(matrix, index=classes, columns=classes)


def misclassified(predictions: pd.DataFrame) -> pd.DataFrame:
    """Validation images with at least one wrong target, from a run's ``val_predictions.csv``.

    Columns: ``path``, ``person``, ``wrong`` (count of wrong targets), ``mistakes`` (e.g.
    ``mask: wear → incorrect``) and ``first_target`` (the first wrong target's name); most wrong first.
    """
    targets = [c[5:] for c in predictions.columns if c.startswith("true_") and f"pred_{c[5:]}" in predictions]
    out = predictions[["path", "person"]].copy()
    wrong = pd.DataFrame({t: predictions[f"true_{t}"].astype(str) != predictions[f"pred_{t}"].astype(str)
                          for t in targets}, index=predictions.index)
    out["wrong"] = wrong.sum(axis=1).astype(int) if targets else 0
    out["mistakes"] = [", ".join(f"{t}: {predictions.at[i, f'true_{t}']} → {predictions.at[i, f'pred_{t}']}"
                                 for t in targets if wrong.at[i, t]) for i in predictions.index]
    out["first_target"] = [next((t for t in targets if wrong.at[i, t]), "") for i in predictions.index]
    return out[out["wrong"] > 0].sort_values("wrong", ascending=False, kind="stable").reset_index(drop=True)


def flag_changes(new: pd.DataFrame, old: pd.DataFrame | None) -> dict[str, Any]:
    """How the flagged units of a score run differ from an earlier one's.

    ``new`` and ``old`` are review queues (``core.review.queue_units``: ``key``, ``attribute``, ``is_issue``).
    Returns ``flagged``, ``appeared`` (flagged now, not before), ``cleared`` (flagged before, not
    now), ``kept`` and ``by_attribute`` (a frame: attribute, flagged, appeared, cleared).
    """
    now_flagged = new.loc[new["is_issue"].astype(int) == 1, ["key", "attribute"]]
    before = old.loc[old["is_issue"].astype(int) == 1, ["key", "attribute"]] if old is not None else \
        now_flagged.iloc[0:0]
    appeared = now_flagged[~now_flagged["key"].isin(before["key"])]
    cleared = before[~before["key"].isin(now_flagged["key"])]
    attributes = sorted(set(now_flagged["attribute"]) | set(before["attribute"]))
    by_attribute = pd.DataFrame({
        "attribute": attributes,
        "flagged": [int((now_flagged["attribute"] == a).sum()) for a in attributes],
        "appeared": [int((appeared["attribute"] == a).sum()) for a in attributes],
        "cleared": [int((cleared["attribute"] == a).sum()) for a in attributes]},
        columns=["attribute", "flagged", "appeared", "cleared"])
    return {"flagged": len(now_flagged), "appeared": len(appeared), "cleared": len(cleared),
            "kept": len(now_flagged) - len(appeared), "by_attribute": by_attribute}
