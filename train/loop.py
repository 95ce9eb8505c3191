"""The training loop, readable top to bottom: config, then ``fit`` = snapshot -> data -> ``train_model``,
validating and saving after every epoch; ``train_model`` = model -> AdamW + warm-up/cosine schedule -> epochs.

    from train import fit
    result = fit(db="labels.db", epochs=5)          # -> {"run_id", "status", "best_checkpoint", ...}

``train_model`` is the one place a model is trained: ``fit`` and every fold of ``train/score.py`` call it.

Under ``torchrun --nproc_per_node N`` the same function runs on every rank: DDP on gloo (CPU) or
nccl (GPU); rank 0 takes the snapshot, writes the journal rows and the checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.schema import Schema
from core.store import LabelStore, now, read_snapshot
from train import checkpoint as ckpt
from train import distributed as dist
from train.cache import budget_mb as cache_budget_mb
from train.checkpoint import checkpoint_meta, retention
from train.config import TrainConfig  # re-exported: `from train.loop import TrainConfig` keeps working
from train.data import (
    CachedImages,
    EpochSampler,
    ImageCache,
    augment,
    balanced_weights,
    keep_batch,
    normalise,
    person_folds,
)
from train.logs import Progress, SignalFlag, StopRequested, close_logger, run_logger
from train.metrics import classification_metrics, predicted_codes
from train.model import Head, HeadsModel, fetch_pretrained, heads_for, load_pretrained, make_loss
from train.run_folder import VAL_PREDICTIONS, check_options, finish_run, open_run, save_val_predictions, summary
from train.writers import Writers, open_writers


def fit(config: TrainConfig | None = None, *, db: str | None = None, run_id: int | None = None,
        resume: int | None = None, echo: bool = True, **overrides: Any) -> dict[str, Any]:
    """Train one run; returns {run_id, status, best_checkpoint, run_dir, metrics}.

    ``run_id`` adopts a queued journal row (a job launcher's); ``resume`` continues run ``resume``
    from its ``last`` checkpoint with optimizer, scheduler and RNG state. Raises on failure (the run
    row says ``failed`` with the error tail); SIGTERM/SIGINT end it as ``cancelled``.
    """
    config = TrainConfig.from_dict({**asdict(config or TrainConfig()), **overrides})
    resumed = None
    if resume is not None:
        with LabelStore(db) as store:
            resumed = store.run(resume)["config"] or {}
    check_options(config, resumed)  # writers, model, weights: refused before anything is written
    world = dist.setup(config.device)  # a resumed run may move to another device; all else comes from its config
    store = LabelStore(db)
    plan = open_run(store, config, run_id=run_id, resume=resume, world_size=world.size) if world.is_main else None
    plan = dist.broadcast_json(world, plan)  # run id, folder and full config, decided once by rank 0
    config, run_id, run_dir = TrainConfig.from_dict(plan["config"]), plan["run_id"], Path(plan["run_dir"])
    # Threads change CPU results in the last bits, so they follow the run's config (also on resume).
    torch.set_num_threads(max(1, config.threads // world.size) if world.device.type == "cpu" else config.threads)
    log = run_logger(run_dir / "train.log" if world.is_main else None, echo=echo and world.is_main)
    result: dict[str, Any] = {"run_id": run_id, "status": "running", "best_checkpoint": None, "run_dir": str(run_dir),
                              "metrics": {}}
    board = Writers([])
    try:
        try:
            if world.is_main:  # only rank 0 writes TensorBoard/MLflow records
                board = open_writers(plan["config"], run_dir, log=log, tags={
                    "run_id": str(run_id), "kind": "train", "db": str(store.path.resolve())})
            with SignalFlag() as stop:
                result.update(_train(config, store, world, run_id, run_dir, plan.get("resume_from"), log, stop,
                                     board))
            result["status"] = "done"
        except StopRequested:
            result["status"] = "cancelled"
        if world.is_main:
            finish_run(store, run_id, result["status"])
            log.info(f"run {run_id} {result['status']}: best {result['best_checkpoint']}")
    except BaseException:
        if world.is_main:
            log.error(traceback.format_exc())
            finish_run(store, run_id, "failed", error_tail=traceback.format_exc()[-4000:])
        raise
    finally:
        board.close(result["status"] if result["status"] in ("done", "cancelled") else "failed")
        dist.teardown(world)
        close_logger(log)
        store.close()
    return result


def _train(config: TrainConfig, store: LabelStore, world: dist.World, run_id: int, run_dir: Path,
           resume_from: str | None, log: logging.Logger, stop: SignalFlag, board: Writers) -> dict[str, Any]:
    # ---- data: the snapshot's labelled images, one person-grouped fold held out --------------------------
    assert config.snapshot is not None  # open_run froze the labels into a snapshot
    labels, snap = read_snapshot(config.snapshot)
    schema = Schema.from_dict(snap["schema"])
    train_schema = _moved_old_age(schema, config.age_threshold) if config.age_threshold else schema
    if config.answer_key:  # an experiment's split: the key's people validate against the key's labels
        train_items, val_items, key_labels = answer_key_split(labels, config.answer_key)
    else:
        folds = person_folds(labels, config.val_folds, config.seed)
        train_items, val_items = np.flatnonzero(folds != config.val_fold), np.flatnonzero(folds == config.val_fold)
    heads = heads_for(train_schema, config.heads)
    head_names = [h.name for h in heads]
    train_codes = train_schema.codes(labels)
    if config.heads == "single":
        train_codes["class"] = train_schema.encode_class(train_codes)
    targets = np.stack([train_codes[name] for name in head_names], 1)  # (n, n_heads) int64
    cache_dir = Path(config.cache_dir) if config.cache_dir else store.files_dir / "cache"
    for turn in (0, 1):  # rank 0 decodes the cache, the others open it after
        if world.is_main == (turn == 0):
            cache = ImageCache.open(snap["root"], labels["path"].tolist(), labels["hash"].tolist(), config.img_size,
                                    cache_dir, threads=config.threads, progress=world.is_main,
                                    budget_mb=config.cache_mb)
        dist.barrier(world)
    log_evictions(log, cache, config.cache_mb)
    log.info(f"run {run_id}: {len(train_items)} training and {len(val_items)} validation images "
             f"({labels['person'].nunique()} people), snapshot {snap['hash'][:12]}, {config.model} "
             f"{config.img_size[0]}x{config.img_size[1]}, {world.size} process(es) on {world.device}")
    train_set = CachedImages(cache, train_items, targets[train_items])
    progress = Progress(store if world.is_main else None, run_id, config.epochs)
    loss_fn = make_loss(config.loss, config.label_smoothing, config.focal_gamma)
    # the schema's own bins, whatever training used; with an answer key its labels, not the snapshot's
    evaluate_truth = schema.codes(key_labels if config.answer_key else labels.iloc[val_items])

    # ---- train; after every epoch rank 0 validates, journals and saves checkpoints ---------------------------
    for done in train_model(config, heads, train_set, seed=config.seed, world=world,
                            balance_key=class_key(train_codes, train_schema)[train_items],
                            resume_from=resume_from, progress=progress, stop=stop, log=log):
        if not world.is_main:  # the others wait for the next epoch
            dist.barrier(world)
            continue
        model, epoch = done.model, done.epoch
        progress.update(epoch - 1, done.steps, done.steps, done.images, phase="validate", force=True)
        probs, val_loss = predict_probs(model, cache, val_items, *model.mean_std, world.device, config.batch_size * 2,
                                        targets=targets[val_items], head_names=head_names, loss_fn=loss_fn)
        predicted = predicted_codes(schema, head_names, probs)
        metrics = {"epoch": epoch, "train_loss": done.train_loss, "val_loss": val_loss,
                   "lr": done.optimizer.param_groups[0]["lr"], "seconds": round(done.seconds, 2),
                   "images_per_s": round(done.images / max(done.seconds, 1e-9), 1),
                   **classification_metrics(schema, evaluate_truth, predicted)}
        store.record_epoch(run_id, epoch, metrics)
        board.scalars(epoch, metrics)
        meta = checkpoint_meta(config, model, heads, schema, train_schema, snap, run_id, epoch, metrics)
        retention(config, store, model, done.optimizer, done.scheduler, meta, run_dir, log)
        run_summary = summary(store, run_id)
        if run_summary.get("best_epoch") == epoch:  # the best epoch's validation predictions, for the dashboard
            save_val_predictions(run_dir / VAL_PREDICTIONS, labels.iloc[val_items], schema, evaluate_truth, predicted)
        store.update_run(run_id, metrics=run_summary, best_checkpoint=str(run_dir / "best.safetensors"))
        log.info(_epoch_line(metrics, config.epochs, head_names))
        dist.barrier(world)
    return {"best_checkpoint": str(run_dir / "best.safetensors"), "metrics": summary(store, run_id)
            if world.is_main else {}}


def answer_key_split(labels: Any, key_file: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """(training rows, validation rows, the key's labels of the validation rows) of a snapshot's ``labels``
    under an answer key: every image of the key's people is held out of training; those the key lists validate."""
    from train.answer_key import read_answer_key

    key, _ = read_answer_key(key_file)
    held = labels["person"].astype(str).isin(set(key["person"].astype(str))).to_numpy() | \
        labels["path"].isin(set(key["path"])).to_numpy()
    rows = {path: i for i, path in enumerate(key["path"])}
    val_items = np.flatnonzero(held & labels["path"].isin(rows).to_numpy())
    if len(val_items) == 0:
        raise ValueError(f"{key_file}: none of the answer key's images is in this snapshot")
    key_labels = key.iloc[[rows[p] for p in labels["path"].iloc[val_items]]].reset_index(drop=True)
    return np.flatnonzero(~held), val_items, key_labels


@dataclass
class EpochDone:
    """What ``train_model`` yields after each epoch, on every rank."""

    epoch: int  # 1-based
    model: HeadsModel  # the bare model (not its DDP wrapper), in train mode
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loss: float  # mean over the epoch's images of all ranks
    images: int  # images trained on in this epoch, all ranks
    steps: int  # batches per epoch on each rank
    seconds: float


def train_model(config: TrainConfig, heads: list[Head], train_set: CachedImages, *, seed: int,
                world: dist.World | None = None, balance_key: np.ndarray | None = None,
                resume_from: str | None = None, progress: Any = None, stop: SignalFlag | None = None,
                log: logging.Logger | None = None) -> Iterator[EpochDone]:
    """The training loop: a fresh model on ``train_set`` for ``config.epochs`` epochs; yields after each one.

    ``fit`` and every score fold train through this. ``seed`` fixes the initial weights, the batch
    order and the augmentation; ``world`` is this process's place (default: one CPU process);
    ``balance_key`` (n,) is each row's class, used when ``config.balanced``; ``resume_from`` a ``last``
    checkpoint to continue (weights, optimizer, schedule, RNG). ``progress.update(epoch, step, steps,
    images)`` hears of every step; a raised ``stop`` flag (SIGTERM/SIGINT) ends the run with
    ``StopRequested`` at the next step, on all ranks together.
    """
    world = world or dist.World(0, 1, 0, torch.device("cpu"))
    log = log or logging.getLogger(__name__)
    # ---- model -------------------------------------------------------------------------------------------
    torch.manual_seed(seed)
    np.random.seed(seed)
    weights = fetch_pretrained(config.model) if config.pretrained and resume_from is None else None  # cached
    model = HeadsModel(config.model, heads, drop_rate=config.drop_rate, pretrained=weights,
                       allow_hub=config.pretrained)  # a hub name only with an explicit pretrained request
    if config.pretrained_file:
        for note in load_pretrained(model, config.pretrained_file):
            log.info(note)
    mean, std = model.mean_std
    model = model.to(world.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    # ---- batches, optimizer, schedule ---------------------------------------------------------------------
    sample_weights = balanced_weights(balance_key) if config.balanced and balance_key is not None else None
    sampler = EpochSampler(len(train_set), world.rank, world.size, seed, weights=sample_weights)
    per_rank = max(1, config.batch_size // world.size)
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, collate_fn=keep_batch,  # type: ignore[arg-type]
                        drop_last=True,
                        pin_memory=world.device.type == "cuda")
    steps = len(loader)
    if steps == 0:
        raise ValueError(f"{len(train_set)} training images make no batch of {per_rank} per process; "
                         "lower --batch-size")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup, total = config.warmup_epochs * steps, config.epochs * steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total))
    start_epoch = 0
    if resume_from:  # continue where `last` left off: weights, optimizer, schedule, RNG
        model.load_state_dict(ckpt.read_tensors(resume_from, "model."))
        resume_meta = ckpt.read_meta(resume_from)
        ckpt.restore_state(resume_from, optimizer, scheduler, resume_meta["resume"])
        start_epoch = int(resume_meta["epoch"])
        log.info(f"resumed from {resume_from} after epoch {start_epoch}")
    net = DistributedDataParallel(model, device_ids=[world.local_rank] if world.device.type == "cuda" else None) \
        if world.distributed else model
    loss_fn = make_loss(config.loss, config.label_smoothing, config.focal_gamma)
    head_names = [h.name for h in heads]

    # ---- epochs ----------------------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs):
        started, seen, loss_sum = time.monotonic(), 0, torch.zeros((), device=world.device)
        net.train()
        sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + world.rank)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not world.is_main or None,
                   leave=False, mininterval=1.0)
        for step, (images, batch_targets, _) in enumerate(bar):
            if dist.any_rank(world, stop is not None and stop.raised is not None):
                raise StopRequested()
            images = images.to(world.device, non_blocking=True)
            batch_targets = batch_targets.to(world.device, non_blocking=True)
            x = augment(images, generator, mean, std) if config.augment else \
                normalise(images, mean, std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=world.device.type == "cuda"):
                outputs = net(x)
            loss = sum(loss_fn(outputs[name], batch_targets[:, i]) for i, name in enumerate(head_names))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(images)
            seen += len(images)
            if progress is not None:
                progress.update(epoch, step + 1, steps, seen * world.size)
        seconds = time.monotonic() - started
        totals = dist.all_sum(world, torch.stack([loss_sum.float(), torch.tensor(float(seen), device=world.device)]))
        yield EpochDone(epoch + 1, model, optimizer, scheduler, float(totals[0] / totals[1]), int(totals[1]), steps,
                        seconds)


def lr_factor(step: int, warmup: float, total: int) -> float:
    """The learning rate over the peak at batch ``step``: linear warm-up from 10 % over ``warmup`` steps,
    then cosine decay to 1 % at step ``total``."""
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    progress = (step - warmup) / max(1.0, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def predict_probs(model: torch.nn.Module, cache: ImageCache, items: np.ndarray, mean, std, device: torch.device,
                  batch_size: int = 128, *, tta: str = "none", targets: np.ndarray | None = None,
                  head_names: list[str] | None = None, loss_fn=None) -> tuple[dict[str, np.ndarray], float | None]:
    """Softmax probabilities {head: (n, k) float32} for cache items, in ``items`` order, plus the mean
    loss when ``targets`` (n, n_heads) are given. ``tta="flip"`` averages with the mirrored image."""
    model.eval()
    out: dict[str, list[np.ndarray]] = {}
    loss_sum, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        x = normalise(cache.batch(chunk).to(device), mean, std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
            if tta == "flip":
                flipped = model(x.flip(3))
        for name, value in logits.items():
            p = value.float().softmax(1)
            if tta == "flip":
                p = (p + flipped[name].float().softmax(1)) / 2
            out.setdefault(name, []).append(p.cpu().numpy())
        if targets is not None and loss_fn is not None:
            t = torch.as_tensor(targets[start:start + batch_size], device=device)
            loss = sum(loss_fn(logits[n].float(), t[:, i]) for i, n in enumerate(head_names or list(logits)))
            loss_sum, count = loss_sum + float(loss) * len(chunk), count + len(chunk)
    model.train()
    return {k: np.concatenate(v) for k, v in out.items()}, (loss_sum / count if count else None)


def log_evictions(log: logging.Logger, cache: ImageCache, budget: float | None) -> None:
    """Say in the run's log which cache files writing ``cache`` made the cache budget delete."""
    for gone in cache.evicted:
        log.info(f"image cache budget ({cache_budget_mb(budget):.0f} MB): deleted {gone.describe()}")


def _moved_old_age(schema: Schema, threshold: int) -> Schema:
    """The schema with the last ``age_group`` edge at ``threshold`` (training only; stored ages never change)."""
    edges = next((b.edges for b in schema.binned if b.name == "age_group"), None)
    if edges is None:
        raise ValueError(f"--age-threshold needs an age_group attribute; schema {schema.name} has none")
    return schema.with_bins("age_group", (*edges[:-1], int(threshold)))


def class_key(codes: dict[str, np.ndarray], schema: Schema) -> np.ndarray:
    """Each row's class for balanced sampling, shape (n,): its combined class (the first target's if none)."""
    return schema.encode_class({n: codes[n] for n in schema.class_attributes}) if schema.class_attributes \
        else codes[schema.targets[0]]


def _epoch_line(metrics: dict[str, Any], epochs: int, head_names: list[str]) -> str:
    accs = " ".join(f"{k[4:]} {v:.3f}" for k, v in metrics.items() if k.startswith("acc_") and k != "acc_class")
    return (f"epoch {metrics['epoch']}/{epochs}  train_loss {metrics['train_loss']:.4f}  val_loss "
            f"{metrics['val_loss'] or float('nan'):.4f}  acc {accs}  macro_f1 {metrics.get('macro_f1', float('nan')):.4f}"
            f"  ({metrics['seconds']:.1f} s, {metrics['images_per_s']:.0f} img/s)  {now()[11:19]}")
