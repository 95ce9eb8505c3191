"""What a model's probabilities carry, measured on the data: one temperature and a per-class offset.

Every verdict in ``core.scoring`` reads a probability as P(true class | image) under the label prior, the
quantity a model trained with plain cross-entropy on the given labels estimates. Models trained otherwise
do not: class-balanced sampling removes the prior, focal loss and label smoothing flatten the
probabilities, a long training run sharpens them. ``recalibrate`` maps any such probabilities back to
that reading by fitting, on the out-of-sample probabilities and the given labels themselves,

    q_j(x) = softmax_j(a * log p_j(x) + b_j)

by maximum likelihood of the given labels (``a`` > 0 one temperature, ``b`` (k,) a log-offset per class,
``b`` centred to sum 0). The negative log-likelihood is convex in (a, b), so the fit has one optimum.

Assumptions, and what follows from them:

* The model's probabilities are a monotone per-class rescaling and a power of calibrated ones
  (``p_j ∝ w_j q_j^(1/a)``); label noise is a minority of each class (most given labels are right),
  so the fitted q is calibrated to the given labels, as a model fit to them by cross-entropy is.
* Invariance: multiplying every row's probabilities by one per-class factor and renormalising, or
  raising them to one power and renormalising, changes ``log p`` only by a per-class constant and a
  common scale, which (a, b) absorb. The fitted q — and every verdict computed from it — is the same
  (to the optimiser's tolerance, for probabilities above ``FLOOR``).
* A floor: label smoothing mixes a uniform share into every prediction, and tools that export probabilities
  often clip them, so no probability goes below some floor, which carries no evidence and which no temperature
  or offset can remove. ``recalibrate`` estimates each class's floor after the first fit (``floor_of``: the
  lower end of the class's probabilities, from the two smallest), removes it and fits (a, b) again
  (``remove_floor``); read from the calibrated probabilities, the floor is the same whatever rescaling or power
  came before, so the invariance above holds for the whole. A mixture with the uniform is undone up to that
  estimate and refit. With no floor mixed in, a class's lower end is its least likely images' (with a strong
  prior it can be a few percent): the step sharpens them a little and the refit takes back what the given labels
  do not support; the verdicts hardly move (tests/test_calibration.py; measured in BENCHMARKS.md, "Person level
  across calibrations"). On a handful of images the gap between the two smallest is wide and nothing is removed.
  A model trained with smoothing has no hard floor (its smallest probabilities on the demo are 1e-4 to 1e-3).
* Exact zeros: a model that says 0 (k nearest neighbours: no neighbour of the class; a float32 export that
  underflowed) says "less than the least I can say", not "impossible". Before the first fit each zero is read as
  half the least the model ever says of that class beside the image's other classes (``fill_zeros``: from the
  least log-ratios, ``zero_gaps``; "half" is ``remove_floor``'s tie rule), so one zero neither rules a class out
  nor drags the temperature fit. Probabilities without zeros are untouched; with zeros a per-class rescaling still
  changes nothing (the fill is built from ratios), a power only approximately (the half).
* Folds: out-of-fold probabilities come from one model per cross-validation fold, and the folds' models need not
  share a temperature. With ``folds`` given, each fold's log-probabilities are first rescaled to a common spread
  (``fold_evening``: the median absolute deviation of the fold's centred log-probabilities, read without the labels)
  and each fold's per-class medians shifted onto the pooled ones, before the one fit. Not from the labels on
  purpose: a fold's noise rate moves the likelihood fit of its own temperature (on the demo's score runs a fold's
  fitted scale falls as its share of wrong labels rises, Spearman -0.88), so a temperature fitted per fold would
  flatten the very fold whose errors most need finding. The spreads are shrunk towards equal by how much they differ
  beyond their own sampling noise (estimated from quarters of each fold's people), so folds of one temperature are
  left as they are, and the evened probabilities are used only when they predict the given labels better by more
  than the BIC penalty (fold models that differ otherwise than by a temperature, a single tree's leaves, keep
  theirs). A per-class rescaling or a power of all the probabilities changes no spread ratio.
* Not invariant: a miscalibration that differs from image to image. It is met only as well as one temperature
  and offset fit it (``core.scoring.group_scores`` bounds how much one image can say, see ``outlier_share``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize

FLOOR = 1e-12  # probabilities floored before logs (far below scoring.EPS: no verdict depends on it)


@dataclass(frozen=True)
class Calibration:
    scale: float  # a: the inverse temperature applied to log p
    bias: tuple[float, ...]  # b: per-class log-offsets, summing to 0
    floor: tuple[float, ...] | None = None  # per class: the floor removed after (a, b) (``remove_floor``), or none
    refit: Calibration | None = None  # the (a, b) fitted again after the floor was removed
    zeros: tuple[tuple[float, ...], ...] | None = None  # ``zero_gaps`` read off the data (``fill_zeros``), or none
    folds: tuple[tuple[Any, float, tuple[float, ...]], ...] | None = None  # ``fold_evening``: (fold, factor, shifts)

    def apply(self, pred_probs: np.ndarray, folds: Any = None) -> np.ndarray:
        """(n, k) recalibrated probabilities: zeros filled, each fold's spread evened (``folds``, (n,), needed when the
        fit had folds), ``softmax(a log p + b)``, then the floor removed and refitted; rows sum to 1."""
        if self.zeros is not None:
            pred_probs = fill_zeros(pred_probs, np.asarray(self.zeros, dtype=np.float64))
        if self.folds is not None:
            if folds is None:
                raise ValueError("this calibration was fitted with folds: pass the images' folds")
            pred_probs = even_folds(pred_probs, folds, {f: (factor, shift) for f, factor, shift in self.folds})
        logits = self.scale * np.log(np.clip(pred_probs, FLOOR, 1.0)) + np.asarray(self.bias)
        logits -= logits.max(axis=1, keepdims=True)
        out = np.exp(logits)
        out /= out.sum(axis=1, keepdims=True)
        if self.floor is None or self.refit is None:
            return out
        return self.refit.apply(remove_floor(out, np.asarray(self.floor)))


IDENTITY_SCALE = 1.0


def fit_calibration(labels: np.ndarray, pred_probs: np.ndarray) -> Calibration:
    """Maximum-likelihood (a, b) of the given ``labels`` (n,) int under ``softmax(a log p + b)``, ``pred_probs`` (n, k).

    Classes absent from ``labels`` keep the offset the others imply (their gradient pushes them down only
    as far as the add-one count below lets them: each class counts one pseudo-image spread over all
    images, so no class's probability is driven to zero). With fewer than two classes present the
    identity (a = 1, b = 0) is returned.
    """
    given = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(pred_probs, dtype=np.float64)
    n, k = probs.shape
    logs = np.log(np.clip(probs, FLOOR, 1.0))
    logs -= logs.mean(axis=1, keepdims=True)  # centred: a per-row constant means nothing to a softmax
    if n == 0 or len(np.unique(given)) < 2:
        return Calibration(IDENTITY_SCALE, (0.0,) * k)
    target = np.zeros((n, k))
    target[np.arange(n), given] = 1.0
    target = (target + 1.0 / n) / (1.0 + k / n)  # add-one pseudo-count per class, spread over the images

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        scale, bias = np.exp(theta[0]), theta[1:]
        logits = scale * logs + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_q = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        residual = np.exp(log_q) - target  # d loss / d logits, per row
        value = -(target * log_q).sum() / n
        grad_scale = (residual * logs).sum() * scale / n  # chain rule through scale = exp(theta[0])
        grad_bias = residual.sum(axis=0) / n
        return float(value), np.concatenate([[grad_scale], grad_bias])

    theta0 = np.zeros(k + 1)
    fitted = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-10, "ftol": 1e-14})
    bias = fitted.x[1:] - fitted.x[1:].mean()
    return Calibration(float(np.exp(fitted.x[0])), tuple(float(b) for b in bias))


def remove_floor(probs: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``probs`` (n, k) less a per-class ``floor`` (k,), renormalised: a probability that no image goes below carries
    no evidence about the class (label smoothing mixes a uniform share into every prediction; tools that export
    probabilities often clip them). An entry at its class's floor becomes half the class's smallest positive
    difference (a tie at the floor: as sure as the model can say, below every entry above the floor, not infinitely
    sure; the order of every column is kept)."""
    out = probs - floor
    for j in range(out.shape[1]):
        column = out[:, j]
        positive = column[column > 0]
        column[column <= 0] = positive.min() / 2 if len(positive) else FLOOR
    return out / out.sum(axis=1, keepdims=True)


def zero_gaps(probs: np.ndarray) -> np.ndarray | None:
    """(k, k) ``G[j, c]``: the least log-ratio ``log p_j - log p_c`` any image gives with both positive (the least the
    model says of class j next to class c; inf where no image has both); None when no probability is 0."""
    if not (probs <= 0).any():
        return None
    logs = np.log(np.where(probs > 0, probs, 1.0))
    positive = probs > 0
    k = probs.shape[1]
    gaps = np.full((k, k), np.inf)
    for j in range(k):
        for c in range(k):
            both = positive[:, j] & positive[:, c]
            if both.any():
                gaps[j, c] = (logs[both, j] - logs[both, c]).min()
    return gaps


def fill_zeros(probs: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """``probs`` (n, k) with each exact 0 read as half the least the model says of its class (``zero_gaps``): for an
    image's zero in class j, the mean over the image's positive classes c of ``log p_c + G[j, c]``, less log 2; rows
    renormalised. Built from ratios, so a per-class rescaling of the probabilities rescales the filled values alike."""
    positive = probs > 0
    if positive.all():
        return probs
    logs = np.log(np.where(positive, probs, 1.0)) * positive
    finite = np.where(np.isfinite(gaps), gaps, np.log(FLOOR))  # a class never seen beside another: as unlikely as can be
    count = positive.sum(axis=1, keepdims=True)
    filled = (logs.sum(axis=1, keepdims=True) + positive.astype(np.float64) @ finite.T) / np.maximum(count, 1)
    out = np.where(positive, probs, np.exp(filled - np.log(2.0)))
    return out / out.sum(axis=1, keepdims=True)


def floor_of(probs: np.ndarray) -> np.ndarray:
    """(k,) each class's floor: the lower end of its probabilities over the images, estimated from the two smallest
    (``2 x(1) - x(2)``, the textbook endpoint estimate: the minimum less the gap to the next), at least 0 and below
    1 / k. Where the smallest probabilities pile up at a bound (a mixture with the uniform) it is that bound; on a
    handful of images, where the smallest is just one image's, the gap is wide and the floor is 0 (nothing removed)."""
    n, k = probs.shape
    if n < 2:
        return np.zeros(k)
    lowest = np.partition(probs, 1, axis=0)[:2]
    return np.clip(2 * lowest[0] - lowest[1], 0.0, 0.999 / k)


FOLD_PARTS = 4  # each fold's people split in this many parts to measure the sampling noise of its spread


def even_folds(probs: np.ndarray, folds: Any, evening: Mapping[Any, tuple[float, tuple[float, ...]]]) -> np.ndarray:
    """``softmax(factor_f * centred log p + shift_f)`` for each row of fold f (``evening``: ``fold_evening``'s)."""
    keys = list(evening)
    index = pd.Index(keys).get_indexer(np.asarray(folds))
    if (index < 0).any():
        raise ValueError(f"fold {np.asarray(folds)[index < 0][0]!r} is not one of the fitted folds {keys}")
    factor = np.array([evening[key][0] for key in keys])[index]
    shift = np.array([evening[key][1] for key in keys])[index]
    logs = np.log(np.clip(probs, FLOOR, 1.0))
    logits = (logs - logs.mean(axis=1, keepdims=True)) * factor[:, None] + shift
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def _spread(centred: np.ndarray) -> float:
    """log of the median absolute deviation about each class's median; nan where it is 0 (coarse outputs)."""
    spread = float(np.median(np.abs(centred - np.median(centred, axis=0))))
    return float(np.log(spread)) if spread > 0 else float("nan")


def fold_evening(probs: np.ndarray, folds: Any, groups: Any = None) -> dict[Any, tuple[float, tuple[float, ...]]] | None:
    """{fold: (factor on its centred log-probabilities, shift per class)} that evens the folds, read without the
    labels; None where the folds do not differ in spread beyond their sampling noise.

    A fold's spread is the median absolute deviation (about each class's median in the fold) of its images' centred
    log-probabilities; a temperature 1 / t on a fold multiplies it by 1 / t, a per-class rescaling of every image or
    a power of all of them changes no ratio. The factor is the geometric mean spread over the fold's, shrunk towards 1
    (James-Stein): log factor times max(0, 1 - noise / observed), observed = the variance of the folds' log spreads,
    noise = its expected share from sampling alone, measured on ``FOLD_PARTS`` parts of each fold's ``groups`` (people,
    by sorted id; each image its own when None) as the variance of the parts' log spreads over ``FOLD_PARTS``. Scaled,
    each fold's per-class medians are shifted onto the pooled ones (folds of one dataset split by person hold the same
    classes; a fold model's own offsets, or a per-class rescaling applied to folds of different temperatures, would
    otherwise stay fold by fold). The shifts are not shrunk, so such a rescaling changes no verdict exactly.
    None also for one fold, a fold of fewer than 2 ``FOLD_PARTS`` groups, or a spread of 0 (most outputs alike).
    """
    codes, names = pd.factorize(np.asarray(folds), sort=True)
    units = np.arange(len(codes)) if groups is None else pd.factorize(np.asarray(groups), sort=True)[0]
    logs = np.log(np.clip(probs, FLOOR, 1.0))
    centred = logs - logs.mean(axis=1, keepdims=True)
    spreads, noise = [], []
    for f in range(len(names)):
        inside = codes == f
        people = np.unique(units[inside])
        if len(people) < 2 * FOLD_PARTS:
            return None
        part = np.searchsorted(people, units[inside]) % FOLD_PARTS  # people by sorted id, dealt round the parts
        spreads.append(_spread(centred[inside]))
        noise.append(np.var([_spread(centred[inside][part == q]) for q in range(FOLD_PARTS)], ddof=1) / FOLD_PARTS)
    if len(spreads) < 2 or not np.isfinite(spreads + noise).all():  # one fold, or a spread of 0: nothing to even
        return None
    observed = float(np.var(spreads, ddof=1))
    keep = max(0.0, 1.0 - float(np.mean(noise)) / observed) if observed > 0 else 0.0
    if keep == 0.0:
        return None
    factor = np.exp(keep * (np.mean(spreads) - np.asarray(spreads)))
    scaled = centred * factor[codes][:, None]
    shift = np.median(scaled, axis=0) - np.array([np.median(scaled[codes == f], axis=0) for f in range(len(names))])
    return {name: (float(factor[f]), tuple(float(v) for v in shift[f])) for f, name in enumerate(names.tolist())}


def _given_log_likelihood(given: np.ndarray, calibrated: np.ndarray) -> float:
    """The given labels' log-likelihood under ``calibrated`` probabilities."""
    return float(np.log(np.clip(calibrated[np.arange(len(given)), given], FLOOR, 1.0)).sum())


def recalibrate(labels: np.ndarray, pred_probs: np.ndarray, folds: Any = None,
                groups: Any = None) -> tuple[np.ndarray, Calibration]:
    """Probabilities read as P(class | image) under the given labels' prior, whatever the model's own calibration,
    and the ``Calibration`` that maps them.

    Exact zeros are first read as half the least the model says of their class (``fill_zeros``); then
    ``fit_calibration`` (a, b); then each class's floor of the result (``floor_of``) is removed
    (``remove_floor``) and (a, b) fitted again. The floor is read from the calibrated probabilities, not the
    model's, so the whole is as invariant to a per-class rescaling or a power of the probabilities as the first step.
    With ``folds`` ((n,) the cross-validation fold each image was scored in) each fold's spread is first evened
    (``fold_evening``, ``groups`` (n,) the people, for its noise estimate), kept only when the evened probabilities
    predict the given labels better by more than the Bayesian information criterion's ``k log(n) / 2`` a fold past
    the first (a factor and k - 1 shifts; the factors are read without the labels, the labels only decide whether the
    folds differ by a temperature at all: models whose folds differ otherwise, a tree's leaves, keep their
    probabilities). Kept, the result is invariant to one temperature per fold too.
    """
    given = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(pred_probs, dtype=np.float64)
    gaps = zero_gaps(probs)
    zeros = None if gaps is None else tuple(tuple(float(v) for v in row) for row in gaps)
    if gaps is not None:
        probs = fill_zeros(probs, gaps)
    first = fit_calibration(given, probs)
    calibrated = first.apply(probs)
    if folds is not None:
        folds = np.asarray(folds)
        if len(folds) != len(probs):
            raise ValueError(f"folds has {len(folds)} rows but pred_probs has {len(probs)}")
        if (missing := np.flatnonzero(pd.isna(folds.astype(object)))).size:
            raise ValueError(f"folds[{int(missing[0])}] is missing")
        evening = fold_evening(probs, folds, groups)
        if evening is not None:
            evened = even_folds(probs, folds, evening)
            first_evened = fit_calibration(given, evened)
            evened_calibrated = first_evened.apply(evened)
            gain = _given_log_likelihood(given, evened_calibrated) - _given_log_likelihood(given, calibrated)
            if gain > 0.5 * (len(evening) - 1) * probs.shape[1] * np.log(len(given)):  # BIC: a factor, k-1 shifts a fold
                result, fit = _floor_step(given, evened_calibrated, first_evened, None)
                return result, replace(fit, zeros=zeros, folds=tuple((f, a, b) for f, (a, b) in evening.items()))
    return _floor_step(given, calibrated, first, zeros)


def _floor_step(given: np.ndarray, calibrated: np.ndarray, first: Calibration,
                zeros: tuple[tuple[float, ...], ...] | None) -> tuple[np.ndarray, Calibration]:
    """``recalibrate`` after its first fit ``first`` (``calibrated``: its output): each class's floor removed and
    (a, b) fitted again."""
    floor = floor_of(calibrated)
    if len(np.unique(given)) < 2 or not (floor > 0).any():
        return calibrated, Calibration(first.scale, first.bias, zeros=zeros)
    unfloored = remove_floor(calibrated, floor)
    refit = fit_calibration(given, unfloored)
    return refit.apply(unfloored), Calibration(first.scale, first.bias, tuple(float(f) for f in floor), refit, zeros)
