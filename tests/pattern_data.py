"""A store with planted patterns and a score run, without image files or a model: for the Patterns page's AppTest,
browser test and screenshots. A batch of consecutive people has incorrect_mask and normal swapped (a run in upload
order), one annotator (a hostile name: markup must stay text) flips genders (a slice), and ages 27-29 were
rounded to 30 for most people (a heap); the 'model' sees the truth, with a few random mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.schema import COMPETITION, MASK_FILES
from core.store import LabelStore

HOSTILE = "<img src=x onerror=alert(1)>**ann**"
SWAPPED = range(40, 64)


def pattern_store(path: Path, persons: int = 160, seed: int = 0, with_truth: bool = False) -> tuple:
    """(store, score run id), and with ``with_truth`` the true values as ``bench.cleaning_loop.Truth`` arguments
    (images: path -> {mask}, persons: key -> {gender, age})."""
    rng = np.random.default_rng(seed)
    ids = [f"{i + 1:06d}" for i in range(persons)]
    gender = np.where(rng.random(persons) < 0.6, "female", "male")
    age = rng.integers(18, 60, persons)
    annotator = np.where(rng.random(persons) < 0.25, HOSTILE, rng.choice(["bo", "chen", "eli"], persons))
    given_gender = gender.copy()
    flip = (annotator == HOSTILE) & (rng.random(persons) < 0.6)
    given_gender[flip] = np.where(gender[flip] == "male", "female", "male")
    given_age = age.copy()
    given_age[(age >= 27) & (age <= 29) & (rng.random(persons) < 0.9)] = 30
    folders = [f"{i}_{g}_Asian_{a}" for i, g, a in zip(ids, given_gender, given_age)]
    rows, truth = [], []
    for k, folder in enumerate(folders):
        for stem, mask in MASK_FILES.items():
            given = mask
            if k in SWAPPED and mask != "wear":
                given = "not_wear" if mask == "incorrect" else "incorrect"
            rows.append({"path": f"train/images/{folder}/{stem}.jpg", "person": folder, "split": "train", "width": 384,
                         "height": 512, "bytes": 1000, "hash": f"{folder}/{stem}", "source_id": ids[k], "mask": given,
                         "gender": given_gender[k], "age": int(given_age[k]),
                         "meta": json.dumps({"annotator": str(annotator[k]), "batch": f"upload-{k // 20:02d}"})})
            truth.append((mask, gender[k], int(age[k])))
    items = pd.DataFrame(rows)
    people = pd.DataFrame({"person": folders, "source_id": ids, "info": '{"race": "Asian"}'})
    store = LabelStore(path)
    store.ingest(root=Path(path).parent / "pattern-images", schema=COMPETITION, dataset_format="competition",
                 persons=people, items=items, problems=[])
    labels = store.current_labels()
    by_path = dict(zip(items["path"], truth))
    true_values = {"mask": [by_path[p][0] for p in labels["path"]], "gender": [by_path[p][1] for p in labels["path"]],
                   "age_group": [by_path[p][2] for p in labels["path"]]}
    run_id = _seeing_run(store, labels, true_values, rng, mistakes=0.02, model="synthetic")
    if with_truth:
        images = {p: {"mask": t[0]} for p, t in by_path.items()}
        people = {f: {"gender": str(gender[k]), "age": int(age[k])} for k, f in enumerate(folders)}
        return store, run_id, (images, people)
    return store, run_id


def truth_score_run(store: LabelStore, truth_csv: Path, seed: int = 0, mistakes: float = 0.02) -> int:
    """A 'done' score run on a demo store whose 'model' sees the demo's true labels (truth.csv), with a share of
    ``mistakes`` random opinions: what a model that never learned the demo's patterns would say."""
    rng = np.random.default_rng(seed)
    truth = pd.read_csv(truth_csv, dtype={"person": str}).set_index("path")
    labels = store.current_labels()
    true_values = {target: truth.loc[labels["path"], column].to_numpy()
                   for target, column in (("mask", "true_mask"), ("gender", "true_gender"), ("age_group", "true_age"))}
    return _seeing_run(store, labels, true_values, rng, mistakes=mistakes, model="truth-seeing")


def _seeing_run(store: LabelStore, labels: pd.DataFrame, true_values: dict, rng: np.random.Generator, *,
                mistakes: float, model: str) -> int:
    """A 'done' score run whose 'model' puts 0.9 on each image's true value (``true_values``: target -> a value a
    label row; age_group: the true age) and a random opinion on a share ``mistakes`` of images; returns its id."""
    frames = []
    for target in COMPETITION.targets:
        classes = list(COMPETITION.target_classes(target))
        values = true_values[target]
        codes = (COMPETITION.binned[0].codes(np.asarray(values).astype(int)) if target == "age_group"
                 else np.array([classes.index(v) for v in values]))
        probs = np.full((len(labels), len(classes)), 0.05)
        probs[np.arange(len(labels)), codes] = 0.9
        noisy = rng.random(len(labels)) < mistakes
        probs[noisy] = rng.dirichlet(np.ones(len(classes)), int(noisy.sum()))
        probs /= probs.sum(1, keepdims=True)
        given = COMPETITION.codes(labels)[target]
        suggested = probs.argmax(1)
        details = [json.dumps({"rank": i, "image_probabilities": dict(zip(classes, np.round(p, 4).tolist())),
                               "probabilities": dict(zip(classes, np.round(p, 4).tolist()))})
                   for i, p in enumerate(probs)]
        frames.append(pd.DataFrame({"item_id": labels["item_id"], "attribute": target,
                                    "given": [classes[g] for g in given], "suggested": [classes[s] for s in suggested],
                                    "score": 1 - probs[np.arange(len(labels)), given],
                                    "is_issue": (suggested != given).astype(int), "detail": details}))
    run_id = store.create_run("score", {"folds": 2, "model": model}, status="running")
    store.save_scores(run_id, pd.concat(frames, ignore_index=True))
    store.update_run(run_id, status="done")
    return run_id
