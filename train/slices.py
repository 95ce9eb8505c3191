"""Rescoring without the pattern: a metadata slice's images judged by a model that never trained on the slice.

    python -m train slices --run 3 [--db labels.db] [--json]      # find learned slices, rescore them, re-scan

A model trained on labels that follow one annotator's (or one site's) habit learns the habit, and its out-of-fold
opinion then agrees with the slice that holds it: the slice looks clean and everyone else looks wrong
(``core.patterns.learned_slices``). Folds grouped by the slice undo that: for each such slice one fresh model
trains on every image *outside* it (the score run's own settings: model, size, epochs, seed) and predicts the
slice's images; ``core.patterns.find_patterns(..., rescored=...)`` then tests the slice with those
probabilities. One training per slice; the slices come from the data, not from a list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import pattern_actions
from core import patterns as P
from core.store import LabelStore, StoreError
from train import distributed as dist
from train.config import TrainConfig
from train.data import CachedImages, ImageCache
from train.loop import class_key, predict_probs, train_model
from train.model import heads_for
from train.oof import marginals


def slice_probs(store: LabelStore, run_id: int, slices: list[tuple[str, str]],
                log: Any = None, inputs: tuple[Any, Any, Any] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{"column=value": {target: (n, k)}}``: for each slice, probabilities of its rows (in
    ``pattern_actions.load_inputs`` order; NaN outside the slice) from a model trained on every other row.
    ``inputs``: that ``load_inputs`` result when the caller already read it (``rescan``), not read again."""
    run = store.run(run_id)
    if run is None or run["kind"] != "score" or run["status"] != "done":
        raise StoreError(f"run {run_id} is not a finished score run")
    config = TrainConfig.from_dict({k: v for k, v in (run["config"] or {}).items() if k in TrainConfig.__dataclass_fields__})
    torch.set_num_threads(max(1, config.threads))
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    labels, _, meta = inputs if inputs is not None else pattern_actions.load_inputs(store, run_id)
    schema = store.schema
    hashes = labels[["item_id"]].merge(store.items()[["item_id", "hash"]], on="item_id", how="left")["hash"]
    heads = heads_for(schema, config.heads)
    codes = schema.codes(labels)
    if config.heads == "single":
        codes["class"] = schema.encode_class(codes)
    targets = np.stack([codes[h.name] for h in heads], 1)
    balance = class_key(codes, schema)
    cache = ImageCache.open(store.root, labels["path"].tolist(), hashes.tolist(), config.img_size,
                            Path(config.cache_dir) if config.cache_dir else store.files_dir / "cache",
                            threads=config.threads, progress=False, budget_mb=config.cache_mb)
    out: dict[str, dict[str, np.ndarray]] = {}
    for column, value in slices:
        inside = (meta[column].astype("string").fillna("") == value).to_numpy() if column in meta else None
        if inside is None or inside.sum() == 0 or inside.all():
            continue
        train_items, held = np.flatnonzero(~inside), np.flatnonzero(inside)
        done = None
        for epoch in train_model(config, heads, CachedImages(cache, train_items, targets[train_items]),
                                 seed=config.seed, world=dist.World(0, 1, 0, device),
                                 balance_key=balance[train_items]):
            done = epoch  # the last epoch's model predicts the slice
        assert done is not None
        probs, _ = predict_probs(done.model, cache, held, *done.model.mean_std, device, config.batch_size * 4,
                                 tta="flip")
        if config.heads == "single":
            probs = marginals(schema, probs["class"])
        full = {}
        for target, values in probs.items():
            if target not in schema.targets:
                continue
            array = np.full((len(labels), values.shape[1]), np.nan)
            array[held] = values
            full[target] = array
        out[f"{column}={value}"] = full
        if log:
            log(f"slice {column}={value}: {len(held)} images rescored by a model trained on the other {len(train_items)}")
    return out


def rescan(store: LabelStore, run_id: int, log: Any = None, **options: Any) -> tuple[list[dict[str, Any]], list[P.Pattern]]:
    """Learned slices of a score run, rescored without themselves, and the run's patterns with those
    probabilities: (learned slices, patterns)."""
    labels, probs, meta = pattern_actions.load_inputs(store, run_id)
    learned = P.learned_slices(labels, probs, store.schema, meta) if len(meta.columns) else []
    wanted = list(dict.fromkeys((r["column"], r["value"]) for r in learned))
    rescored = slice_probs(store, run_id, wanted, log=log, inputs=(labels, probs, meta)) if wanted else {}
    return learned, P.find_patterns(labels, probs, store.schema, meta=meta, rescored=rescored, **options)


def main_slices(args: Any) -> int:
    with LabelStore(args.db) as store:
        run_id = args.run if args.run is not None else store.current_score_run()
        if run_id is None:
            raise StoreError("no score run yet: run `python -m train score` first")
        learned, found = rescan(store, int(run_id), log=None if args.json else print)
    if args.json:
        print(json.dumps({"learned_slices": learned, "patterns": [p.to_dict() for p in found]}, indent=1,
                         ensure_ascii=False, default=str))
        return 0
    print(f"score run {run_id}: {len(learned)} slice(s) the model may have learned; "
          f"{len(found)} pattern(s) after rescoring them without themselves")
    for p in found:
        print(f"[{p.kind}, {p.attribute}, q={p.q_value:.2g}, {len(p.units)} suspected] {p.summary}")
    return 0
