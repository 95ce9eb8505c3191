"""What every bench shares, in one place. Benches are scripts of the ``bench`` package that run the product's own
functions (the trainer, the score job, the review queue, the store); run them from the repository root as

    PYTHONPATH=. .venv/bin/python -m bench.NAME [--quick] [--write]

One flag convention: nothing writes BENCHMARKS.md unless ``--write`` is given (``add_write_flag``); each bench
then replaces its own ``## Section`` and nothing else (``write_section``). ``make bench`` runs every bench's quick
version without writing.

Shared here: ``write_section``, ``add_write_flag``, ``demo_store`` (a generated demo ingested into a store),
``out_of_fold`` (the benches' reference classifier), and the statistics of ``train.compare`` (``t_quantile``,
``pooled_sd``) re-exported, not copied.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.files import replacing
from train.compare import pooled_spread, t_quantile

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

__all__ = ["BENCHMARKS", "add_write_flag", "demo_store", "out_of_fold", "pooled_sd", "t_quantile", "write_section"]


def write_section(title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the section ``## title`` in place (or append it), leaving the other sections alone; atomic."""
    heading = f"## {title}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: section + "\n", current, count=1).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + section
    with replacing(path, fsync=False) as tmp:
        tmp.write_text(updated)


def add_write_flag(parser: argparse.ArgumentParser, section: str) -> None:
    """``--write``: replace BENCHMARKS.md's ``## section`` with this run's result (off by default)."""
    parser.add_argument("--write", action="store_true",
                        help=f"replace BENCHMARKS.md's '{section}' section with the result (default: print only)")


def demo_store(folder: Path, *, persons: int, noise: float = 0.0, seed: int = 0,
               image_size: tuple[int, int] | None = None, workers: int | None = None, fresh: bool = False,
               quiet: bool = False) -> Path:
    """``core.demo.generate`` into ``folder/demo`` (reused when its settings match) ingested by ``core.ingest`` into
    ``folder/labels.db``; returns the store's path. ``fresh``: the store, its files and ``folder/runs`` are removed
    first, so a run starts cold."""
    import json

    from core.demo import generate
    from core.ingest import ingest
    from core.store import LabelStore, remove_store_files

    root, db = folder / "demo", folder / "labels.db"
    marker = root / ".labelfix-demo"
    wanted: dict[str, Any] = {"persons": persons, "noise": noise, "seed": seed}
    options: dict[str, Any] = {} if workers is None else {"workers": workers}
    if image_size is not None:
        wanted["size"], options["image_size"] = list(image_size), tuple(image_size)
    made = marker.exists() and {k: json.loads(marker.read_text()).get(k) for k in wanted} == wanted
    if not (made and (root / "train" / "train.csv").exists()):
        info = generate(root, persons=persons, noise=noise, seed=seed, **options)
        if not quiet:
            print(info.summary())
        fresh = True  # a store of the old images is stale
    if fresh or not db.exists():
        for folder_name in ("labels.db.d", "runs"):
            shutil.rmtree(folder / folder_name, ignore_errors=True)
        remove_store_files(db)
    with LabelStore(db) as store:
        if store.is_empty:
            result = ingest(root, store, **({"workers": workers} if workers is not None else {}))
            if not quiet:
                print(result.summary())
    return db


def out_of_fold(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """(n, k) out-of-fold probabilities of the benches' reference classifier: standardised logistic regression,
    5 folds stratified and grouped (a group never predicts itself)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    return cross_val_predict(model, features, labels, groups=groups, cv=folds, method="predict_proba")


def pooled_sd(groups: Sequence[Sequence[float]]) -> float:
    """Pooled within-group standard deviation of groups of >= 2 values (nan without any):
    ``train.compare.pooled_spread``'s, as a number."""
    spread = pooled_spread([[float(v) for v in g] for g in groups])
    return math.nan if spread is None else spread[0]


def stop_server(server: subprocess.Popen) -> None:
    """Terminate a dashboard process a bench started; kill it when it has not stopped within 10 s."""
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
