"""core.scoring on hand-made arrays with known answers, and the `python -m core issues` CLI contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cleanlab.rank import get_self_confidence_for_each_label

from core.scoring import (
    array_issues,
    group_scores,
    image_scores,
    mask_swap_scores,
    model_disagreement,
    noise_prior,
    queue_items,
    review_queue,
)

ROOT = Path(__file__).resolve().parent.parent


def confident(true: np.ndarray, k: int, seed: int = 0, strength: float = 0.85) -> np.ndarray:
    """(n, k) probabilities putting about ``strength`` on each row's true class, the rest spread at random."""
    rng = np.random.default_rng(seed)
    rest = rng.dirichlet(np.ones(k), len(true)) * (1 - strength)
    probs = rest.copy()
    probs[np.arange(len(true)), true] += strength
    probs[np.arange(len(true)), true] += rng.uniform(-0.05, 0.05, len(true))
    probs = np.clip(probs, 1e-3, 1)
    return probs / probs.sum(axis=1, keepdims=True)


def people(n_persons: int = 20, images: int = 7, k: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels (n,), pred_probs (n, k), person ids (n,) like "p03"): one true class per person."""
    true = np.repeat(np.arange(n_persons) % k, images)
    groups = np.repeat([f"p{i:02d}" for i in range(n_persons)], images)
    return true, confident(true, k, seed), groups


# ---- validation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, probs, message", [
    (np.zeros((3, 1), int), np.full((3, 2), 0.5), "labels must be 1-D"),
    (np.array([0.0, 1.0, 0.0]), np.full((3, 2), 0.5), "integer class indices"),
    (np.array([], int), np.zeros((0, 2)), "labels is empty"),
    (np.array([0, 1, 0]), np.full(3, 0.5), "must be 2-D"),
    (np.array([0, 1, 0]), np.full((4, 2), 0.5), "has 4 rows but labels has 3"),
    (np.array([0, 0, 0]), np.ones((3, 1)), "at least 2 classes"),
    (np.array([0, 1, 0]), np.array([[0.5, 0.5], [0.9, 0.3], [0.5, 0.5]]), "row 1 is not a probability"),
    (np.array([0, 1, 0]), np.array([[0.5, 0.5], [0.5, 0.5], [np.nan, 0.5]]), "row 2 is not a probability"),
    (np.array([0, 1, 0]), np.array([[1.5, -0.5], [0.5, 0.5], [0.5, 0.5]]), "row 0 is not a probability"),
    (np.array([0, 2, 0]), np.full((3, 2), 0.5), r"labels\[1\] = 2 is not a class index in \[0, 2\)"),
    (np.array([0, 1, 0]), np.ones((3, 2), int), "must hold floats"),
])
def test_invalid_inputs_are_refused_with_the_reason(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        image_scores(labels, probs)
    with pytest.raises(ValueError, match=message):
        array_issues(labels, probs)


def test_invalid_groups_are_refused():
    labels, probs = np.array([0, 1, 0]), np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match=r"groups must have shape \(3,\)"):
        group_scores(labels, probs, np.array([1, 2]))
    with pytest.raises(ValueError, match=r"groups\[1\] is missing"):
        group_scores(labels, probs, np.array(["a", None, "a"], dtype=object))


# ---- image level --------------------------------------------------------------------------------------------------
def test_a_clearly_mislabelled_image_ranks_first_and_is_flagged():
    true = np.arange(60) % 3
    probs = confident(true, 3)
    labels = true.copy()
    labels[17] = 0
    probs[17] = [0.02, 0.96, 0.02]  # true class 1, labelled 0
    table = image_scores(labels, probs)
    assert list(table.columns) == ["given", "self_confidence", "normalized_margin", "cleanlab_issue", "is_issue",
                                   "suggested", "suggested_prob", "score"]
    assert table["score"].idxmax() == 17
    assert table.loc[17, "is_issue"] and table.loc[17, "cleanlab_issue"]
    assert table["is_issue"].sum() == 1
    calibrated = table.attrs["calibration"].apply(probs)  # the verdict reads the recalibrated probabilities
    assert table.loc[17, "suggested"] == 1 and table.loc[17, "suggested_prob"] == pytest.approx(calibrated[17, 1])
    assert calibrated[17, 1] == pytest.approx(0.96, abs=0.02)
    assert np.allclose(table["self_confidence"], get_self_confidence_for_each_label(labels, calibrated))
    assert table["score"].between(0, 1).all()


def test_noise_prior_rows_are_distributions_that_see_the_flips():
    true = np.arange(200) % 2
    probs = confident(true, 2)
    labels = true.copy()
    labels[:20:2] = 1  # ten true 0s labelled 1: 10 of the 110 given 1s are wrong
    probs[:20:2] = [0.98, 0.02]
    prior = noise_prior(labels, probs)
    assert np.allclose(prior.sum(axis=1), 1)
    assert 0.05 < prior[1, 0] < 0.2  # about 10 / 110, as cleanlab's calibrated confident joint counts it
    assert prior[0, 1] < 0.02  # given 0 is never wrong: only the add-one smoothing remains


# ---- person level -------------------------------------------------------------------------------------------------
def test_a_wrongly_gendered_person_is_flagged_once_with_all_seven_images():
    true, probs, groups = people(20)
    labels = true.copy()
    labels[groups == "p03"] = 1 - labels[groups == "p03"]
    table = group_scores(labels, probs, groups)
    assert len(table) == 20 and list(table["group"]) == [f"p{i:02d}" for i in range(20)]
    flagged = table[table["is_issue"]]
    assert list(flagged["group"]) == ["p03"]
    row = flagged.iloc[0]
    assert row["rows"] == tuple(range(21, 28)) and row["n_images"] == 7 and row["n_against"] == 7
    assert row["suggested"] == true[21] and row["given"] == labels[21]
    assert row["score"] > 0.9 and table.drop(index=3)["score"].max() < 0.1


def test_one_ambiguous_image_does_not_overturn_a_person():
    true, probs, groups = people(20)
    labels = true.copy()
    labels[groups == "p03"] = 1 - labels[groups == "p03"]  # one real issue, so the prior allows flips
    labels = np.append(labels, 0)
    probs = np.vstack([probs, [0.45, 0.55]])  # leans to the other class, but barely
    groups = np.append(groups, "single")
    table = group_scores(labels, probs, groups, calibrate=False).set_index("group")  # the mechanics, as given
    assert not table.loc["single", "is_issue"]
    assert table.loc["single", "suggested"] == 1  # the image alone leans to 1, but barely ...
    assert table.loc["single", "score"] < table.loc["p03", "score"]  # ... and ranks below the clear flip
    assert table.loc["p03", "is_issue"]


def test_images_that_disagree_on_a_person_label_are_flagged_inconsistent():
    true, probs, groups = people(10)
    labels = true.copy()
    labels[28] = 1 - labels[28]  # the first of p04's seven images
    table = group_scores(labels, probs, groups).set_index("group")
    assert table.loc["p04", "inconsistent"] and table.loc["p04", "is_issue"]
    assert table.loc["p04", "given"] == true[29]  # the majority label
    assert table["inconsistent"].sum() == 1


def test_groups_of_one_image_give_the_per_image_verdict():
    true = np.arange(40) % 2
    probs = confident(true, 2)
    labels = true.copy()
    labels[[5, 12]] = 1 - labels[[5, 12]]
    order = np.random.default_rng(0).permutation(40)  # group ids in any order: rows still map to their images
    by_image = image_scores(labels, probs)
    by_group = group_scores(labels, probs, order).set_index("group").loc[order]
    assert np.allclose(by_group["score"], by_image["score"])
    assert (by_group["is_issue"].to_numpy() == by_image["is_issue"].to_numpy()).all()
    assert np.allclose(by_group["self_confidence"], by_image["self_confidence"])
    issues = array_issues(labels, probs, groups=np.arange(40))
    assert (issues["is_issue"] == by_image["is_issue"]).all() and np.allclose(issues["score"], by_image["score"])


def leaning_people(seed: int = 0, n_persons: int = 300, shared: float = 1.0) -> tuple[np.ndarray, ...]:
    """(labels, pred_probs, groups, wrong per person): logits with a per-person offset shared by its 7 images."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 3, n_persons)
    wrong = rng.random(n_persons) < 0.08
    given = np.where(wrong, (true + rng.integers(1, 3, n_persons)) % 3, true)
    groups = np.repeat(np.arange(n_persons), 7)
    logits = 2.5 * np.eye(3)[true[groups]] + rng.normal(0, shared, (n_persons, 3))[groups] + rng.normal(0, 1, (len(groups), 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return given[groups], probs, groups, wrong


def test_shared_evidence_is_estimated_from_the_data():
    from core.scoring import shared_evidence
    labels, probs, groups, _ = leaning_people(shared=0.0)
    independent = shared_evidence(labels, probs, groups)
    labels, probs, groups, _ = leaning_people(shared=1.5)
    shared = shared_evidence(labels, probs, groups)
    assert independent < 0.15 < 0.4 < shared <= 1.0
    table = group_scores(labels, probs, groups, calibrate=False)
    assert table.attrs["rho"] == pytest.approx(shared)
    assert np.allclose(table["views"], 7 / (1 + 6 * shared))
    assert shared_evidence(labels[:50], probs[:50], np.arange(50)) == 0.0  # one image a group: nothing shared


def test_rho_sets_how_much_many_images_weigh():
    """Seven images at 0.7 against the label: one view keeps it near 0.7, seven independent views make it certain."""
    true, probs, groups = people(30, seed=1)
    labels = true.copy()
    rows = groups == "p05"
    labels[rows] = 1 - true[rows]
    probs[rows] = np.where(np.arange(2) == true[rows][:, None], 0.7, 0.3)
    scores = {r: group_scores(labels, probs, groups, rho=r, calibrate=False).set_index("group").loc["p05", "score"]
              for r in (1.0, 0.5, 0.0)}
    assert scores[1.0] == pytest.approx(0.7, abs=0.02) and scores[1.0] < scores[0.5] < scores[0.0]
    with pytest.raises(ValueError, match="rho must be in"):
        group_scores(labels, probs, groups, rho=1.5)


def test_permuting_people_rows_and_class_indices_changes_no_verdict():
    labels, probs, groups, wrong = leaning_people(seed=3)
    base = group_scores(labels, probs, groups).set_index("group").sort_index()
    assert base["is_issue"].sum() > 0
    rng = np.random.default_rng(1)
    rows = rng.permutation(len(labels))
    names = rng.permutation(groups.max() + 1)  # new person ids, in a new order of first appearance
    classes = np.array([2, 0, 1])  # class c becomes classes[c]
    moved = group_scores(classes[labels[rows]], probs[rows][:, np.argsort(classes)], names[groups[rows]])
    moved = moved.set_index("group").loc[names].set_axis(np.arange(len(names)))
    assert (moved["is_issue"].to_numpy() == base["is_issue"].to_numpy()).all()
    assert np.allclose(moved["score"], base["score"])
    assert (moved["given"].to_numpy() == classes[base["given"].to_numpy()]).all()
    assert moved.attrs["rho"] == pytest.approx(base.attrs["rho"])


def test_every_row_of_a_group_carries_the_group_verdict():
    labels, probs, groups, wrong = leaning_people(seed=4)
    issues = array_issues(labels, probs, groups=groups)
    per_group = issues.groupby("group").agg(score=("score", "nunique"), flag=("is_issue", "nunique"),
                                            suggested=("suggested", "nunique"))
    assert (per_group == 1).all().all()
    table = group_scores(labels, probs, groups)
    assert (issues.groupby("group")["is_issue"].first().to_numpy() == table["is_issue"].to_numpy()).all()
    assert issues["is_issue"].any() and (issues.groupby("group")["is_issue"].first() & wrong).sum() > 0


# ---- swaps ---------------------------------------------------------------------------------------------------------
def swap_people(n_persons: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each person: 5 wear (0), 1 incorrect (1), 1 not_wear (2); probabilities confident on the truth."""
    true = np.tile([0, 0, 0, 0, 0, 1, 2], n_persons)
    groups = np.repeat(np.arange(n_persons), 7)
    return true, confident(true, 3, seed=2), groups


def test_a_swapped_pair_is_flagged_and_one_misread_image_is_not():
    true, probs, groups = swap_people()
    labels = true.copy()
    labels[[7 * 4 + 5, 7 * 4 + 6]] = [2, 1]  # person 4: incorrect and normal swapped
    probs[7 * 9 + 5] = [0.1, 0.3, 0.6]  # person 9: only the incorrect image looks like not_wear
    table = mask_swap_scores(labels, probs, groups).set_index("group")
    assert len(table) == 30
    assert table.index[table["is_issue"]].tolist() == [4]
    assert table.loc[4, "rows_first"] == (34,) and table.loc[4, "rows_second"] == (33,)
    assert table.loc[4, "log_ratio"] > 5 and table.loc[4, "swap_prob"] > 0.9
    assert table.loc[9, "log_ratio"] < 0


def test_groups_without_both_classes_get_no_swap_row():
    labels = np.array([0, 1, 0, 2, 1, 2])
    probs = confident(labels, 3)
    table = mask_swap_scores(labels, probs, np.array([0, 0, 1, 1, 2, 2]))
    assert table["group"].tolist() == [2]


# ---- disagreement ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["js", "tv"])
def test_model_disagreement_is_zero_for_identical_models_and_one_for_disjoint(method):
    probs = confident(np.arange(12) % 3, 3)
    assert np.allclose(model_disagreement([probs, probs.copy(), probs], method=method), 0)
    a, b = np.eye(3)[[0, 1, 2]], np.eye(3)[[1, 2, 0]]
    assert np.allclose(model_disagreement([a, b], method=method), 1)
    other = confident(np.arange(12) % 3, 3, seed=5)
    forward, backward = model_disagreement([probs, other], method=method), model_disagreement([other, probs],
                                                                                              method=method)
    assert np.allclose(forward, backward) and (forward > 0).all() and (forward < 1).all()


def test_model_disagreement_refuses_mismatched_models():
    with pytest.raises(ValueError, match="share one shape"):
        model_disagreement([np.full((3, 2), 0.5), np.full((4, 2), 0.5)])
    with pytest.raises(ValueError, match="unknown disagreement method"):
        model_disagreement([np.full((3, 2), 0.5)] * 2, method="kl")


# ---- review queue ----------------------------------------------------------------------------------------------------
def test_review_queue_ranks_people_swaps_and_images_in_one_table():
    mask_true, mask_probs, groups = swap_people(30)
    gender_true = np.repeat(np.arange(30) % 2, 7)
    gender_probs = confident(gender_true, 2, seed=3)
    mask_labels, gender_labels = mask_true.copy(), gender_true.copy()
    mask_labels[[33, 34]] = [2, 1]  # person 4 swapped
    gender_labels[groups == 7] = 1 - gender_labels[groups == 7]  # person 7 wrongly gendered
    mask_labels[100] = 2  # one wear image of person 14 labelled not_wear
    mask_probs[100] = [0.99, 0.005, 0.005]
    second_model = confident(mask_true, 3, seed=9)
    queue = review_queue({"mask": mask_labels, "gender": gender_labels},
                         {"mask": [mask_probs, second_model], "gender": gender_probs},
                         groups, person_scope={"gender"}, swap=("mask", 1, 2))
    flagged = queue[queue["is_issue"]]
    assert {(r.kind, r.attribute, r.target) for r in flagged.itertuples()} == {
        ("swap", "mask", 4), ("person", "gender", 7), ("image", "mask", 100)}
    assert (queue["kind"] == "person").sum() == 30  # one row per person, none per gender image
    assert (queue["kind"] == "image").sum() == 30 * 7 - 2  # the swap replaces its two images' rows
    assert queue["is_issue"].iloc[:3].all() and not queue["is_issue"].iloc[3:].any()
    assert queue["score"].iloc[:3].is_monotonic_decreasing and queue["score"].iloc[3:].is_monotonic_decreasing
    assert queue["score"].between(0, 1).all()
    person = flagged[flagged["kind"] == "person"].iloc[0]
    assert person["rows"] == tuple(range(49, 56)) and person["detail"]["n_against"] == 7
    assert queue.loc[queue["attribute"] == "mask", "disagreement"].notna().all()
    assert queue.loc[queue["attribute"] == "gender", "disagreement"].isna().all()

    items = queue_items(queue)
    assert len(items) == 2 * 30 * 7 and not items.duplicated(["row", "attribute"]).any()
    swapped = items[(items["kind"] == "swap")].set_index("row")
    assert swapped.loc[33, ["given", "suggested"]].tolist() == [2, 1]  # given not_wear, should be incorrect
    assert swapped.loc[34, ["given", "suggested"]].tolist() == [1, 2]
    gender = items[(items["attribute"] == "gender") & (items["target"] == 7)]
    assert len(gender) == 7 and gender["is_issue"].all() and gender["score"].nunique() == 1


def test_review_queue_needs_groups_for_person_scope():
    with pytest.raises(ValueError, match="groups are needed"):
        review_queue({"gender": np.array([0, 1])}, {"gender": np.full((2, 2), 0.5)}, person_scope={"gender"})


# ---- array CLI --------------------------------------------------------------------------------------------------------
def test_array_issues_gives_each_row_its_groups_verdict():
    true, probs, groups = people(12)
    labels = true.copy()
    labels[groups == "p02"] = 1 - labels[groups == "p02"]
    table = array_issues(labels, probs, groups)
    assert list(table.columns) == ["index", "score", "is_issue", "suggested", "group"]
    assert table["index"].tolist() == list(range(len(labels)))
    per_group = table.groupby("group")[["is_issue", "suggested", "score"]].nunique()
    assert (per_group == 1).all().all()
    assert table.loc[table["is_issue"], "group"].unique().tolist() == ["p02"]


def run_cli(tmp_path: Path, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None = None,
            folds: np.ndarray | None = None):
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "probs.npy", probs)
    command = [sys.executable, "-m", "core", "issues", "--labels", str(tmp_path / "labels.npy"),
               "--pred-probs", str(tmp_path / "probs.npy"), "--out", str(tmp_path / "issues.csv")]
    if groups is not None:
        np.save(tmp_path / "groups.npy", groups)
        command += ["--groups", str(tmp_path / "groups.npy")]
    if folds is not None:
        np.save(tmp_path / "folds.npy", folds)
        command += ["--folds", str(tmp_path / "folds.npy")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_cli_writes_one_row_per_input_in_order(tmp_path):
    true = np.arange(90) % 3
    probs = confident(true, 3)
    labels = true.copy()
    labels[40] = (true[40] + 1) % 3
    probs[40] = np.eye(3)[true[40]] * 0.94 + 0.02
    done = run_cli(tmp_path, labels, probs)
    assert done.returncode == 0, done.stderr
    assert "90 rows, 1 flagged" in done.stdout
    table = pd.read_csv(tmp_path / "issues.csv")
    assert list(table.columns) == ["index", "score", "is_issue", "suggested"]
    assert table["index"].tolist() == list(range(90))
    assert table.loc[table["is_issue"], "index"].tolist() == [40]
    assert table.loc[40, "suggested"] == true[40]
    assert table["score"].idxmax() == 40


def test_cli_with_groups_gives_one_verdict_per_group(tmp_path):
    true, probs, groups = people(16)
    labels = true.copy()
    labels[groups == "p05"] = 1 - labels[groups == "p05"]
    done = run_cli(tmp_path, labels, probs, groups)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "issues.csv", dtype={"group": str})
    assert list(table.columns) == ["index", "score", "is_issue", "suggested", "group"]
    assert table["group"].tolist() == groups.tolist()
    assert table.groupby("group")["is_issue"].nunique().eq(1).all()
    assert sorted(table.loc[table["is_issue"], "index"]) == list(range(35, 42))


def test_cli_reports_bad_arrays_in_one_line(tmp_path):
    done = run_cli(tmp_path, np.array([0, 1, 1]), np.array([[0.5, 0.5], [0.2, 0.2], [0.1, 0.9]]))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: pred_probs row 1 is not a probability distribution")
    assert not (tmp_path / "issues.csv").exists()


def test_cli_with_folds_evens_them_and_refuses_folds_that_do_not_fit(tmp_path):
    """``--folds``: each row's cross-validation fold; folds at different temperatures get the verdicts of folds at
    one; a folds file of the wrong length or with a missing fold is one line naming the problem."""
    from tests.test_calibration import fold_temperatures, grouped, person_folds

    labels, probs, groups, _ = grouped(seed=3, people=500)
    folds = person_folds(groups)
    plain = array_issues(labels, probs, groups)
    done = run_cli(tmp_path, labels, fold_temperatures(probs, folds, [0.4, 1.0, 2.5, 1.0, 1.6]), groups, folds)
    assert done.returncode == 0, done.stderr
    evened = pd.read_csv(tmp_path / "issues.csv")
    assert (evened["is_issue"] == plain["is_issue"]).mean() > 0.97
    for bad, message in ((folds[:-1], "folds.npy: "), (np.where(np.arange(len(folds)) == 5, np.nan, folds), "folds[5]")):
        failed = run_cli(tmp_path, labels, probs, groups, bad)
        assert failed.returncode != 0 and message in failed.stderr and "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
