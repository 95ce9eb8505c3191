"""Verdicts that do not depend on the model's calibration (``core.calibration``), and that nothing depends on the
order of people, images or classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.calibration import fill_zeros, fit_calibration, recalibrate
from core.scoring import group_scores, image_scores, mask_swap_scores


def grouped(seed: int = 0, people: int = 300, k: int = 3, balance: tuple[float, ...] = (0.7, 0.2, 0.1),
            flip: float = 0.08) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels (n,), probs (n, k), groups (n,) person ids as strings, wrong (people,)): probabilities drawn
    around the true class with no prior, a tenth of people leaning to another class, some people flipped."""
    rng = np.random.default_rng(seed)
    true = rng.choice(k, size=people, p=balance)
    sizes = rng.integers(1, 9, people)
    person = np.repeat(np.arange(people), sizes)
    lean = np.where(rng.random(people) < 0.1, rng.uniform(0.3, 0.9, people), 0.0)
    other = (true + rng.integers(1, k, people)) % k
    centre = np.eye(k)[true] * (1 - lean[:, None]) + np.eye(k)[other] * lean[:, None]
    logits = 2.5 * centre[person] + rng.normal(0, 0.5, (people, k))[person] + rng.normal(0, 1, (len(person), k))
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    wrong = rng.random(people) < flip
    given = np.where(wrong, (true + rng.integers(1, k, people)) % k, true)
    return given[person], probs, np.array([f"p{p:04d}" for p in person]), wrong


def swap_set(seed: int = 0, people: int = 300, rate: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probs, groups): each person 5 images of class 0, one of 1, one of 2 (the demo's mask layout);
    a ``rate`` of people have their 1 and 2 exchanged; probabilities drawn around the true class, no prior."""
    rng = np.random.default_rng(seed)
    true = np.tile([0, 0, 0, 0, 0, 1, 2], people)
    groups = np.repeat(np.arange(people), 7)
    labels = true.copy()
    swapped = np.repeat(rng.random(people) < rate, 7) & (true > 0)
    labels[swapped] = 3 - true[swapped]
    logits = 2.0 * np.eye(3)[true] + rng.normal(0, 1, (len(true), 3))
    probs = np.exp(logits)
    return labels, probs / probs.sum(axis=1, keepdims=True), groups


def rescaled(probs: np.ndarray, factors: list[float], power: float = 1.0) -> np.ndarray:
    out = probs ** power * np.asarray(factors)
    return out / out.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("factors", "power"), [([4.0, 1.0, 0.2], 1.0), ([0.1, 1.0, 10.0], 1.0),
                                                ([1.0, 1.0, 1.0], 2.0), ([3.0, 0.5, 1.0], 0.5)])
def test_per_class_rescaling_and_temperature_change_no_verdict(factors: list[float], power: float) -> None:
    labels, probs, groups, _ = grouped()
    other = rescaled(probs, factors, power)
    assert np.abs(other - probs).max() > 0.05  # the transform really changes the probabilities
    a, b = group_scores(labels, probs, groups), group_scores(labels, other, groups)
    assert a["is_issue"].tolist() == b["is_issue"].tolist()
    assert a["suggested"].tolist() == b["suggested"].tolist()
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-6)
    assert a.attrs["rho"] == pytest.approx(b.attrs["rho"], abs=1e-6)
    assert a.attrs["outliers"] == b.attrs["outliers"]
    images_a, images_b = image_scores(labels, probs), image_scores(labels, other)
    assert images_a["is_issue"].tolist() == images_b["is_issue"].tolist()
    np.testing.assert_allclose(images_a["score"], images_b["score"], atol=1e-6)
    labels, probs, groups = swap_set()
    other = rescaled(probs, factors, power)
    swap_a, swap_b = mask_swap_scores(labels, probs, groups), mask_swap_scores(labels, other, groups)
    assert swap_a["is_issue"].sum() > 10 and swap_a["is_issue"].tolist() == swap_b["is_issue"].tolist()
    np.testing.assert_allclose(swap_a["swap_prob"], swap_b["swap_prob"], atol=1e-6)


def test_calibration_recovers_a_removed_prior_and_temperature() -> None:
    labels, probs, _, _ = grouped(seed=1)
    calibrated, fit = recalibrate(labels, probs)
    # probabilities drawn with no prior: the fit puts the label prior back (the common class gains)
    assert fit.bias[0] > fit.bias[1] > fit.bias[2]
    assert calibrated.mean(axis=0) == pytest.approx(np.bincount(labels) / len(labels), abs=0.01)
    twice, again = recalibrate(labels, calibrated)  # calibrating calibrated probabilities changes (almost) nothing
    assert again.scale == pytest.approx(1.0, abs=1e-4) and np.abs(again.bias).max() < 1e-4
    # the floor step removes what is left of a floor each time: the smallest entries move, by far less than 1e-3
    np.testing.assert_allclose(twice, calibrated, atol=1e-3)


def test_a_floor_mixed_in_is_removed_and_a_model_without_one_is_hardly_changed() -> None:
    """Label smoothing (a mixture with the uniform) after a rescaling: the probabilities and verdicts come back to
    those of no smoothing, far closer than with (a, b) alone; data with no floor keeps its verdicts."""
    moved, moved_without = 0, 0
    for seed in (2, 4, 5):
        labels, probs, groups, _ = grouped(seed=seed, k=2, balance=(0.9, 0.1), flip=0.05)
        plain = recalibrate(labels, probs)[0]
        people = group_scores(labels, probs, groups)["is_issue"]
        for factors in ([1.0, 1.0], [5.0, 1.0]):
            smoothed = 0.8 * rescaled(probs, factors) + 0.1
            fit = recalibrate(labels, smoothed)[1]
            assert fit.floor is not None and min(fit.floor) > 0.01  # the floor was found
            first_only = fit_calibration(labels, smoothed).apply(smoothed)  # (a, b) alone
            error, without = np.abs(fit.apply(smoothed) - plain).max(), np.abs(first_only - plain).max()
            assert error < 0.05 and error < without / 2, (error, without)
            moved += (group_scores(labels, smoothed, groups)["is_issue"] != people).sum()
            moved_without += (group_scores(labels, first_only, groups, calibrate=False)["is_issue"] != people).sum()
    assert moved <= moved_without / 3, (moved, moved_without)
    # no floor mixed in: the least likely images are sharpened a little (the prior's share at them is trimmed, the
    # refit takes back what the labels do not support), and the verdicts hardly move
    labels, probs, groups, _ = grouped(seed=2, k=2, balance=(0.9, 0.1), flip=0.05)
    first_only = fit_calibration(labels, probs).apply(probs)
    people = group_scores(labels, first_only, groups, calibrate=False)
    assert (people["is_issue"] != group_scores(labels, probs, groups)["is_issue"]).sum() == 0
    images = image_scores(labels, first_only, calibrate=False)
    assert (images["is_issue"] != image_scores(labels, probs)["is_issue"]).sum() <= 3


def test_a_handful_of_images_has_no_floor() -> None:
    """The smallest of a few probabilities is an image's, not a floor: nothing is removed (the endpoint estimate)."""
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    labels = np.array([0, 1, 0, 0])
    for n in (1, 2, 3, 4):
        calibrated, fit = recalibrate(labels[:n], probs[:n])
        assert fit.floor is None
        np.testing.assert_allclose(calibrated, fit_calibration(labels[:n], probs[:n]).apply(probs[:n]))


def f1(flags: np.ndarray, wrong: np.ndarray) -> float:
    return 2 * float((flags & wrong).sum()) / max(int(flags.sum() + wrong.sum()), 1)


def test_exact_zeros_are_read_as_less_than_the_least_the_model_says() -> None:
    """A coarse model (probabilities in steps of 1/25, many exact zeros, as k nearest neighbours give): a zero is read
    as half the least the model says of the class, so it neither rules a person out nor drags the temperature;
    reading zeros as 1e-12 (what clipping did) loses people; a per-class rescaling still changes no verdict."""
    with_fill, as_tiny = [], []
    for seed in range(4):
        labels, probs, groups, wrong = grouped(seed=seed)
        coarse = np.round(probs * 25) / 25
        coarse /= coarse.sum(axis=1, keepdims=True)
        assert (coarse == 0).mean() > 0.1
        fit = recalibrate(labels, coarse)[1]
        filled = fill_zeros(coarse, np.asarray(fit.zeros))
        assert fit.zeros is not None and (filled > 0).all() and (filled[coarse == 0] < 1 / 25).all()
        tiny = np.where(coarse == 0, 1e-12, coarse)
        with_fill.append(f1(group_scores(labels, coarse, groups)["is_issue"].to_numpy(), wrong))
        as_tiny.append(f1(group_scores(labels, tiny / tiny.sum(axis=1, keepdims=True), groups)["is_issue"].to_numpy(),
                          wrong))
        a = group_scores(labels, coarse, groups)
        for factors in ([4.0, 1.0, 0.2], [0.1, 1.0, 10.0]):
            b = group_scores(labels, rescaled(coarse, factors), groups)
            assert a["is_issue"].tolist() == b["is_issue"].tolist() and a.attrs["outliers"] == b.attrs["outliers"]
            np.testing.assert_allclose(a["score"], b["score"], atol=1e-6)
    assert np.mean(with_fill) > np.mean(as_tiny) + 0.03, (with_fill, as_tiny)
    no_zeros = recalibrate(*grouped(seed=0)[:2])[1]
    assert no_zeros.zeros is None


def test_outlier_share_is_the_likeliest_on_the_grid_and_helps_an_over_confident_model() -> None:
    """``outliers`` is the grid value under which the people's probabilities best predict their own labels, kept when
    it is worth one parameter by BIC; 0 reads every image's likelihood as it is. Naive Bayes on heavy-tailed photos
    (``bench.independent``: over-confident on the far-off ones) gets a share, and it ranks the wrong people better
    than trusting every image; probabilities drawn around the true class (``grouped``) keep 0."""
    from sklearn.metrics import average_precision_score

    from bench.independent import REGIMES, make
    from core.scoring import OUTLIER_GRID, class_prior, person_probs
    for seed in range(3):
        data = make(REGIMES[-1], "naive Bayes", seed)
        table = group_scores(data.labels, data.pred_probs, data.groups)
        trusting = group_scores(data.labels, data.pred_probs, data.groups, outliers=0.0)
        assert table.attrs["outliers"] in OUTLIER_GRID and table.attrs["outliers"] > 0
        assert average_precision_score(data.wrong, table["score"]) > \
            average_precision_score(data.wrong, trusting["score"]) + 0.05
    # the choice is the likeliest, and worth its parameter: the criterion recomputed by hand for every grid value
    calibrated, codes = recalibrate(data.labels, data.pred_probs)[0], data.groups
    prior, rho, given = class_prior(data.labels, 2), table.attrs["rho"], table["given"].to_numpy()
    eta = max(table.attrs["counts"]["person_mean"] / len(given), 1 / len(given))
    values = []
    for share in OUTLIER_GRID:
        p = person_probs(calibrated, codes, prior, rho, share)[0][np.arange(len(given)), given]
        values.append(float(np.log((1 - eta) * p + eta * (1 - p)).sum()))
    best = int(np.argmax(values))
    assert values[best] - values[0] > np.log(len(given)) / 2 and table.attrs["outliers"] == OUTLIER_GRID[best]
    np.testing.assert_allclose(table["probs"].tolist(),
                               person_probs(calibrated, codes, prior, rho, table.attrs["outliers"])[0])
    for seed in range(4):
        assert group_scores(*grouped(seed=seed)[:3]).attrs["outliers"] == 0.0
    with pytest.raises(ValueError, match="outliers"):
        group_scores(*grouped()[:3], outliers=1.0)


def test_calibration_of_one_class_or_no_rows_is_the_identity() -> None:
    probs = np.array([[0.8, 0.2], [0.6, 0.4]])
    fit = fit_calibration(np.array([0, 0]), probs)
    assert fit.scale == 1.0 and fit.bias == (0.0, 0.0)
    np.testing.assert_allclose(fit.apply(probs), probs)


def test_rare_class_people_under_a_prior_free_model_are_not_flagged_for_being_rare() -> None:
    """The case the previous round got wrong: balanced-model probabilities, a 92/8 class split."""
    labels, probs, groups, wrong = grouped(seed=3, people=800, k=2, balance=(0.92, 0.08), flip=0.04)
    table = group_scores(labels, probs, groups).set_index("group")
    people = pd.Series(wrong, index=[f"p{p:04d}" for p in range(len(wrong))])
    flagged = table["is_issue"].reindex(people.index)
    precision = (flagged & people).sum() / max(flagged.sum(), 1)
    recall = (flagged & people).sum() / people.sum()
    assert precision > 0.7 and recall > 0.7, (precision, recall)


def test_permuting_people_images_and_classes_changes_nothing() -> None:
    labels, probs, groups, _ = grouped(seed=2)
    base = group_scores(labels, probs, groups).set_index("group").sort_index()
    base_images = image_scores(labels, probs)
    rng = np.random.default_rng(5)
    order = rng.permutation(len(labels))  # people (first appearance) and images within people reordered
    shuffled = group_scores(labels[order], probs[order], groups[order]).set_index("group").sort_index()
    assert base["is_issue"].tolist() == shuffled["is_issue"].tolist()
    np.testing.assert_allclose(base["score"], shuffled["score"], atol=1e-9)
    images = image_scores(labels[order], probs[order])
    assert images["is_issue"].tolist() == base_images["is_issue"].to_numpy()[order].tolist()
    perm = np.array([2, 0, 1])  # class c is called perm[c]
    renamed_labels, renamed_probs = perm[labels], np.empty_like(probs)
    renamed_probs[:, perm] = probs
    renamed = group_scores(renamed_labels, renamed_probs, groups).set_index("group").sort_index()
    assert base["is_issue"].tolist() == renamed["is_issue"].tolist()
    assert perm[base["suggested"].to_numpy()].tolist() == renamed["suggested"].tolist()
    np.testing.assert_allclose(base["score"], renamed["score"], atol=1e-6)
    renamed_images = image_scores(renamed_labels, renamed_probs)
    assert renamed_images["is_issue"].tolist() == base_images["is_issue"].tolist()
    labels, probs, groups = swap_set(seed=2)
    base_swaps = mask_swap_scores(labels, probs, groups, pair=(1, 2))
    swaps = mask_swap_scores(perm[labels], probs[:, np.argsort(perm)], groups, pair=(perm[1], perm[2]))
    assert base_swaps["is_issue"].sum() > 10
    assert swaps["is_issue"].tolist() == base_swaps["is_issue"].tolist()
    np.testing.assert_allclose(swaps["swap_prob"], base_swaps["swap_prob"], atol=1e-6)
    people = np.random.default_rng(6).permutation(groups.max() + 1)  # people reordered, with their images
    order = np.argsort(people[groups], kind="stable")
    moved = mask_swap_scores(labels[order], probs[order], groups[order]).set_index("group").sort_index()
    assert moved["is_issue"].tolist() == base_swaps.set_index("group").sort_index()["is_issue"].tolist()


def test_groups_of_one_give_the_per_image_verdict_under_any_calibration() -> None:
    labels, probs, _, _ = grouped(seed=4)
    other = rescaled(probs, [5.0, 1.0, 0.3], 1.5)
    singles = np.arange(len(labels))
    table = group_scores(labels, other, singles)
    images = image_scores(labels, other)
    assert table["is_issue"].tolist() == images["is_issue"].tolist()
    np.testing.assert_allclose(table["score"], images["score"])


def fold_temperatures(probs: np.ndarray, folds: np.ndarray, temperatures: list[float]) -> np.ndarray:
    """Each fold's probabilities at its own temperature, as folds trained apart can come out."""
    out = probs ** (1.0 / np.asarray(temperatures)[folds])[:, None]
    return out / out.sum(axis=1, keepdims=True)


def person_folds(groups: np.ndarray, k: int = 5) -> np.ndarray:
    return pd.factorize(groups, sort=True)[0] % k


def test_a_temperature_per_fold_is_evened_when_the_folds_are_given() -> None:
    from bench.calibration import prf

    labels, probs, groups, wrong = grouped(seed=3, people=500)
    folds = person_folds(groups)
    temperatures = [0.4, 1.0, 2.5, 1.0, 1.6]
    other = fold_temperatures(probs, folds, temperatures)
    truth = group_scores(labels, probs, groups).set_index("group").sort_index()
    blind = group_scores(labels, other, groups).set_index("group").sort_index()
    evened = group_scores(labels, other, groups, folds=folds)
    scales = {f: factor for f, factor, _ in evened.attrs["calibration"].folds}
    factor = np.log([scales[f] for f in range(5)])  # a fold at temperature t needs its log-probabilities times t
    assert np.corrcoef(factor, np.log(temperatures))[0, 1] > 0.95
    evened = evened.set_index("group").sort_index()
    # evened, the verdicts are those of the folds before their temperatures (not so without the folds)
    agree = {name: float((t["is_issue"] == truth["is_issue"]).mean()) for name, t in (("blind", blind),
                                                                                       ("evened", evened))}
    assert agree["evened"] > 0.97 and agree["evened"] > agree["blind"]
    assert abs(prf(evened["is_issue"].to_numpy(), wrong)[2] - prf(truth["is_issue"].to_numpy(), wrong)[2]) < 0.03
    # a per-class rescaling and a power on top change nothing more, folds given as well
    again = group_scores(labels, rescaled(other, [3.0, 0.5, 1.0], 0.7), groups, folds=folds).set_index("group")
    assert again.sort_index()["is_issue"].tolist() == evened["is_issue"].tolist()
    np.testing.assert_allclose(again.sort_index()["score"], evened["score"], atol=1e-6)
    images = image_scores(labels, other, folds=folds)
    assert (images["is_issue"] == image_scores(labels, probs)["is_issue"]).mean() > 0.97


def test_folds_of_one_temperature_are_left_as_they_are() -> None:
    labels, probs, groups, _ = grouped(seed=4)
    folds = person_folds(groups, 3)
    with_folds, without = group_scores(labels, probs, groups, folds=folds), group_scores(labels, probs, groups)
    assert with_folds.attrs["calibration"].folds is None  # nothing to even: the plain fit
    assert with_folds["is_issue"].tolist() == without["is_issue"].tolist()
    np.testing.assert_allclose(with_folds["score"], without["score"], atol=1e-12)
    order = np.random.default_rng(1).permutation(len(labels))  # rows reordered, folds with them: the same
    shuffled = group_scores(labels[order], probs[order], groups[order], folds=folds[order])
    assert shuffled.set_index("group").sort_index()["is_issue"].tolist() == \
        with_folds.set_index("group").sort_index()["is_issue"].tolist()


def test_folds_that_do_not_fit_are_refused_in_one_line() -> None:
    labels, probs, groups, _ = grouped(seed=5, people=100)
    with pytest.raises(ValueError, match="folds has 3 rows but pred_probs has"):
        recalibrate(labels, probs, folds=np.array([0, 1, 2]))
    folds = person_folds(groups)
    _, fit = recalibrate(labels, fold_temperatures(probs, folds, [0.3, 1.0, 3.0, 1.0, 1.0]), folds, groups)
    assert fit.folds is not None
    with pytest.raises(ValueError, match="fitted with folds"):
        fit.apply(probs)
