"""Data checks beside label checks: exact and near duplicates, very dark and blurry images.

``run_data_checks(store)`` decodes every item once at a small size (``core.images.load_rgb``),
measures it (``image_facts``), finds the issues (``find_data_issues``, pure pandas/numpy) and stores
them with ``store.save_data_issues``. Kinds and their ``score`` (higher = worse):

* ``duplicate``       same content hash as another item; score = number of copies.
* ``near_duplicate``  a perceptual hash (``phash``, 256 bits) within ``max_distance`` bits of an image
  of a *different* person (images of one person are alike by design); score = 1 - bits differing / 256.
* ``dark``            mean luminance (BT.601, 0-255) below ``dark_below`` *and* an outlier of the
  dataset's own luminance (robust z-score below ``blur_z``, with 10 or more images): a dataset of
  white digits on black is dark by nature, and none of its images is flagged for that;
  score = 1 - luminance / dark_below.
* ``blurry``          relative sharpness (variance of the Laplacian over the variance of the grey
  levels: edge energy per unit of contrast, so thin strokes and little ink do not look blurry) far
  below the dataset's own: robust z-score of its log below ``blur_z`` (median and MAD of the
  dataset); score = -z. Images smaller than the measuring size are measured at their own size,
  never enlarged (an enlarged image is smooth by construction).
* ``unreadable``      the file cannot be decoded any more (it was fine at ingest); score = 1.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from core.images import load_rgb, resolve_inside

if TYPE_CHECKING:
    from core.store import LabelStore

KINDS = ("duplicate", "near_duplicate", "dark", "blurry", "unreadable")
COLUMNS = ["item_id", "kind", "detail", "score"]
FLAT_STD = 4.0  # grey-level std below this: a flat image, whose hash is noise and whose blur means nothing


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (h, w, 3) uint8 image: float64 (h, w) in [0, 255]."""
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (n, n): ``D @ x`` is the DCT of a length-n signal."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


DCT32 = _dct_matrix(32)
HASH_BITS = 256


def phash(gray: np.ndarray) -> str:
    """256-bit perceptual hash of a grey image (h, w), as 64 hex digits.

    Shrink to 32×32, take the 16×16 lowest-frequency DCT coefficients, bit = coefficient above their
    median. Re-encoding, resizing and brightness changes move it by a few bits (at most 10 of 256 in
    a trial on the demo faces), while 99 % of those faces had no other person's image within 31 bits.
    The classic 64-bit hashes (8×8 dHash/pHash) put many *different* similar-looking faces within
    2-3 bits of each other, hence 256 bits.
    """
    small = np.asarray(Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BOX),
                       dtype=np.float64)
    low = (DCT32 @ small @ DCT32.T)[:16, :16].ravel()
    return np.packbits(low > np.median(low)).tobytes().hex()


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey image (h, w): low = few edges = blurry."""
    lap = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    return float(lap.var())


def image_facts(rgb: np.ndarray) -> dict[str, float | int | str]:
    """Measures of one decoded image (h, w, 3) uint8: ``luminance`` (mean, 0-255), ``contrast`` (std of
    luminance), ``sharpness`` (``laplacian_variance``) and ``phash`` (64 hex digits)."""
    gray = luminance(rgb)
    return {"luminance": float(gray.mean()), "contrast": float(gray.std()), "sharpness": laplacian_variance(gray),
            "phash": phash(gray)}


def hash_bits(hashes: Any) -> np.ndarray:
    """Hex hashes (n,) of equal length -> bits (n, 4 * digits) bool."""
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=np.uint8)
    return np.unpackbits(raw.reshape(len(hashes), -1), axis=1).astype(bool)


def near_duplicate_pairs(bits: np.ndarray, max_distance: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of bit vectors (n, b) bool within ``max_distance`` differing bits, without comparing all n² pairs.

    Multi-index hashing: the b bits are cut into ``max_distance + 1`` chunks; two vectors within the
    distance agree exactly on at least one chunk (pigeonhole), so only vectors sharing a chunk value
    are compared. Returns (pairs (m, 2) int64 with i < j, distances (m,) int64), sorted by pair.
    """
    bits = np.asarray(bits, dtype=bool)
    n, width = bits.shape
    empty = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    if n < 2:
        return empty
    edges = np.linspace(0, width, max_distance + 2).round().astype(int)
    found = []
    for low, high in zip(edges[:-1], edges[1:]):
        if high <= low:
            continue
        chunk = bits[:, low:high].astype(np.uint64) @ (np.uint64(1) << np.arange(high - low, dtype=np.uint64))
        order = np.argsort(chunk, kind="stable")
        starts = np.flatnonzero(np.r_[True, chunk[order][1:] != chunk[order][:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = np.sort(order[start:start + size])
            i, j = np.triu_indices(size, k=1)
            found.append(np.stack([members[i], members[j]], axis=1))
    if not found:
        return empty
    pairs = np.unique(np.concatenate(found), axis=0).astype(np.int64)
    packed = np.packbits(bits, axis=1)
    distances = np.bitwise_count(packed[pairs[:, 0]] ^ packed[pairs[:, 1]]).sum(axis=1).astype(np.int64)
    keep = distances <= max_distance
    return pairs[keep], distances[keep]


def find_data_issues(items: pd.DataFrame, *, max_distance: int = 16, dark_below: float = 30.0,
                     blur_z: float = -3.5) -> pd.DataFrame:
    """Issues from measured items (pure): columns ``item_id, kind, detail, score`` (see the module docstring).

    ``items``: one row per item with ``item_id``, ``path``, ``person`` (None for eval images: each
    counts as its own person), ``hash`` (content hash or None), and from ``image_facts``
    ``luminance``, ``contrast``, ``sharpness``, ``phash`` (NaN/None where undecodable), plus ``error``
    (None, or why the file could not be decoded).
    """
    rows: list[dict[str, Any]] = []
    items = items.reset_index(drop=True)
    error = items["error"] if "error" in items else pd.Series([None] * len(items))
    for item_id, reason in zip(items["item_id"], error):
        if isinstance(reason, str):
            rows.append({"item_id": item_id, "kind": "unreadable", "detail": reason, "score": 1.0})
    copies = items[items["hash"].notna() & items["hash"].duplicated(keep=False)]
    for _, same in copies.groupby("hash", sort=False):
        for item_id, path in zip(same["item_id"], same["path"]):
            others = [p for p in same["path"] if p != path]
            rows.append({"item_id": item_id, "kind": "duplicate", "score": float(len(same)),
                         "detail": f"same file as {', '.join(others[:3])}{' …' if len(others) > 3 else ''}"})
    measured = items[items["luminance"].notna()] if "luminance" in items else items.iloc[:0]
    luma_z = _robust_z(measured["luminance"].to_numpy(np.float64)) if len(measured) >= 10 else \
        np.full(len(measured), -np.inf)
    dark = measured[(measured["luminance"] < dark_below) & (luma_z < blur_z)]
    for item_id, value in zip(dark["item_id"], dark["luminance"]):
        rows.append({"item_id": item_id, "kind": "dark", "score": 1.0 - value / dark_below,
                     "detail": f"mean luminance {value:.1f} of 255, dataset median {np.median(measured['luminance']):.1f}"})
    textured = measured[(measured["contrast"] >= FLAT_STD) & ~measured["item_id"].isin(dark["item_id"])]
    if len(textured) >= 10:  # a robust spread needs some images
        relative = textured["sharpness"].to_numpy(np.float64) / textured["contrast"].to_numpy(np.float64) ** 2
        log_sharpness = np.log1p(relative * 1000)
        median = float(np.median(log_sharpness))
        for item_id, value, score in zip(textured["item_id"], relative, _robust_z(log_sharpness)):
            if score < blur_z:
                rows.append({"item_id": item_id, "kind": "blurry", "score": float(-score),
                             "detail": f"relative sharpness {value:.3f}, dataset median {np.expm1(median) / 1000:.3f}"})
    rows += _near_duplicates(measured[measured["contrast"] >= FLAT_STD], max_distance)
    return pd.DataFrame(rows, columns=COLUMNS)


def _robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 * MAD) of a 1-d array: how far each value lies out of the dataset's own spread."""
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median))) or 1e-9
    return (values - median) / spread


def _near_duplicates(items: pd.DataFrame, max_distance: int) -> list[dict[str, Any]]:
    """One row per image whose dHash is close to an image of another person (closest matches in ``detail``)."""
    items = items.reset_index(drop=True)
    pairs, distances = near_duplicate_pairs(hash_bits(items["phash"].tolist()), max_distance)
    person = items["person"].astype(object).where(items["person"].notna(), "\x00" + items["path"]).to_numpy()
    content = items["hash"].astype(object).where(items["hash"].notna(), "\x00" + items["path"]).to_numpy()
    # Exact copies are reported as duplicates already; only pairs across different people count here.
    keep = (person[pairs[:, 0]] != person[pairs[:, 1]]) & (content[pairs[:, 0]] != content[pairs[:, 1]])
    pairs, distances = pairs[keep], distances[keep]
    matches: dict[int, list[tuple[int, int]]] = {}
    for (a, b), distance in zip(pairs.tolist(), distances.tolist()):
        matches.setdefault(a, []).append((distance, b))
        matches.setdefault(b, []).append((distance, a))
    rows = []
    for index, found in matches.items():
        found.sort()
        text = "; ".join(f"looks like {items.at[other, 'path']} ({distance} of {HASH_BITS} bits differ)"
                         for distance, other in found[:3])
        rows.append({"item_id": items.at[index, "item_id"], "kind": "near_duplicate",
                     "score": 1.0 - found[0][0] / HASH_BITS, "detail": text + (f"; {len(found) - 3} more" if len(found) > 3 else "")})
    return rows


def measure_items(store: LabelStore, items: pd.DataFrame, *, size: tuple[int, int] = (192, 256),
                  workers: int = 4) -> pd.DataFrame:
    """``items`` plus ``image_facts`` columns and ``error``, decoding each file once at ``size`` (w, h).

    Paths are confined to the dataset root (``resolve_inside``). Threads: PIL decodes without the GIL.
    """
    root = store.root
    # An image smaller than ``size`` is measured at its own size: enlarging it would blur it.
    if {"width", "height"} <= set(items.columns):
        widths = pd.to_numeric(items["width"], errors="coerce").to_numpy(np.float64)
        heights = pd.to_numeric(items["height"], errors="coerce").to_numpy(np.float64)
        own = ((widths < size[0]) & (heights < size[1])).tolist()  # NaN compares False: measured at ``size``
    else:
        own = [False] * len(items)

    def measure(path: str, small: bool = False) -> dict[str, Any]:
        try:
            return {**image_facts(load_rgb(resolve_inside(root, path), None if small else size)), "error": None}
        except Exception as error:  # a missing, replaced or corrupt file becomes an issue, not a crash
            return {"luminance": np.nan, "contrast": np.nan, "sharpness": np.nan, "phash": None,
                    "error": f"cannot decode: {error}"}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        facts = list(pool.map(measure, items["path"], own, chunksize=64))
    return pd.concat([items.reset_index(drop=True), pd.DataFrame(facts)], axis=1)


def run_data_checks(store: LabelStore, *, size: tuple[int, int] = (192, 256), max_distance: int = 16,
                    dark_below: float = 30.0, blur_z: float = -3.5, workers: int = 4) -> pd.DataFrame:
    """Check every item of the store, replace the stored issues of ``KINDS``, return them.

    Returns a DataFrame ``item_id, kind, detail, score`` sorted by kind, then score descending.
    """
    items = store.items()[["item_id", "path", "person", "hash", "width", "height"]]
    measured = measure_items(store, items, size=size, workers=workers)
    issues = find_data_issues(measured, max_distance=max_distance, dark_below=dark_below, blur_z=blur_z)
    issues = issues.sort_values(["kind", "score"], ascending=[True, False], kind="stable").reset_index(drop=True)
    store.save_data_issues(issues, KINDS)
    return issues
