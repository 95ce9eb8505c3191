"""Grouped label sets for the person-level bench: people whose images share one true class and one given label.

Every regime returns a ``Regime``: given labels (n,), out-of-fold probabilities (n, k) from a classifier trained
on those noisy labels (5 person-grouped folds, so a person never predicts itself), person ids (n,) and which
people's labels are wrong (one bool per person, people numbered 0..g-1 in ``groups``).

Two kinds of data:

* ``simulated``: features in 8 dimensions, class means on a line (ordered classes, neighbours alike) or at the
  corners of a simplex (unordered); each person has a latent offset shared by all its images (``person_sd``: how
  much a person's photos share), and a fraction ``lean`` of people are pushed part or all of the way towards a
  look-alike class (a long-haired man: every photo reads as the other class). Images add their own noise.
  A logistic regression trained on the noisy labels gives the probabilities: a real model, simulated photos.
* ``digits``: scikit-learn's handwritten digits grouped into people of one true digit; a leaning person has each
  image blended with one fixed image of a look-alike digit (the same for all its images).
* ``direct`` (and ``direct-digits``: 10 equal classes): no features, no model; each image's probabilities drawn
  around its true class with no class prior in them (``direct``), as a class-balanced model's are.

Whole people are flipped: binary to the other class, ordered classes to a neighbour, unordered to any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits

from bench.common import out_of_fold


@dataclass
class Regime:
    labels: np.ndarray  # (n,) int given labels, one per image, equal within a person
    pred_probs: np.ndarray  # (n, k) out-of-fold probabilities
    groups: np.ndarray  # (n,) int person ids 0..g-1
    wrong: np.ndarray  # (g,) bool: the person's given label is not its true class
    folds: np.ndarray | None = None  # (n,) the cross-validation fold of each image, where the set has them


@dataclass(frozen=True)
class Setting:
    name: str
    data: str = "simulated"  # simulated | digits | direct | direct-digits (probabilities drawn, no model)
    balance: tuple[float, ...] = (0.5, 0.5)  # class frequencies of people (simulated; digits: 10 equal classes)
    ordered: bool = False  # classes on a line, flips to a neighbour
    sizes: tuple[int, int] = (7, 7)  # images per person, uniform in [lo, hi]
    person_sd: float = 0.0  # spread of the offset a person's images share (0: independent images)
    lean: float = 0.0  # fraction of people pushed towards a look-alike class
    flip: float = 0.04  # fraction of people whose label is flipped
    people: int = 1200
    separation: float = 2.0  # distance between neighbouring class means, in units of the image noise


def flip(true: np.ndarray, k: int, rate: float, ordered: bool, rng: np.random.Generator) -> np.ndarray:
    """Given labels (g,): a fraction ``rate`` of people moved to another class (a neighbour when ``ordered``)."""
    given = true.copy()
    chosen = rng.random(len(true)) < rate
    for p in np.flatnonzero(chosen):
        if ordered:
            options = [c for c in (true[p] - 1, true[p] + 1) if 0 <= c < k]
        else:
            options = [c for c in range(k) if c != true[p]]
        given[p] = rng.choice(options)
    return given


def look_alike(true: np.ndarray, k: int, ordered: bool, rng: np.random.Generator) -> np.ndarray:
    """(g,) the class each person would be mistaken for: a neighbour when ordered, any other class otherwise."""
    return flip(true, k, 1.0, ordered, rng)


def simulated(setting: Setting, seed: int) -> Regime:
    rng = np.random.default_rng(seed)
    k, dims = len(setting.balance), 8
    true = rng.choice(k, size=setting.people, p=np.asarray(setting.balance) / sum(setting.balance))
    if setting.ordered:
        means = np.zeros((k, dims))
        means[:, 0] = np.arange(k) * setting.separation
    else:
        means = np.eye(k, dims) * setting.separation / np.sqrt(2)  # corners of a simplex, neighbours equally far
    offset = rng.normal(0, setting.person_sd, (setting.people, dims))
    leaning = rng.random(setting.people) < setting.lean
    towards = look_alike(true, k, setting.ordered, rng)
    strength = rng.uniform(0.2, 0.9, setting.people)  # some lean only a little, some cross over entirely
    offset[leaning] += strength[leaning, None] * (means[towards[leaning]] - means[true[leaning]])
    sizes = rng.integers(setting.sizes[0], setting.sizes[1] + 1, setting.people)
    groups = np.repeat(np.arange(setting.people), sizes)
    features = means[true[groups]] + offset[groups] + rng.normal(0, 1, (len(groups), dims))
    given = flip(true, k, setting.flip, setting.ordered, rng)
    labels = given[groups]
    return Regime(labels, out_of_fold(features, labels, groups, seed), groups, given != true)


def digits(setting: Setting, seed: int) -> Regime:
    """Digits of one true class grouped into people; leaning people's images blended with one look-alike digit."""
    features, digit = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows, groups, next_id = [], [], 0
    for cls in range(10):
        pool = list(rng.permutation(np.flatnonzero(digit == cls)))
        while pool:
            m = int(rng.integers(setting.sizes[0], setting.sizes[1] + 1))
            if len(pool) < m:
                break
            rows += pool[:m]
            del pool[:m]
            groups += [next_id] * m
            next_id += 1
    rows, groups = np.asarray(rows), np.asarray(groups)
    x, true_image = features[rows].copy(), digit[rows]
    true = np.zeros(next_id, int)
    true[groups] = true_image
    leaning = rng.random(next_id) < setting.lean
    towards = look_alike(true, 10, False, rng)
    strength = rng.uniform(0.3, 0.7, next_id)
    for p in np.flatnonzero(leaning):
        members = np.flatnonzero(groups == p)
        other = features[rng.choice(np.flatnonzero(digit == towards[p]))]
        x[members] = (1 - strength[p]) * x[members] + strength[p] * other
    given = flip(true, 10, setting.flip, False, rng)
    labels = given[groups]
    return Regime(labels, out_of_fold(x, labels, groups, seed), groups, given != true)


def direct(setting: Setting, seed: int) -> Regime:
    """Probabilities drawn directly around the true class, with no class prior in them at all.

    The calibration a model trained with class-balanced sampling has: a person's logits are the true
    class's ``separation`` (unordered: ``separation`` on the true class; ordered: ``-separation (pos - j)^2``
    around a position on the class line) plus a person offset shared by its images (``person_sd``), a
    lean towards the look-alike class (20-90 % of the way) for a fraction ``lean`` of people, and the
    image's own noise; the softmax of those is ``pred_probs``. No classifier is trained: what the
    probabilities carry does not depend on the labels or the class frequencies. Digits settings use 10
    equally frequent unordered classes.
    """
    rng = np.random.default_rng(seed)
    balance = (0.1,) * 10 if setting.data == "direct-digits" else setting.balance
    k = len(balance)
    true = rng.choice(k, size=setting.people, p=np.asarray(balance) / sum(balance))
    towards = look_alike(true, k, setting.ordered, rng)
    leaning = rng.random(setting.people) < setting.lean
    strength = np.where(leaning, rng.uniform(0.2, 0.9, setting.people), 0.0)
    sizes = rng.integers(setting.sizes[0], setting.sizes[1] + 1, setting.people)
    groups = np.repeat(np.arange(setting.people), sizes)
    n = len(groups)
    if setting.ordered:
        pos = true + strength * (towards - true) + rng.normal(0, 0.4 * setting.person_sd, setting.people)
        pos = pos[groups] + rng.normal(0, 0.4, n)
        logits = -setting.separation * (pos[:, None] - np.arange(k)[None, :]) ** 2
    else:
        centre = np.eye(k)[true] * (1 - strength[:, None]) + np.eye(k)[towards] * strength[:, None]
        logits = setting.separation * centre[groups] + rng.normal(0, setting.person_sd, (setting.people, k))[groups]
        logits += rng.normal(0, 1, (n, k))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    given = flip(true, k, setting.flip, setting.ordered, rng)
    return Regime(given[groups], probs / probs.sum(axis=1, keepdims=True), groups, given != true)


def make(setting: Setting, seed: int) -> Regime:
    if setting.data.startswith("direct"):
        return direct(setting, seed)
    return digits(setting, seed) if setting.data == "digits" else simulated(setting, seed)
