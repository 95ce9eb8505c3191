"""Stores, score runs and writes made from tables, without image files or a model: the shared set-up of
tests, benchmarks and screenshots (``tests/`` and ``bench/`` both import it; neither imports the other's).

    store = synthetic_store(tmp / "labels.db", n_images=700)     # 100 people x 7 images + 100 eval images
    run_id = add_score_run(store)                                 # a finished score run with flagged units
    persons, items = competition_frames(6)                        # what LabelStore.ingest takes

``import_ages`` and ``write_killed_before_commit`` are writes for crash tests, run in a child process
(``child_command``) that the caller kills.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.schema import COMPETITION, MASK_FILES
from core.store import LabelStore


def competition_frames(n_persons: int = 6, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(persons, items) DataFrames in the shape `LabelStore.ingest` takes: 7 images a person + 2 eval."""
    genders = ["female", "male"]
    ages = [22, 35, 60, 29, 30, 59, 45, 18]
    persons, items = [], []
    for index in range(n_persons):
        gender, age = genders[(index + seed) % 2], ages[(index + seed) % len(ages)]
        source_id = f"{index + 1:06d}"
        folder = f"{source_id}_{gender}_Asian_{age}"
        persons.append({"person": folder, "source_id": source_id, "info": json.dumps({"race": "Asian"})})
        for stem, mask in MASK_FILES.items():
            items.append({"path": f"train/images/{folder}/{stem}.jpg", "person": folder, "split": "train",
                          "width": 384, "height": 512, "bytes": 1000, "hash": f"{folder}/{stem}",
                          "source_id": source_id, "mask": mask, "gender": gender, "age": age})
    for index in range(2):
        items.append({"path": f"eval/images/{index:040x}.jpg", "person": None, "split": "eval", "width": 384,
                      "height": 512, "bytes": 1000, "hash": f"eval{index}", "source_id": f"{index:040x}.jpg",
                      "mask": None, "gender": None, "age": None})
    return pd.DataFrame(persons), pd.DataFrame(items)


def ingest_frames(store: LabelStore, root: Path, n_persons: int = 6) -> None:
    """Ingest ``competition_frames(n_persons)`` into ``store`` (image paths relative to ``root``; no files)."""
    persons, items = competition_frames(n_persons)
    store.ingest(root=root, schema=COMPETITION, dataset_format="competition", persons=persons, items=items,
                 problems=[])


def synthetic_store(path: Path, n_images: int, *, seed: int = 0, eval_images: int = 100) -> LabelStore:
    """A competition-shaped store of ``n_images`` labelled images (7 per person) without image files.

    Ages follow the real skew (many under 30, few at exactly 60); thumbnails fall back to the
    placeholder since no file exists. Built directly through ``LabelStore.ingest``.
    """
    rng = np.random.default_rng(seed)
    n_persons = n_images // len(MASK_FILES)
    ids = [f"{i + 1:06d}" for i in range(n_persons)]
    genders = np.where(rng.random(n_persons) < 0.61, "female", "male")
    ages = np.where(rng.random(n_persons) < 0.07, 60, rng.integers(18, 60, n_persons))
    folders = [f"{i}_{g}_Asian_{a}" for i, g, a in zip(ids, genders, ages)]
    persons = pd.DataFrame({"person": folders, "source_id": ids, "info": '{"race": "Asian"}'})
    stems, masks = list(MASK_FILES), list(MASK_FILES.values())
    items = pd.DataFrame({
        "path": [f"train/images/{f}/{stem}.jpg" for f in folders for stem in stems],
        "person": np.repeat(folders, len(stems)), "split": "train", "width": 384, "height": 512, "bytes": 60_000,
        "hash": [f"{i:064x}" for i in range(n_persons * len(stems))], "source_id": np.repeat(ids, len(stems)),
        "mask": masks * n_persons, "gender": np.repeat(genders, len(stems)), "age": np.repeat(ages, len(stems)),
    })
    unlabelled = pd.DataFrame({
        "path": [f"eval/images/{i:040x}.jpg" for i in range(eval_images)], "person": None, "split": "eval",
        "width": 384, "height": 512, "bytes": 60_000, "hash": [f"e{i:063x}" for i in range(eval_images)],
        "source_id": [f"{i:040x}.jpg" for i in range(eval_images)], "mask": None, "gender": None, "age": None})
    store = LabelStore(path)
    store.ingest(root=Path(path).parent / "synthetic-images", schema=COMPETITION, dataset_format="competition",
                 persons=persons, items=pd.concat([items, unlabelled], ignore_index=True), problems=[])
    return store


def add_score_run(store: LabelStore, *, flag_every: int = 5, seed: int = 0) -> int:
    """A 'done' score run over the current labels; every ``flag_every``-th unit is flagged.

    Image-scope targets flag images, person-scope targets flag whole people (every image of a
    flagged person carries the same verdict, as person-level scoring does). Returns the run id.
    """
    schema = store.schema
    labels = schema.add_derived(store.current_labels(derived=False))
    rng = np.random.default_rng(seed)
    persons = {p: i for i, p in enumerate(sorted(labels["person"].dropna().unique()))}
    frames = []
    for target in schema.targets:
        classes = list(schema.target_classes(target))
        codes = labels[target].to_numpy()
        given_codes = codes if np.issubdtype(np.asarray(codes).dtype, np.integer) else \
            np.array([classes.index(v) for v in codes])
        person_scope = schema.scope(schema.target_source(target)) == "person"
        unit = labels["person"].map(persons).to_numpy() if person_scope else np.arange(len(labels))
        flagged = unit % flag_every == 0
        suggested_codes = np.where(flagged, (given_codes + 1) % len(classes), given_codes)
        unit_score = (np.sin(unit * 12.9898 + len(target)) + 1) / 2  # deterministic per unit
        score = np.where(flagged, 0.6 + 0.4 * unit_score, 0.5 * unit_score)
        probs = rng.dirichlet(np.ones(len(classes)), size=len(labels))
        frames.append(pd.DataFrame({
            "item_id": labels["item_id"].to_numpy(), "attribute": target,
            "given": [classes[c] for c in given_codes], "suggested": [classes[c] for c in suggested_codes],
            "score": score, "is_issue": flagged.astype(int),
            # train.score's detail: the unit's probabilities by class name and the numbers behind it
            "detail": [json.dumps({"rank": int(u), "probabilities": dict(zip(classes, np.round(p, 4).tolist())),
                                   "self_confidence": round(float(p[g]), 4)})
                       for u, p, g in zip(unit, probs, given_codes)],
        }))
    run_id = store.create_run("score", {"folds": 2, "model": "synthetic"}, status="running")
    store.save_scores(run_id, pd.concat(frames, ignore_index=True))
    store.update_run(run_id, status="done")
    return run_id


# ---- writes for crash tests: each runs in a child process that the test or bench kills --------------------------
def child_command(function: str, *args: str) -> list[str]:
    """The command line running ``core.synthetic.<function>(*args)`` in a fresh Python process."""
    return [sys.executable, "-c", f"import sys; from core.synthetic import {function}; {function}(*sys.argv[1:])",
            *args]


def import_ages(db: str) -> None:
    """Every person's age set to 61 in one ``import_corrections`` (one transaction); prints ``ready`` before
    it starts and ``done`` after."""
    store = LabelStore(db)
    people = store.persons()["person"].tolist()
    frame = pd.DataFrame({"target": people, "attribute": "age", "value": "61", "reason": "bulk"})
    print("ready", flush=True)
    store.import_corrections(frame)
    print("done", flush=True)


def write_killed_before_commit(db: str, write: str) -> None:
    """An import of every person's age (``write="import"``) or one person-scope gender correction
    (``"person"``), SIGKILLed between its last row and its COMMIT (``LABELFIX_FAULT=commit:1``, see
    ``core.faults``); prints ``committed`` only if the write ever got past it."""
    store = LabelStore(db)
    people = store.persons()["person"].tolist()
    if write == "import":
        frame = pd.DataFrame({"target": people, "attribute": "age", "value": "61", "reason": "bulk"})
        os.environ["LABELFIX_FAULT"] = "commit:1"  # set after opening: only this write's COMMIT counts
        store.import_corrections(frame)
    else:
        person = people[0]
        gender = store.label_of(person, "gender")
        os.environ["LABELFIX_FAULT"] = "commit:1"
        store.correct(person, "gender", "male" if gender == "female" else "female", expected=gender, annotator="a")
    print("committed", flush=True)
