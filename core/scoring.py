"""Suspicious-label scores: pure functions on ``labels`` and out-of-sample ``pred_probs`` arrays.

cleanlab does the counting (confident joint, ``find_label_issues``, self-confidence, normalised
margin); this module adds what it lacks for datasets with several images per person:

* ``noise_prior``    P(true | given) from cleanlab's calibrated confident joint: how often each
  given label is wrong, and what it should be. It is the prior of every posterior below.
* ``image_scores``   one row per image: the posterior that its label is wrong; cleanlab says how
  many images are issues, the posterior says which.
* ``group_scores``   one row per person (group) for person-scope attributes: the images are
  evidence for one true class, so a mislabelled person is flagged once with all its images.
* ``mask_swap_scores`` one row per person holding both classes of a pair (incorrect/not_wear):
  the log-likelihood ratio of the swapped against the given assignment, plus a prior.
* ``model_disagreement`` a second signal when several models scored the same images.
* ``review_queue``   all of the above in one ranked table; ``queue_items`` expands it to one row
  per (image, attribute) for storage; ``array_issues`` is the array CLI's table.

The score, everywhere: the posterior probability that the given label (for a swap: the given
assignment of the pair) is wrong, given the model's out-of-sample probabilities and cleanlab's
estimated noise rates. Scores are probabilities in [0, 1], comparable across attributes and
levels; higher means more suspicious.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from cleanlab.count import compute_confident_joint
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_normalized_margin_for_each_label, get_self_confidence_for_each_label

EPS = 1e-4  # probability floor before logs: bounds how far one image can rule a class out


def check_pred_probs(pred_probs: Any, n: int | None = None, name: str = "pred_probs") -> np.ndarray:
    """Validate probabilities: shape (n, k) with k >= 2, finite, in [0, 1], rows summing to 1 (±1e-3).

    Returns float64 (n, k) with rows renormalised exactly; raises ``ValueError`` naming the problem.
    """
    probs = np.asarray(pred_probs)
    if probs.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, k), got shape {probs.shape}")
    if n is not None and probs.shape[0] != n:
        raise ValueError(f"{name} has {probs.shape[0]} rows but labels has {n}")
    if probs.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 classes (columns), got {probs.shape[1]}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got dtype {probs.dtype}")
    probs = probs.astype(np.float64)
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (probs > 1).any(axis=1)
    bad |= np.abs(probs.sum(axis=1) - 1) > 1e-3
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} row {row} is not a probability distribution ({probs[row].tolist()}); "
                         f"{int(bad.sum())} bad row(s) in all; pass softmax outputs")
    return probs / probs.sum(axis=1, keepdims=True)


def check_inputs(labels: Any, pred_probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``labels`` (n,) int class indices in [0, k) against ``pred_probs`` (n, k).

    Returns (labels int64 (n,), pred_probs float64 (n, k)); raises ``ValueError`` with the reason.
    """
    given = np.asarray(labels)
    if given.ndim != 1:
        raise ValueError(f"labels must be 1-D (n,), got shape {given.shape}")
    if len(given) == 0:
        raise ValueError("labels is empty")
    if not np.issubdtype(given.dtype, np.integer):
        raise ValueError(f"labels must hold integer class indices, got dtype {given.dtype}"
                         " (convert with labels.astype(int) if they are whole numbers)")
    probs = check_pred_probs(pred_probs, len(given))
    outside = (given < 0) | (given >= probs.shape[1])
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(f"labels[{row}] = {given[row]} is not a class index in [0, {probs.shape[1]})")
    return given.astype(np.int64), probs


def check_groups(groups: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate group ids (n,) of any hashable dtype: (codes int64 (n,) in order of first appearance, ids (g,))."""
    ids = np.asarray(groups)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"groups must have shape ({n},) like labels, got {ids.shape}")
    codes, uniques = pd.factorize(ids)
    if (codes < 0).any():
        raise ValueError(f"groups[{int(np.flatnonzero(codes < 0)[0])}] is missing (NaN/None)")
    return codes.astype(np.int64), np.asarray(uniques)


def class_prior(labels: np.ndarray, k: int) -> np.ndarray:
    """Given-label class frequencies (k,) with add-one smoothing, so an absent class is rare, not impossible."""
    return (np.bincount(labels, minlength=k) + 1.0) / (len(labels) + k)


def noise_prior(labels: Any, pred_probs: Any) -> np.ndarray:
    """How often each given label is wrong, and what it should be: (k, k) with ``Q[i, j] = P(true = j | given = i)``.

    Rows of cleanlab's calibrated confident joint (``compute_confident_joint``: per-class thresholds
    = the class's average self-confidence) with add-one smoothing, so no flip is impossible and a
    small dataset gets a wide prior. Rows sum to 1.
    """
    given, probs = check_inputs(labels, pred_probs)
    joint = compute_confident_joint(given, probs, calibrate=True).astype(np.float64)
    return (joint + 1.0) / (joint.sum(axis=1, keepdims=True) + probs.shape[1])


def _softmax(logits: np.ndarray) -> np.ndarray:
    out = np.exp(logits - logits.max(axis=1, keepdims=True))
    return out / out.sum(axis=1, keepdims=True)


def _evidence(probs: np.ndarray, codes: np.ndarray, n_groups: int, prior: np.ndarray,
              independence: float) -> tuple[np.ndarray, np.ndarray]:
    """Tempered log-likelihoods (n_groups, k) of each class from the groups' images, and group sizes (n_groups,).

    An out-of-sample p(j | x) divided by the class prior is proportional to the likelihood p(x | j);
    a group's log-likelihood is the sum over its m images, scaled by ``m ** (independence - 1)``.
    """
    logs = np.zeros((n_groups, probs.shape[1]))
    np.add.at(logs, codes, np.log(np.clip(probs, EPS, 1.0)) - np.log(prior))
    sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    return logs * sizes[:, None] ** (independence - 1.0), sizes


def image_scores(labels: Any, pred_probs: Any, *, filter_by: str = "prune_by_noise_rate") -> pd.DataFrame:
    """Per-image label quality, one row per input row in order.

    ``score`` is the posterior probability that the given label is wrong: the image's likelihoods
    (``pred_probs`` / class prior) times the prior ``noise_prior(labels, pred_probs)[given]``, i.e.
    ``1 - P(true = given | image, given label)``. ``is_issue`` flags the N highest scores, N being the
    number of issues cleanlab's ``find_label_issues(filter_by=...)`` finds: cleanlab says how many,
    the posterior says which (on digits with 10-20 % noise this lifts F1 by about 0.05, see
    BENCHMARKS.md; ``cleanlab_issue`` keeps cleanlab's own choice).

    Parameters
    ----------
    labels : (n,) int, given class indices.
    pred_probs : (n, k) float, out-of-sample probabilities (rows sum to 1).
    filter_by : cleanlab ``find_label_issues`` method (default: cleanlab's default).

    Returns
    -------
    DataFrame with columns ``given``; ``self_confidence`` = P(given); ``normalized_margin`` =
    (P(given) - max other P + 1) / 2 (cleanlab, lower = worse); ``cleanlab_issue``; ``is_issue``;
    ``suggested`` (argmax class), ``suggested_prob``; ``score`` in [0, 1], higher = more suspicious.
    """
    given, probs = check_inputs(labels, pred_probs)
    n, k = probs.shape
    evidence, _ = _evidence(probs, np.arange(n), n, class_prior(given, k), 1.0)
    posterior = _softmax(evidence + np.log(noise_prior(given, probs)[given]))
    score = 1.0 - posterior[np.arange(n), given]
    # n_jobs=1: cleanlab's default forks a process pool, which deadlocks in a process that already runs threads
    # (the score job after torch training: a forked worker hung on a lock); results do not depend on n_jobs.
    cleanlab_issue = find_label_issues(given, probs, filter_by=filter_by, n_jobs=1)
    is_issue = np.zeros(n, dtype=bool)
    is_issue[np.argsort(-score, kind="stable")[: int(cleanlab_issue.sum())]] = True
    self_confidence = get_self_confidence_for_each_label(given, probs)
    return pd.DataFrame({
        "given": given, "self_confidence": self_confidence,
        "normalized_margin": get_normalized_margin_for_each_label(given, probs),
        "cleanlab_issue": cleanlab_issue, "is_issue": is_issue,
        "suggested": probs.argmax(axis=1), "suggested_prob": probs.max(axis=1), "score": score,
    })


def group_scores(labels: Any, pred_probs: Any, groups: Any, *, independence: float = 0.5) -> pd.DataFrame:
    """Person-level verdicts for a person-scope attribute: one row per group, in order of first appearance.

    Model: one true class per person; the given label is a noisy copy of it with the rates of
    ``noise_prior`` (cleanlab's confident joint, from all images); each image is evidence with
    likelihood p(x | j) ∝ pred_probs[j] / prior[j]. The photos of one person are far from
    independent, so the summed log-likelihood is scaled by ``m ** (independence - 1)``: 0.5
    (default) counts m images as sqrt(m) independent views, 0 as one (normalised mean of logs, a
    tempered product of experts), 1 as m. Then

        P(true = j | images, given = i)  ∝  Q[i, j] · exp(tempered log-likelihood of j)

    ``score`` = 1 - P(true = given | ...), and ``is_issue`` when another class is the most probable
    (the Bayes decision), so a wrong person is flagged once, with all its images as evidence, while
    one ambiguous image cannot overturn the prior. A group whose images carry different labels is
    flagged ``inconsistent`` whatever the model says; its ``given`` is the most common label.
    For single images use ``image_scores``: there the posterior alone flags too few (the model, trained
    on the noisy labels, already leans to them), and cleanlab's count of issues does better.

    Parameters
    ----------
    labels : (n,) int; pred_probs : (n, k) float; groups : (n,) any hashable ids (person keys).

    Returns
    -------
    DataFrame columns: ``group`` (id), ``rows`` (tuple of row indices), ``n_images``, ``given``,
    ``inconsistent``, ``self_confidence`` (P(given) from the images alone), ``suggested`` and
    ``suggested_prob`` (argmax of the images alone), ``n_against`` (images whose own argmax differs
    from ``given``), ``score`` in [0, 1], ``is_issue``, ``probs`` ((k,) images-only distribution).
    """
    given, probs = check_inputs(labels, pred_probs)
    codes, ids = check_groups(groups, len(given))
    n_groups, k = len(ids), probs.shape[1]
    prior = class_prior(given, k)
    evidence, sizes = _evidence(probs, codes, n_groups, prior, independence)
    from_images = _softmax(evidence + np.log(prior))
    votes = np.zeros((n_groups, k))
    np.add.at(votes, (codes, given), 1.0)
    group_given = (votes + 1e-6 * from_images).argmax(axis=1)  # the mode; ties go to the more probable class
    inconsistent = (votes > 0).sum(axis=1) > 1
    posterior = _softmax(evidence + np.log(noise_prior(given, probs)[group_given]))
    against = np.bincount(codes, weights=probs.argmax(axis=1) != group_given[codes], minlength=n_groups)
    order = np.argsort(codes, kind="stable")
    rows = np.split(order, np.cumsum(sizes.astype(int))[:-1])
    return pd.DataFrame({
        "group": ids, "rows": [tuple(int(i) for i in r) for r in rows], "n_images": sizes.astype(int),
        "given": group_given, "inconsistent": inconsistent,
        "self_confidence": from_images[np.arange(n_groups), group_given],
        "suggested": from_images.argmax(axis=1), "suggested_prob": from_images.max(axis=1),
        "n_against": against.astype(int), "score": 1.0 - posterior[np.arange(n_groups), group_given],
        "is_issue": (posterior.argmax(axis=1) != group_given) | inconsistent, "probs": list(from_images),
    })


def mask_swap_scores(labels: Any, pred_probs: Any, groups: Any, *, pair: tuple[int, int] = (1, 2),
                     prior_log_odds: float | None = None) -> pd.DataFrame:
    """Swapped pairs within a person: were classes ``pair`` (incorrect, not_wear) exchanged?

    For a group with images A given ``pair[0]`` and images B given ``pair[1]``::

        log_ratio = sum_A log p(pair[1]) + sum_B log p(pair[0]) - sum_A log p(pair[0]) - sum_B log p(pair[1])

    is the log-likelihood ratio of the swapped against the given assignment (probabilities
    floored at ``EPS``); one misread image cannot make it large, both sides must favour the other
    class. A swap is one event flipping both images, so its prior odds are those of one flip: by
    default the geometric mean of the two directions' flip odds in ``noise_prior`` (cleanlab's
    confident joint), ``(log(Q[a,b]/Q[a,a]) + log(Q[b,a]/Q[b,b])) / 2``. Then ``swap_prob =
    sigmoid(log_ratio + prior_log_odds)`` = P(swapped | images), and ``is_issue = swap_prob > 0.5``.

    Returns one row per group holding both classes (first appearance order): ``group``,
    ``rows_first`` and ``rows_second`` (tuples of row indices), ``log_ratio``, ``swap_prob``, ``is_issue``.
    """
    given, probs = check_inputs(labels, pred_probs)
    codes, ids = check_groups(groups, len(given))
    first, second = pair
    logs = np.log(np.clip(probs, EPS, 1.0))
    sign = np.where(given == first, 1.0, np.where(given == second, -1.0, 0.0))
    gain = sign * (logs[:, second] - logs[:, first])  # per image: log p(other of pair) - log p(given)
    ratio = np.bincount(codes, weights=gain, minlength=len(ids))
    has_first = np.bincount(codes, weights=given == first, minlength=len(ids)) > 0
    has_second = np.bincount(codes, weights=given == second, minlength=len(ids)) > 0
    if prior_log_odds is None:
        flips = noise_prior(given, probs)
        prior_log_odds = 0.5 * float(np.log(flips[first, second] / flips[first, first])
                                     + np.log(flips[second, first] / flips[second, second]))
    odds = ratio + prior_log_odds
    out = []
    for g in np.flatnonzero(has_first & has_second):
        members = np.flatnonzero(codes == g)
        out.append({"group": ids[g], "rows_first": tuple(int(i) for i in members[given[members] == first]),
                    "rows_second": tuple(int(i) for i in members[given[members] == second]),
                    "log_ratio": float(ratio[g]), "swap_prob": float(1.0 / (1.0 + np.exp(-odds[g]))),
                    "is_issue": bool(odds[g] > 0)})
    columns = ["group", "rows_first", "rows_second", "log_ratio", "swap_prob", "is_issue"]
    return pd.DataFrame(out, columns=columns)


def model_disagreement(pred_probs_list: Sequence[Any], *, method: str = "js") -> np.ndarray:
    """Disagreement of several models on the same items: mean over model pairs, shape (n,) float in [0, 1].

    ``js``: Jensen-Shannon distance (square root of the JS divergence in bits; a metric, 0 for
    identical rows, 1 for disjoint ones). ``tv``: total-variation distance, half the L1 difference.
    Fewer than two models give zeros.
    """
    arrays = [check_pred_probs(p, name=f"pred_probs_list[{i}]") for i, p in enumerate(pred_probs_list)]
    if not arrays:
        raise ValueError("pred_probs_list is empty")
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"all pred_probs must share one shape, got {[a.shape for a in arrays]}")
    if method not in ("js", "tv"):
        raise ValueError(f"unknown disagreement method {method!r} (use 'js' or 'tv')")
    total = np.zeros(len(arrays[0]))
    pairs = list(combinations(arrays, 2))
    for a, b in pairs:
        if method == "tv":
            total += 0.5 * np.abs(a - b).sum(axis=1)
            continue
        middle = 0.5 * (a + b)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_a = np.where(a > 0, a * np.log2(a / middle), 0.0).sum(axis=1)
            kl_b = np.where(b > 0, b * np.log2(b / middle), 0.0).sum(axis=1)
        total += np.sqrt(np.clip(0.5 * (kl_a + kl_b), 0.0, 1.0))
    return total / max(len(pairs), 1)


QUEUE_COLUMNS = ["kind", "attribute", "target", "rows", "given", "suggested", "score", "is_issue", "disagreement",
                 "detail"]


def review_queue(labels: Mapping[str, Any], pred_probs: Mapping[str, Any], groups: Any = None, *,
                 person_scope: Collection[str] = (), swap: tuple[str, int, int] | None = None,
                 independence: float = 0.5) -> pd.DataFrame:
    """One ranked queue over attributes: flagged first, then by ``score`` (P(given label is wrong)), descending.

    Parameters
    ----------
    labels : attribute -> (n,) int class indices, all for the same n images.
    pred_probs : attribute -> (n, k) float, or a list of such arrays from several models (their mean
        is scored and ``model_disagreement`` fills the ``disagreement`` column; else NaN).
    groups : (n,) person ids; required when ``person_scope`` or ``swap`` is given.
    person_scope : attributes decided per person (``group_scores``), e.g. {"gender", "age_group"}.
    swap : (attribute, first, second), e.g. ("mask", 1, 2): flagged swaps (``mask_swap_scores``)
        enter the queue and replace the image rows of their images for that attribute.

    Returns
    -------
    DataFrame, one row per unit: ``kind`` (image | person | swap), ``attribute``, ``target`` (row
    index for an image, group id otherwise), ``rows`` (tuple of row indices: the evidence),
    ``given``, ``suggested`` (class indices; a swap's are those of its images given the pair's first
    class, listed first in ``rows``), ``score`` in [0, 1], ``is_issue``, ``disagreement``, ``detail``
    (dict: probabilities and the numbers behind the verdict). Only flagged swaps get a row.
    """
    if (person_scope or swap) and groups is None:
        raise ValueError("groups are needed for person-scope attributes and swaps")
    frames = []
    for attribute, given in labels.items():
        raw = pred_probs[attribute]
        models = list(raw) if isinstance(raw, list | tuple) else [raw]
        probs = np.mean([check_pred_probs(m, len(np.asarray(given))) for m in models], axis=0)
        spread = model_disagreement(models) if len(models) > 1 else np.full(len(probs), np.nan)
        if attribute in person_scope:
            table = group_scores(given, probs, groups, independence=independence)
            frames.append(pd.DataFrame({
                "kind": "person", "attribute": attribute, "target": table["group"], "rows": table["rows"],
                "given": table["given"], "suggested": table["suggested"], "score": table["score"],
                "is_issue": table["is_issue"], "disagreement": [spread[list(r)].mean() for r in table["rows"]],
                "detail": [{"probabilities": p.round(4).tolist(), "n_images": int(n), "n_against": int(a),
                            "inconsistent": bool(i)}
                           for p, n, a, i in table[["probs", "n_images", "n_against", "inconsistent"]].itertuples(
                               index=False, name=None)]}))
            continue
        table = image_scores(given, probs)
        keep = np.ones(len(table), bool)
        if swap is not None and swap[0] == attribute:
            swaps = mask_swap_scores(given, probs, groups, pair=(swap[1], swap[2]))
            swaps = swaps[swaps["is_issue"]]
            rows = [r1 + r2 for r1, r2 in zip(swaps["rows_first"], swaps["rows_second"])]
            for r in rows:
                keep[list(r)] = False
            frames.append(pd.DataFrame({
                "kind": "swap", "attribute": attribute, "target": swaps["group"], "rows": rows, "given": swap[1],
                "suggested": swap[2], "score": swaps["swap_prob"], "is_issue": True,
                "disagreement": [spread[list(r)].mean() for r in rows],
                "detail": [{"log_ratio": round(x, 3), "pair": [swap[1], swap[2]], "n_first": len(r)}
                           for x, r in zip(swaps["log_ratio"], swaps["rows_first"])]}))
        table = table[keep]
        frames.append(pd.DataFrame({
            "kind": "image", "attribute": attribute, "target": table.index, "rows": [(i,) for i in table.index],
            "given": table["given"], "suggested": table["suggested"], "score": table["score"],
            "is_issue": table["is_issue"], "disagreement": spread[table.index],
            "detail": [{"probabilities": probs[i].round(4).tolist(), "normalized_margin": round(float(m), 4)}
                       for i, m in zip(table.index, table["normalized_margin"])]}))
    queue = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    if queue is None:
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    queue["is_issue"] = queue["is_issue"].astype(bool)
    queue = queue.sort_values(["is_issue", "score"], ascending=[False, False], kind="stable")
    return queue[QUEUE_COLUMNS].reset_index(drop=True)


def queue_items(queue: pd.DataFrame) -> pd.DataFrame:
    """Expand a ``review_queue`` to one row per (image row, attribute), for ``LabelStore.save_scores``.

    A person's or swap's verdict, score and suggestion go to each of its images (a swap's second
    images get the pair reversed). Columns: ``row``, ``attribute``, ``kind``, ``target``, ``given``,
    ``suggested``, ``score``, ``is_issue``, ``disagreement``, ``detail``; sorted by (attribute, row).
    """
    out = []
    for unit in queue.itertuples(index=False):
        first = unit.detail["n_first"] if unit.kind == "swap" else len(unit.rows)
        for position, row in enumerate(unit.rows):
            flip = position >= first  # swap: the images given the pair's second class come last in ``rows``
            out.append({"row": int(row), "attribute": unit.attribute, "kind": unit.kind, "target": unit.target,
                        "given": unit.suggested if flip else unit.given,
                        "suggested": unit.given if flip else unit.suggested,
                        "score": unit.score, "is_issue": unit.is_issue, "disagreement": unit.disagreement,
                        "detail": unit.detail})
    columns = ["row", "attribute", "kind", "target", "given", "suggested", "score", "is_issue", "disagreement", "detail"]
    return pd.DataFrame(out, columns=columns).sort_values(["attribute", "row"], kind="stable").reset_index(drop=True)


def array_issues(labels: Any, pred_probs: Any, groups: Any = None) -> pd.DataFrame:
    """The array CLI's table: one row per input row, in order.

    Without groups (``image_scores``): ``index``, ``score`` (posterior probability that the label is
    wrong), ``is_issue``, ``suggested`` (argmax class). With groups (``group_scores``), also
    ``group``, and every row of a group carries the group's verdict: its ``score``, ``is_issue``
    (identical within the group) and ``suggested`` (the argmax of the group's images combined).
    """
    if groups is None:
        table = image_scores(labels, pred_probs)
        return pd.DataFrame({"index": np.arange(len(table)), "score": table["score"].to_numpy(),
                             "is_issue": table["is_issue"].to_numpy(), "suggested": table["suggested"].to_numpy()})
    given, probs = check_inputs(labels, pred_probs)
    codes, _ = check_groups(groups, len(given))
    table = group_scores(given, probs, groups)
    return pd.DataFrame({"index": np.arange(len(given)), "score": table["score"].to_numpy()[codes],
                         "is_issue": table["is_issue"].to_numpy()[codes],
                         "suggested": table["suggested"].to_numpy()[codes], "group": np.asarray(groups)})
