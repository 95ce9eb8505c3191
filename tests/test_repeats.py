"""Repeat groups (``fit --repeats N``) and Compare's verdicts: run order, intervals from repeats or from the
journal's measured spread, "within run-to-run noise", "no spread known". Tiny demo, 1-epoch fits."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest

from core.store import LabelStore
from tests.fixtures import demo_db
from train import compare
from train.__main__ import main as train_main
from train.config import TrainConfig

TINY = ["--model", "test_resnet", "--img-size", "32", "40", "--epochs", "1", "--batch-size", "16", "--val-folds",
        "3", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-person demo with a repeat group of 3 (runs 1-3), a single run (4) of another learning rate on the same
    labels and, after one correction, a run (5) on other labels (measured on another answer key)."""
    db = demo_db(tmp_path_factory.mktemp("repeats"), persons=12)
    assert train_main(["fit", "--db", str(db), "--repeats", "3", "--seed", "5", *TINY]) == 0
    assert train_main(["fit", "--db", str(db), "--seed", "5", "--lr", "0.001", *TINY]) == 0
    with LabelStore(db) as store:
        person = store.current_labels()["person"].iloc[0]
        gender = store.label_of(person, "gender")
        store.correct(person, "gender", "male" if gender == "female" else "female", expected=gender,
                      annotator="t", reason="test", source="review")
    assert train_main(["fit", "--db", str(db), "--seed", "5", *TINY]) == 0
    return db


def test_fit_repeats_records_one_group_on_one_snapshot_with_consecutive_seeds(journal: Path, capsys):
    with LabelStore(journal) as store:
        runs = store.runs("train").sort_values("id")
        assert list(runs["id"]) == [1, 2, 3, 4, 5] and set(runs["status"]) == {"done"}
        group = runs[runs["id"] <= 3]
        assert list(group["repeat_group"]) == [1, 1, 1] and pd.isna(runs["repeat_group"].iloc[3])
        assert set(runs["labels"]) == {"current"} and runs["answer_key"].isna().all()
        assert list(group["seed"]) == [5, 6, 7] and group["snapshot_hash"].nunique() == 1
        assert list(store.repeat_group(1)["id"]) == [1, 2, 3] and not store.repeat_group_pending(1)
        table = compare.runs_table(store)
    text = table.set_index("id")["repeat_group"]
    assert text[1] == text[3] and text[1].startswith("#1 ×3: ") and "± " in text[1] and "3 of 3 runs" in text[1]
    assert text[4] == ""
    assert train_main(["runs", "--db", str(journal)]) == 0
    assert "#1 ×3" in capsys.readouterr().out


def test_compare_is_in_run_order_and_uses_the_groups_spread(journal: Path):
    with LabelStore(journal) as store:
        forward = compare.compare_runs(store, 3, 4)
        backward = compare.compare_runs(store, 4, 3)  # picked the other way round: the same comparison
    assert (backward["before"], backward["after"], backward["swapped"]) == (3, 4, True)
    assert backward["metrics"] == forward["metrics"] and not forward["swapped"]
    assert forward["runs_before"] == [1, 2, 3] and forward["runs_after"] == [4]
    f1 = next(m for m in forward["metrics"] if m["metric"] == "macro_f1")
    assert f1["interval"] == "journal" and f1["spread"]["runs"] == 3 and f1["spread"]["df"] == 2
    assert f1["low"] < f1["change"] < f1["high"] and f1["verdict"] in (compare.IMPROVED, compare.WORSE, compare.NOISE)
    assert "journal's measured run-to-run spread" in forward["source"]
    assert forward["per_class"] and all("verdict" in row for row in forward["per_class"])
    with LabelStore(journal) as store:
        within = compare.compare_runs(store, 3, 1)  # two runs of one group: each for itself, the group's spread
    assert (within["runs_before"], within["runs_after"]) == ([1], [3])
    assert next(m for m in within["metrics"] if m["metric"] == "macro_f1")["interval"] == "journal"


def test_diff_prints_the_verdicts_before_and_after_in_run_order(journal: Path, capsys):
    assert train_main(["diff", "4", "1", "--db", str(journal)]) == 0
    out = capsys.readouterr().out
    assert "(in run order: run 1 is before, run 4 after)" in out
    assert "run 1 (before) -> run 4 (after)" in out and "lr: 0.003 -> 0.001" in out and "(same labels)" in out
    assert "did it help: after - before (runs [1, 2, 3] vs [4])" in out and "macro_f1 " in out
    assert any(v in out for v in (compare.IMPROVED, compare.WORSE, compare.NOISE))
    assert "measured on its own labels (snapshot " in out


def test_runs_on_other_labels_are_not_compared_on_their_own_answer_keys(journal: Path, capsys):
    """Run 5 trained after a correction and validated on its own (corrected) labels: its numbers and run 4's
    are on different answer keys; diff shows what changed and refuses the numbers in one line."""
    with LabelStore(journal) as store, pytest.raises(compare.AnswerKeyMismatch, match="different answer keys"):
        compare.compare_runs(store, 4, 5)
    assert train_main(["diff", "4", "5", "--db", str(journal)]) == 2
    captured = capsys.readouterr()
    assert "gender: 7 image(s) changed (1 person)" in captured.out and "did it help" not in captured.out
    assert captured.err.startswith("error: runs #4 and #5 were measured on different answer keys")
    assert captured.err.count("\n") == 1


def test_difference_welch_journal_and_no_spread():
    welch = compare.difference([0.80, 0.82, 0.81], [0.84, 0.86, 0.85])
    assert welch["interval"] == "repeats" and welch["change"] == pytest.approx(0.04)
    half = compare.t_quantile(4) * math.sqrt(0.01 ** 2 / 3 * 2)  # equal variances: Welch df = 4
    assert welch["low"] == pytest.approx(0.04 - half) and welch["verdict"] == compare.IMPROVED
    noisy = compare.difference([0.858], [0.810], spread={"sd": 0.025, "df": 4})
    assert noisy["interval"] == "journal" and noisy["low"] < 0 < noisy["high"] and noisy["verdict"] == compare.NOISE
    worse = compare.difference([0.858], [0.810], spread={"sd": 0.005, "df": 10})
    assert worse["verdict"] == compare.WORSE
    unknown = compare.difference([0.858], [0.810])
    assert unknown["verdict"] == compare.NO_SPREAD == "no spread known: train ×3 to know" and unknown["low"] is None
    assert compare.difference([1.0, 1.1], [0.5, 0.6], lower_better=True)["verdict"] == compare.IMPROVED
    assert compare.config_hash({"lr": 1, "seed": 0, "out": "a"}) == compare.config_hash({"lr": 1, "seed": 3, "out": "b"})
    assert compare.config_hash({"lr": 1}) != compare.config_hash({"lr": 2})


def test_a_dashboard_job_with_repeats_holds_the_job_lock_until_its_last_run(journal: Path):
    from train import jobs

    with LabelStore(journal) as store:
        config = TrainConfig(model="test_resnet", img_size=(32, 40), epochs=1, batch_size=16, val_folds=3, threads=1,
                             seed=20)
        first = jobs.start(store, "fit", config, options={"repeats": 2})
        assert jobs.wait(store, first, timeout_s=300)["status"] == "done"
        group = store.repeat_group(first)
        assert list(group["id"]) == [first, first + 1]
        if store.repeat_group_pending(first):  # the second run is queued or training: still one job
            assert int(jobs.running_job(store)["id"]) in (first, first + 1)
            with pytest.raises(jobs.JobBusy):
                jobs.start(store, "score")
        assert jobs.wait(store, first + 1, timeout_s=300)["status"] == "done"
        deadline = time.monotonic() + 30
        while jobs.running_job(store) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert jobs.running_job(store) is None
        assert list(store.repeat_group(first)["seed"]) == [20, 21]
