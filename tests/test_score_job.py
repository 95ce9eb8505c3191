"""The cross-validated score job end to end on a tiny demo (20 people, test_resnet at 32x40, 2 folds):
out-of-fold coverage and person grouping, stored scores and the current run, person verdicts, the
dashboard queue, resume after SIGKILL, job adoption and SIGTERM, disagreement with an earlier run,
and ``score_rows`` on hand-made arrays."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import review
from core.schema import COMPETITION
from core.store import LabelStore, read_snapshot
from tests.fixtures import demo_db
from train import jobs
from train.__main__ import main as train_main
from train.config import score_config
from train.data import person_folds
from train.score import load_oof, score, score_rows

TINY = {"model": "test_resnet", "img_size": (32, 40), "epochs": 2, "batch_size": 16, "lr": 0.01, "threads": 1}
TARGETS = ("mask", "gender", "age_group")


def start_score(store: LabelStore, **overrides: object) -> int:
    """A two-fold score job of TINY (with overrides)."""
    return jobs.start(store, "score", score_config(**{**TINY, **overrides}), options={"folds": 2})


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-person demo with 10 % of people mislabelled, ingested into <tmp>/labels.db."""
    return demo_db(tmp_path_factory.mktemp("score"), persons=20, noise=0.1)


@pytest.fixture(scope="module")
def first(db: Path) -> dict:
    """One finished 2-fold score run; the reference of most tests."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    return score(db=str(db), folds=2, echo=False, **TINY)


def test_every_labelled_image_gets_one_prediction_from_a_model_that_never_saw_its_person(db: Path, first: dict):
    with LabelStore(db) as store:
        run = store.run(first["run_id"])
        current = store.current_labels()
    labels, _ = read_snapshot(run["config"]["snapshot"])
    items, probs = load_oof(first["run_dir"])
    assert sorted(items["path"]) == sorted(current["path"]) and items["path"].is_unique
    for target, k in (("mask", 3), ("gender", 2), ("age_group", 3)):
        assert probs[target].shape == (len(items), k) and np.allclose(probs[target].sum(1), 1, atol=1e-4)
    # The folds are fit's (person_folds over the snapshot), and a person's images are all in one fold.
    assert (items["fold"].to_numpy() == person_folds(labels, 2, 0)).all()
    assert (items.groupby("person")["fold"].nunique() == 1).all() and set(items["fold"]) == {0, 1}
    for fold in (0, 1):
        held_out = items[items["fold"] == fold]
        trained_on = items[items["fold"] != fold]
        assert not set(held_out["person"]) & set(trained_on["person"])
        assert np.load(Path(first["run_dir"]) / f"fold-{fold}.npy").shape == (len(held_out), 8)


def test_scores_are_stored_and_the_run_becomes_current(db: Path, first: dict):
    with LabelStore(db) as store:
        run = store.run(first["run_id"])
        scores = store.scores(first["run_id"])
        current = store.current_labels()
        folds = store.epochs(first["run_id"])
        assert store.current_score_run() == first["run_id"]
        assert store.data_checks_ingest() == store.last_ingest_id()  # data checks ran with the score run
    assert run["kind"] == "score" and run["status"] == "done" and run["finished_at"]
    assert run["config"]["folds"] == 2 and run["config"]["model"] == "test_resnet" and "val_fold" not in run["config"]
    assert run["snapshot_hash"] and Path(run["config"]["snapshot"]).exists()
    assert run["progress"]["folds"] == 2 and run["progress"]["phase"] == "scoring" and run["progress"]["images_per_s"] > 0
    assert list(folds["fold"]) == [1, 2] and {"acc_mask", "acc_gender", "train_loss_per_epoch"} <= set(folds)
    assert len(scores) == 3 * len(current) and not scores.duplicated(["item_id", "attribute"]).any()
    assert set(scores["attribute"]) == set(TARGETS) and scores["score"].between(0, 1).all()
    given = scores[scores["attribute"] == "gender"].merge(current, on="item_id")
    assert (given["given"] == given["gender"]).all()  # class names, the current labels
    detail = pd.json_normalize([json.loads(d) for d in scores["detail"]])
    assert {"rank", "self_confidence", "normalized_margin", "cleanlab_issue", "suggested_prob"} <= set(detail.columns)


def test_person_verdicts_are_identical_across_a_persons_images_and_the_queue_shows_them(db: Path, first: dict):
    with LabelStore(db) as store:
        scores = store.scores(first["run_id"])
        units = review.queue_units(store, first["run_id"])
        details = [store.score_detail(first["run_id"], u.item_id, u.attribute) for u in units.itertuples()]
        n_people = len(store.persons())
    for target in ("gender", "age_group"):
        per_person = scores[scores["attribute"] == target].groupby("person")
        assert (per_person[["score", "is_issue", "suggested"]].nunique() == 1).all().all()
        assert (per_person.size() == 7).all()
    # The review page's queue: one unit per person for person-scope targets, class names, probabilities.
    assert (units["attribute"] == "gender").sum() == n_people
    assert set(units.loc[units["attribute"] == "gender", "suggested"]) <= {"male", "female"}
    for unit, detail in zip(units.itertuples(), details):
        probs = review.probabilities(detail, COMPETITION.target_classes(unit.attribute))
        assert set(probs) == set(COMPETITION.target_classes(unit.attribute)) and abs(sum(probs.values()) - 1) < 1e-2
        assert {"self_confidence", "normalized_margin", "cleanlab_issue"} <= set(review.evidence(detail))
        assert (review.swap_pair(detail, unit.given, unit.suggested) is not None) == ("log_ratio" in detail)


def test_the_review_page_shows_a_real_score_run(db: Path, first: dict, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LABELS_DB", str(db))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "Home.py"), default_timeout=60)
    at.session_state["annotator"] = "tester"
    at = at.switch_page("app_pages/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    with LabelStore(db) as store:
        run_id = store.current_score_run()
    assert any(f"score run #{run_id}" in str(p.text) for p in at.get("progress"))
    # the focused unit's class probabilities, in words beside the photos (the chart waits in a closed expander)
    assert any(m.value.startswith("Model (recalibrated") or "\nModel (recalibrated" in m.value for m in at.markdown)


def test_a_killed_score_job_resumes_and_skips_its_finished_folds(db: Path, first: dict):
    with LabelStore(db) as store:
        run_id = start_score(store, epochs=20)
        assert store.run(run_id)["status"] in ("queued", "running")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            run = store.run(run_id)
            if run["run_dir"] and (Path(run["run_dir"]) / "fold-0.npy").exists():
                break
            assert jobs.process_alive(run["pid"]), jobs.log_tail(run["log_path"])
            time.sleep(0.05)
        os.killpg(run["pid"], signal.SIGKILL)  # a crash between folds: fold 0 is on disk, fold 1 is not
        while jobs.process_alive(run["pid"]):
            time.sleep(0.05)
        finished = Path(run["run_dir"]) / "fold-0.npy"
        before = (finished.stat().st_mtime_ns, finished.read_bytes())
        assert not (Path(run["run_dir"]) / "fold-1.npy").exists()
        assert store.run(run_id)["config"]["epochs"] == 20  # the queued row was adopted and filled in
        jobs.recover_stale(store)  # what the dashboard does: the dead job's run is marked failed
        assert store.run(run_id)["status"] == "failed"
    assert train_main(["score", "--db", str(db), "--resume", str(run_id), "--quiet"]) == 0
    with LabelStore(db) as store:
        resumed = store.run(run_id)
        assert store.current_score_run() == run_id and len(store.scores(run_id)) == 3 * 140
    assert resumed["status"] == "done"
    assert (finished.stat().st_mtime_ns, finished.read_bytes()) == before
    assert "fold 1/2: done earlier, skipped" in (Path(run["run_dir"]) / "score.log").read_text()


def test_sigterm_cancels_a_score_job(db: Path):
    with LabelStore(db) as store:
        run_id = start_score(store, epochs=200)
        deadline = time.monotonic() + 240
        while (store.run(run_id)["progress"] or {}).get("phase") != "train":
            assert time.monotonic() < deadline and jobs.process_alive(store.run(run_id)["pid"])
            time.sleep(0.05)
        assert jobs.cancel(store, run_id, grace_s=60) == f"run #{run_id} cancelled"
        run = store.run(run_id)
    assert run["status"] == "cancelled" and "cancelled" in jobs.log_tail(run["log_path"])


def test_a_second_score_run_adds_the_disagreement_signal(db: Path, first: dict):
    second = score(db=str(db), folds=2, echo=False, **{**TINY, "seed": 1})
    with LabelStore(db) as store:
        assert store.current_score_run() == second["run_id"]
        earlier = store.run(second["run_id"])["metrics"]["compared_with"]
        scores = store.scores(second["run_id"])
        assert len(store.scores(first["run_id"])) == len(scores)  # older runs are kept
    details = [json.loads(d) for d in scores["detail"]]
    assert second["compared_with"] == earlier and earlier is not None
    assert all(d["compared_with"] == earlier and 0 <= d["disagreement"] <= 1 for d in details)
    assert "data checks" not in (Path(second["run_dir"]) / "score.log").read_text()  # once per ingest


def test_a_single_class_head_scores_every_target(db: Path, first: dict):
    """One 18-class head (``heads="single"``): folds keep the joint probabilities, the join turns them into
    per-target marginals, so the run scores the same targets as multi-head."""
    single = score(db=str(db), folds=2, echo=False, **{**TINY, "epochs": 1, "heads": "single"})
    assert single["status"] == "done"
    items, oof = load_oof(single["run_dir"])
    assert set(oof) == set(TARGETS)
    for target, probs in oof.items():
        assert probs.shape == (len(items), len(COMPETITION.target_classes(target)))
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)


def test_score_refuses_fit_only_options(db: Path):
    with pytest.raises(ValueError, match="age_threshold"):
        score(db=str(db), folds=2, echo=False, age_threshold=58, **TINY)


def test_score_rows_fan_out_person_verdicts_and_swaps():
    """Hand-made probabilities: person 'b' looks female though labelled male; person 'c' has its
    incorrect/not_wear images swapped; every (image, target) gets exactly one row."""
    persons = np.repeat(["a", "b", "c", "d", "e", "f"], 7)
    stems = ["wear"] * 5 + ["incorrect", "not_wear"]
    labels = pd.DataFrame({"item_id": np.arange(42) + 1, "path": [f"{p}/{i}.jpg" for p, i in zip(persons, range(42))],
                           "person": persons, "mask": stems * 6,
                           "gender": np.repeat(["male", "male", "female", "female", "male", "female"], 7),
                           "age": np.repeat([25, 40, 61, 20, 35, 50], 7)})
    labels = COMPETITION.add_derived(labels)
    codes = COMPETITION.codes(labels)
    probs = {name: np.full((42, k), 0.05 / (k - 1)) for name, k in (("mask", 3), ("gender", 2), ("age_group", 3))}
    for name in probs:
        probs[name][np.arange(42), codes[name]] = 0.95
    # person b: female on every image, more surely than the labelled females look female (cleanlab's class threshold
    # at person level is their average, 0.95 here: a person at 0.9 would not count as confidently female)
    probs["gender"][7:14] = [0.03, 0.97]
    probs["mask"][[19, 20]] = [[0.05, 0.05, 0.9], [0.05, 0.9, 0.05]]  # person c: the pair exchanged
    probs["mask"][27] = [0.05, 0.9, 0.05]  # person d: only its not_wear photo looks incorrect (a model error)
    previous = {name: p.copy() for name, p in probs.items()}
    previous["gender"][:7] = [0.5, 0.5]
    previous["gender"][35:] = np.nan  # person f unknown to the earlier model
    rows = score_rows(COMPETITION, labels, probs, previous)
    assert len(rows) == 3 * 42 and not rows.duplicated(["item_id", "attribute"]).any()
    gender = rows[rows["attribute"] == "gender"].set_index("item_id")
    assert gender.loc[8:14, "is_issue"].all() and (gender.loc[8:14, "suggested"] == "female").all()
    assert not gender.drop(index=range(8, 15))["is_issue"].any()
    assert gender.groupby(labels.set_index("item_id")["person"])["score"].nunique().eq(1).all()
    swap = rows[(rows["attribute"] == "mask") & (rows["kind"] == "swap")]
    assert sorted(swap["item_id"]) == [20, 21] and swap["is_issue"].all()
    assert list(swap.sort_values("item_id")["suggested"]) == ["not_wear", "incorrect"]
    lone = rows[(rows["attribute"] == "mask") & (rows["item_id"] == 28)].iloc[0]  # one of a pair: no flag
    assert lone["kind"] == "image" and lone["suggested"] == "incorrect" and not lone["is_issue"]
    assert lone["detail"]["cleanlab_issue"] and "pair_rule" in lone["detail"]
    details = gender["detail"]
    assert details.loc[1]["disagreement"] > 0.1 and details.loc[15]["disagreement"] == 0
    assert "disagreement" not in details.loc[36] or details.loc[36]["disagreement"] is None
    assert set(details.loc[8]["probabilities"]) == {"male", "female"} and details.loc[8]["n_images"] == 7


def test_score_rows_show_the_probabilities_the_verdict_read():
    """An image unit's ``probabilities`` are the recalibrated ones its score was computed from (so the page's
    "Model (recalibrated)" line and the score agree); ``image_probabilities`` keep the model's own output.
    One photo a person: no person holds both classes of the mask swap pair (an empty swap table once crashed)."""
    from core.calibration import recalibrate

    rng = np.random.default_rng(3)
    n = 60
    labels = pd.DataFrame({"item_id": np.arange(n) + 1, "path": [f"p{i}/0.jpg" for i in range(n)],
                           "person": [f"p{i}" for i in range(n)], "mask": rng.choice(["wear", "incorrect", "not_wear"], n),
                           "gender": rng.choice(["male", "female"], n), "age": rng.integers(18, 70, n)})
    labels = COMPETITION.add_derived(labels)
    codes = COMPETITION.codes(labels)
    probs = {}
    for name, k in (("mask", 3), ("gender", 2), ("age_group", 3)):
        logits = rng.normal(0, 1, (n, k)) + 2.5 * np.eye(k)[codes[name]]
        p = np.exp(logits / 0.4)  # over-confident: recalibration moves them
        probs[name] = p / p.sum(1, keepdims=True)
    rows = score_rows(COMPETITION, labels, probs)
    mask = rows[(rows["attribute"] == "mask") & (rows["kind"] == "image")].set_index("item_id")
    read, _ = recalibrate(codes["mask"], probs["mask"])
    classes = COMPETITION.target_classes("mask")
    for item_id in mask.index[:10]:
        detail = mask.loc[item_id, "detail"]
        assert [detail["probabilities"][c] for c in classes] == pytest.approx(read[item_id - 1], abs=1e-4)
        assert [detail["image_probabilities"][c] for c in classes] == pytest.approx(probs["mask"][item_id - 1], abs=1e-4)
    assert not np.allclose(read, probs["mask"], atol=1e-3)


def test_person_units_carry_the_count_estimates_and_the_page_says_when_they_disagree():
    """Each person unit's detail holds the three estimates of how many people are wrong and the number flagged
    (their median); ``review.count_note`` turns a disagreement into one plain sentence, and says nothing when they
    agree or for an image unit."""
    from core import review

    rng = np.random.default_rng(8)
    persons = np.repeat([f"p{i:03d}" for i in range(60)], 5)
    n = len(persons)
    labels = pd.DataFrame({"item_id": np.arange(n) + 1, "path": [f"{p}/{i}.jpg" for i, p in enumerate(persons)],
                           "person": persons, "mask": "wear", "gender": np.repeat(rng.choice(["male", "female"], 60), 5),
                           "age": np.repeat(rng.integers(18, 70, 60), 5)})
    labels = COMPETITION.add_derived(labels)
    codes = COMPETITION.codes(labels)
    probs = {}
    for name, k in (("mask", 3), ("gender", 2), ("age_group", 3)):
        p = np.full((n, k), 0.1 / (k - 1))
        p[np.arange(n), codes[name]] = 0.9
        probs[name] = p
    probs["gender"][:15] = probs["gender"][:15, ::-1]  # three people look like the other gender on every photo
    probs["gender"][15:18] = [0.45, 0.55]  # one more, unsure
    rows = score_rows(COMPETITION, labels, probs)
    gender = rows[rows["attribute"] == "gender"]
    detail = gender["detail"].iloc[0]
    counts, flagged = detail["count_estimates"], detail["n_flagged"]
    assert set(counts) == {"person_mean", "image_vote", "expected"} and all(isinstance(v, int) for v in counts.values())
    assert flagged == int(gender.drop_duplicates("unit")["is_issue"].sum())
    assert all(d["count_estimates"] == counts for d in gender["detail"])  # one run, one estimate, on every person
    note = review.count_note("gender", {"count_estimates": {"person_mean": 3, "image_vote": 5, "expected": 2},
                                        "n_flagged": 3})
    assert note is not None and note.startswith("3 flagged for gender") and "5 (per-image votes)" in note
    assert "Flagged only" in note
    assert review.count_note("gender", {"count_estimates": {"person_mean": 3, "image_vote": 3, "expected": 3},
                                        "n_flagged": 3}) is None
    assert review.count_note("mask", rows[rows["attribute"] == "mask"]["detail"].iloc[0]) is None
    assert review.count_note("gender", json.dumps({"count_estimates": {"a": 1, "b": 4}, "n_flagged": 2})) is not None


def test_score_rows_even_folds_scored_at_different_temperatures():
    """The score job passes each image's fold: folds whose models came out at different temperatures are evened, so
    the stored person verdicts are (nearly) those of folds at one temperature; without the folds they are not."""
    rng = np.random.default_rng(7)
    people, stems = 240, ["wear"] * 5 + ["incorrect", "not_wear"]
    persons = np.repeat([f"p{i:03d}" for i in range(people)], 7)
    true_gender = (rng.random(people) < 0.1).astype(int)  # a rare class, where one temperature for all folds hurts
    given_gender = np.where(rng.random(people) < 0.08, 1 - true_gender, true_gender)
    labels = COMPETITION.add_derived(pd.DataFrame({
        "item_id": np.arange(people * 7) + 1, "path": [f"{p}/{i}.jpg" for i, p in enumerate(persons)],
        "person": persons, "mask": stems * people,
        "gender": np.array(["male", "female"])[given_gender][np.repeat(np.arange(people), 7)],
        "age": np.repeat(rng.choice([25, 40, 65], people), 7)}))
    codes = COMPETITION.codes(labels)
    truth = {**codes, "gender": np.repeat(true_gender, 7)}
    probs = {}
    for name, k in (("mask", 3), ("gender", 2), ("age_group", 3)):
        logits = 2.0 * np.eye(k)[truth[name]] + np.repeat(rng.normal(0, 0.5, (people, k)), 7, axis=0)
        logits += rng.normal(0, 1.0, (people * 7, k))
        probs[name] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    folds = np.repeat(np.arange(people) % 3, 7)
    tempered = {name: p ** (1 / np.array([0.3, 1.0, 3.0]))[folds][:, None] for name, p in probs.items()}
    tempered = {name: p / p.sum(axis=1, keepdims=True) for name, p in tempered.items()}

    def flags(rows: pd.DataFrame) -> pd.Series:
        return rows[rows["attribute"] == "gender"].set_index("item_id")["is_issue"].sort_index()

    plain = flags(score_rows(COMPETITION, labels, probs, folds=folds))
    evened = flags(score_rows(COMPETITION, labels, tempered, folds=folds))
    blind = flags(score_rows(COMPETITION, labels, tempered))
    assert plain.sum() > 50  # about 8 % of 240 people, 7 images each
    assert (evened == plain).mean() > 0.99 and (blind == plain).mean() < (evened == plain).mean() - 0.01
