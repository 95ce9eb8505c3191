"""A score run's image embeddings, read without torch, checked against the run's items, and per review unit.

The score run (``train.embed``) leaves in its folder ``embeddings.npy`` (float16 (n, d): each image's
out-of-fold penultimate features, ``items.csv`` row order), with ``--pretrained`` also
``embeddings_pretrained.npy``, and ``embeddings.json`` describing them (model, shape, and the
``fingerprint`` of the items they were made for).

    emb = load_run(store, run_id)              # Embeddings, or raises EmbeddingsUnavailable (one plain line)
    vectors = unit_vectors(emb, units)         # (m, d) float32, unit length: a person unit = its photos' mean

A missing, truncated or stale file (another run's, or items that have left the store since) raises
``EmbeddingsUnavailable`` whose message says what is wrong and what to do (rescore); pages show it as text.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.files import csv_unescape

META = "embeddings.json"
KINDS = {"oof": "embeddings.npy", "pretrained": "embeddings_pretrained.npy"}
KIND_NAMES = {"oof": "out-of-fold model features", "pretrained": "pretrained backbone features"}


class EmbeddingsUnavailable(Exception):
    """No usable embeddings for a run; the message is one plain line saying why and what to do."""


def fingerprint(item_ids: Any, paths: Any) -> str:
    """A short hash of the (item_id, path) rows, in order: what an embeddings file was made for."""
    digest = hashlib.sha1()
    for item_id, path in zip(item_ids, paths):
        digest.update(f"{int(item_id)}\t{path}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class Embeddings:
    """One run's vectors (float16 (n, d)) and its items (``item_id``, ``path``, ``person``, ``fold``), rows aligned."""

    run_dir: Path
    kind: str
    items: pd.DataFrame
    vectors: np.ndarray
    meta: dict[str, Any]

    def normalised(self) -> np.ndarray:
        """(n, d) float32 rows of unit length (a zero row stays zero); computed once."""
        cached = getattr(self, "_normalised", None)
        if cached is None:
            x = self.vectors.astype(np.float32)
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            cached = x / np.where(norms > 0, norms, 1.0)
            self._normalised = cached
        return cached


def available(run_dir: str | os.PathLike[str]) -> list[str]:
    """Kinds (``oof``, ``pretrained``) whose file exists in a run folder."""
    run_dir = Path(run_dir)
    return [k for k, name in KINDS.items() if (run_dir / name).exists()]


def load(run_dir: str | os.PathLike[str], kind: str = "oof") -> Embeddings:
    """Read and check one kind of embeddings of a run folder (no torch). Raises ``EmbeddingsUnavailable``."""
    if kind not in KINDS:
        raise EmbeddingsUnavailable(f"unknown embeddings kind {kind!r} (one of {', '.join(KINDS)})")
    run_dir = Path(run_dir)
    path, meta_path, items_path = run_dir / KINDS[kind], run_dir / META, run_dir / "items.csv"
    if not path.exists() or not meta_path.exists():
        raise EmbeddingsUnavailable(
            f"this score run has no {KIND_NAMES[kind]} ({path.name} is missing in {run_dir}); runs scored before "
            "embeddings were saved have none: rescore (python -m train score, or Rescore on the Train page)")
    if not items_path.exists():
        raise EmbeddingsUnavailable(f"{items_path} is missing: the run folder is incomplete; rescore")
    try:
        meta = json.loads(meta_path.read_text()).get(kind) or {}
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        items = csv_unescape(pd.read_csv(items_path, dtype={"path": str, "person": str}))
    except (OSError, ValueError, json.JSONDecodeError) as error:
        raise EmbeddingsUnavailable(f"{path.name} in {run_dir} cannot be read ({error}); rescore") from None
    if vectors.ndim != 2 or len(vectors) != len(items) or meta.get("n") != len(items):
        raise EmbeddingsUnavailable(
            f"{path.name} has {len(vectors) if vectors.ndim else 0} rows but the run's items.csv {len(items)}: "
            "a stale or foreign file; rescore")
    if meta.get("items") != fingerprint(items["item_id"], items["path"]):
        raise EmbeddingsUnavailable(f"{path.name} was made for other images than this run's items.csv "
                                    "(stale file); rescore")
    return Embeddings(run_dir, kind, items, np.asarray(vectors, dtype=np.float16), meta)


def load_run(store: Any, run_id: int | None, kind: str = "oof") -> Embeddings:
    """A finished score run's embeddings, checked against the store too (images deleted or moved since the
    run make the file stale). Raises ``EmbeddingsUnavailable``."""
    if run_id is None:
        raise EmbeddingsUnavailable("no score run yet: score first (python -m train score)")
    run = store.run(run_id)
    if run is None or run["kind"] != "score" or not run.get("run_dir"):
        raise EmbeddingsUnavailable(f"run {run_id} is not a score run with a folder")
    emb = load(run["run_dir"], kind)
    current = store.items()[["item_id", "path"]]
    known = pd.Series(current["path"].to_numpy(), index=current["item_id"].to_numpy())
    now = emb.items["item_id"].map(known)
    gone = int((now.isna() | (now != emb.items["path"])).sum())
    if gone:
        raise EmbeddingsUnavailable(f"{gone} image(s) of score run {run_id} are no longer in the store under the same "
                                    "path (deleted or re-ingested since): its embeddings are stale; rescore")
    return emb


def unit_rows(emb: Embeddings, units: pd.DataFrame) -> list[np.ndarray]:
    """For each unit (``scope``/``target``/``item_id`` as in ``core.review.queue``; a person unit has
    ``target`` = the person key), the embedding rows it stands for: a person's photos, else its image."""
    items = emb.items
    by_person = {p: np.asarray(r, dtype=np.int64) for p, r in
                 items.reset_index(drop=True).groupby(items["person"].fillna("").astype(str)).indices.items()}
    by_item = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())
    out = []
    for scope, target, item_id in zip(units["scope"], units["target"], units["item_id"]):
        if scope == "person" and str(target) in by_person:
            out.append(by_person[str(target)])
        else:
            row = by_item.get(int(item_id))
            out.append(np.asarray([] if row is None else [int(row)], dtype=np.int64))
    return out


def unit_vectors(emb: Embeddings, units: pd.DataFrame) -> np.ndarray:
    """(m, d) float32 unit-length vectors of review units: an image's own, a person's photos' mean (a unit
    with no image in the run is a zero row). Vectorised (one sparse product for every person's mean): the same
    rows as ``unit_rows`` averaged, without a Python loop over the units."""
    from scipy import sparse

    x = emb.normalised()
    m, d = len(units), x.shape[1]
    out = np.zeros((m, d), np.float32)
    if m == 0 or len(x) == 0:
        return out
    person = emb.items["person"].fillna("").astype(str).to_numpy()
    codes, names = pd.factorize(person)
    members = sparse.csr_matrix((np.ones(len(codes), np.float32), (codes, np.arange(len(codes)))),
                                shape=(len(names), len(codes)))
    means = np.asarray(members @ x, dtype=np.float32) / np.bincount(codes, minlength=len(names))[:, None]
    is_person = (units["scope"].astype(str) == "person").to_numpy()
    found = pd.Index(names).get_indexer(units["target"].astype(str).to_numpy())
    by_person = is_person & (found >= 0)
    out[by_person] = means[found[by_person]]
    item_ids = pd.to_numeric(units["item_id"], errors="coerce").to_numpy()
    row = pd.Index(emb.items["item_id"].to_numpy()).get_indexer(item_ids)
    single = ~by_person & (row >= 0)
    out[single] = x[row[single]]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)
