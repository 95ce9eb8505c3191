"""The Train page's Compare tab through AppTest on hand-made journal rows (no training): run order whatever
is picked first, no arrow for a change inside run-to-run noise, "no spread known" without repeats,
intervals from a repeat group; the runs table's group mean ± SD."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.run_views import compare_defaults
from core.store import LabelStore
from tests.test_app_train import open_train
from train import compare

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
PAGE = "app_pages/train.py"
CONFIG = {"model": "test_resnet", "epochs": 1, "lr": 0.003, "img_size": [32, 40]}
CLASSES = ("wear/male/<30", "wear/female/<30")


KEY = "a1" * 32  # one answer key for every hand-made run (as an experiment's runs): their numbers compare


def add_run(store: LabelStore, snapshot, f1: float, *, seed: int = 0, group: int | None = None,
            status: str = "done", per_class: tuple[float, float] = (0.9, 0.8), answer_key: str | None = KEY) -> int:
    """A finished training run with one best epoch (macro F1 ``f1``) on ``snapshot``, measured on ``answer_key``
    (None: its own labels)."""
    config = {**CONFIG, "seed": seed, "snapshot": str(snapshot.path)}
    run_id = store.create_run("train", config, status=status, snapshot_hash=snapshot.hash, seed=seed,
                              metrics={"best_macro_f1": f1, "best_epoch": 1, "epochs_done": 1}, answer_key=answer_key)
    if group is not None:
        store.update_run(run_id, repeat_group=group)
    store.record_epoch(run_id, 1, {"macro_f1": f1, "acc_class": f1 + 0.05, "val_loss": 1 - f1,
                                   "f1_per_class": dict(zip(CLASSES, per_class))})
    return run_id


@pytest.fixture
def journal(make_store: Callable[..., LabelStore], monkeypatch: pytest.MonkeyPatch) -> LabelStore:
    """Run 1: the baseline (0.858); 13 corrections later, run 2 with the same settings (0.810)."""
    store = make_store(n_persons=8)
    monkeypatch.setenv("LABELS_DB", str(store.path))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    before = store.snapshot()
    add_run(store, before, 0.858)
    person = store.current_labels()["person"].iloc[0]
    store.correct(person, "gender", "male" if store.label_of(person, "gender") == "female" else "female",
                  expected=store.label_of(person, "gender"), annotator="t", reason="test", source="review")
    add_run(store, store.snapshot(), 0.810)
    return store


def compare_boxes(at: AppTest) -> tuple:
    boxes = [s for s in at.selectbox if str(s.key).startswith("compare_")]
    return tuple(sorted(boxes, key=lambda s: s.key))  # compare_a_..., compare_b_...


def did_it_help(at: AppTest):
    return next(d.value for d in at.dataframe if {"metric", "verdict"} <= set(d.value.columns))


def test_defaults_are_before_the_earlier_run_after_the_later(journal: LabelStore):
    assert compare_defaults(journal.runs("train")) == (1, 2)
    at = open_train()
    assert not at.exception, [e.value for e in at.exception]
    before, after = compare_boxes(at)
    assert (before.label, before.value) == ("Before (the earlier run)", 1)
    assert (after.label, after.value) == ("After (the later run)", 2)
    f1 = [m for m in at.metric if "macro F1" in m.label][0]
    assert f1.value == "0.8100" and not f1.proto.delta  # no arrow: nothing says the change is real
    row = did_it_help(at).set_index("metric").loc["macro_f1"]
    assert row["verdict"] == compare.NO_SPREAD and row["change [95 % interval]"] == "-0.0480 (no interval)"
    assert any("train it ×3" in c.value.replace("\\", "") for c in at.caption)


def test_picked_the_wrong_way_round_it_is_still_before_then_after(journal: LabelStore):
    at = open_train()
    before, after = compare_boxes(at)
    before.set_value(2)
    after.set_value(1)
    at.run()
    assert not at.exception
    assert any("Compared in run order: run #1 is before, run #2 after" in i.value.replace("\\", "") for i in at.info)
    table = did_it_help(at)
    assert list(table.columns) == ["metric", "verdict", "change [95 % interval]", "before #1", "after #2"]
    assert table.set_index("metric").loc["macro_f1", "before #1"] == pytest.approx(0.858)
    labels = next(d.value for d in at.dataframe if "changes" in d.value.columns)
    assert "female -> male" in " ".join(labels["changes"].astype(str)) or \
        "male -> female" in " ".join(labels["changes"].astype(str))


def test_a_change_inside_the_journal_spread_reads_within_noise(journal: LabelStore):
    """Three more runs of the baseline's config on its labels: a measured spread (SD 0.04)."""
    snapshot = journal.snapshot()  # the current labels = run 2's
    first = add_run(journal, snapshot, 0.78, seed=1)
    journal.update_run(first, repeat_group=first)
    for seed, f1 in ((2, 0.82), (3, 0.86)):
        add_run(journal, snapshot, f1, seed=seed, group=first)
    assert compare_defaults(journal.runs("train")) == (1, 5)  # before: the newest finished run on other labels
    at = open_train(**{"compare_a_5": 1, "compare_b_5": 2})
    assert not at.exception, [e.value for e in at.exception]
    row = did_it_help(at).set_index("metric").loc["macro_f1"]
    assert row["verdict"] == compare.NOISE and row["change [95 % interval]"].startswith("-0.0480 [")
    f1 = [m for m in at.metric if "macro F1" in m.label][0]
    assert not f1.proto.delta
    assert any("within run-to-run noise" in i.value.replace("\\", "") for i in at.info)
    assert any("journal's measured run-to-run spread" in c.value.replace("\\", "") for c in at.caption)
    classes = next(d.value for d in at.dataframe if {"class", "verdict"} <= set(d.value.columns))
    assert set(classes["verdict"]) == {compare.NOISE}
    # The group against run 2: both sides with repeats would need two groups; one group + one run uses the spread.
    runs = next(d.value for d in at.dataframe if "note" in d.value.columns)
    shown = runs.set_index("id")["repeat_group"]
    assert shown[3] == shown[5] and shown[3].startswith("#3 ×3: 0.8200 ± 0.0400") and shown[1] == ""


def test_two_repeat_groups_use_welch_and_a_clear_gain_gets_its_arrow(journal: LabelStore):
    snapshot = journal.snapshot()
    groups = []
    for base in (0.70, 0.86):
        first = add_run(journal, snapshot, base, seed=10)
        journal.update_run(first, repeat_group=first)
        for seed, delta in ((11, 0.01), (12, -0.01)):
            add_run(journal, snapshot, base + delta, seed=seed, group=first)
        groups.append(first)
    at = open_train(**{f"compare_a_{groups[1] + 2}": groups[0], f"compare_b_{groups[1] + 2}": groups[1]})
    assert not at.exception, [e.value for e in at.exception]
    row = did_it_help(at).set_index("metric").loc["macro_f1"]
    assert row["verdict"] == compare.IMPROVED
    f1 = [m for m in at.metric if "macro F1" in m.label][0]
    assert f1.proto.delta == "+0.1600"
    assert any("repeat groups: 3 run(s) before, 3 after" in c.value.replace("\\", "") for c in at.caption)


def test_the_train_forms_x3_starts_one_fit_job_with_repeats(journal: LabelStore, monkeypatch: pytest.MonkeyPatch):
    from train import jobs

    started: list[tuple[str, object, dict]] = []
    monkeypatch.setattr(jobs, "start", lambda store, command, config=None, *, options=None, **kw: started.append(
        (command, config, dict(options or {}))) or 99)
    at = open_train(train_repeats=3)
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    command, config, options = started[-1]
    assert command == "fit" and config is not None and options == {"repeats": 3}
    at = open_train()
    at.button(key="train_start").click().run()
    assert started[-1][2] == {}  # × 1: a single run, as before


def test_a_failed_run_without_a_snapshot_says_so_in_compare_and_run_detail(journal: LabelStore):
    """A job that failed before its snapshot (e.g. Pretrained offline) has no labels and no metrics."""
    failed = journal.create_run("train", {**CONFIG, "seed": 0}, status="failed")
    journal.update_run(failed, error_tail="error: cannot fetch timm's pretrained weights (offline)")
    at = open_train()
    before, after = compare_boxes(at)
    after.set_value(failed)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value.replace("\\", "") for w in at.warning]
    assert any(f"no label snapshot for run #{failed}: none taken (the run is failed)" in w for w in warnings), warnings
    at.selectbox(key="detail_run").set_value(failed).run()
    assert not at.exception
    assert next(m.value for m in at.metric if m.label == "Best macro F1") == "-"  # not 0.0000
    tail = next(c for c in at.code if "cannot fetch" in c.value)
    assert tail.proto.wrap_lines  # the one error line readable without scrolling sideways


def test_a_repeat_groups_seeds_are_listed_not_one_runs(journal: LabelStore):
    snapshot = journal.snapshot()
    first = add_run(journal, snapshot, 0.80, seed=10)
    journal.update_run(first, repeat_group=first)
    for seed in (11, 12):
        add_run(journal, snapshot, 0.80, seed=seed, group=first)
    at = open_train(**{f"compare_a_{first + 2}": 1, f"compare_b_{first + 2}": first})
    assert not at.exception, [e.value for e in at.exception]
    settings = next(d.value for d in at.dataframe if "setting" in d.value.columns).set_index("setting")
    assert list(settings.loc["seed"]) == ["0", "10, 11, 12"]  # run #1's seed vs the group's three


def test_runs_measured_on_different_answer_keys_are_refused_in_one_line(journal: LabelStore):
    """Two runs each validated on its own labels (before and after a correction): the settings and label changes
    show, the numbers do not; a score run is in its own table, never in the training runs' macro F1 column."""
    own_a = add_run(journal, journal.snapshot(), 0.70, answer_key=None)
    person = journal.current_labels()["person"].iloc[1]
    gender = journal.label_of(person, "gender")
    journal.correct(person, "gender", "male" if gender == "female" else "female", expected=gender, annotator="t",
                    reason="test", source="review")
    own_b = add_run(journal, journal.snapshot(), 0.75, answer_key=None)
    score = journal.create_run("score", {**CONFIG, "seed": 0}, status="done", metrics={"mean_macro_f1": 0.774})
    at = open_train(**{f"compare_a_{score}": own_a, f"compare_b_{score}": own_b})
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value.replace("\\", "") for w in at.warning]
    refusal = [w for w in warnings if "different answer keys" in w]
    assert len(refusal) == 1 and "\n" not in refusal[0] and f"python -m train evaluate {own_a} {own_b}" in refusal[0]
    assert not [d for d in at.dataframe if {"metric", "verdict"} <= set(d.value.columns)]  # no numbers side by side
    assert not [m for m in at.metric if m.label.startswith("Validation macro F1")]
    assert next(d.value for d in at.dataframe if "changes" in d.value.columns) is not None  # what changed still shows
    tables = [d.value for d in at.dataframe if "note" in d.value.columns]
    training = next(t for t in tables if own_b in set(t["id"]))
    assert score not in set(training["id"]) and set(training["measured_on"]) >= {"own labels", "key a1a1a1a1"}
    scores = next(t for t in tables if score in set(t["id"]))
    assert set(scores["id"]) == {score} and scores["macro_f1"].iloc[0] == pytest.approx(0.774)
    captions = [c.value.replace("\\", "") for c in at.caption]
    assert any(c.startswith("Score runs (macro F1 out-of-fold") for c in captions)
