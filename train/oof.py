"""Out-of-fold probabilities on disk, and the score rows built from them (pure pandas/numpy after loading).

A score run's folder holds ``fold-<i>.npy`` (float32 (m_i, sum of head sizes): fold i's held-out images
in ``items.csv`` order, heads side by side), then ``oof_<target>.npy`` (float32 (n, k), one row per
``items.csv`` row: item_id, path, person, fold). ``score_rows`` turns the probabilities into the rows
``LabelStore.save_scores`` stores, with ``core.scoring`` deciding every verdict.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from core.calibration import recalibrate
from core.files import csv_unescape, replacing
from core.ordinal import edge_step
from core.schema import Schema
from core.scoring import check_inputs, image_scores, model_disagreement, queue_items, review_queue
from core.store import LabelStore, StoreError
from train.model import Head


def marginals(schema: Schema, class_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-target probabilities {target: (n, k)} from combined-class probabilities (n, n_classes) (single head)."""
    sizes = [len(schema.target_classes(n)) for n in schema.class_attributes]
    grid = class_probs.reshape(len(class_probs), *sizes)
    return {name: grid.sum(axis=tuple(a + 1 for a in range(len(sizes)) if a != i))
            for i, name in enumerate(schema.class_attributes)}


def join_folds(run_dir: Path, folds: np.ndarray, heads: list[Head], schema: Schema) -> dict[str, np.ndarray]:
    """{target: (n, k) float32} out-of-fold probabilities in snapshot row order, from the fold files."""
    widths = [len(h.classes) for h in heads]
    joined = np.full((len(folds), sum(widths)), np.nan, dtype=np.float32)
    for fold in np.unique(folds):
        block = np.load(run_dir / f"fold-{fold}.npy")
        rows = np.flatnonzero(folds == fold)
        if block.shape != (len(rows), sum(widths)):
            raise StoreError(f"{run_dir / f'fold-{fold}.npy'} has shape {block.shape}, expected "
                             f"{(len(rows), sum(widths))}: a different run's file?")
        joined[rows] = block
    parts = dict(zip([h.name for h in heads], np.split(joined, np.cumsum(widths)[:-1], axis=1)))
    if "class" in parts:
        parts = {n: p.astype(np.float32) for n, p in marginals(schema, parts["class"]).items()}
    return parts


def load_oof(run_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A finished score run's (items: item_id, path, person, fold; {target: (n, k) float32}), rows aligned."""
    run_dir = Path(run_dir)
    items = csv_unescape(pd.read_csv(run_dir / "items.csv", dtype={"path": str, "person": str}))
    probs = {p.stem[4:]: np.load(p) for p in sorted(run_dir.glob("oof_*.npy"))}
    return items, probs


def previous_probs(store: LabelStore, run_id: int, paths: pd.Series) -> tuple[int | None, dict[str, np.ndarray]]:
    """The newest other finished score run's probabilities on these image ``paths`` (NaN rows where it had none)."""
    runs = store.runs("score")
    earlier = runs[(runs["status"] == "done") & (runs["id"] != run_id)]
    for row in earlier.itertuples(index=False):  # newest first; a run whose folder is gone is passed over
        if row.run_dir and (Path(row.run_dir) / "items.csv").exists():
            items, probs = load_oof(row.run_dir)
            where = pd.Series(np.arange(len(items)), index=items["path"]).reindex(paths.to_numpy()).to_numpy()
            found = ~np.isnan(where)
            out = {}
            for target, values in probs.items():
                aligned = np.full((len(paths), values.shape[1]), np.nan)
                aligned[found] = values[where[found].astype(int)]
                out[target] = aligned
            return int(row.id), out
    return None, {}


def score_rows(schema: Schema, labels: pd.DataFrame, probs: dict[str, np.ndarray],
               previous: dict[str, np.ndarray] | None = None, calibrate: bool = True,
               folds: np.ndarray | None = None) -> pd.DataFrame:
    """Rows for ``LabelStore.save_scores``: one per image (``labels`` row) and scored target.

    ``calibrate`` (default): each target's probabilities are recalibrated once (``core.calibration``) and every
    verdict reads those; ``False`` reads them as given (the previous round's verdicts, for a benchmark). ``folds``
    (n,): the fold each image was scored in; each fold's spread is evened first (``core.calibration.fold_evening``).

    ``labels`` has ``item_id``, ``path``, ``person`` and the stored attributes; ``probs`` maps a
    target to its (n, k) out-of-fold probabilities; ``previous`` (optional) another model's (n, k)
    probabilities on the same rows, NaN where it has none. Person-scope targets are decided per
    person (``core.scoring.group_scores``) and swaps of a target's ``swap_pair`` (the schema's; the
    competition's mask incorrect / not_wear) per person; their verdict, score and suggestion are copied
    to each of the person's images. An image flag suggesting the other class of the pair, for a person
    holding both, is left to the swap test (``core.scoring.pair_rule``). Every verdict and the ranking
    are ``core.scoring.review_queue``'s; this function only names classes and gathers details.

    Columns: ``item_id``, ``attribute``, ``given``, ``suggested`` (class names), ``score``
    (P(given label is wrong), the unit's), ``is_issue`` (the unit's verdict), ``kind`` (image | person
    | swap), ``unit`` (row index, person key), ``detail`` (dict): ``rank`` of the unit in the review
    queue (0 = most suspicious), ``probabilities`` {class: p} of the unit as the verdict read them
    (recalibrated, ``core.calibration``; the person's combined ones for a person), ``image_probabilities``
    (the model's own output for the image, before recalibration), the image's own ``self_confidence``, ``normalized_margin``,
    ``cleanlab_issue``, ``image_suggested``, ``suggested_prob``; per person ``n_images``, ``n_against``,
    ``inconsistent``; per swap ``log_ratio``; ``disagreement`` (mean Jensen-Shannon distance to
    ``previous`` over the unit's images) when ``previous`` is given.
    """
    codes = schema.codes(labels)
    targets = [t for t in schema.targets if t in probs]
    person = labels["person"].fillna("").astype(str)
    groups = np.where(person != "", person, labels["path"].astype(str))  # an image without a person is its own
    person_scope = {t for t in targets if schema.scope(schema.target_source(t)) == "person"}
    pairs = [(t, *pair) for t in targets if t not in person_scope and (pair := schema.swap_codes(t))]
    checked = {t: check_inputs(codes[t], probs[t]) for t in targets}
    calibrated = {t: recalibrate(*checked[t], folds, groups)[0] if calibrate else checked[t][1]
                  for t in targets}  # one fit a target
    queue = review_queue({t: codes[t] for t in targets}, calibrated, groups, person_scope=person_scope,
                         swap=pairs[0] if pairs else None, calibrate=False)
    queue = edge_step(schema, queue, labels.reset_index(drop=True))  # near a group edge: below clear errors
    queue["detail"] = [{**d, "rank": i} for i, d in enumerate(queue["detail"])]
    rows = queue_items(queue)
    images = {t: image_scores(codes[t], calibrated[t], calibrate=False).to_dict("list") for t in targets}  # columns as lists: fast rows
    spread = {t: _disagreement(probs[t], previous[t]) for t in targets if previous and t in previous}
    unit_spread = {}
    for unit in queue.itertuples(index=False):
        if unit.attribute in spread:
            unit_spread[(unit.attribute, unit.kind, str(unit.target))] = _nanmean(spread[unit.attribute][list(unit.rows)])
    details = []
    for row in rows.itertuples(index=False):
        classes = schema.target_classes(row.attribute)
        image, i = images[row.attribute], row.row
        own = dict(zip(classes, np.round(probs[row.attribute][i].astype(float), 4).tolist()))
        read = dict(zip(classes, np.round(calibrated[row.attribute][i].astype(float), 4).tolist()))
        unit = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.detail.items()
                if k not in ("probabilities", "pair", "normalized_margin")}
        detail = {"rank": unit.pop("rank"), "probabilities": read, "image_probabilities": own,
                  "self_confidence": round(float(image["self_confidence"][i]), 4),
                  "normalized_margin": round(float(image["normalized_margin"][i]), 4),
                  "cleanlab_issue": bool(image["cleanlab_issue"][i]), "image_score": round(float(image["score"][i]), 4),
                  "image_suggested": classes[int(image["suggested"][i])],
                  "suggested_prob": round(float(image["suggested_prob"][i]), 4), **unit}
        if row.kind == "person":
            detail["probabilities"] = dict(zip(classes, row.detail["probabilities"]))
        key = (row.attribute, row.kind, str(row.target))
        if key in unit_spread:
            detail["disagreement"] = unit_spread[key]
        details.append(detail)
    return pd.DataFrame({
        "item_id": labels["item_id"].to_numpy()[rows["row"].to_numpy()], "attribute": rows["attribute"],
        "given": [schema.class_name(a, int(g)) for a, g in zip(rows["attribute"], rows["given"])],
        "suggested": [schema.class_name(a, int(s)) for a, s in zip(rows["attribute"], rows["suggested"])],
        "score": rows["score"].astype(float), "is_issue": rows["is_issue"].astype(bool), "kind": rows["kind"],
        "unit": rows["target"].astype(str), "detail": details})


def _disagreement(current: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance per row (n,), NaN where ``other`` has no probabilities."""
    out = np.full(len(current), np.nan)
    known = ~np.isnan(other).any(axis=1)
    if known.any():
        out[known] = model_disagreement([current[known], other[known]])
    return out


def _nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return round(float(values.mean()), 4) if len(values) else None


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save to a temp name, then rename: a reader (or a resumed run) never sees half a file."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
