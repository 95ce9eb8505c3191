"""Validation metrics from arrays (no torch, no store): per-head accuracy and confusion, 18-class macro F1.

The competition metric is macro F1 over the combined class ``mask*6 + gender*3 + age_group``
(``schema.encode_class``), computed like ``sklearn.metrics.f1_score(y, pred, average="macro")``:
the average runs over the classes present in the truth or the predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from core.schema import Schema


def predicted_codes(schema: Schema, head_names: Sequence[str], probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Predicted code per target, shape (n,) int64 each, from head probabilities (n, k).

    Multi-head models give each target directly; a single ``class`` head is decoded into its
    targets, so both kinds report the same per-attribute accuracies.
    """
    codes = {name: probs[name].argmax(1).astype(np.int64) for name in head_names}
    if "class" in codes and schema.class_attributes:
        codes.update(schema.decode_class(codes.pop("class")))
    return codes


def classification_metrics(schema: Schema, truth: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict:
    """Metrics of predicted vs true codes (dicts target -> (n,) int64, truth in the evaluation bins).

    Returns JSON-ready values: ``acc_<target>``, ``confusion_<target>`` (rows = truth, columns =
    prediction), and when the schema has a combined class: ``macro_f1``, ``acc_class`` and
    ``f1_per_class`` ({class name: F1} over the classes that occur).
    """
    out: dict = {}
    for name, pred in predicted.items():
        if name not in truth:
            continue
        k = len(schema.target_classes(name))
        out[f"acc_{name}"] = float((pred == truth[name]).mean()) if len(pred) else float("nan")
        out[f"confusion_{name}"] = confusion_matrix(truth[name], pred, labels=list(range(k))).tolist()
    if schema.class_attributes and all(n in predicted and n in truth for n in schema.class_attributes):
        true_class = schema.encode_class({n: truth[n] for n in schema.class_attributes})
        pred_class = schema.encode_class({n: predicted[n] for n in schema.class_attributes})
        present = np.union1d(true_class, pred_class)
        scores = f1_score(true_class, pred_class, labels=present, average=None, zero_division=0)
        names = schema.class_names()
        out["macro_f1"] = float(np.mean(scores)) if len(scores) else float("nan")
        out["acc_class"] = float((true_class == pred_class).mean()) if len(true_class) else float("nan")
        out["f1_per_class"] = {names[int(c)]: round(float(s), 6) for c, s in zip(present, scores)}
    return out
