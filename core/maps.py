"""A 2-D map of a score run's embeddings: the projection (PCA by default; UMAP when the ``umap`` package is
installed, t-SNE from scikit-learn for up to ``TSNE_MAX`` images), the per-image table the Map page draws
(given label, unit status) and the selection -> item ids step (pure numpy / pandas; no torch)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pandas as pd

TSNE_MAX = 20_000  # t-SNE (Barnes-Hut) beyond this takes minutes
DRAW_MAX = 60_000  # points sent to the browser; more are sampled (flagged and decided ones always kept)
FIT_MAX = 50_000  # rows the PCA axes are fitted on (a sample beyond it; every row is projected)


def methods(n: int) -> list[str]:
    """Projections offered for ``n`` images: PCA always, UMAP if installed, t-SNE up to ``TSNE_MAX`` images."""
    out = ["PCA"]
    if importlib.util.find_spec("umap") is not None:
        out.append("UMAP")
    if n <= TSNE_MAX:
        out.append("t-SNE")
    return out


def project(vectors: np.ndarray, method: str = "PCA", seed: int = 0) -> np.ndarray:
    """(n, 2) float32 coordinates of the rows of ``vectors`` (unit-length rows advised)."""
    x = np.asarray(vectors, dtype=np.float32)
    if len(x) < 3:
        return np.zeros((len(x), 2), np.float32)
    if method == "PCA":
        return pca(x, 2, seed)
    if method == "UMAP":
        import umap  # optional; offered only when installed

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    if method == "t-SNE":
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        reduced = PCA(n_components=min(30, x.shape[1]), random_state=seed).fit_transform(x)
        return TSNE(n_components=2, random_state=seed, init="pca",
                    perplexity=min(30.0, max(2.0, (len(x) - 1) / 3))).fit_transform(reduced).astype(np.float32)
    raise ValueError(f"unknown projection {method!r} (one of PCA, UMAP, t-SNE)")


def pca(x: np.ndarray, components: int = 2, seed: int = 0, oversample: int = 10, power: int = 3,
        fit_max: int = FIT_MAX) -> np.ndarray:
    """Scores on the top ``components`` principal axes by a randomized SVD (Halko et al.: a Gaussian sketch,
    ``power`` normalised power iterations), numpy only: O(n d (components + oversample)) instead of a full SVD's
    O(n d^2), and no scikit-learn import on the page. Beyond ``fit_max`` rows the axes are fitted on ``fit_max``
    rows drawn with ``seed`` (the top axes of 50,000 rows are those of all of them to sampling error) and every row
    is projected on them. Signs fixed (largest loading positive) for stable maps."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(0, dtype=np.float64).astype(np.float32)
    rng = np.random.default_rng(seed)
    fit = x if len(x) <= fit_max else x[np.sort(rng.choice(len(x), fit_max, replace=False))]
    centred = fit - mean
    width = min(components + oversample, min(centred.shape))
    sketch = rng.standard_normal((centred.shape[1], width)).astype(np.float32)
    q, _ = np.linalg.qr(centred @ sketch)
    for _ in range(power):
        q, _ = np.linalg.qr(centred.T @ q)
        q, _ = np.linalg.qr(centred @ q)
    _, _, vt = np.linalg.svd(q.T @ centred, full_matrices=False)
    axes = vt[:components]
    axes *= np.where(axes[np.arange(len(axes)), np.abs(axes).argmax(1)] < 0, -1.0, 1.0)[:, None]
    return (x @ axes.T - mean @ axes.T).astype(np.float32)


def point_table(items: pd.DataFrame, units: pd.DataFrame, attribute: str, statuses: dict[str, str]) -> pd.DataFrame:
    """One row per image of the run (``items`` order): ``item_id``, ``path``, ``person``, ``given`` (the unit's
    given ``attribute`` label: the image's, or its person's), ``mark``: ``corrected`` / ``confirmed`` (decided
    since the run), ``flagged`` or ``-``."""
    mine = units[units["attribute"] == attribute]
    person_scope = bool(len(mine)) and (mine["scope"] == "person").all()
    key = items["person"].astype(str) if person_scope else items["path"].astype(str)
    by_target = mine.drop_duplicates("target").set_index(mine.drop_duplicates("target")["target"].astype(str))
    given = key.map(by_target["given"]).astype(object)
    flagged = key.map(by_target["is_issue"]).fillna(0).astype(bool)
    unit = key.map(by_target["unit"])
    status = unit.map(statuses).fillna("unreviewed")
    mark = np.where(status == "corrected", "corrected", np.where(status == "reviewed", "confirmed",
                                                                  np.where(flagged, "flagged", "-")))
    return pd.DataFrame({"item_id": items["item_id"].to_numpy(), "path": items["path"].to_numpy(),
                         "person": items["person"].to_numpy(), "given": given.fillna("(not scored)").to_numpy(),
                         "mark": mark})


def sample(points: pd.DataFrame, limit: int = DRAW_MAX, seed: int = 0) -> np.ndarray:
    """Row indices to draw: all rows up to ``limit``; beyond, every marked row and a seeded sample of the rest."""
    if len(points) <= limit:
        return np.arange(len(points))
    marked = np.flatnonzero(points["mark"].to_numpy() != "-")[:limit]
    rest = np.setdiff1d(np.arange(len(points)), marked)
    pick = np.random.default_rng(seed).choice(rest, size=max(0, limit - len(marked)), replace=False)
    return np.sort(np.concatenate([marked, pick]))


def selected_items(selection: Any, traces: list[np.ndarray]) -> list[int]:
    """Item ids of a plotly selection event (Streamlit's ``event.selection``: ``points`` with ``curve_number`` and
    ``point_index``), given the item ids each trace was drawn with (``traces[curve]``), in selection order,
    without repeats."""
    points = (selection or {}).get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
    out: list[int] = []
    seen: set[int] = set()
    for point in points or []:
        curve, index = point.get("curve_number"), point.get("point_index", point.get("point_number"))
        if curve is None or index is None or not 0 <= int(curve) < len(traces) or not 0 <= int(index) < len(
                traces[int(curve)]):
            continue
        item = int(traces[int(curve)][int(index)])
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
