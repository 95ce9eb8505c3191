"""bench/cleaning_loop.py without training: the simulated reviewer on a small store (hand-made queue and a
queue built by the dashboard's own functions from hand-made scores), label-error counts, the gap arithmetic,
cleanlab's order and the report/BENCHMARKS section writer."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.schema import COMPETITION
from core.store import LabelStore
from train.score import score_rows

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("cleaning_loop", ROOT / "bench" / "cleaning_loop.py")
loop = importlib.util.module_from_spec(_spec)
sys.modules["cleaning_loop"] = loop  # dataclasses look their module up by name
_spec.loader.exec_module(loop)


def truth_with_noise(store: LabelStore) -> tuple[loop.Truth, dict[str, str]]:
    """Truth = the store's labels with three injected errors undone: person 0's gender was flipped,
    person 1's incorrect_mask/normal were swapped, person 2's age group is wrong (60 given, 45 true)."""
    labels = store.current_labels(derived=False)
    people = sorted(labels["person"].unique())
    images = {p: {"mask": m} for p, m in zip(labels["path"], labels["mask"])}
    persons = {p: {"gender": g, "age": int(a)} for p, g, a in
               labels.drop_duplicates("person")[["person", "gender", "age"]].itertuples(index=False)}
    flip, swap, aged = people[0], people[1], people[2]
    persons[flip]["gender"] = "male" if persons[flip]["gender"] == "female" else "female"
    images[f"train/images/{swap}/incorrect_mask.jpg"]["mask"] = "not_wear"
    images[f"train/images/{swap}/normal.jpg"]["mask"] = "incorrect"
    assert persons[aged]["age"] == 60
    persons[aged]["age"] = 45
    return loop.Truth(images, persons), {"flip": flip, "swap": swap, "aged": aged}


def test_reviewer_applies_exactly_the_budgeted_corrections_from_truth(make_store: Callable[..., LabelStore]):
    store = make_store()
    truth, who = truth_with_noise(store)
    swap_image = f"train/images/{who['swap']}/normal.jpg"
    entries = [loop.Entry("gender", 7, ((who["flip"], "gender"),)),
               loop.Entry("mask", 1, ((swap_image, "mask"),)),
               loop.Entry("right", 1, ((f"train/images/{who['aged']}/mask1.jpg", "mask"),)),  # label is right
               loop.Entry("age", 7, ((who["aged"], "age"),))]
    assert loop.label_errors(store, truth) == {"mask": 2, "gender": 1, "age_group": 1, "errors": 4, "images": 7 + 2 + 7}
    reviewer = loop.Reviewer(store, entries, truth, score_run=None)

    counts = reviewer.review_until(9)  # 7 + 1 + 1 fit; the age entry (7 more) does not
    assert counts == {"entries": 3, "images": 9, "corrected": 2, "confirmed": 1, "repeated": 0, "failed": 0}
    history = store.history()
    assert len(history) == 2 and set(history["annotator"]) == {"simulated"} and set(history["source"]) == {"review"}
    assert store.label_of(who["flip"], "gender") == truth.persons[who["flip"]]["gender"]
    assert store.label_of(swap_image, "mask") == "incorrect"
    assert store.label_of(who["aged"], "age") == 60  # beyond the budget: untouched
    reviews = store.reviews()
    assert list(reviews["verdict"]) == ["correct"] and list(reviews["annotator"]) == ["simulated"]
    # The store applies a person's gender to all 7 images; the swap's partner image is still wrong.
    assert loop.label_errors(store, truth) == {"mask": 1, "gender": 0, "age_group": 1, "errors": 2, "images": 1 + 7}

    assert reviewer.review_until(15)["entries"] == 0  # cumulative: 9 + 7 = 16 > 15, nothing more
    counts = reviewer.review_until(16)
    assert counts["corrected"] == 1 and reviewer.spent == 16 and reviewer.position == 4
    assert store.label_of(who["aged"], "age") == 45 and len(store.history()) == 3
    assert [r["action"] for r in reviewer.log] == ["corrected", "corrected", "confirmed", "corrected"]


def test_an_entry_larger_than_the_budget_stops_the_reviewer_and_decisions_are_not_repeated(
        make_store: Callable[..., LabelStore]):
    store = make_store()
    truth, who = truth_with_noise(store)
    reviewer = loop.Reviewer(store, [loop.Entry("gender", 7, ((who["flip"], "gender"),))], truth)
    assert reviewer.review_until(6)["entries"] == 0 and store.n_corrections() == 0
    # cleanlab-style entries: each image asks for its mask and its person's gender and age.
    images = [f"train/images/{who['flip']}/{stem}.jpg" for stem in ("mask1", "mask2")]
    entries = [loop.Entry(p, 1, ((p, "mask"), (who["flip"], "gender"), (who["flip"], "age"))) for p in images]
    reviewer = loop.Reviewer(store, entries, truth)
    counts = reviewer.review_until(2)
    assert counts == {"entries": 2, "images": 2, "corrected": 1, "confirmed": 3, "repeated": 2, "failed": 0}
    assert store.n_corrections() == 1


def test_age_is_judged_by_its_group():
    assert loop.same_label(COMPETITION, "age", 31, 58) and not loop.same_label(COMPETITION, "age", 29, 30)
    assert loop.same_label(COMPETITION, "gender", "male", "male") and not loop.same_label(COMPETITION, "mask",
                                                                                           "wear", "incorrect")


def test_gap_recovered_arithmetic():
    assert loop.gap_recovered(0.50, 0.60, 0.70) == pytest.approx(0.5)
    assert loop.gap_recovered(0.50, 0.70, 0.70) == pytest.approx(1.0)
    assert loop.gap_recovered(0.50, 0.45, 0.70) == pytest.approx(-0.25)
    assert loop.gap_recovered(0.50, 0.75, 0.70) == pytest.approx(1.25)
    assert loop.gap_recovered(0.70, 0.75, 0.70) is None and loop.gap_recovered(0.70, 0.6, 0.65) is None


def test_review_page_queue_costs_a_person_its_images_and_puts_flagged_units_first(
        make_store: Callable[..., LabelStore]):
    """Scores made by train.score.score_rows from hand-made probabilities: person 0 looks like the other
    gender on every image, person 1's pair looks swapped; the queue is built by core.review's functions."""
    store = make_store()
    truth, who = truth_with_noise(store)
    labels = store.current_labels()
    codes = COMPETITION.codes(labels)
    n = len(labels)
    probs = {name: np.full((n, k), 0.05 / (k - 1)) for name, k in (("mask", 3), ("gender", 2), ("age_group", 3))}
    for name in probs:
        probs[name][np.arange(n), codes[name]] = 0.95
    flip = (labels["person"] == who["flip"]).to_numpy()
    probs["gender"][flip] = probs["gender"][flip][:, ::-1]
    for stem, looks in (("incorrect_mask", [0.05, 0.05, 0.9]), ("normal", [0.05, 0.9, 0.05])):
        probs["mask"][(labels["path"] == f"train/images/{who['swap']}/{stem}.jpg").to_numpy()] = looks
    run_id = store.create_run("score", {}, status="done")
    store.save_scores(run_id, score_rows(COMPETITION, labels, probs))

    entries = loop.review_queue_entries(store, run_id)
    units = {(e.decisions[0][0], e.decisions[0][1]): e for e in entries}
    assert len(units) == len(entries) == n + 2 * 6  # one mask unit per image, gender and age per person
    assert units[(who["flip"], "gender")].cost == 7 and units[(labels["path"].iat[0], "mask")].cost == 1
    assert units[(who["aged"], "age")].cost == 7
    flagged = {e.decisions[0] for e in entries[:3]}
    assert flagged == {(who["flip"], "gender"), (f"train/images/{who['swap']}/incorrect_mask.jpg", "mask"),
                       (f"train/images/{who['swap']}/normal.jpg", "mask")}
    per_decision = loop.review_queue_entries(store, run_id, person_cost=False)
    assert [e.decisions for e in per_decision] == [e.decisions for e in entries] and {e.cost for e in per_decision} == {1}
    reviewer = loop.Reviewer(store, entries, truth, score_run=run_id)
    reviewer.review_until(9)
    assert store.n_corrections() == 3 and loop.label_errors(store, truth)["errors"] == 1  # the age error is left


def test_cleanlab_order_puts_confident_errors_first():
    rng = np.random.default_rng(0)
    given = np.repeat([0, 1, 2], 20)
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), given] = 0.9
    probs += rng.uniform(0, 0.01, probs.shape)
    probs[[5, 30]] = [[0.02, 0.03, 0.95], [0.9, 0.05, 0.05]]  # rows labelled 0 and 1 that look like 2 and 0
    order = loop.cleanlab_order(given, probs)
    assert sorted(order) == list(range(60)) and set(order[:2]) == {5, 30}


def test_report_and_section_writer(tmp_path: Path):
    arm = {"spent_images": 30, "errors_fixed": 5, "macro_f1": 0.65, "gap_recovered": 0.5, "retrain_s": 10.0,
           "acc_class": 0.85, "acc_mask": 0.9, "acc_gender": 0.8, "acc_age_group": 0.7}
    seed = {"times": {"generate": 1.0, "noisy_fit": 2.0, "score": 3.0}, "n_images": 1000, "n_holdout_images": 200,
            "errors_injected": {"errors": 20, "gender": 5, "age_group": 1, "mask": 14, "images": 56},
            "noisy": {"macro_f1": 0.6, "acc_class": 0.8, "acc_mask": 0.9, "acc_gender": 0.8, "acc_age_group": 0.7},
            "ceiling": {"macro_f1": 0.7, "acc_class": 0.9, "acc_mask": 0.9, "acc_gender": 0.8, "acc_age_group": 0.7},
            "arms": {"queue": {"0.05": arm}, "cleanlab": {"0.05": {**arm, "macro_f1": 0.62}}}}
    config = {"persons": 100, "holdout": 20, "noise": 0.2, "model": "m", "img_size": [64, 80], "epochs": 2,
              "folds": 3, "budgets": [0.05], "batch_size": 8}
    text = loop.report({"config": config, "seeds": {"0": seed}})
    rows = [line for line in text.splitlines() if line.startswith("| 5% |")]
    assert len(rows) == 2 and "| 50% |" in rows[0] and "| 20% |" in rows[1] and "| 5/20 |" in rows[0]
    assert "| 0.800 / 0.850 / 0.900 (50%) |" in rows[0]
    assert "with a 5% budget: missed (50% of the gap" in text and "5%: F1 0.650 vs 0.620 (ahead)" in text
    assert "the person's images (10 in this demo)" in text  # 1000 images of 100 people
    assert "Training noise" not in text  # no repeated training: no spread to state
    spread = loop.report({"config": config, "seeds": {"0": {**seed, "noisy_repeat": {
        **seed["noisy"], "macro_f1": 0.55, "acc_class": 0.75}}}})
    assert "seed 0: 0.600 vs 0.550 / 0.800 vs 0.750" in spread
    assert "differ by up to 0.050 macro F1; the noisy->ceiling gap is +0.100 (mean)" in spread
    assert "with 1 seed(s)." in spread  # the gap (0.1) exceeds the spread (0.05)
    tie = {**seed, "arms": {"queue": {"0.05": {**arm, "macro_f1": 0.65011}}, "cleanlab": {"0.05": arm}}}
    assert "F1 0.650 vs 0.650 (tie)" in loop.report({"config": config, "seeds": {"0": tie}})
    merged = loop.report(loop.merge([{"config": config, "seeds": {"0": seed}}]))  # merge of files without commands
    assert merged.startswith("`bench/cleaning_loop.py` (")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Ingest\n\nkeep me\n\n## Does cleaning pay?\n\nold\n\n## Later\n\nand me\n")
    loop.write_section("new table", bench)
    assert bench.read_text() == ("# Benchmarks\n\n## Ingest\n\nkeep me\n\n## Does cleaning pay?\n\nnew table\n\n"
                                 "## Later\n\nand me\n")
