"""Cross-validated scoring: out-of-fold probabilities for every labelled image, then ``core.scoring``.

    python -m train score --db labels.db --folds 3          # or: from train.score import score
    result = score(db="labels.db", folds=3, epochs=5)       # {"run_id", "status", "run_dir", "flagged", ...}

1. A snapshot of the current labels, split into person-grouped, stratified folds by ``person_folds``
   (the function fit's validation split comes from), so no image is scored by a model that saw it or
   any image of its person.
2. Per fold a fresh model (``fit``'s options: model, size, epochs, loss, ...) trains on the other
   folds; its softmax probabilities for the held-out images go to ``fold-<i>.npy`` in the run folder
   (written atomically), so a killed run resumed with ``--resume`` skips the folds it finished.
3. The folds are joined into ``oof_<target>.npy`` (n, k) in ``items.csv`` order, for benches to reuse;
   ``score_rows`` turns them into one row per image and target (image verdicts for ``mask``, one
   verdict per person for ``gender`` and ``age_group``, incorrect/not_wear swaps per person, the
   disagreement with the previous finished score run as a second signal) and ``save_scores`` stores
   them. The run becomes "current" (``store.current_score_run()``) only once its scores are saved.

Journal: a ``runs`` row of kind ``score`` (config, snapshot hash, environment, progress with fold,
epoch, step and ETA); one ``epochs`` row per fold (its number is the fold's, 1-based) with the
held-out accuracies against the given labels. Data checks (``core.checks``) run first when they have
not run since the last ingest.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.checks import run_data_checks
from core.files import csv_safe
from core.review import flagged_counts
from core.schema import Schema
from core.store import LabelStore, StoreError, now, read_snapshot
from train import distributed as dist
from train import embed
from train.config import DEFAULT_FOLDS, NOT_FOR_SCORE, SCORE_DEFAULTS, TrainConfig
from train.data import CachedImages, ImageCache, person_folds
from train.logs import SignalFlag, StopRequested, close_logger, run_logger
from train.loop import class_key, log_evictions, predict_probs, train_model
from train.metrics import classification_metrics, predicted_codes
from train.model import Head, heads_for
from train.oof import join_folds, load_oof, previous_probs, save_npy, score_rows
from train.run_folder import check_options, reopen, start_run, take_snapshot
from train.writers import Writers, open_writers

__all__ = ["DEFAULT_FOLDS", "NOT_FOR_SCORE", "SCORE_DEFAULTS", "load_oof", "open_score_run", "rescore", "score",
           "score_rows", "store_verdicts"]



def score(config: TrainConfig | None = None, *, db: str | None = None, folds: int = DEFAULT_FOLDS,
          run_id: int | None = None, resume: int | None = None, echo: bool = True, **overrides: Any) -> dict[str, Any]:
    """Run a cross-validated score run; returns {run_id, status, run_dir, n_items, flagged, compared_with, seconds}.

    ``overrides`` are ``TrainConfig`` fields (``model``, ``img_size``, ``epochs``, ...); ``run_id``
    adopts a queued journal row (a job launcher's); ``resume`` continues score run ``resume`` with its
    own config, skipping its finished folds. SIGTERM/SIGINT end it as ``cancelled``; other errors mark
    it ``failed`` (with the error tail) and are raised.
    """
    refused = sorted(k for k in overrides if k in NOT_FOR_SCORE and overrides[k] != getattr(TrainConfig(), k))
    if refused:
        raise ValueError(f"score does not take {', '.join(refused)} (a fit option; scoring uses the schema's classes)")
    base = asdict(config) if config is not None else {**asdict(TrainConfig()), **SCORE_DEFAULTS}
    config = TrainConfig.from_dict({**base, **overrides})
    started = time.monotonic()
    with LabelStore(db) as store:
        check_options(config, (store.run(resume)["config"] or {}) if resume is not None else None)  # before any write
        plan = open_score_run(store, config, folds, run_id=run_id, resume=resume)
        run_id, run_dir = plan["run_id"], Path(plan["run_dir"])
        log = run_logger(run_dir / "score.log", echo=echo)
        result: dict[str, Any] = {"run_id": run_id, "status": "running", "run_dir": str(run_dir)}
        board = Writers([])
        try:
            board = open_writers(plan["config"], run_dir, log=log, tags={
                "run_id": str(run_id), "kind": "score", "db": str(store.path.resolve())})
            with SignalFlag() as stop:
                result.update(_score(plan, store, run_dir, log, stop, board))
            result["status"] = "done"
        except StopRequested:
            result["status"] = "cancelled"
            store.update_run(run_id, status="cancelled", finished_at=now())
            log.info(f"score run {run_id} cancelled; resume with: python -m train score --resume {run_id}")
        except BaseException:
            log.error(traceback.format_exc())
            store.update_run(run_id, status="failed", finished_at=now(), error_tail=traceback.format_exc()[-4000:])
            raise
        finally:
            board.close(result["status"] if result["status"] in ("done", "cancelled") else "failed")
            close_logger(log)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def open_score_run(store: LabelStore, config: TrainConfig, folds: int, *, run_id: int | None = None,
                   resume: int | None = None) -> dict[str, Any]:
    """Create, adopt (``run_id``) or resume (``resume``) the journal row and run folder.

    Returns the plan: ``run_id``, ``run_dir``, ``config`` (full, with snapshot file, folds and output
    folder) and ``resumed``.
    """
    if resume is not None:
        row = reopen(store, resume, "score")
        return {"run_id": int(resume), "run_dir": row["run_dir"], "config": row["config"], "resumed": True}
    if folds < 2:
        raise ValueError(f"scoring needs at least 2 folds, got {folds}")
    snapshot_path, snap = take_snapshot(store, config.snapshot)
    out = Path(config.out).resolve() if config.out else store.path.resolve().parent / "runs"
    full = {k: v for k, v in asdict(config).items() if k not in NOT_FOR_SCORE}
    full.update(snapshot=str(snapshot_path), out=str(out), folds=int(folds))
    run_id, run_dir = start_run(store, "score", full, snap, run_id=run_id)
    return {"run_id": run_id, "run_dir": str(run_dir), "config": full, "resumed": False}


def _score(plan: dict[str, Any], store: LabelStore, run_dir: Path, log: Any, stop: SignalFlag,
           board: Writers) -> dict[str, Any]:
    full, run_id = plan["config"], plan["run_id"]
    config, k = TrainConfig.from_dict(full), int(full["folds"])
    torch.set_num_threads(max(1, config.threads))
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    progress = FoldProgress(store, run_id, k, config.epochs, config.batch_size)
    phases: dict[str, float] = {}  # seconds per phase of this session, for the journal and the bench
    mark = time.monotonic()
    _data_checks(store, config, progress, log)
    _check(stop)
    phases["data_checks"], mark = time.monotonic() - mark, time.monotonic()

    # ---- the snapshot's labelled images and their folds --------------------------------------------------------
    labels, snap, folds = _labels_and_folds(store, config, run_dir, k)
    schema = Schema.from_dict(snap["schema"])
    heads = heads_for(schema, config.heads)
    codes = schema.codes(labels)
    if config.heads == "single":
        codes["class"] = schema.encode_class(codes)
    targets = np.stack([codes[h.name] for h in heads], 1)  # (n, n_heads) int64
    balance_key = class_key(codes, schema)  # (n,) class of each row, for --balanced
    cache = ImageCache.open(snap["root"], labels["path"].tolist(), labels["hash"].tolist(), config.img_size,
                            Path(config.cache_dir) if config.cache_dir else store.files_dir / "cache",
                            threads=config.threads, progress=False, budget_mb=config.cache_mb)
    log_evictions(log, cache, config.cache_mb)
    phases["cache"], mark = time.monotonic() - mark, time.monotonic()
    log.info(f"score run {run_id}: {len(labels)} images of {labels['person'].nunique()} people in {k} person-grouped "
             f"folds, snapshot {snap['hash'][:12]}, {config.model} {config.img_size[0]}x{config.img_size[1]}, "
             f"{config.epochs} epochs, {device}")

    # ---- one model per fold; its held-out probabilities are the fold's out-of-fold predictions --------------------
    for fold in range(k):
        path = run_dir / f"fold-{fold}.npy"
        held_out = np.flatnonzero(folds == fold)
        if path.exists():
            log.info(f"fold {fold + 1}/{k}: done earlier, skipped")
            progress.fold_skipped()
            continue
        train_items = np.flatnonzero(folds != fold)
        probs, record = _train_fold(config, schema, heads, cache, targets, balance_key, train_items, held_out, fold,
                                    progress, stop, device, log, run_dir=run_dir)
        truth = schema.codes(labels.iloc[held_out])
        metrics = classification_metrics(schema, truth, predicted_codes(schema, [h.name for h in heads], probs))
        store.record_epoch(run_id, fold + 1, {**record, **{m: v for m, v in metrics.items()
                                                          if not m.startswith("confusion_")}})
        board.scalars(fold + 1, {**record, **metrics})  # TensorBoard/MLflow, if asked for: step = fold
        save_npy(path, np.concatenate([probs[h.name] for h in heads], axis=1).astype(np.float32))
        log.info(f"fold {fold + 1}/{k}: " + " ".join(f"{m[4:]} {v:.3f}" for m, v in metrics.items()
                                                       if m.startswith("acc_")) + f" ({record['seconds']:.0f} s)")

    # ---- join the folds, score, store -----------------------------------------------------------------------
    _check(stop)
    phases["folds"], mark = time.monotonic() - mark, time.monotonic()
    progress.fold = k - 1
    progress.update(config.epochs - 1, 1, 1, phase="scoring", force=True)
    oof = join_folds(run_dir, folds, heads, schema)
    for target, target_probs in oof.items():
        save_npy(run_dir / f"oof_{target}.npy", target_probs)
    embed.finish(run_dir, folds, labels[["item_id", "path"]], config, heads, cache, device, log)  # embeddings.npy
    rows, previous_id = store_verdicts(store, run_id, schema, labels, oof, folds)
    flagged = flagged_counts(store, run_id)  # the Review queue's flagged units: one definition everywhere
    phases["scoring"] = time.monotonic() - mark
    summary = {"folds": k, "n_items": len(labels), "flagged_units": flagged, "compared_with": previous_id,
               "seconds": {name: round(value, 1) for name, value in phases.items()},
               **{f"mean_{m}": float(v) for m, v in store.epochs(run_id).mean(numeric_only=True).items()
                  if m.startswith("acc_") or m == "macro_f1"}}
    store.update_run(run_id, status="done", finished_at=now(), metrics=summary)
    log.info(f"score run {run_id} done: flagged units {flagged}" +
             (f"; disagreement with score run {previous_id} in detail" if previous_id else ""))
    return {"n_items": len(labels), "flagged": flagged, "compared_with": previous_id}


def _data_checks(store: LabelStore, config: TrainConfig, progress: FoldProgress, log: Any) -> None:
    """The data checks (duplicates, dark, blurry), once per ingest, beside the label checks."""
    ingest_id = store.last_ingest_id()
    if store.data_checks_ingest() != ingest_id:
        progress.update(0, 0, 1, phase="data checks", force=True)
        issues = run_data_checks(store, workers=max(1, config.threads))
        store.record_data_checks(int(ingest_id or 0))
        log.info(f"data checks: {len(issues)} issue(s) " + str(issues["kind"].value_counts().to_dict()))


def _labels_and_folds(store: LabelStore, config: TrainConfig, run_dir: Path,
                      k: int) -> tuple[pd.DataFrame, dict[str, Any], np.ndarray]:
    """The run's snapshot (labels with their store item ids, its metadata) and each image's fold, saved in the run
    folder (``folds.npy``, ``items.csv``): a resumed run keeps its folds, whatever ``person_folds`` does today."""
    assert config.snapshot is not None  # open_run froze the labels into a snapshot
    labels, snap = read_snapshot(config.snapshot)
    ids = store.items()[["path", "item_id"]]
    labels = labels.merge(ids, on="path", how="left", validate="one_to_one")
    if labels["item_id"].isna().any():
        raise StoreError(f"{int(labels['item_id'].isna().sum())} snapshot image(s) are not in the store any more")
    labels["item_id"] = labels["item_id"].astype("int64")
    saved = run_dir / "folds.npy"
    folds = np.load(saved) if saved.exists() else person_folds(labels, k, config.seed)
    if len(folds) != len(labels):
        raise StoreError(f"{saved} has {len(folds)} rows but the snapshot {len(labels)}: not this run's folds")
    save_npy(saved, folds)
    csv_safe(labels.assign(fold=folds)[["item_id", "path", "person", "fold"]]).to_csv(run_dir / "items.csv", index=False)
    return labels, snap, folds


def store_verdicts(store: LabelStore, run_id: int, schema: Schema, labels: Any,
                   oof: dict[str, np.ndarray], folds: np.ndarray | None = None) -> tuple[Any, int | None]:
    """``score_rows`` of the out-of-fold probabilities (beside the newest other score run's; ``folds``: the fold each
    image was scored in), saved as the run's scores and ranked queue. Returns (rows, id of the run compared with or
    None)."""
    previous_id, previous = previous_probs(store, run_id, labels["path"])
    rows = score_rows(schema, labels, oof, previous, folds=folds)
    if previous_id is not None:
        rows["detail"] = [{**d, "compared_with": previous_id} for d in rows["detail"]]
    store.save_scores(run_id, rows)
    return rows, previous_id


def rescore(store: LabelStore, run_id: int) -> dict[str, Any]:
    """Recompute a finished score run's verdicts from its saved out-of-fold probabilities with today's
    ``core.scoring`` (no training): for a scoring policy that changed after the run. Returns
    ``{run_id, flagged}`` (flagged units per attribute)."""
    run = store.run(run_id)
    if run is None or run["kind"] != "score" or run["status"] != "done" or not run["run_dir"]:
        raise StoreError(f"run {run_id} is not a finished score run")
    labels, snap = read_snapshot(run["config"]["snapshot"])
    labels = labels.merge(store.items()[["path", "item_id"]], on="path", how="left", validate="one_to_one")
    items, oof = load_oof(run["run_dir"])
    if list(items["path"]) != list(labels["path"]):
        raise StoreError(f"{run['run_dir']}/items.csv does not match the run's snapshot")
    labels["item_id"] = labels["item_id"].astype("int64")
    store_verdicts(store, run_id, Schema.from_dict(snap["schema"]), labels, oof, items["fold"].to_numpy())
    return {"run_id": int(run_id), "flagged": flagged_counts(store, run_id)}


def _train_fold(config: TrainConfig, schema: Schema, heads: list[Head], cache: ImageCache, targets: np.ndarray,
                balance_key: np.ndarray, train_items: np.ndarray, held_out: np.ndarray, fold: int,
                progress: FoldProgress, stop: SignalFlag, device: torch.device,
                log: Any, run_dir: Path | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train a fresh model on ``train_items`` with ``train_model`` (fit's loop, seed ``config.seed + fold``);
    return (held-out probabilities per head, record)."""
    train_set = CachedImages(cache, train_items, targets[train_items])
    progress.fold = fold
    losses, images, seconds = [], 0, 0.0
    for done in train_model(config, heads, train_set, seed=config.seed + fold, world=dist.World(0, 1, 0, device),
                            balance_key=balance_key[train_items], progress=progress, stop=stop, log=log):
        losses.append(round(done.train_loss, 5))
        images, seconds = images + done.images, seconds + done.seconds
    progress.update(config.epochs - 1, done.steps, done.steps, phase="predict", force=True)
    # Flip TTA: a second look for 1/2 an epoch's forward cost on 1/k of the data; steadier probabilities.
    probs, _ = predict_probs(done.model, cache, held_out, *done.model.mean_std, device, config.batch_size * 4,
                             tta="flip")
    if run_dir is not None:  # the same model's penultimate features of its held-out images (and the anchors)
        embed.save_fold(run_dir, fold, done.model, cache, held_out, len(targets), config.seed, device,
                        config.batch_size * 4)
    progress.fold_done()  # a single "class" head stays joint here: join_folds turns it into per-target marginals
    record = {"fold": fold + 1, "n_train": len(train_items), "n_held_out": len(held_out), "train_loss": losses[-1],
              "train_loss_per_epoch": losses, "seconds": round(seconds, 2),
              "images_per_s": round(images / max(seconds, 1e-9), 1)}
    return probs, record


def _check(stop: SignalFlag) -> None:
    """Raise ``StopRequested`` once SIGTERM/SIGINT arrived (checked between steps and phases)."""
    if stop.raised is not None:
        raise StopRequested()


class FoldProgress:
    """Writes fold, epoch, step, phase, ETA and speed to the run row at most every ``every_s`` seconds.

    ``train_model`` calls ``update``; ``fold`` (0-based) says which fold is training.
    """

    def __init__(self, store: LabelStore, run_id: int, folds: int, epochs: int, batch_size: int,
                 every_s: float = 3.0):
        self.store, self.run_id, self.folds, self.epochs, self.every_s = store, run_id, folds, epochs, every_s
        self.batch_size = batch_size
        self.fold = 0
        self.folds_left = folds  # folds still to train; the ETA extrapolates this session's training rate
        self.steps_done, self.last_write = 0, 0.0
        self.started: float | None = None

    def fold_skipped(self) -> None:
        self.folds_left -= 1

    def fold_done(self) -> None:
        self.folds_left -= 1

    def update(self, epoch: int, step: int, steps: int, images: int = 0, *, phase: str = "train",
               force: bool = False) -> None:
        """epoch: 0-based; step/steps: batches of this epoch; images: unused (the rate comes from steps)."""
        moment = time.monotonic()
        if phase == "train":
            self.steps_done += 1
            self.started = self.started or moment  # the clock starts with training, not with data checks
        if not force and moment - self.last_write < self.every_s:
            return
        self.last_write = moment
        elapsed = moment - self.started if self.started else 0.0
        rate = self.steps_done / elapsed if elapsed > 0 else 0.0  # steps per second
        remaining = self.folds_left * self.epochs * steps - (epoch * steps + step) if phase == "train" else None
        self.store.update_progress(self.run_id, fold=self.fold + 1, folds=self.folds, epoch=epoch + 1,
                                   epochs=self.epochs, step=step, total=steps, phase=phase,
                                   eta_s=round(remaining / rate, 1) if remaining is not None and rate else None,
                                   images_per_s=round(rate * self.batch_size, 1) if rate else None)
