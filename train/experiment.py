"""Did cleaning help? An experiment, not two runs: the original labels against the current ones, judged on one
answer key, paired over seeds.

    python -m train experiment --repeats 3 [--heldout truth.csv]    # the Train page's "Did cleaning help?"
    python -m train evaluate 4 9                                     # old runs on today's labels, no retraining

``run_experiment`` trains the same config on the **original** labels (the ingest snapshot) and on the **current**
labels with the same N seeds (``seed``, ``seed + 1``, ...) and the same person split (a person-grouped fold of
the original labels, which never change, by ``seed``): the validation people never train on either side. Every
model is judged on ONE answer key, the current labels of the validation people (reviewed units marked,
``train.answer_key``), each epoch and its best checkpoint alike, plus an optional held-out labelled set
(``--heldout``). Each side's runs are ordinary training runs (``train.loop.fit``, the one loop) recorded with
``labels`` original/current and the key's hash; the experiment itself is a journal row of kind ``experiment``
with its pairs in ``experiment_runs``.

It reports the paired difference current - original of macro F1 and accuracy (``train.compare.paired_difference``:
the mean of per-seed differences with the paired t 95 % interval) and a plain verdict, "cleaning helped: +0.031
[+0.012, +0.050]", "cleaning hurt: ..." or "no evidence yet: ...", and its power: the smallest difference
this many pairs can see (``detectable_difference``, 80 % of the time), and the pairs (and minutes, from the
measured durations) a chosen difference would need (``pairs_needed``).

Running it again reuses what ran: a finished run of the same config, seed, labels and validation people is taken
as it is (judged on today's key from its best checkpoint when its own key is older: ``evaluate_run``), so
``--repeats 5`` after ``--repeats 3`` trains two more pairs, and after more review only the current side trains.
The report (``experiment_report``) and everything the dashboard reads are torch-free.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.store import LabelStore, StoreError, now, read_snapshot
from train.answer_key import describe, heldout_key, people_key, read_answer_key
from train.compare import (
    IMPROVED,
    NO_SPREAD,
    WORSE,
    config_hash,
    detectable_difference,
    paired_difference,
    pairs_needed,
    record_on,
)
from train.config import TrainConfig

TARGET = 0.02  # the default difference the power line asks about ("to see ±0.02 you need about 9 pairs")
METRICS = ("macro_f1", "acc_class")
_KEY_FREE = {"answer_key", "labels", "snapshot", "out", "cache_dir", "cache_mb", "tensorboard", "mlflow"}


# ---- the split and the runs' held-out people ---------------------------------------------------------------
def validation_people(labels: pd.DataFrame, config: TrainConfig) -> list[str]:
    """The experiment's validation people: fold ``config.val_fold`` of ``config.val_folds`` person-grouped folds
    of ``labels`` (the original labels: they never change, so the split survives more review), seeded by
    ``config.seed``."""
    from train.data import person_folds  # sklearn's splitter; no torch

    folds = person_folds(labels, config.val_folds, config.seed)
    return sorted(set(labels.loc[folds == config.val_fold, "person"].astype(str)))


def held_out_people(store: LabelStore, run: dict[str, Any]) -> set[str]:
    """The people a finished training run did not train on: its answer key's, else its own validation fold."""
    config = TrainConfig.from_dict(run.get("config") or {})
    if run.get("answer_key"):
        key, _ = read_answer_key(store.answer_key(run["answer_key"])["path"])
        return set(key["person"].astype(str))
    labels, _ = read_snapshot(str(config.snapshot))
    from train.data import person_folds

    folds = person_folds(labels, config.val_folds, config.seed)
    return set(labels.loc[folds == config.val_fold, "person"].astype(str))


# ---- judging a run's checkpoint on an answer key (re-evaluation, no retraining) ----------------------------------
def evaluate_run(store: LabelStore, run_id: int, key_file: str | os.PathLike[str], *, threads: int | None = None,
                 device: str = "cpu") -> dict[str, Any]:
    """The run's best checkpoint judged on an answer key: macro F1, accuracies, per-class F1 and confusions, as
    its epochs are; stored as an evaluation (``store.evaluation(run_id, key hash)``) and returned.

    Refused (one line) when the run trained on any of a validation key's people, or on any of a held-out key's
    images: its numbers there would be inflated."""
    import torch

    from train.checkpoint import load_model
    from train.data import ImageCache
    from train.loop import predict_probs
    from train.metrics import classification_metrics, predicted_codes

    run = store.run(run_id)
    if run["kind"] != "train" or run["status"] != "done":
        raise StoreError(f"run #{run_id} is a {run['status']} {run['kind']} run: only finished training runs "
                         "can be judged on an answer key")
    checkpoint = run.get("best_checkpoint")
    if not checkpoint or not Path(checkpoint).exists():
        raise StoreError(f"run #{run_id}: its best checkpoint {checkpoint or '(none)'} is gone; it cannot be "
                         "re-evaluated")
    key, meta = read_answer_key(key_file)
    config = TrainConfig.from_dict(run.get("config") or {})
    held = held_out_people(store, run)
    if meta["kind"] == "validation":
        trained = set(key["person"].astype(str)) - held
        if trained:
            raise StoreError(f"run #{run_id} trained on {len(trained)} of the answer key's {meta['n_people']} "
                             f"people ({describe(meta)}): its numbers there would be inflated")
    else:
        labels, _ = read_snapshot(str(config.snapshot))
        seen = set(labels.loc[~labels["person"].astype(str).isin(held), "hash"])
        overlap = int(key["hash"].isin(seen).sum())
        if overlap:
            raise StoreError(f"run #{run_id} trained on {overlap} of the held-out key's images (same content)")
    torch.set_num_threads(max(1, int(threads or config.threads)))
    model, model_meta = load_model(checkpoint, device)
    from core.schema import Schema

    schema = Schema.from_dict(meta["schema"])
    cache_dir = Path(config.cache_dir) if config.cache_dir else store.files_dir / "cache"
    cache = ImageCache.open(meta["root"], key["path"].tolist(), key["hash"].tolist(),
                            tuple(model_meta["image_size"]), cache_dir, threads=config.threads, progress=False,
                            budget_mb=config.cache_mb)
    probs, _ = predict_probs(model, cache, np.arange(len(key)), model_meta["mean"], model_meta["std"],
                             torch.device(device), config.batch_size * 2)
    metrics = classification_metrics(schema, schema.codes(key), predicted_codes(schema, list(probs), probs))
    store.record_evaluation(run_id, meta["hash"], metrics, n_items=len(key), checkpoint=str(checkpoint))
    return metrics


def evaluate_runs(store: LabelStore, run_ids: list[int], *, labels: str = "current") -> list[dict[str, Any]]:
    """Judge finished runs from their checkpoints, without retraining. ``labels="current"``: one answer key for
    all of them, today's labels of the people none of them trained on (so their numbers can be compared);
    ``labels="own"``: each on its own held-out people with its own snapshot's labels (reproduces its stored
    best metric). Returns one {run_id, answer_key, key, metrics} per run."""
    runs = [store.run(r) for r in run_ids]
    for run in runs:
        if run["kind"] != "train" or run["status"] != "done":
            raise StoreError(f"run #{run['id']} is a {run['status']} {run['kind']} run: only finished training "
                             "runs can be judged on an answer key")
    out = []
    if labels == "own":  # the key its numbers were measured on: its answer key, else its fold of its snapshot
        for run in runs:
            if run.get("answer_key"):
                path = Path(store.answer_key(run["answer_key"])["path"])
                meta = read_answer_key(path)[1]
            else:
                path, meta = people_key(store, held_out_people(store, run), labels="snapshot",
                                        snapshot=run["config"]["snapshot"],
                                        description=f"run #{run['id']}'s own labels")
            out.append({"run_id": int(run["id"]), "answer_key": meta["hash"], "key": describe(meta),
                        "metrics": evaluate_run(store, int(run["id"]), path)})
        return out
    if labels != "current":
        raise ValueError(f"--labels is current or own, not {labels!r}")
    people = set.intersection(*(held_out_people(store, run) for run in runs))
    if not people:
        raise StoreError(f"no person was held out by all of runs {', '.join(f'#{r}' for r in run_ids)}: there is "
                         "no answer key none of them trained on (python -m train experiment trains on one split)")
    path, meta = people_key(store, people, description="today's labels of runs " +
                            ", ".join(f"#{r}" for r in run_ids) + "' held-out people")
    for run in runs:
        out.append({"run_id": int(run["id"]), "answer_key": meta["hash"], "key": describe(meta),
                    "metrics": evaluate_run(store, int(run["id"]), path)})
    return out


# ---- the experiment ------------------------------------------------------------------------------------------
def _reusable(store: LabelStore, config: TrainConfig, snapshot_hash: str, seed: int,
              people_hash: str) -> int | None:
    """A finished training run of ``config`` (apart from its key and file locations) on ``snapshot_hash`` with
    ``seed`` whose validation people are the experiment's, newest first; None if there is none."""
    runs = store.runs("train")
    want = config_hash({k: v for k, v in asdict(config).items() if k not in _KEY_FREE})
    for run in runs[(runs["status"] == "done") & (runs["snapshot_hash"] == snapshot_hash)].to_dict("records"):
        cfg = run["config"] or {}
        if cfg.get("seed") != seed or not run.get("answer_key") or not run.get("best_checkpoint") \
                or not Path(run["best_checkpoint"]).exists():
            continue
        if config_hash({k: v for k, v in cfg.items() if k not in _KEY_FREE}) != want:
            continue
        try:
            if store.answer_key(run["answer_key"])["people_hash"] == people_hash:
                return int(run["id"])
        except StoreError:
            continue
    return None


def run_experiment(config: TrainConfig | None = None, repeats: int = 3, *, db: str | None = None,
                   heldout: str | None = None, run_id: int | None = None, echo: bool = True,
                   target: float = TARGET) -> dict[str, Any]:
    """Train ``config`` on the original and on the current labels with ``repeats`` paired seeds, judge every
    model on one answer key, and return ``experiment_report`` (also the experiment row's ``metrics``).

    ``run_id`` adopts a queued journal row (a job launcher's) as the experiment's row. A cancelled or failed
    training ends the experiment (status cancelled/failed); what finished stays and is reused next time."""
    config = config or TrainConfig()
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    with LabelStore(db) as store:
        if run_id is None:
            run_id = store.create_run("experiment", {}, status="running")
        try:
            original, current = store.snapshot(original=True), store.snapshot()
            if original.hash == current.hash:
                raise StoreError("the current labels are the labels as ingested: nothing to compare yet (review "
                                 "and correct some units first)")
            labels, _ = read_snapshot(original.path)
            people = validation_people(labels, config)
            key_path, key = people_key(store, people, description=f"experiment #{run_id}: current labels of its "
                                                                  "validation people")
            held = heldout_key(store, heldout) if heldout else None
        except BaseException as error:
            store.update_run(run_id, status="failed", finished_at=now(), error_tail=f"{type(error).__name__}: {error}")
            raise
        full = {**asdict(config), "repeats": int(repeats), "heldout": heldout, "target": target,
                "original": {"hash": original.hash, "path": str(original.path)},
                "current": {"hash": current.hash, "path": str(current.path), "n_corrections": current.n_corrections},
                "answer_key": key["hash"], "heldout_key": held[1]["hash"] if held else None}
        store.update_run(run_id, status="running", config=full, snapshot_hash=current.hash,
                         n_corrections=current.n_corrections, labels="original vs current", answer_key=key["hash"],
                         seed=config.seed, host=socket.gethostname(), pid=os.getpid(), started_at=now(),
                         progress={"phase": f"starting: {describe(key)}", "pair": 0, "pairs": repeats})
    base = replace(config, answer_key=str(key_path), snapshot=None, labels=None)
    status, error_text = "done", None
    try:
        for i in range(repeats):
            for side, snap in (("original", original), ("current", current)):
                _one_side(db, run_id, base, snap, side=side, pair=i, repeats=repeats, key=key, key_path=key_path,
                          held=held, threads=config.threads, echo=echo)
    except _Stop as stop:
        status = str(stop.args[0])
        error_text = f"a training run ended {status}; the pairs that finished are kept and reused next time"
    except BaseException as error:
        status, error_text = "failed", f"{type(error).__name__}: {error}"
        with LabelStore(db) as store:
            store.update_run(run_id, status="failed", finished_at=now(), error_tail=error_text)
        raise
    with LabelStore(db) as store:
        report = experiment_report(store, run_id, target=target)
        report["status"] = status
        store.update_run(run_id, status=status, finished_at=now(), metrics=report, error_tail=error_text,
                         progress={"phase": "done", "pair": report["pairs"], "pairs": repeats,
                                   "done": 2 * report["pairs"]})
    return report


def _one_side(db: str | None, run_id: int, base: TrainConfig, snap: Any, *, side: str, pair: int, repeats: int,
              key: dict[str, Any], key_path: Path, held: Any, threads: int, echo: bool) -> int:
    """One training of pair ``pair`` on ``side``'s labels (or a finished one reused), then judged on the
    experiment's keys from its checkpoint; returns its run id. Raises ``_Stop(status)`` when it did not finish."""
    from train.jobs import JOB_LOCK
    from train.loop import fit

    seed = base.seed + pair
    with LabelStore(db) as store:
        reused = _reusable(store, base, snap.hash, seed, key["people_hash"])
        store.update_run(run_id, progress={"phase": f"pair {pair + 1} of {repeats}: {side} labels, seed {seed}",
                                           "pair": pair + 1, "pairs": repeats, "done": 2 * pair + (side == "current"),
                                           "side": side, "updated_at": time.time()})
        if reused is not None:
            store.add_experiment_run(run_id, reused, side=side, seed=seed, reused=True)
        else:  # its row first: a job that dies mid-training leaves no orphan "running" row
            queued = store.create_run("train", {}, status="queued")
            store.add_experiment_run(run_id, queued, side=side, seed=seed)
    if reused is None:
        result = fit(replace(base, seed=seed, snapshot=str(snap.path), labels=side), db=db, echo=echo, run_id=queued)
        with LabelStore(db) as store:
            holder = store.lock_holder(JOB_LOCK)  # a dashboard job: the lock stays on the experiment
            if holder is not None and holder["pid"] == os.getpid() and holder["run_id"] != run_id:
                store.update_lock(JOB_LOCK, run_id=run_id, pid=os.getpid())
        if result["status"] != "done":
            raise _Stop(result["status"])
        run_of_side = int(result["run_id"])
    else:
        run_of_side = reused
    with LabelStore(db) as store:  # every number on the experiment's keys, from the checkpoints
        if store.run(run_of_side)["answer_key"] != key["hash"] and store.evaluation(run_of_side, key["hash"]) is None:
            evaluate_run(store, run_of_side, key_path, threads=threads)
        if held and store.evaluation(run_of_side, held[1]["hash"]) is None:
            evaluate_run(store, run_of_side, held[0], threads=threads)
    return run_of_side


class _Stop(Exception):
    """A training run of the experiment was cancelled: the experiment ends with that status."""


# ---- the report (torch-free) -------------------------------------------------------------------------------------
def _seconds(run: dict[str, Any]) -> float | None:
    try:
        start = pd.Timestamp(run["started_at"])
        end = pd.Timestamp(run["finished_at"])
    except (TypeError, ValueError, KeyError):
        return None
    return None if pd.isna(start) or pd.isna(end) else float((end - start).total_seconds())


def verdict_line(row: dict[str, Any], what: str = "macro F1") -> str:
    """The plain verdict of a paired difference of ``what``."""
    if row["change"] is None:
        return "no finished pair yet"
    if row["low"] is None:
        return f"one pair so far ({what} {row['change']:+.3f}): no interval yet; run 2 or more pairs"
    interval = f"{row['change']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"
    if row["verdict"] == IMPROVED:
        return f"cleaning helped: {what} {interval}"
    if row["verdict"] == WORSE:
        return f"cleaning hurt: {what} {interval}"
    return f"no evidence yet: {what} {interval}, within run-to-run noise"


def power_line(sd: float | None, pairs: int, seconds_per_pair: float | None, target: float = TARGET) -> str:
    """What this many pairs can see, and what a ``target`` difference would need (pairs and time)."""
    if sd is None or pairs < 2:
        return "unknown until 2 pairs have finished (the spread of the pairs' differences is measured)"
    if sd == 0:
        return (f"unknown: all {pairs} pairs differed by exactly the same amount (SD 0), so no spread is "
                "measured; models this small or short may have learned nothing: train longer, then add pairs")
    smallest = detectable_difference(sd, pairs)
    text = (f"with {pairs} pairs (SD of a pair's difference {sd:.3f}) this experiment sees a difference of "
            f"±{smallest:.3f} or more 80 % of the time")
    needed = pairs_needed(sd, target)
    if needed is None:
        return text + f"; ±{target:g} would need over 1000 pairs"
    if needed <= pairs:
        return text + f"; ±{target:g} is within reach already"
    more = needed - pairs
    minutes = f", ~{math.ceil(more * seconds_per_pair / 60)} min more on this machine" if seconds_per_pair else ""
    return text + f"; to see ±{target:g} you need about {needed} pairs ({more} more{minutes})"


def experiment_report(store: LabelStore, experiment: int, *, target: float | None = None) -> dict[str, Any]:
    """The experiment's answer: per answer key (validation, held-out), the paired difference current - original
    of each metric with its interval and verdict, the pairs, the power line and the seconds a pair took."""
    row = store.run(experiment)
    config = row.get("config") or {}
    target = float(target if target is not None else config.get("target") or TARGET)
    members = store.experiment_runs(experiment)
    done = members[members["status"] == "done"]
    seeds = sorted(set(done.loc[done["side"] == "original", "seed"]) & set(done.loc[done["side"] == "current", "seed"]))
    run_of = {(r["side"], int(r["seed"])): int(r["run_id"]) for r in done.to_dict("records")}
    keys = [("validation", config.get("answer_key")), ("heldout", config.get("heldout_key"))]
    out: dict[str, Any] = {"experiment": int(experiment), "pairs": len(seeds), "seeds": [int(s) for s in seeds],
                           "runs": {side: [run_of[(side, s)] for s in seeds] for side in ("original", "current")},
                           "keys": {}, "target": target}
    spent = [s for s in (_seconds(store.run(int(r))) for r in members.loc[members["reused"] == 0, "run_id"])
             if s is not None]
    out["seconds_per_pair"] = 2 * float(np.mean(spent)) if spent else None
    for name, key in keys:
        if not key:
            continue
        info = store.answer_key(key)
        result: dict[str, Any] = {"hash": key, "description": describe({**info, "hash": key}), "metrics": {}}
        for metric in METRICS:
            values: dict[str, list[Any]] = {side: [record_on(store, run_of[(side, s)], key).get(metric) for s in seeds]
                                            for side in ("original", "current")}
            diff = paired_difference(values["original"], values["current"])
            result["metrics"][metric] = {**diff, "original": values["original"], "current": values["current"]}
        f1 = result["metrics"]["macro_f1"]
        result["verdict"] = verdict_line(f1)
        result["accuracy"] = verdict_line(result["metrics"]["acc_class"], "accuracy")
        result["power"] = power_line(f1["sd"], f1["n"], out["seconds_per_pair"], target)
        out["keys"][name] = result
    main = out["keys"].get("validation", {})
    out["verdict"] = main.get("verdict", "no finished pair yet")
    out["power"] = main.get("power", "")
    out["helped"] = (main.get("metrics", {}).get("macro_f1", {}).get("verdict") if main else NO_SPREAD)
    return out


def format_report(report: dict[str, Any]) -> list[str]:
    """The lines ``python -m train experiment`` prints (and the page shows)."""
    lines = [f"experiment #{report['experiment']}: {report['pairs']} pair(s), seeds "
             f"{', '.join(map(str, report['seeds'])) or '-'}; runs on the original labels "
             f"{', '.join(f'#{r}' for r in report['runs']['original']) or '-'}, on the current labels "
             f"{', '.join(f'#{r}' for r in report['runs']['current']) or '-'}"]
    names = {"validation": "your validation people", "heldout": "the held-out set"}
    for name, result in report["keys"].items():
        lines.append(f"on {names[name]} ({result['description']}), current - original:")
        lines.append(f"  {result['verdict']}")
        lines.append(f"  {result['accuracy']}")
        lines.append(f"  {result['power']}")
    return lines
