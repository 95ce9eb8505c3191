"""bench/cleaning_loop.py without training: the simulated reviewer on a small store (hand-made queue and a
queue built by the dashboard's own functions from hand-made scores), label-error counts, the gap arithmetic,
cleanlab's order and the report/BENCHMARKS section writer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import cleaning_loop as loop
from core.schema import COMPETITION
from core.store import LabelStore
from train.score import score_rows


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


def fits(values: dict[str, list[float]]) -> dict[str, dict[str, dict[str, float]]]:
    return {name: {str(seed): {"macro_f1": v, "acc_class": v + 0.1} for seed, v in enumerate(vs)}
            for name, vs in values.items()}


def test_paired_and_ratio_intervals():
    mean, low, high = loop.paired_interval([0.01, 0.03, 0.02, 0.04, 0.00])
    half = loop.t_quantile(4) * np.std([0.01, 0.03, 0.02, 0.04, 0.00], ddof=1) / np.sqrt(5)
    assert mean == pytest.approx(0.02) and (low, high) == pytest.approx((0.02 - half, 0.02 + half))
    assert np.isnan(loop.paired_interval([0.1])[1])
    # A gap far above its noise: Fieller's interval is close to the ratio's delta-method one and holds it.
    num, den = [0.081, 0.079, 0.080, 0.082, 0.078], [0.100, 0.101, 0.099, 0.100, 0.100]
    ratio, low, high = loop.ratio_interval(num, den)
    assert ratio == pytest.approx(0.8) and low < 0.8 < high and high - low < 0.1
    # A gap not distinguishable from 0: the ratio's interval is unbounded.
    ratio, low, high = loop.ratio_interval([0.01, -0.02, 0.03], [0.01, -0.01, 0.02])
    assert np.isnan(low) and np.isnan(high)
    assert loop.ratio_interval([0.1, 0.2], [-0.1, -0.2])[0] is None
    assert loop.pooled_sd([[1.0, 3.0], [2.0, 2.0], [5.0]]) == pytest.approx(np.sqrt(2 / 2))


def test_report_states_intervals_targets_and_the_spread_check(tmp_path: Path):
    config = {"persons": 100, "holdout": 300, "noise": 0.2, "profile": "systematic", "demo_seed": 0, "model": "m",
              "img_size": [48, 64], "epochs": 2, "folds": 3, "budgets": [0.05], "batch_size": 8, "seeds": [0, 1, 2],
              "orders": ["queue", "cleanlab", "random"]}
    snap = {"budget_decisions": 35, "entries": 35, "images_shown": 90, "errors_fixed": 30}
    record = {"times": {"generate": 1.0, "score": 3.0}, "n_images": 700, "n_holdout_images": 2100,
              "n_holdout_people": 300, "corrupted_people": {"mask_batch": 10, "age_rounded": 12, "gender_lookalike": 8},
              "errors_injected": {"errors": 40, "mask": 20, "gender": 8, "age_group": 12, "images": 150},
              "snapshots": {"queue@0.05": snap, "cleanlab@0.05": {**snap, "errors_fixed": 10, "images_shown": 35},
                            "random@0.05": {**snap, "errors_fixed": 3}},
              "fits": fits({"noisy": [0.60, 0.61, 0.59], "ceiling": [0.70, 0.71, 0.69],
                            "queue@0.05": [0.69, 0.70, 0.68], "cleanlab@0.05": [0.62, 0.64, 0.61],
                            "random@0.05": [0.60, 0.62, 0.59]})}
    text = loop.report({"config": config, "record": record, "commands": ["c"], "total_s": 600})
    assert "| noisy | — | — | 0 | 0.600 (0.600, 0.610, 0.590) | — | 0 % |" in text
    assert "| ceiling | — | — | 40/40 (all) | 0.700 (0.700, 0.710, 0.690) | +0.100 [+0.100, +0.100] | 100 % |" in text
    assert "| Review page | 5% (35) | 35 / 90 | 30/40 | 0.690 (0.690, 0.700, 0.680) | +0.090 [+0.090, +0.090] |" in text
    assert "Target 1 (systematic, macro F1 (18 classes)), recover >= 80 % of the noisy->ceiling gap at 5% with the " \
           "interval's lower end above 50 %: met (90% [" in text
    assert "Target 2 (systematic, macro F1 (18 classes)), beat cleanlab's order at 5% on errors fixed and on the " \
           "metric (interval of the paired difference above 0): met (errors fixed 30 vs 10; queue - cleanlab " \
           "+0.067 [" in text
    assert "noisy->ceiling gap +0.1000 = " in text and "(at least the 3x required)" in text
    assert "| 18-class accuracy, mean (per seed) |" in text and "Same test 1 (systematic, 18-class accuracy)" in text
    worse = {**record, "fits": fits({"noisy": [0.60, 0.61, 0.59], "ceiling": [0.62, 0.60, 0.63],
                                     "queue@0.05": [0.61, 0.60, 0.60], "cleanlab@0.05": [0.62, 0.60, 0.61]})}
    text = loop.report({"config": config, "record": worse})
    assert ": missed (" in text and "(less than the 3x required)" in text
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Ingest\n\nkeep me\n\n## Does cleaning pay?\n\nold\n\n## Later\n\nand me\n")
    loop.write_section("new table", bench)
    assert bench.read_text() == ("# Benchmarks\n\n## Ingest\n\nkeep me\n\n## Does cleaning pay?\n\nnew table\n\n"
                                 "## Later\n\nand me\n")


@pytest.mark.slow
def test_quick_path_runs_every_arm_with_paired_seeds(tmp_path: Path):
    out = tmp_path / "quick.json"
    assert loop.main(["--quick", "--persons", "16", "--holdout", "8", "--work", str(tmp_path / "w"),
                      "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    record = data["record"]
    assert set(record["fits"]) == {"noisy", "ceiling", "queue@0.05", "cleanlab@0.05", "random@0.05", "pattern@0.05",
                                   "learning@0.05", "combined@0.05"}
    assert all(set(cell) == {"0", "1"} for cell in record["fits"].values())  # the same seeds in every arm
    budget = int(0.05 * record["n_images"])
    for order in ("queue", "cleanlab", "random", "learning"):
        snap = record["snapshots"][f"{order}@0.05"]
        assert snap["entries"] == snap["budget_decisions"] == budget  # one entry = one decision
        assert snap["images_shown"] >= snap["entries"]
    assert record["n_holdout_people"] == 8
    combined = record["snapshots"]["combined@0.05"]  # patterns, then the learning queue: never over the budget
    assert combined["corrections"] + combined["confirmed"] + combined["failed"] >= 1 and "reranks" in combined
    assert all(snap["spent"] <= snap["budget_decisions"] for snap in record["snapshots"].values() if "spent" in snap)
    assert "### Profile `systematic`" in loop.report(data)


def test_the_queue_arm_walks_the_review_pages_queue(make_store: Callable[..., LabelStore]):
    """One queue: the bench's queue arm is the Review page's queue as the page reads it (the store's ranked
    units, a page at a time, default filters flagged + unreviewed), then the other unreviewed units; units a
    reviewer already decided are left out, in both."""
    from core import review
    from core.synthetic import add_score_run

    store = make_store(n_persons=10)
    run_id = add_score_run(store, flag_every=3)
    first = loop.review_queue_entries(store, run_id, person_cost=False)
    for entry in first[:4]:  # decide the top of the queue: it leaves both
        target, attribute = entry.decisions[0]
        assert review.verdict(store, target, attribute, shown=store.label_of(target, attribute),
                              annotator="ana").ok
    entries = loop.review_queue_entries(store, run_id, person_cost=False)
    status_table = review.statuses(store, store.run(run_id)["created_at"])
    pages, offset = [], 0
    while True:  # the Review page's reads: 24 units a page
        rows, total = review.queue_page(store, run_id, status_table, offset=offset, limit=24, flagged_only=True,
                                        status="unreviewed")
        pages.append(rows)
        offset += 24
        if offset >= total:
            break
    flagged = pd.concat(pages, ignore_index=True)
    rest, _ = review.queue_page(store, run_id, status_table, status="unreviewed")
    walk = [*flagged["key"], *[k for k in rest["key"] if k not in set(flagged["key"])]]
    assert [e.name for e in entries] == walk and len(flagged) > 24
    assert [e.name for e in entries] == [e.name for e in first[4:]]
    assert {e.decisions[0] for e in entries[:len(flagged)]} == {
        (row.target, row.stored) for row in flagged.itertuples()}
