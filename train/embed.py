"""Penultimate features ("embeddings") of a score run, saved beside its out-of-fold probabilities.

Each fold model embeds the images it did NOT train on (its held-out fold: out-of-fold features, like the
probabilities) and a fixed set of anchor images (``ANCHORS``, the same for every fold). Fold models are
trained separately, so their feature spaces differ by more than noise; ``join_embeddings`` maps every
fold's space onto fold 0's by an orthogonal Procrustes fit on the anchors (after centring and scaling
each to unit mean norm), which keeps distances within a fold and makes them comparable across folds.
Only the map is fitted on the anchors; every image's own vector still comes from a model that never saw
it. With ``--pretrained`` the untouched pretrained backbone embeds every image too (one space, no join).

Files (``core.embeddings`` reads them without torch): ``emb-fold-<i>.npy`` / ``emb-anchor-<i>.npy``
(float32, per fold, for a resumed run), then ``embeddings.npy`` (float16 (n, d), ``items.csv`` order),
``embeddings_pretrained.npy`` when asked for, and ``embeddings.json`` (what they are, and the item
fingerprint ``core.embeddings.fingerprint`` that tells a stale file from a current one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core.embeddings import KINDS, META, fingerprint
from core.files import replacing
from train.loop import normalise

if TYPE_CHECKING:
    from train.model import HeadsModel

ANCHORS = 1024  # images every fold model embeds, to align the fold spaces


def anchor_items(n: int, seed: int = 0) -> np.ndarray:
    """Row indices (sorted) of the anchor images: min(n, ANCHORS) rows drawn with ``seed``."""
    rng = np.random.default_rng([seed, 21])
    return np.sort(rng.choice(n, size=min(n, ANCHORS), replace=False))


@torch.no_grad()
def predict_features(model: HeadsModel, cache: Any, items: np.ndarray, mean, std, device: torch.device,
                     batch_size: int = 128) -> np.ndarray:
    """Penultimate (pre-logit, pooled) features of cache ``items`` (n, d) float32, in ``items`` order.

    ``model`` is a ``train.model.HeadsModel`` (its timm backbone ``net``)."""
    net: Any = model.net  # a timm model: forward_features / forward_head (pre_logits)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(items), batch_size):
        x = normalise(cache.batch(items[start:start + batch_size]).to(device), mean, std)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats = net.forward_head(net.forward_features(x), pre_logits=True)
        out.append(feats.float().flatten(1).cpu().numpy())
    if was_training:
        model.train()
    dim = int(getattr(net, "num_features", 0))
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def _standard(x: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    return (x - centre) / scale


def procrustes(source: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, float]:
    """The orthogonal map W (d, d) with the centring and scale of each side: a row x of ``source``'s space
    goes to ((x - c_s) / s_s) @ W, comparable with (y - c_r) / s_r of the reference."""
    c_s, c_r = source.mean(0), reference.mean(0)
    s_s = float(np.linalg.norm(source - c_s, axis=1).mean()) or 1.0
    s_r = float(np.linalg.norm(reference - c_r, axis=1).mean()) or 1.0
    u, _, vt = np.linalg.svd(_standard(source, c_s, s_s).T @ _standard(reference, c_r, s_r), full_matrices=False)
    return u @ vt, c_s, s_s, c_r, s_r


def join_embeddings(run_dir: Path, folds: np.ndarray) -> np.ndarray | None:
    """(n, d) float32 out-of-fold features in items.csv order, every fold mapped onto fold 0's space; None
    when a fold's feature file is missing (a run resumed from before embeddings existed)."""
    order = sorted(int(f) for f in np.unique(folds))
    paths = [(run_dir / f"emb-fold-{f}.npy", run_dir / f"emb-anchor-{f}.npy") for f in order]
    if not all(a.exists() and b.exists() for a, b in paths):
        return None
    ref_anchor = np.load(paths[0][1]).astype(np.float64)
    joined: np.ndarray | None = None
    for fold, (held_path, anchor_path) in zip(order, paths):
        held, anchor = np.load(held_path).astype(np.float64), np.load(anchor_path).astype(np.float64)
        rows = np.flatnonzero(folds == fold)
        if held.shape[0] != len(rows) or anchor.shape != ref_anchor.shape:
            return None
        w, c_s, s_s, _, _ = procrustes(anchor, ref_anchor)
        if joined is None:
            joined = np.zeros((len(folds), held.shape[1]), np.float32)
        joined[rows] = (_standard(held, c_s, s_s) @ w).astype(np.float32)
    return joined


def save_embeddings(run_dir: Path, items: Any, features: np.ndarray, *, kind: str, model: str,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``embeddings[_pretrained].npy`` (float16) and update ``embeddings.json``; returns the array's path."""
    name = KINDS[kind]
    array = np.nan_to_num(features.astype(np.float32)).astype(np.float16)
    with replacing(run_dir / name) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    meta_path = run_dir / META
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta[kind] = {"file": name, "model": model, "n": int(array.shape[0]), "dim": int(array.shape[1]),
                  "dtype": "float16", "items": fingerprint(items["item_id"], items["path"]), **(extra or {})}
    with replacing(meta_path) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1))
    return run_dir / name


def save_fold(run_dir: Path, fold: int, model: HeadsModel, cache: Any, held_out: np.ndarray, n: int, seed: int,
              device: torch.device, batch_size: int) -> None:
    """A fold model's features of its held-out images and of the anchors (``emb-fold-<i>.npy``,
    ``emb-anchor-<i>.npy``), written atomically before the fold's probabilities."""
    mean, std = model.mean_std
    for name, rows in ((f"emb-fold-{fold}.npy", held_out), (f"emb-anchor-{fold}.npy", anchor_items(n, seed))):
        features = predict_features(model, cache, np.asarray(rows), mean, std, device, batch_size)
        with replacing(run_dir / name) as tmp, open(tmp, "wb") as handle:
            np.save(handle, features.astype(np.float32))


def finish(run_dir: Path, folds: np.ndarray, labels: Any, config: Any, heads: Any, cache: Any, device: torch.device,
           log: Any) -> None:
    """Join the folds' features into ``embeddings.npy``; with ``config.pretrained`` also embed every image with
    the untouched pretrained backbone (``embeddings_pretrained.npy``). A run whose fold features are missing
    (resumed from before this existed) gets none, with a line in the log."""
    joined = join_embeddings(run_dir, folds)
    if joined is None:
        log.info("embeddings: a fold's feature file is missing (a run resumed from an older version); none saved")
    else:
        save_embeddings(run_dir, labels, joined, kind="oof", model=config.model,
                        extra={"aligned": f"orthogonal Procrustes onto fold 0 on {len(anchor_items(len(folds), config.seed))} "
                                          "anchor images"})
        log.info(f"embeddings: {joined.shape[0]} x {joined.shape[1]} out-of-fold features saved (float16)")
    if config.pretrained:
        from train.model import HeadsModel, fetch_pretrained

        model = HeadsModel(config.model, heads, pretrained=fetch_pretrained(config.model), allow_hub=True).to(device)
        model = model.to(memory_format=torch.channels_last)
        features = predict_features(model, cache, np.arange(len(folds)), *model.mean_std, device,
                                    config.batch_size * 4)
        save_embeddings(run_dir, labels, features, kind="pretrained", model=config.model)
        log.info(f"embeddings: {features.shape[0]} x {features.shape[1]} pretrained backbone features saved")
