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

Every verdict first reads the probabilities through ``core.calibration.recalibrate`` (given the folds, each fold's
spread evened first; one temperature and a per-class offset fitted to the given labels, a floor removed, fitted
again), so a class-balanced, focal-loss, label-smoothed, over- or under-confident model gets the verdicts of one
calibrated to the label prior (``calibrate=False`` reads them as given).

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

from core.calibration import recalibrate

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


def shared_evidence(labels: Any, pred_probs: Any, groups: Any) -> float:
    """How much a group's images share their evidence: the intra-class correlation ``rho`` in [0, 1].

    The photos of one person share the cues that mislead a model (face, hair, a look-alike class),
    and how much they share differs from one dataset to the next, so it is measured on the data at
    hand: one-way analysis of variance of each image's centred log-probabilities (``log p - mean_k
    log p``, probabilities floored at ``EPS``) across groups, after removing the mean of the class
    the group's images look like (its argmax; so that neither classes nor wrong labels count as
    shared cues; ``labels`` only validate). ``rho = (MSB - MSW) / (MSB + (m0 - 1)
    MSW)``, summed over classes, clipped to [0, 1] (the textbook estimator for unequal group sizes).
    Groups of one image carry no within-group variance; with no larger group ``rho`` is 0.

    Parameters
    ----------
    labels : (n,) int; pred_probs : (n, k) float; groups : (n,) any hashable ids.
    """
    given, probs = check_inputs(labels, pred_probs)
    codes, ids = check_groups(groups, len(given))
    return _shared_evidence(given, np.log(np.clip(probs, EPS, 1.0)), codes, len(ids))


def _shared_evidence(given: np.ndarray, logs: np.ndarray, codes: np.ndarray, n_groups: int) -> float:
    n, k = logs.shape
    if n <= n_groups or n_groups < 2:
        return 0.0
    centred = logs - logs.mean(axis=1, keepdims=True)
    sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    person = np.zeros((n_groups, k))
    np.add.at(person, codes, centred)
    looks = person.argmax(axis=1)[codes]  # the class a group's images look like, not its label: flips share nothing
    by_class = np.zeros((k, k))
    np.add.at(by_class, looks, centred)
    centred = centred - (by_class / np.maximum(np.bincount(looks, minlength=k), 1)[:, None])[looks]
    means = np.zeros((n_groups, k))
    np.add.at(means, codes, centred)
    means /= sizes[:, None]
    within = ((centred - means[codes]) ** 2).sum() / (n - n_groups)
    between = (sizes[:, None] * (means - centred.mean(axis=0)) ** 2).sum() / (n_groups - 1)
    m0 = (n - (sizes ** 2).sum() / n) / (n_groups - 1)
    denominator = between + (m0 - 1) * within
    return float(np.clip((between - within) / denominator, 0.0, 1.0)) if denominator > 0 else 0.0


def person_probs(pred_probs: Any, codes: np.ndarray, prior: np.ndarray, rho: float,
                 outliers: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Each group's class probabilities from its images, counted as ``m / (1 + (m - 1) rho)`` independent views.

    An out-of-sample p(j | x) divided by the class prior is proportional to the likelihood p(x | j);
    a group's log-likelihood is the sum over its m images, scaled by the design effect ``1 / (1 + (m - 1)
    rho)`` (``rho`` = ``shared_evidence``: 0 counts m independent views, 1 one view, the normalised
    mean of logs); times the prior, renormalised. A group of one image gets its own ``pred_probs``.
    ``outliers`` (``outlier_share``) is the share of images whose probabilities say nothing about their
    group: each image's likelihood (normalised over classes) is read as ``(1 - outliers) L + outliers / k``,
    so no single image can rule a class out (0: the plain likelihood).

    Parameters
    ----------
    pred_probs : (n, k) float; codes : (n,) int group index in [0, g); prior : (k,) class prior; rho : float;
    outliers : float in [0, 1).

    Returns
    -------
    (probabilities (g, k) float, effective views (g,) float).
    """
    probs = np.asarray(pred_probs, dtype=np.float64)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    likelihood = np.clip(probs, EPS, 1.0) / prior
    likelihood /= likelihood.sum(axis=1, keepdims=True)
    if outliers > 0:
        likelihood = (1.0 - outliers) * likelihood + outliers / probs.shape[1]
    logs = np.zeros((n_groups, probs.shape[1]))
    np.add.at(logs, codes, np.log(likelihood))
    sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    weight = 1.0 / (1.0 + (sizes - 1.0) * rho)
    return _softmax(logs * weight[:, None] + np.log(prior)), sizes * weight


OUTLIER_GRID = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)  # the search grid of ``outlier_share`` (log-spaced)


def outlier_share(group_labels: np.ndarray, pred_probs: np.ndarray, codes: np.ndarray, prior: np.ndarray,
                  rho: float) -> float:
    """How much one image's probabilities may be trusted within its group: the ``outliers`` of ``person_probs``.

    The product of the images' likelihoods is right when each image's probabilities are calibrated; a model whose
    confidence is wrong for some images (heavy-tailed features, over-confident naive Bayes, folds trained to
    different temperatures) lets one far-off image overrule the rest of a person. The share is chosen from
    ``OUTLIER_GRID`` by the likelihood of the groups' given labels, each right with probability 1 - eta and else
    any other class, eta = the share of groups cleanlab flags on their mean probabilities (at least one group):
    the value under which the people's probabilities best predict their own labels (the principle
    ``core.calibration`` fits (a, b) by, one level up). The share is one more parameter, so it must earn its place
    by the Bayesian information criterion: a share above 0 is kept only when it raises the log-likelihood by more
    than ``log(g) / 2`` (g groups), else 0 (every image read as it is: a calibrated model keeps its verdicts).
    Ties go to the smaller share. Read from recalibrated probabilities it is as invariant as they are.

    Parameters
    ----------
    group_labels : (g,) int; pred_probs : (n, k); codes : (n,) group index; prior : (k,); rho : float.
    """
    n_groups, k = len(group_labels), pred_probs.shape[1]
    mean = np.zeros((n_groups, k))
    np.add.at(mean, codes, pred_probs)
    mean /= np.bincount(codes, minlength=n_groups)[:, None]
    eta = max(float(_count_issues(group_labels, mean).mean()), 1.0 / n_groups)
    values = []
    for share in OUTLIER_GRID:
        given = person_probs(pred_probs, codes, prior, rho, share)[0][np.arange(n_groups), group_labels]
        values.append(float(np.log((1.0 - eta) * given + eta * (1.0 - given) / max(k - 1, 1)).sum()))
    best = int(np.argmax(values))  # the first of equals: the smaller share
    return OUTLIER_GRID[best] if values[best] - values[0] > 0.5 * np.log(n_groups) else 0.0


def top_n(score: np.ndarray, n: int) -> np.ndarray:
    """(len(score),) bool: the ``n`` highest scores (ties: first rows first)."""
    flags = np.zeros(len(score), dtype=bool)
    flags[np.argsort(-score, kind="stable")[: max(int(n), 0)]] = True
    return flags


def image_scores(labels: Any, pred_probs: Any, *, filter_by: str = "prune_by_noise_rate",
                 calibrate: bool = True, folds: Any = None) -> pd.DataFrame:
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

    calibrate : first read ``pred_probs`` through ``core.calibration.recalibrate`` (one temperature and a
        per-class offset fitted to the given labels), so the verdict does not depend on the model's
        calibration (see that module for what it assumes); every column below is then computed on the
        recalibrated probabilities, and ``attrs["calibration"]`` holds the fit (None with ``calibrate=False``).
    folds : (n,) the cross-validation fold each image was scored in (optional): each fold's spread is evened first
        (``core.calibration.fold_evening``), for folds whose models differ in temperature.

    Returns
    -------
    DataFrame with columns ``given``; ``self_confidence`` = P(given); ``normalized_margin`` =
    (P(given) - max other P + 1) / 2 (cleanlab, lower = worse); ``cleanlab_issue``; ``is_issue``;
    ``suggested`` (argmax class), ``suggested_prob``; ``score`` in [0, 1], higher = more suspicious.
    """
    given, probs = check_inputs(labels, pred_probs)
    calibration = None
    if calibrate:
        probs, calibration = recalibrate(given, probs, folds)
    n, k = probs.shape
    evidence = np.log(np.clip(probs, EPS, 1.0)) - np.log(class_prior(given, k))  # log p(x | j) + const
    posterior = _softmax(evidence + np.log(noise_prior(given, probs)[given]))
    score = 1.0 - posterior[np.arange(n), given]
    # n_jobs=1: cleanlab's default forks a process pool, which deadlocks in a process that already runs threads
    # (the score job after torch training: a forked worker hung on a lock); results do not depend on n_jobs.
    cleanlab_issue = find_label_issues(given, probs, filter_by=filter_by, n_jobs=1)
    is_issue = top_n(score, int(cleanlab_issue.sum()))
    self_confidence = get_self_confidence_for_each_label(given, probs)
    table = pd.DataFrame({
        "given": given, "self_confidence": self_confidence,
        "normalized_margin": get_normalized_margin_for_each_label(given, probs),
        "cleanlab_issue": cleanlab_issue, "is_issue": is_issue,
        "suggested": probs.argmax(axis=1), "suggested_prob": probs.max(axis=1), "score": score,
    })
    table.attrs["calibration"] = calibration
    return table


def group_scores(labels: Any, pred_probs: Any, groups: Any, *, rho: float | None = None,
                 outliers: float | None = None, calibrate: bool = True, folds: Any = None) -> pd.DataFrame:
    """Person-level verdicts for a person-scope attribute: one row per group, in order of first appearance.

    One true class per person, one given label (the mode of its images' labels); every parameter is
    estimated from the data at hand:

    * how much a person's images share their evidence, ``rho`` (``shared_evidence``, unless given);
    * the person's class probabilities ``person_probs``: its images counted as ``m / (1 + (m - 1) rho)``
      independent views (the design effect), so near-identical photos are not m opinions;
    * how far one image may be trusted, ``outliers`` (``outlier_share``, unless given): the share of images read
      as saying nothing, chosen by how well the people's probabilities predict their own labels, so one
      over-confident photo cannot overrule the rest of its person (0 on well-calibrated models);
    * how many people to flag, N: the median of three estimates (``issue_counts``): cleanlab's
      ``find_label_issues`` on the people's mean probabilities (confident learning at person level,
      per-class thresholds, so a hard majority-class person is not a flag just for being hard),
      cleanlab per image + majority vote, and the expected number under the posterior with
      cleanlab's person-level confident joint as the noise prior;
    * which people: the N with the highest ``score`` = 1 - P(given) of ``person_probs``. Measured
      across regimes in BENCHMARKS.md ("Person level across regimes").

    A group whose images carry different labels is flagged ``inconsistent`` whatever the model says.
    When every group has one image this is exactly ``image_scores`` (its posterior score, its flags).

    Parameters
    ----------
    labels : (n,) int; pred_probs : (n, k) float; groups : (n,) any hashable ids (person keys).
    rho : float in [0, 1] to override the estimate (0: images independent, 1: one view per person).
    outliers : float in [0, 1) to override ``outlier_share`` (0: every image's likelihood as it is).
    calibrate : first read ``pred_probs`` through ``core.calibration.recalibrate`` (default; it says what it
        assumes). Every flag, score, suggestion, ``rho``, ``outliers`` and count is then unchanged by a per-class
        rescaling or a power of the probabilities; label smoothing (its floor removed) approximately ("Person level
        across calibrations"). ``folds`` : (n,) each image's cross-validation fold (optional; ``image_scores``).

    Returns
    -------
    DataFrame columns: ``group`` (id), ``rows`` (tuple of row indices), ``n_images``, ``views``
    (effective independent views), ``given``, ``inconsistent``, ``self_confidence`` (P(given) of the
    person's probabilities), ``suggested`` and ``suggested_prob`` (their argmax), ``n_against`` (images
    whose own argmax differs from ``given``), ``score`` in [0, 1], ``is_issue``, ``probs`` ((k,) the
    person's probabilities). ``attrs["rho"]`` holds the ``rho`` used, ``attrs["outliers"]`` the share,
    ``attrs["counts"]`` the three counts, ``attrs["calibration"]`` the ``core.calibration.Calibration`` fitted
    (None with ``calibrate=False``).
    """
    given, probs = check_inputs(labels, pred_probs)
    codes, ids = check_groups(groups, len(given))
    n_groups, k = len(ids), probs.shape[1]
    calibration = None
    if calibrate:
        probs, calibration = recalibrate(given, probs, folds, codes)
    prior = class_prior(given, k)
    if rho is None:
        rho = _shared_evidence(given, np.log(np.clip(probs, EPS, 1.0)), codes, n_groups)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    sizes = np.bincount(codes, minlength=n_groups)
    combined, views, group_given, inconsistent, outliers = _pool(given, probs, codes, prior, rho, outliers)
    if (sizes == 1).all():  # one image a group: the per-image verdict
        images = image_scores(given, probs, calibrate=False).iloc[np.argsort(codes)]
        score, flagged = images["score"].to_numpy(), images["is_issue"].to_numpy()
    else:
        score = 1.0 - combined[np.arange(n_groups), group_given]
        counts = issue_counts(given, probs, codes, group_given, combined, prior)
        flagged = top_n(score, int(np.median(list(counts.values()))))
    against = np.bincount(codes, weights=probs.argmax(axis=1) != group_given[codes], minlength=n_groups)
    order = np.argsort(codes, kind="stable")
    rows = np.split(order, np.cumsum(sizes)[:-1])
    table = pd.DataFrame({
        "group": ids, "rows": [tuple(int(i) for i in r) for r in rows], "n_images": sizes.astype(int),
        "views": views, "given": group_given, "inconsistent": inconsistent,
        "self_confidence": combined[np.arange(n_groups), group_given],
        "suggested": combined.argmax(axis=1), "suggested_prob": combined.max(axis=1),
        "n_against": against.astype(int), "score": score, "is_issue": flagged | inconsistent,
        "probs": list(combined),
    })
    table.attrs["rho"] = float(rho)
    table.attrs["outliers"] = float(outliers)
    table.attrs["counts"] = {} if (sizes == 1).all() else counts
    table.attrs["calibration"] = calibration
    return table


def _pool(given: np.ndarray, probs: np.ndarray, codes: np.ndarray, prior: np.ndarray, rho: float,
          outliers: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """``group_scores``' pooling: (person probabilities, views, given label per group (the mode of its images'; ties to
    the more probable class), inconsistent per group, the outlier share used (``outlier_share`` unless given))."""
    n_groups, k = (int(codes.max()) + 1 if len(codes) else 0), probs.shape[1]
    combined, views = person_probs(probs, codes, prior, rho)
    votes = np.zeros((n_groups, k))
    np.add.at(votes, (codes, given), 1.0)
    group_given = (votes + 1e-6 * combined).argmax(axis=1)
    if outliers is None:
        several = (np.bincount(codes, minlength=n_groups) > 1).any()
        outliers = outlier_share(group_given, probs, codes, prior, rho) if several else 0.0
    if not 0.0 <= outliers < 1.0:
        raise ValueError(f"outliers must be in [0, 1), got {outliers}")
    if outliers > 0:
        combined, views = person_probs(probs, codes, prior, rho, outliers)
    return combined, views, group_given, (votes > 0).sum(axis=1) > 1, float(outliers)


def issue_counts(labels: np.ndarray, pred_probs: np.ndarray, codes: np.ndarray, group_labels: np.ndarray,
                 group_probs: np.ndarray, prior: np.ndarray) -> dict[str, int]:
    """Three estimates of how many groups are mislabelled; ``group_scores`` flags their median.

    * ``person_mean``: cleanlab's ``find_label_issues`` on the groups' mean probabilities (confident
      learning with one view per person; counts low when a person's probabilities are unsure);
    * ``image_vote``: groups with more than half of their images flagged by cleanlab per image (every
      image a view; counts low or high with how much the images share);
    * ``expected``: the sum over groups of the posterior that the group's label is wrong,
      P(true = j | images, given = i) ∝ Q[i, j] · group_probs[j] / prior[j], Q = ``noise_prior`` of
      the groups (their cleanlab confident joint), the same posterior ``image_scores`` uses per image.

    Each is biased in its own direction on some data (BENCHMARKS.md, "Person level across regimes");
    the median of the three is a vote that none of them has to win alone.

    Parameters
    ----------
    labels : (n,) int; pred_probs : (n, k); codes : (n,) group index; group_labels : (g,) int;
    group_probs : (g, k) (``person_probs``); prior : (k,) class prior of the images.
    """
    n_groups, k = group_probs.shape
    sizes = np.bincount(codes, minlength=n_groups)
    mean = np.zeros((n_groups, k))
    np.add.at(mean, codes, pred_probs)
    share = np.bincount(codes, weights=_count_issues(labels, pred_probs), minlength=n_groups) / sizes
    return {"person_mean": int(_count_issues(group_labels, mean / sizes[:, None]).sum()),
            "image_vote": int((share > 0.5).sum()),
            "expected": int(round(float(wrong_posterior(group_labels, group_probs, prior).sum())))}


def wrong_posterior(group_labels: np.ndarray, group_probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """(g,) the posterior that each group's label is wrong, 1 - P(true = given | images, given), with the groups'
    ``noise_prior`` (their cleanlab confident joint) as the prior: what ``issue_counts``' ``expected`` sums."""
    flips = noise_prior(group_labels, group_probs)
    posterior = _softmax(np.log(np.clip(group_probs, 1e-300, 1.0)) - np.log(prior) + np.log(flips[group_labels]))
    return 1.0 - posterior[np.arange(len(group_labels)), group_labels]


def _count_issues(given: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's ``find_label_issues`` (n,) bool; all False where it cannot run (a class with under 2 rows)."""
    try:
        # n_jobs=1: cleanlab's default forks a process pool, which deadlocks in a process that already runs threads
        return find_label_issues(given, probs, n_jobs=1)
    except ValueError:
        return np.zeros(len(given), dtype=bool)


def mask_swap_scores(labels: Any, pred_probs: Any, groups: Any, *, pair: tuple[int, int] = (1, 2),
                     prior_log_odds: float | None = None, calibrate: bool = True,
                     folds: Any = None) -> pd.DataFrame:
    """Swapped pairs within a person: were classes ``pair`` (incorrect, not_wear) exchanged?

    For a group with images A given ``pair[0]`` and images B given ``pair[1]``::

        log_ratio = sum_A log p(pair[1]) + sum_B log p(pair[0]) - sum_A log p(pair[0]) - sum_B log p(pair[1])

    is the log-likelihood ratio of the swapped against the given assignment (probabilities
    floored at ``EPS``); one misread image cannot make it large, both sides must favour the other
    class. A swap is one event flipping both images, so its prior odds are those of one flip: by
    default the geometric mean of the two directions' flip odds in ``noise_prior`` (cleanlab's
    confident joint), ``(log(Q[a,b]/Q[a,a]) + log(Q[b,a]/Q[b,b])) / 2``. Then ``swap_prob =
    sigmoid(log_ratio + prior_log_odds)`` = P(swapped | images), and ``is_issue = swap_prob > 0.5``.
    With ``calibrate`` (default) the probabilities are first read through ``core.calibration.recalibrate``
    (as ``group_scores``): a per-class rescaling or a power of the probabilities (focal loss flattens them,
    which left the log ratio too small to outweigh the prior) changes no swap verdict; ``folds`` as ``image_scores``.

    Returns one row per group holding both classes (first appearance order): ``group``,
    ``rows_first`` and ``rows_second`` (tuples of row indices), ``log_ratio``, ``swap_prob``, ``is_issue``.
    """
    given, probs = check_inputs(labels, pred_probs)
    codes, ids = check_groups(groups, len(given))
    if calibrate:
        probs, _ = recalibrate(given, probs, folds, codes)
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


PAIR_RULE = "one image of each of the pair per person: the swap test decides"


def pair_rule(labels: Any, suggested: Any, groups: Any, pair: tuple[int, int]) -> np.ndarray:
    """(n,) bool: image flags to leave to the swap test (``mask_swap_scores``) rather than raise on their own.

    Each person is photographed once per class of the pair, so one image "should be" the partner
    class (``not_wear`` -> ``incorrect``) would give its person two of one class and none of the
    other: either both images are exchanged, which the swap test weighs with both images, or the
    model is wrong (on the demo: chin beards read as a mask on the chin). True for rows given a
    class of the pair, suggested the other one, whose group holds both classes of the pair; flags
    towards any other class (a ``not_wear`` photo showing a worn mask) stay.

    Parameters
    ----------
    labels : (n,) int given; suggested : (n,) int suggested class; groups : (n,) ids; pair : two class indices.
    """
    given, other = np.asarray(labels), np.asarray(suggested)
    codes, ids = check_groups(groups, len(given))
    holds = [np.bincount(codes, weights=given == c, minlength=len(ids)) > 0 for c in pair]
    both = (holds[0] & holds[1])[codes]
    return both & np.isin(given, pair) & np.isin(other, pair) & (other != given)


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
                 calibrate: bool = True, folds: Any = None) -> pd.DataFrame:
    """One ranked queue over attributes: flagged first, then by ``score`` (P(given label is wrong)), descending.
    With ``calibrate`` each attribute's probabilities are recalibrated once (``core.calibration``) and every
    verdict reads those (``folds``: see ``image_scores``); ``calibrate=False`` when the caller already did it.

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
        if calibrate:  # one fit an attribute: the verdicts below read the same recalibrated probabilities
            probs, _ = recalibrate(*check_inputs(given, probs), folds, groups)
        if attribute in person_scope:
            table = group_scores(given, probs, groups, calibrate=False)
            counts, flagged = {k: int(v) for k, v in table.attrs["counts"].items()}, int(table["is_issue"].sum())
            frames.append(pd.DataFrame({
                "kind": "person", "attribute": attribute, "target": table["group"], "rows": table["rows"],
                "given": table["given"], "suggested": table["suggested"], "score": table["score"],
                "is_issue": table["is_issue"], "disagreement": [spread[list(r)].mean() for r in table["rows"]],
                "detail": [{"probabilities": p.round(4).tolist(), "n_images": int(n), "n_against": int(a),
                            "inconsistent": bool(i), "views": round(float(v), 2), "rho": round(table.attrs["rho"], 3),
                            "count_estimates": counts, "n_flagged": flagged}
                           for p, n, a, i, v in table[["probs", "n_images", "n_against", "inconsistent",
                                                       "views"]].itertuples(index=False, name=None)]}))
            continue
        table = image_scores(given, probs, calibrate=False)
        keep = np.ones(len(table), bool)
        if swap is not None and swap[0] == attribute:
            swaps = mask_swap_scores(given, probs, groups, pair=(swap[1], swap[2]), calibrate=False)
            swaps = swaps[swaps["is_issue"].astype(bool).to_numpy()]  # (an empty frame: object dtype)
            rows = [r1 + r2 for r1, r2 in zip(swaps["rows_first"], swaps["rows_second"])]
            for r in rows:
                keep[list(r)] = False
            frames.append(pd.DataFrame({
                "kind": "swap", "attribute": attribute, "target": swaps["group"], "rows": rows, "given": swap[1],
                "suggested": swap[2], "score": swaps["swap_prob"], "is_issue": True,
                "disagreement": [spread[list(r)].mean() for r in rows],
                "detail": [{"log_ratio": round(x, 3), "pair": [swap[1], swap[2]], "n_first": len(r)}
                           for x, r in zip(swaps["log_ratio"], swaps["rows_first"])]}))
        lifted = np.zeros(len(table), bool)
        if swap is not None and swap[0] == attribute:
            lifted = pair_rule(given, table["suggested"].to_numpy(), groups, (swap[1], swap[2])) & table["is_issue"].to_numpy()
        table = table[keep]
        lifted = lifted[keep]
        frames.append(pd.DataFrame({
            "kind": "image", "attribute": attribute, "target": table.index, "rows": [(i,) for i in table.index],
            "given": table["given"], "suggested": table["suggested"], "score": table["score"],
            "is_issue": table["is_issue"] & ~lifted, "disagreement": spread[table.index],
            "detail": [{"probabilities": probs[i].round(4).tolist(), "normalized_margin": round(float(m), 4),
                        **({"pair_rule": PAIR_RULE} if lift else {})}
                       for i, m, lift in zip(table.index, table["normalized_margin"], lifted)]}))
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


def array_issues(labels: Any, pred_probs: Any, groups: Any = None, folds: Any = None) -> pd.DataFrame:
    """The array CLI's table: one row per input row, in order.

    Without groups (``image_scores``): ``index``, ``score`` (posterior probability that the label is
    wrong), ``is_issue``, ``suggested`` (argmax class). With groups (``group_scores``), also
    ``group``, and every row of a group carries the group's verdict: its ``score``, ``is_issue``
    (identical within the group) and ``suggested`` (the argmax of the group's images combined).
    ``folds`` (n,): the cross-validation fold each row was predicted in (``core.calibration.fold_evening``).
    """
    if groups is None:
        table = image_scores(labels, pred_probs, folds=folds)
        return pd.DataFrame({"index": np.arange(len(table)), "score": table["score"].to_numpy(),
                             "is_issue": table["is_issue"].to_numpy(), "suggested": table["suggested"].to_numpy()})
    given, probs = check_inputs(labels, pred_probs)
    codes, _ = check_groups(groups, len(given))
    table = group_scores(given, probs, groups, folds=folds)
    return pd.DataFrame({"index": np.arange(len(given)), "score": table["score"].to_numpy()[codes],
                         "is_issue": table["is_issue"].to_numpy()[codes],
                         "suggested": table["suggested"].to_numpy()[codes], "group": np.asarray(groups)})
