"""Predict the eval images in the competition's submission format, ensembling checkpoints and TTA.

    python -m train predict --run 3 --run 5 --tta flip --out submission.csv

Writes ``submission.csv`` (every row of ``eval/info.csv`` in order, ``ImageID,ans``, header kept)
and ``submission.probs.csv`` beside it: per-image probabilities of every attribute and of every
combined class. Several checkpoints are ensembled by averaging combined-class probabilities; a
multi-head model's combined-class probability is the product of its heads' probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.files import csv_safe, replacing
from core.images import content_hash, resolve_inside
from core.schema import Schema
from core.store import LabelStore, StoreError
from train.cache import budget_mb
from train.checkpoint import load_model
from train.data import ImageCache
from train.loop import predict_probs
from train.predictions import probs_file


def joint_probs(schema: Schema, head_probs: dict[str, np.ndarray]) -> np.ndarray:
    """Combined-class probabilities (n, schema.n_classes), in ``schema.encode_class`` order.

    A single ``class`` head is used as is; separate heads are multiplied (first attribute most significant).
    """
    if "class" in head_probs:
        return head_probs["class"]
    joint: np.ndarray | None = None
    for name in schema.class_attributes:
        p = head_probs[name]
        joint = p if joint is None else (joint[:, :, None] * p[:, None, :]).reshape(len(p), -1)
    if joint is None:
        raise ValueError("the schema has no class attributes to predict")
    return joint


def predict(checkpoints: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
            store: LabelStore | None = None, info: str | os.PathLike[str] | None = None, tta: str = "none",
            batch_size: int = 128, threads: int = 2, device: str = "auto",
            cache_dir: str | os.PathLike[str] | None = None, cache_mb: float | None = None,
            run_id: int | None = None) -> pd.DataFrame:
    """Write the submission (and probabilities) for ``info.csv``; returns the submission table.

    ``info`` defaults to ``<store root>/eval/info.csv``; images are ``<info folder>/images/<ImageID>``.
    With a ``store`` the prediction is journaled as a ``predict`` run: a new row, or the queued row
    ``run_id`` that a job launcher created. ``cache_mb`` is the image cache budget (``ImageCache.open``);
    cache files it deletes are printed.
    """
    if not checkpoints:
        raise ValueError("give at least one --checkpoint or --run")
    torch.set_num_threads(threads)
    target = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) or device == "cuda" else "cpu")
    info = Path(info) if info else (store.root / "eval" / "info.csv" if store else None)
    if info is None or not info.is_file():
        raise FileNotFoundError(f"no info.csv at {info}; pass --info PATH")
    table = pd.read_csv(info, dtype=str, keep_default_na=False)
    if "ImageID" not in table.columns:
        raise ValueError(f"{info}: no ImageID column (columns: {', '.join(table.columns)})")
    root = info.parent
    relative = [f"images/{name}" for name in table["ImageID"]]
    files = [resolve_inside(root, r) for r in relative]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} eval image(s) missing, e.g. {missing[0]}")
    known = {}
    if store is not None and not store.is_empty:  # ingest already hashed these files; reuse that
        eval_items = store.items("eval")
        known = {str(store.root / p): h for p, h in zip(eval_items["path"], eval_items["hash"])}
    hashes = [known.get(str(f)) or content_hash(f) for f in files]
    cache_dir = Path(cache_dir) if cache_dir else (store.files_dir / "cache" if store else Path(out).parent / ".cache")

    schema: Schema | None = None
    total: np.ndarray | None = None
    names = None
    used: list[dict[str, Any]] = []
    for path in checkpoints:
        model, meta = load_model(path, target)
        this = Schema.from_dict(meta["schema"])
        if schema is None:
            schema, names = this, this.class_names()
        elif this.class_names() != names:
            raise ValueError(f"{path}: predicts other classes than {used[0]['checkpoint']}; cannot ensemble")
        cache = ImageCache.open(root, relative, hashes, tuple(meta["image_size"]), cache_dir, threads=threads,
                                budget_mb=cache_mb)
        for gone in cache.evicted:
            print(f"image cache budget ({budget_mb(cache_mb):.0f} MB): deleted {gone.describe()}")
        probs, _ = predict_probs(model, cache, np.arange(len(cache)), meta["mean"], meta["std"], target, batch_size,
                                 tta=tta)
        joint = joint_probs(this, probs)
        total = joint if total is None else total + joint
        used.append({"checkpoint": str(Path(path).resolve()), "model": meta["model"], "epoch": meta.get("epoch"),
                     "metric": meta.get("metric"), "snapshot_hash": meta.get("snapshot_hash")})
    assert total is not None and schema is not None  # at least one checkpoint (checked above)
    mean_probs = total / len(checkpoints)
    submission = table.copy()
    submission["ans"] = mean_probs.argmax(1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_safe(submission).to_csv(out, index=False)
    _write_probs(probs_file(out), table["ImageID"], schema, mean_probs)
    if store is not None:
        config = {"checkpoints": used, "tta": tta, "info": str(info.resolve()), "out": str(out.resolve())}
        if run_id is None:
            run_id = store.create_run("predict", config, status="done")
        store.update_run(run_id, config=config, status="done", finished_at=pd.Timestamp.now(tz="UTC").isoformat())
    return submission


def _write_probs(path: Path, image_ids: pd.Series, schema: Schema, joint: np.ndarray) -> None:
    """ImageID, then ``<attribute>=<class>`` marginals, then ``p<k>`` for each combined class k."""
    sizes = [len(schema.target_classes(n)) for n in schema.class_attributes]
    grid = joint.reshape(len(joint), *sizes)
    columns: dict[str, Any] = {"ImageID": image_ids.to_numpy()}
    for axis, name in enumerate(schema.class_attributes):
        others = tuple(a + 1 for a in range(len(sizes)) if a != axis)
        marginal = grid.sum(axis=others)
        for k, cls in enumerate(schema.target_classes(name)):
            columns[f"{name}={cls}"] = marginal[:, k]
    for k in range(joint.shape[1]):
        columns[f"p{k}"] = joint[:, k]
    with replacing(path, fsync=False) as tmp:
        csv_safe(pd.DataFrame(columns)).to_csv(tmp, index=False, float_format="%.6f")


def checkpoints_of_runs(store: LabelStore, run_ids: Sequence[int]) -> list[str]:
    """The best checkpoint of each finished (or stopped) training run."""
    paths = []
    for run_id in run_ids:
        row = store.run(run_id)
        best = row.get("best_checkpoint")
        if not best or not Path(best).exists():
            raise StoreError(f"run #{run_id} has no best checkpoint on disk (status {row['status']})")
        paths.append(best)
    return paths
