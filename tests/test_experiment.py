"""Did cleaning help? ``python -m train experiment`` (original vs current labels, paired seeds, one answer key),
``train evaluate`` (re-evaluation from checkpoints), ``fit --labels``, Compare's refusal of mixed answer keys, the
paired statistics and the power line. Tiny demo, 1-epoch fits of timm's test_resnet at 32x40."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from core.store import LabelStore, StoreError
from tests.fixtures import demo_db
from train import compare
from train.__main__ import main as train_main
from train.answer_key import read_answer_key
from train.experiment import experiment_report, power_line, validation_people, verdict_line
from train.run_folder import VAL_PREDICTIONS

TINY = ["--model", "test_resnet", "--img-size", "32", "40", "--epochs", "1", "--batch-size", "16", "--val-folds",
        "3", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 15-person noisy demo; its first snapshot taken before any correction; two validation people and one
    training person relabelled (gender); a separate 5-person held-out demo; experiment #1 with 2 pairs."""
    from core.demo import generate

    base = tmp_path_factory.mktemp("experiment")
    db = demo_db(base, persons=15, noise=0.2)
    generate(base / "held", persons=5, noise=0.0, seed=99, eval_images=0, image_size=(48, 64))
    with LabelStore(db) as store:
        first = store.snapshot()
        from train.config import TrainConfig

        people = validation_people(store.current_labels(original=True), TrainConfig(val_folds=3, seed=0))
        others = sorted(set(store.current_labels()["person"]) - set(people))
        changed = people[:2] + others[:1]
        for person in changed:
            gender = store.label_of(person, "gender")
            store.correct(person, "gender", "male" if gender == "female" else "female", expected=gender,
                          annotator="t", reason="test", source="review")
    assert train_main(["experiment", "--db", str(db), "--repeats", "2", "--heldout",
                       str(base / "held" / "truth.csv"), *TINY]) == 0
    return {"db": db, "first": first, "people": people, "changed": changed, "base": base}


def members(store: LabelStore, experiment: int) -> pd.DataFrame:
    return store.experiment_runs(experiment)


def test_both_sides_are_judged_on_one_answer_key_the_current_labels_of_the_validation_people(lab: dict):
    with LabelStore(lab["db"]) as store:
        experiment = store.run(1)
        assert experiment["kind"] == "experiment" and experiment["status"] == "done"
        runs = members(store, 1)
        assert list(runs["side"]) == ["original", "current", "original", "current"] and list(runs["seed"]) == [0, 0, 1, 1]
        rows = [store.run(int(r)) for r in runs["run_id"]]
        key_hash = experiment["config"]["answer_key"]
        assert {r["answer_key"] for r in rows} == {key_hash}  # every number of both sides on one key
        assert [r["labels"] for r in rows] == ["original", "current"] * 2
        assert rows[0]["snapshot_hash"] == lab["first"].hash != rows[1]["snapshot_hash"]
        key, meta = read_answer_key(store.answer_key(key_hash)["path"])
        truths = [pd.read_csv(Path(r["run_dir"]) / VAL_PREDICTIONS).sort_values("path").reset_index(drop=True)
                  for r in rows]
        current = store.current_labels()
    # The validation truth each run was measured against is identical, and it is the CURRENT labels of the
    # validation people (the correction shows), not the original labels the original side trained on.
    for truth in truths[1:]:
        pd.testing.assert_frame_equal(truth.filter(like="true_"), truths[0].filter(like="true_"))
    assert set(key["person"]) == set(lab["people"]) and meta["kind"] == "validation"
    relabelled = lab["changed"][0]
    mine = key[key["person"] == relabelled]
    assert set(mine["gender"]) == {current.loc[current["person"] == relabelled, "gender"].iloc[0]}
    assert mine["reviewed"].all() and not key.loc[~key["person"].isin(lab["changed"]), "reviewed"].any()
    assert meta["n_reviewed"] == int(key["reviewed"].sum()) > 0
    # Nobody of the validation people trained on either side.
    for truth in truths:
        assert set(truth["person"]) == set(lab["people"])


def test_the_report_has_a_paired_verdict_per_key_and_a_power_line(lab: dict, capsys):
    with LabelStore(lab["db"]) as store:
        report = experiment_report(store, 1)
        stored = store.run(1)["metrics"]
    assert report["pairs"] == 2 and report["seeds"] == [0, 1] and stored["verdict"] == report["verdict"]
    assert set(report["keys"]) == {"validation", "heldout"}
    for result in report["keys"].values():
        f1 = result["metrics"]["macro_f1"]
        diffs = [c - o for o, c in zip(f1["original"], f1["current"])]
        assert f1["change"] == pytest.approx(sum(diffs) / 2)
        half = compare.t_quantile(1) * abs(diffs[0] - diffs[1]) / math.sqrt(2) / math.sqrt(2)
        assert f1["high"] - f1["change"] == pytest.approx(half)
        assert result["verdict"].startswith(("cleaning helped: macro F1", "cleaning hurt: macro F1", "no evidence yet"))
        assert result["power"].startswith("with 2 pairs (SD of a pair's difference")
    assert report["keys"]["heldout"]["description"].startswith("heldout key") and "5 people" in \
        report["keys"]["heldout"]["description"]


def test_running_again_with_more_pairs_reuses_what_ran(lab: dict):
    assert train_main(["experiment", "--db", str(lab["db"]), "--repeats", "3", *TINY]) == 0
    with LabelStore(lab["db"]) as store:
        newest = int(store.runs("experiment")["id"].iloc[0])
        again, first = members(store, newest), members(store, 1)
        report = experiment_report(store, newest)
    assert report["pairs"] == 3
    assert list(again["reused"]) == [1, 1, 1, 1, 0, 0]  # seeds 0 and 1 taken as they were; seed 2 trained
    assert list(again["run_id"].iloc[:4]) == list(first["run_id"])


def test_labels_original_trains_on_the_ingest_snapshot(lab: dict):
    assert train_main(["fit", "--db", str(lab["db"]), "--labels", "original", *TINY]) == 0
    with LabelStore(lab["db"]) as store:
        run = store.run(int(store.runs("train")["id"].iloc[0]))
        assert run["labels"] == "original" and run["answer_key"] is None
        assert run["snapshot_hash"] == lab["first"].hash  # the first snapshot, taken before any correction
        assert run["config"]["labels"] == "original"
        current = store.snapshot()
    assert train_main(["fit", "--db", str(lab["db"]), "--labels", current.hash[:12], *TINY]) == 0
    with LabelStore(lab["db"]) as store:
        run = store.run(int(store.runs("train")["id"].iloc[0]))
        assert run["labels"] == "snapshot" and run["snapshot_hash"] == current.hash
    assert train_main(["fit", "--db", str(lab["db"]), "--labels", "nosuchsnapshot", *TINY]) == 2


def test_re_evaluating_a_checkpoint_reproduces_its_stored_metric_on_its_own_labels(lab: dict, capsys):
    with LabelStore(lab["db"]) as store:
        plain = int(store.runs("train").query("labels == 'original' and answer_key.isna()")["id"].iloc[-1])
        keyed = int(members(store, 1)["run_id"].iloc[1])
    assert train_main(["evaluate", str(plain), str(keyed), "--labels", "own", "--json", "--db", str(lab["db"])]) == 0
    results = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    with LabelStore(lab["db"]) as store:
        for run_id in (plain, keyed):
            best = compare.best_record(store.run(run_id), store.epochs(run_id))
            assert results[run_id]["metrics"]["macro_f1"] == pytest.approx(best["macro_f1"], abs=1e-9)
            assert results[run_id]["metrics"]["acc_class"] == pytest.approx(best["acc_class"], abs=1e-9)
            assert store.evaluation(run_id, results[run_id]["answer_key"]) is not None
        assert results[keyed]["answer_key"] == store.run(keyed)["answer_key"]  # its own key is the experiment's


def test_compare_refuses_mixed_answer_keys_until_both_are_judged_on_one(lab: dict, capsys):
    with LabelStore(lab["db"]) as store:
        plain = int(store.runs("train").query("labels == 'original' and answer_key.isna()")["id"].iloc[-1])
        keyed = int(members(store, 1)["run_id"].iloc[1])  # current labels, the experiment's key
        with pytest.raises(compare.AnswerKeyMismatch, match="different answer keys"):
            compare.compare_runs(store, plain, keyed)
    assert train_main(["diff", str(plain), str(keyed), "--db", str(lab["db"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    # Seed 0 with 3 folds holds out the same people as the experiment: one key of today's labels for both.
    assert train_main(["evaluate", str(plain), str(keyed), "--db", str(lab["db"])]) == 0
    assert "same answer key" in capsys.readouterr().out
    with LabelStore(lab["db"]) as store:
        verdicts = compare.compare_runs(store, plain, keyed)
        assert verdicts["answer_key"] == store.evaluations(plain)["answer_key"].iloc[0]


def test_re_evaluation_refuses_a_key_the_run_trained_on(lab: dict):
    from train.answer_key import heldout_key, people_key
    from train.experiment import evaluate_run

    with LabelStore(lab["db"]) as store:
        run_id = int(members(store, 1)["run_id"].iloc[0])
        trained = sorted(set(store.current_labels()["person"]) - set(lab["people"]))
        path, _ = people_key(store, trained[:2])
        with pytest.raises(StoreError, match=f"run #{run_id} trained on 2 of the answer key's 2 people"):
            evaluate_run(store, run_id, path)
        same, _ = heldout_key(store, lab["base"] / "data" / "truth.csv")  # the training demo's own images
        with pytest.raises(StoreError, match="trained on .* of the held-out key's images"):
            evaluate_run(store, run_id, same)


def test_an_experiment_without_corrections_and_a_bad_heldout_are_one_line_errors(tmp_path: Path, capsys):
    db = demo_db(tmp_path, persons=6)
    assert train_main(["experiment", "--db", str(db), "--repeats", "1", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nothing to compare yet" in err and err.count("\n") == 1
    with LabelStore(db) as store:
        assert store.runs("experiment")["status"].tolist() == ["failed"] and store.runs("train").empty
        person = store.current_labels()["person"].iloc[0]
        store.correct(person, "age", 70, expected=store.label_of(person, "age"), annotator="t", reason="x")
    bad = tmp_path / "held.csv"
    bad.write_text("path,mask,gender,age\nnone.jpg,wear,male,30\n")
    assert train_main(["experiment", "--db", str(db), "--heldout", str(bad), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: image 'none.jpg' not found" in err and err.count("\n") == 1


def test_paired_statistics_and_power_by_hand():
    row = compare.paired_difference([0.80, 0.82, 0.81], [0.83, 0.86, 0.84])
    assert row["change"] == pytest.approx(1 / 30) and row["n"] == 3
    assert row["sd"] == pytest.approx(math.sqrt(((0.03 - 1 / 30) ** 2 + (0.04 - 1 / 30) ** 2 + (0.03 - 1 / 30) ** 2) / 2))
    assert row["low"] == pytest.approx(row["change"] - compare.t_quantile(2) * row["sd"] / math.sqrt(3))
    assert row["verdict"] == compare.IMPROVED and verdict_line(row).startswith("cleaning helped: macro F1 +0.033 [")
    assert verdict_line(compare.paired_difference([0.8, 0.9], [0.81, 0.88])).startswith("no evidence yet")
    assert verdict_line(compare.paired_difference([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])).startswith("cleaning hurt")
    assert "one pair so far" in verdict_line(compare.paired_difference([0.8], [0.9]))
    # Power: with SD s the detectable difference shrinks like 1/sqrt(n); pairs_needed inverts it.
    d3, d12 = compare.detectable_difference(0.03, 3), compare.detectable_difference(0.03, 12)
    assert d3 > d12 > 0 and compare.detectable_difference(0.03, 1) is None
    needed = compare.pairs_needed(0.03, 0.02)
    assert compare.detectable_difference(0.03, needed) <= 0.02 < compare.detectable_difference(0.03, needed - 1)
    line = power_line(0.03, 3, 120.0, 0.02)
    assert line.startswith(f"with 3 pairs (SD of a pair's difference 0.030) this experiment sees a difference of "
                           f"±{d3:.3f}") and f"you need about {needed} pairs ({needed - 3} more, ~" in line
    assert f"~{math.ceil((needed - 3) * 120 / 60)} min more on this machine" in line
    assert "unknown until 2 pairs" in power_line(None, 1, None)


def test_the_train_page_asks_with_the_forms_settings_and_shows_the_verdict_and_power(lab: dict,
                                                                                     monkeypatch: pytest.MonkeyPatch):
    from tests.test_app_train import open_train
    from train import jobs

    monkeypatch.setenv("LABELS_DB", str(lab["db"]))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    started: list[tuple[str, object, dict]] = []
    monkeypatch.setattr(jobs, "start", lambda store, command, config=None, *, options=None, **kw: started.append(
        (command, config, dict(options or {}))) or 99)
    at = open_train(experiment_pairs=5, train_epochs=2)
    assert not at.exception, [e.value for e in at.exception]
    with LabelStore(lab["db"]) as store:
        newest = store.runs("experiment").iloc[0]
        report = experiment_report(store, int(newest["id"]))
    shown = [str(e.value).replace("\\", "") for e in [*at.success, *at.info, *at.error]]
    answer = f"Did cleaning help? Experiment #{newest['id']}, {report['pairs']} pairs: {report['verdict']}"
    assert answer in shown, shown
    captions = [str(c.value).replace("\\", "") for c in at.caption]
    assert f"Power: {report['power']}." in captions
    assert any(c.startswith("On the held-out set (heldout key") for c in captions) == ("heldout" in report["keys"])
    at.button(key="experiment_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    command, config, options = started[-1]
    assert command == "experiment" and options == {"repeats": 5, "target": 0.02}
    assert config.epochs == 2 and config.model == "test_resnet"


def test_a_power_line_without_spread_says_it_is_unknown():
    assert power_line(0.0, 3, 60.0).startswith("unknown: all 3 pairs differed by exactly the same amount (SD 0)")
    assert power_line(None, 1, None).startswith("unknown until 2 pairs have finished")


def test_compare_opens_on_the_newest_experiments_pair_judged_on_its_key(lab: dict):
    from app.run_views import compare_defaults, experiment_pair

    with LabelStore(lab["db"]) as store:
        newest = int(store.runs("experiment").query("status == 'done'")["id"].iloc[0])
        runs = members(store, newest)
        expected = (int(runs.loc[runs["side"] == "original", "run_id"].max()),
                    int(runs.loc[runs["side"] == "current", "run_id"].max()))
        assert experiment_pair(store) == expected
        assert compare_defaults(store.runs("train"), experiment_pair(store)) == tuple(sorted(expected))
        verdicts = compare.compare_runs(store, *expected)
        assert verdicts["runs_before"] == sorted(runs.loc[runs["side"] == "original", "run_id"].astype(int))
        assert verdicts["runs_after"] == sorted(runs.loc[runs["side"] == "current", "run_id"].astype(int))
        assert verdicts["answer_key"] == store.run(newest)["config"]["answer_key"]
        table = compare.runs_table(store).set_index("id")
    assert table.loc[expected[0], "labels"] == "original" and table.loc[expected[1], "labels"] == "current"
    assert table.loc[expected[0], "measured_on"] == table.loc[expected[1], "measured_on"] != "own labels"
