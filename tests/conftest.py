"""Shared test fixtures: label stores built from DataFrames (no image files needed; ``core.synthetic``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.store import LabelStore
from core.synthetic import ingest_frames


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


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The store path the app opens (``LABELS_DB``); the first-start demo is off unless a test turns it on."""
    path = tmp_path / "labels.db"
    monkeypatch.setenv("LABELS_DB", str(path))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    return path
