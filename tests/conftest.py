"""Shared test fixtures: label stores built from DataFrames (no image files needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

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
    persons, items = competition_frames(n_persons)
    store.ingest(root=root, schema=COMPETITION, dataset_format="competition", persons=persons, items=items,
                 problems=[])


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., LabelStore]:
    """Factory: ``make_store(n_persons=6)`` -> a LabelStore holding a competition-shaped dataset."""
    opened: list[LabelStore] = []

    def build(n_persons: int = 6, name: str = "labels.db") -> LabelStore:
        store = LabelStore(tmp_path / name)
        ingest_frames(store, tmp_path, n_persons)
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()
