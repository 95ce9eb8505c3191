"""Training data: a uint8 image cache, augmentation on cached tensors, person-grouped folds, loaders.

* ``ImageCache.open(root, paths, hashes, size)`` decodes every image once with ``core.images.load_rgb``
  into a memory-mapped uint8 file (n, h, w, 3) named by the images' content hashes and the size, so
  every epoch, run, fold and DDP rank after the first reads pixels straight from the page cache.
* ``augment(images, generator)`` flips, applies a small affine warp and colour jitter to a uint8
  batch (b, 3, h, w) on whatever device it lives on (the GPU when there is one), then normalises.
* ``person_folds(labels, k, seed)`` is the one fold function: fit's validation split is fold
  ``val_fold`` of it, and k-fold scoring uses all k.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import warnings
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm

from core.files import replacing
from core.images import load_rgb, resolve_inside
from train import cache as cache_files

CACHE_FORMAT = 1  # bump when the decode or layout changes, so old cache files are not reused
# Lock handles of the caches this process holds open, by cache path. flock treats two handles of one process like
# two processes: rebuilding a cache this process still holds (shared) would wait on itself forever.
_HELD: dict[str, weakref.WeakSet] = {}


@dataclass
class ImageCache:
    """Decoded images of a list of items.

    ``array`` has shape (n_unique, h, w, 3), dtype uint8 (read-only memmap); ``rows`` has shape
    (n_items,) and gives each item's row (identical files share one row). While the object lives it
    holds a shared lock on the cache (``train.cache``), so no budget eviction deletes it; ``evicted``
    lists what writing it made the folder's budget delete (for the run's log).
    """

    array: np.ndarray
    rows: np.ndarray
    path: Path
    size: tuple[int, int]  # (w, h) in pixels
    evicted: list[cache_files.Evicted] = field(default_factory=list)
    created: bool = False  # decoded by this open (else reused)
    lock: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, root: str | os.PathLike[str], paths: Sequence[str], hashes: Sequence[str | None],
             size: tuple[int, int], cache_dir: str | os.PathLike[str], *, threads: int = 2,
             progress: bool = True, budget_mb: float | None = None) -> ImageCache:
        """Open the cache for these items at ``size`` (w, h), decoding it first if it does not exist.

        ``paths`` are relative to ``root`` and confined to it; ``hashes`` are content hashes (an
        item without one is keyed by its path). The file is written to a temp name and moved into
        place, under a file lock, so concurrent runs and DDP ranks decode each image set once; a file
        of the wrong size (truncated) is decoded again, never trusted. After writing a new cache, the
        folder is brought within ``budget_mb`` (default: ``$LABELS_CACHE_MB``, else 2048) by deleting
        the least recently used caches that no process holds.
        """
        width, height = int(size[0]), int(size[1])
        keys = [h if isinstance(h, str) and h else f"path:{p}" for p, h in zip(paths, hashes)]
        unique = sorted(set(keys))
        digest = hashlib.sha256(f"{CACHE_FORMAT}\n{width}x{height}\n".encode() + "\n".join(unique).encode())
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"images-{width}x{height}-{digest.hexdigest()[:20]}.u8"
        shape = (len(unique), height, width, 3)
        if not unique:  # nothing to decode (an empty eval list); a zero-byte file cannot be memory-mapped
            return cls(np.zeros(shape, dtype=np.uint8), np.zeros(0, dtype=np.int64), path, (width, height))
        budget = cache_files.budget_mb(budget_mb)
        created, handle = False, None
        while handle is None:
            # Shared first: a complete cache is read by any number of processes (and objects of one process)
            # at once; waits while another process decodes it (exclusive).
            handle = _locked(path, shared=True)
            if _complete(path, shape):
                break
            handle.close()  # missing, truncated or without its sidecar: decode it again, alone
            if any(not held.closed for held in _HELD.get(str(path), ())):
                raise RuntimeError(f"{path}: this image cache is damaged (wrong size or no sidecar) while this process "
                                   "still has it open; close the other ImageCache (or restart) and it is rebuilt")
            handle = _locked(path)
            try:
                if not _complete(path, shape):  # another process may have decoded it meanwhile
                    first_path: dict[str, str] = {}
                    for p, k in zip(paths, keys):
                        first_path.setdefault(k, p)
                    _decode_into(path, root, [first_path[k] for k in unique], (width, height), threads, progress,
                                 meta={"size": [width, height], "shape": shape, "keys": unique})
                    created = True
                fcntl.flock(handle, fcntl.LOCK_SH)  # others may read it now; an evictor cannot take it
            except BaseException:
                handle.close()
                raise
            if not _complete(path, shape):  # the switch to shared is not atomic: evicted in between, start over
                handle.close()
                handle = None
        cache_files.touch(path)  # last use, for least-recently-used eviction
        _HELD.setdefault(str(path), weakref.WeakSet()).add(handle)
        evicted = cache_files.evict(cache_dir, budget * 2**20, keep=[path]) if created else []
        array = np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
        row_of = {k: i for i, k in enumerate(unique)}
        return cls(array, np.array([row_of[k] for k in keys], dtype=np.int64), path, (width, height), evicted,
                   created, handle)

    def close(self) -> None:
        """Release the cache's lock (also released when the object is collected or the process ends)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def batch(self, items: np.ndarray | Sequence[int]) -> torch.Tensor:
        """uint8 tensor (b, 3, h, w) for item indices; its strides are channels_last already."""
        pixels = self.array[self.rows[np.asarray(items, dtype=np.int64)]]
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.rows)


def _locked(path: Path, *, shared: bool = False) -> IO[str]:
    """The cache file's lock, held (waits for it)."""
    handle = cache_files.lock(cache_files.lock_path(path), shared=shared)
    assert handle is not None  # only a lock(wait=False) comes back empty
    return handle


def _complete(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is a whole cache of ``shape``: the right byte count and a sidecar that agrees."""
    try:
        if path.stat().st_size != math.prod(shape):
            return False
        return tuple(json.loads(cache_files.sidecar(path).read_text())["shape"]) == tuple(shape)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _decode_into(path: Path, root: str | os.PathLike[str], relative_paths: list[str], size: tuple[int, int],
                 threads: int, progress: bool, meta: dict) -> None:
    width, height = size
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # A raw file (no .npy header): the shape is recorded in the sidecar json and implied by the key.
    array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(relative_paths), height, width, 3))

    def decode(index: int) -> None:
        source = resolve_inside(root, relative_paths[index])
        try:
            array[index] = load_rgb(source, (width, height))
        except Exception as error:  # name the file: a bad image must be fixable by the user
            raise RuntimeError(f"cannot decode {source}: {error}") from error

    try:
        # PIL releases the GIL while decoding, so threads give real parallelism here.
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            jobs = pool.map(decode, range(len(relative_paths)))
            for _ in tqdm(jobs, total=len(relative_paths), desc=f"caching images at {width}x{height}",
                          disable=None if progress else True, leave=False):  # None: only on a terminal
                pass
        array.flush()  # data on disk before the name appears: readers never see a partial cache
        with replacing(cache_files.sidecar(path), fsync=False) as meta_tmp:
            meta_tmp.write_text(json.dumps(meta))  # the sidecar first, the pixels last: the .u8 name means complete
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- augmentation (torch, any device) -----------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip
    degrees: float = 8.0  # rotation range, +- degrees
    scale: float = 0.08  # zoom range, +- fraction
    translate: float = 0.06  # shift range, +- fraction of width/height
    jitter: float = 0.2  # brightness/contrast/saturation range, +- fraction


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (b, 3, h, w) -> float32 (b, 3, h, w) with (x/255 - mean) / std per channel."""
    x = images.float().div_(255)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey weights; they sum to 1, which the colour algebra below uses


@functools.lru_cache(maxsize=8)
def _base_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel centres in [-1, 1] as (h*w, 3) rows (x, y, 1), affine_grid's align_corners=False convention."""
    x = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    y = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    return torch.stack([x.expand(h, w), y[:, None].expand(h, w), torch.ones(h, w)], 2).reshape(h * w, 3).to(device)


def augment(images: torch.Tensor, generator: torch.Generator, mean: Sequence[float], std: Sequence[float],
            config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Random flip, small affine warp and colour jitter on a uint8 batch (b, 3, h, w); returns normalised float32.

    Random numbers come from ``generator`` (CPU), so the result is the same on any device. For
    speed the flip is folded into the affine warp (one ``grid_sample``), and brightness, contrast,
    saturation, /255 and normalisation are folded into one 3x3 colour matrix + offset per image
    (one batched matmul); values are not clipped to [0, 1] after jitter.
    """
    b, _, h, w = images.shape
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=generator, dtype=torch.float64)

    flip = torch.where(torch.rand(b, generator=generator, dtype=torch.float64) < config.flip, -1.0, 1.0)
    angle = uniform(-config.degrees, config.degrees) * (math.pi / 180)
    zoom = uniform(1 - config.scale, 1 + config.scale)
    shift_x, shift_y = uniform(-config.translate, config.translate), uniform(-config.translate, config.translate)
    brightness, contrast, saturation = (uniform(1 - config.jitter, 1 + config.jitter) for _ in range(3))
    x = images.float()
    if config.degrees or config.scale or config.translate:
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # Output pixel -> source pixel in affine_grid's [-1, 1] coordinates: rotation in pixel space
        # (aspect-corrected), zoom, shift; a flip negates the source x, i.e. the first column.
        theta = torch.stack([torch.stack([cos * flip, -sin * h / w, 2 * shift_x], 1),
                             torch.stack([sin * w / h * flip, cos, 2 * shift_y], 1)], 1)
        # = F.affine_grid(theta, ...), written as one einsum: several times faster on CPU.
        grid = torch.einsum("pk,bjk->bpj", _base_grid(h, w, device), theta.float().to(device)).view(b, h, w, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    else:
        x = torch.where((flip < 0).to(device).view(b, 1, 1, 1), x.flip(3), x)
    # Brightness b, contrast c (around the mean grey m), saturation s (around each pixel's grey) compose to
    # x -> c*b*(s*I + (1-s)*1 luma^T) x + (1-c)*b*m; then /255 and (x - mean) / std, all one affine map.
    luma = torch.tensor(LUMA, dtype=torch.float64)
    grey_mean = (x.mean((2, 3)).double().cpu() @ luma) / 255  # (b,), of the warped image
    eye = torch.eye(3, dtype=torch.float64)
    colour = (contrast * brightness).view(b, 1, 1) * (saturation.view(b, 1, 1) * eye
                                                       + (1 - saturation).view(b, 1, 1) * luma.view(1, 1, 3))
    offset = ((1 - contrast) * brightness * grey_mean).view(b, 1).expand(b, 3)
    mean_t, std_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    matrix = (colour / 255) / std_t.view(1, 3, 1)
    bias = (offset - mean_t.view(1, 3)) / std_t.view(1, 3)
    out = torch.baddbmm(bias.float().to(device).unsqueeze(2), matrix.float().to(device), x.reshape(b, 3, h * w))
    return out.view(b, 3, h, w)


# ---- folds ---------------------------------------------------------------------------------------------
def person_folds(labels: pd.DataFrame, k: int = 5, seed: int = 0, *, stratify: str = "class",
                 group: str = "person") -> np.ndarray:
    """Fold number (0..k-1) of every row, shape (n,), int64.

    No person (``group``) is in two folds; folds are stratified by ``stratify`` (the combined class
    code by default) as well as grouping allows. Deterministic for a given ``seed`` and row order.
    """
    groups = labels[group].astype(object)
    if "path" in labels:  # an image without a person is its own group
        groups = groups.where(groups.notna(), labels["path"])
    groups = groups.astype(str).to_numpy()
    n_groups = len(set(groups))
    if n_groups < k:
        raise ValueError(f"{n_groups} people cannot fill {k} person-grouped folds; lower the number of folds")
    strata = labels[stratify].astype(str).to_numpy() if stratify in labels else np.zeros(len(labels), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = np.full(len(labels), -1, dtype=np.int64)
    with warnings.catch_warnings():  # rare classes (18 of them, few people) cannot fill k folds: expected
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), strata, groups)):
            folds[held_out] = fold
    return folds


# ---- datasets and loaders ------------------------------------------------------------------------------
class CachedImages(Dataset):
    """Batches of (uint8 images (b, 3, h, w), targets (b, n_targets) int64, item indices (b,)).

    Implements ``__getitems__`` so a DataLoader with ``collate_fn=keep_batch`` fetches a whole
    batch with one memmap gather, while any sampler (random, weighted, distributed) chooses the order.
    """

    def __init__(self, cache: ImageCache, items: np.ndarray, targets: np.ndarray):
        self.cache = cache
        self.items = np.asarray(items, dtype=np.int64)  # indices into the cache's item list
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64).reshape(len(self.items), -1))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        order = torch.as_tensor(indices, dtype=torch.int64)
        return self.cache.batch(self.items[order.numpy()]), self.targets[order], order


def keep_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """collate_fn for ``CachedImages``: the batch is already assembled."""
    return batch


class EpochSampler(DistributedSampler):
    """This rank's share of an epoch's order, fixed by (seed, epoch): a shuffle, or class-balanced draws.

    A ``DistributedSampler`` (call ``set_epoch`` each epoch) that also serves single-process runs, so
    a resumed run sees exactly the order an uninterrupted one would. With ``weights`` (n,) it draws
    n rows with replacement in proportion to them (class-balanced sampling).
    """

    def __init__(self, n: int, rank: int = 0, size: int = 1, seed: int = 0, weights: np.ndarray | None = None):
        super().__init__(range(n), num_replicas=size,  # type: ignore[arg-type]  # it only takes len()
                         rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def __iter__(self):
        if self.weights is None:
            return super().__iter__()
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator).tolist()
        return iter(order[self.rank:self.total_size:self.num_replicas])


def balanced_weights(classes: np.ndarray) -> np.ndarray:
    """Sampling weight per row, shape (n,), float64: 1 / frequency of its class (each class equally likely)."""
    _, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]
