"""What ``train.predict`` wrote, read back without torch (the dashboard's eval-image predictions).

``python -m train predict --out submission.csv`` writes the submission and, beside it,
``submission.probs.csv`` (``probs_file``): one row per eval image, ``ImageID``, then
``<attribute>=<class>`` marginals and ``p<k>`` per combined class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.files import csv_unescape
from core.schema import Schema
from core.store import LabelStore


def probs_file(out: str | Path) -> Path:
    """The per-image probabilities written beside the submission ``out``: ``<out stem>.probs.csv``."""
    return Path(out).with_suffix(".probs.csv")


def latest_predictions(store: LabelStore) -> tuple[int, pd.DataFrame] | None:
    """(run id, table) of the newest finished prediction run's per-image probabilities, or None.

    The table is ``train.predict``'s ``<out>.probs.csv`` indexed by ImageID: ``<attribute>=<class>``
    marginals and ``p<k>`` per combined class. None when no prediction exists or its file is gone.
    """
    runs = store.runs(kind="predict")
    done = runs[runs["status"] == "done"] if len(runs) else runs
    for run in done.itertuples(index=False):
        out = (run.config or {}).get("out")
        probs = probs_file(out) if out else None
        if probs is not None and probs.is_file():
            return int(run.id), csv_unescape(pd.read_csv(probs, dtype={"ImageID": str})).set_index("ImageID")
    return None


def prediction_of(table: pd.DataFrame, schema: Schema, image_id: str) -> pd.DataFrame | None:
    """One eval image's prediction: rows ``target``, ``predicted``, ``probability`` (+ the combined class)."""
    if image_id not in table.index:
        return None
    row = table.loc[image_id]
    out = []
    for target in schema.class_attributes:
        classes = schema.target_classes(target)
        values = [float(row.get(f"{target}={c}", np.nan)) for c in classes]
        best = int(np.nanargmax(values)) if not np.all(np.isnan(values)) else None
        if best is not None:
            out.append({"target": target, "predicted": classes[best], "probability": round(values[best], 3)})
    joint = [c for c in table.columns if c.startswith("p") and c[1:].isdigit()]
    if joint:
        best = int(np.argmax([float(row[c]) for c in joint]))
        names = schema.class_names()
        out.append({"target": "class", "predicted": f"{best} ({names[best]})" if best < len(names) else str(best),
                    "probability": round(float(row[f"p{best}"]), 3)})
    return pd.DataFrame(out)
