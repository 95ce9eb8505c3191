"""Builders for dashboard tests and the dashboard benchmark: stores with a score run, without a model.

``add_score_run(store)`` writes a finished score run in the shape ``LabelStore.save_scores`` takes
(one row per labelled image and target: given, suggested, score, is_issue, detail with class
probabilities), flagging a deterministic set of images and people, so the review queue has work.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from core.store import LabelStore


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
            "detail": [json.dumps({"probabilities": dict(zip(classes, map(float, p)))}) for p in probs],
        }))
    run_id = store.create_run("score", {"folds": 2, "model": "synthetic"}, status="running")
    store.save_scores(run_id, pd.concat(frames, ignore_index=True))
    store.update_run(run_id, status="done")
    return run_id
