"""The Train page through Streamlit's AppTest with real background jobs on a tiny demo store
(test_resnet at 32×40, one epoch): retrain → row → done → metrics; predict eval; one job at a time;
cancel; a failing job's error tail; rescore outcome; disk deletion. Plus the pure helpers behind it."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app import journal_views as jv
from app import train_views
from core import review
from core.demo import generate
from core.ingest import ingest
from core.store import LabelStore
from core.synthetic import add_score_run
from train import disk, jobs
from train.config import TrainConfig, from_args, to_argv

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
PAGE = "app_pages/train.py"
# The form's widgets set to a tiny run (widget key -> value); one thread: the 2 CI cores are shared.
TINY = {"train_model": train_views.OTHER, "train_custom_model": "test_resnet", "train_width": 32, "train_height": 40,
        "train_epochs": 1, "train_batch_size": 16, "train_val_folds": 4, "train_threads": 1, "train_lr": 0.01}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny noisy demo (12 people, 48×64 images, 6 eval images), generated once for this module."""
    root = tmp_path_factory.mktemp("train_demo") / "demo"
    generate(root, persons=12, noise=0.1, image_size=(48, 64))
    return root


@pytest.fixture
def store(tmp_path: Path, demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> LabelStore:
    """The demo ingested into ``LABELS_DB``; any job still running at the end is cancelled."""
    path = tmp_path / "labels.db"
    monkeypatch.setenv("LABELS_DB", str(path))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the job processes
    store = LabelStore(path)
    ingest(demo_root, store)
    yield store
    running = jobs.running_job(store)
    if running is not None:
        jobs.cancel(store, int(running["id"]), grace_s=5)
    store.close()


def open_train(**widgets: object) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["annotator"] = "tester"
    for key, value in widgets.items():
        at.session_state[key] = value
    return at.switch_page(PAGE).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest, kind: str) -> list[str]:
    """Text of every element of a kind, markdown escapes (``ui.plain``) removed."""
    return [str(element.value).replace("\\", "") for element in getattr(at, kind)]


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text.replace("\\", "") for p in at.get("progress")]


def runs_shown(at: AppTest) -> pd.DataFrame:
    """The journal table as drawn (the data editor with the ``note`` column)."""
    return next(d.value for d in at.dataframe if "note" in d.value.columns)


def test_train_page_on_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELS_DB", str(tmp_path / "empty.db"))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    at = open_train()
    assert_clean(at)
    assert any("store is empty" in i for i in texts(at, "info"))


@pytest.mark.slow
def test_retrain_starts_a_job_that_finishes_and_shows_its_metrics(store: LabelStore) -> None:
    at = open_train(**TINY)
    assert_clean(at)
    at.button(key="train_start").click().run()
    assert_clean(at)
    assert any("Started training (test_resnet) as run #" in s for s in texts(at, "success")), texts(at, "success")
    run_id = int(store.runs("train").iloc[0]["id"])
    row = runs_shown(at).iloc[0]
    assert int(row["id"]) == run_id and row["kind"] == "train" and row["status"] in ("queued", "running")
    assert any(f"run #{run_id}" in t for t in progress_texts(at))

    finished = jobs.wait(store, run_id, timeout_s=240)
    assert finished["status"] == "done", finished.get("error_tail")
    assert finished["config"]["model"] == "test_resnet" and finished["config"]["img_size"] == [32, 40]
    at.run()
    assert_clean(at)
    best = finished["metrics"]["best_macro_f1"]
    assert any(t.endswith(f"done · macro F1 {best:.3f}") for t in progress_texts(at)), progress_texts(at)
    row = runs_shown(at).iloc[0]
    assert row["status"] == "done" and row["macro_f1"] == pytest.approx(best)
    assert row["epochs"] == "1/1" and row["checkpoint_mb"] > 0 and row["corrections"] == 0
    # Run detail: curves, a confusion matrix per head, per-class F1, the misclassified gallery.
    charts = at.get("plotly_chart")
    assert len(charts) >= 1 + 1 + 3 + 1  # live curves, detail curves, mask/gender/age_group, per-class F1
    assert any("Misclassified validation images" in s for s in texts(at, "subheader"))

    at.button(key="detail_predict").click().run()
    predict_id = int(store.runs("predict").iloc[0]["id"])
    assert jobs.wait(store, predict_id, timeout_s=240)["status"] == "done"
    at.run()
    assert_clean(at)
    download = at.get("download_button")
    assert any("submission.csv" in d.proto.label for d in download)
    submission = pd.read_csv(Path(finished["run_dir"]) / "submission.csv")
    assert list(submission.columns) == ["ImageID", "ans"] and len(submission) == 6

    # A misclassified image opens where it can be relabeled (no score run yet: the review page's browser).
    wrong = jv.misclassified(pd.read_csv(Path(finished["run_dir"]) / "val_predictions.csv", dtype=str))
    at.button(key="detail_review_0").click().run()
    assert_clean(at)
    assert at.session_state["review_browse_path"] == wrong.iloc[0]["path"]
    assert any(t == wrong.iloc[0]["path"] for t in texts(at, "text")), texts(at, "text")


def test_one_job_at_a_time_and_cancel(store: LabelStore) -> None:
    at = open_train(**{**TINY, "train_epochs": 200, "score_folds": 2})
    at.button(key="score_start").click().run()
    assert any("Started rescoring as run #" in s for s in texts(at, "success")), texts(at, "success")
    score_id = int(store.runs("score").iloc[0]["id"])

    second_tab = open_train()  # another browser session: the job's state comes from the database
    assert any(f"score run #{score_id}" in t for t in progress_texts(second_tab)), progress_texts(second_tab)
    assert second_tab.button(key="train_cancel").label == f"Cancel run #{score_id}"

    at.button(key="train_start").click().run()  # refused: the score job holds the lock
    assert any(f"Not started: run #{score_id} is still running (one job at a time)" in e
               for e in texts(at, "warning")), texts(at, "warning")
    assert store.runs("train").empty

    at.button(key="train_cancel").click().run()
    assert_clean(at)
    assert store.run(score_id)["status"] == "cancelled"
    assert jobs.running_job(store) is None
    assert any("was cancelled" in w for w in texts(at, "warning"))
    assert runs_shown(at).iloc[0]["status"] == "cancelled"


@pytest.mark.slow
def test_a_failing_job_shows_its_error_tail(store: LabelStore) -> None:
    at = open_train(**{**TINY, "train_custom_model": "no_such_model"})
    at.button(key="train_start").click().run()
    assert store.runs("train").empty  # a name outside timm's registry is refused before a job starts
    assert any("not in timm's model registry" in e for e in texts(at, "warning"))
    # a job that fails in the child (here: the same name from the command line) shows its error tail
    run_id = jobs.start(store, "fit", TrainConfig(model="no_such_model"))
    assert jobs.wait(store, run_id, timeout_s=240)["status"] == "failed"
    at.run()
    assert_clean(at)
    assert any(f"train run #{run_id} failed" in e for e in texts(at, "error"))
    assert any("no_such_model" in c for c in texts(at, "code"))


def test_rescore_outcome_counts_flags_that_appeared_and_cleared(store: LabelStore) -> None:
    first = add_score_run(store, flag_every=5)
    second = add_score_run(store, flag_every=3)
    before, after = review.queue_units(store, first), review.queue_units(store, second)
    flagged_before = set(before.loc[before["is_issue"] == 1, "key"])
    flagged_after = set(after.loc[after["is_issue"] == 1, "key"])
    at = open_train()
    assert_clean(at)
    message = " ".join(texts(at, "success"))
    assert (f"{len(flagged_after - flagged_before)} flag(s) appeared and {len(flagged_before - flagged_after)} "
            f"cleared versus score run #{first}") in message
    assert "The Review queue now uses these scores." in message


def test_same_settings_as_an_earlier_run_fill_the_form(store: LabelStore) -> None:
    run_id = store.create_run("train", {"model": "test_byobnet", "img_size": [32, 40], "epochs": 3, "lr": 0.02,
                                        "loss": "focal", "seed": 7, "augment": False}, status="done")
    at = open_train()
    assert at.selectbox(key="train_same_as").value == run_id
    at.button(key="train_load").click().run()
    assert_clean(at)
    state = at.session_state
    assert (state["train_model"], state["train_custom_model"]) == (train_views.OTHER, "test_byobnet")
    assert (state["train_width"], state["train_height"], state["train_epochs"]) == (32, 40, 3)
    assert (state["train_lr"], state["train_loss"], state["train_seed"], state["train_augment"]) == \
        (0.02, "focal", 7, False)
    assert any(f"settings of run #{run_id}" in s for s in texts(at, "success"))


def test_pretrained_sizes_follow_the_model_and_reach_the_job(store: LabelStore,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[TrainConfig] = []
    monkeypatch.setattr(jobs, "start", lambda _store, command, config=None, options=None: started.append(config) or 9)
    at = open_train()
    at.checkbox(key="train_pretrained").check().run()
    assert_clean(at)
    assert (at.session_state["train_width"], at.session_state["train_height"]) == (160, 160)  # test_resnet's own
    assert any("pretrained: its weights expect 160x160" in c for c in texts(at, "caption"))  # not only the 64x80 default
    at.selectbox(key="train_model").select("efficientnet_b0").run()
    assert (at.session_state["train_width"], at.session_state["train_height"]) == (224, 224)
    at.checkbox(key="train_pretrained").uncheck().run()
    at.selectbox(key="train_model").select("resnet10t").run()  # unticked: the sizes stay as they are
    assert (at.session_state["train_width"], at.session_state["train_height"]) == (224, 224)
    at.checkbox(key="train_pretrained").check().run()
    at.button(key="train_start").click().run()
    assert_clean(at)
    assert started[-1].model == "resnet10t" and started[-1].pretrained and started[-1].img_size == (176, 176)


def test_rescore_uses_the_scorers_settings_unless_told_otherwise(store: LabelStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[str, TrainConfig | None, dict | None]] = []
    monkeypatch.setattr(jobs, "start", lambda _store, command, config=None, options=None:
                        started.append((command, config, options)) or 99)
    at = open_train(**TINY)
    at.button(key="score_start").click().run()
    at.checkbox(key="score_own_defaults").uncheck()
    at.button(key="score_start").click().run()
    at.button(key="train_start").click().run()
    assert_clean(at)
    assert started[0] == ("score", None, {"folds": 3})  # None: the scorer's own settings
    command, config, options = started[1]
    assert command == "score" and options == {"folds": 3}
    assert config.model == "test_resnet" and config.img_size == (32, 40)
    assert "--val-folds" not in to_argv(config, "score") and "--keep-top" not in to_argv(config, "score")
    command, config, options = started[2]
    assert command == "fit" and config.model == "test_resnet" and config.epochs == 1 and not options


def fake_run(store: LabelStore, status: str = "done") -> dict:
    """A training run row with a folder: epoch002 (best, hard-linked), epoch001, last, a log."""
    run_id = store.create_run("train", {"model": "resnet10t", "epochs": 2}, status=status)
    run_dir = store.path.parent / "runs" / f"{run_id:04d}"
    run_dir.mkdir(parents=True)
    for name, size in (("epoch001.safetensors", 3000), ("epoch002.safetensors", 5000), ("last.safetensors", 7000),
                       ("train.log", 10)):
        (run_dir / name).write_bytes(b"x" * size)
    os.link(run_dir / "epoch002.safetensors", run_dir / "best.safetensors")
    store.update_run(run_id, run_dir=str(run_dir), best_checkpoint=str(run_dir / "best.safetensors"))
    return store.run(run_id)


def test_deleting_a_run_keeps_its_best_checkpoint_unless_confirmed(store: LabelStore) -> None:
    run = fake_run(store)
    run_dir = Path(run["run_dir"])
    plan = disk.deletion_plan(run)
    # epoch files here are not real checkpoints, so protection rests on the best hard link
    assert {p.name for p in plan.files} == {"epoch001.safetensors", "last.safetensors"}
    assert {p.name for p in plan.kept} == {"best.safetensors", "epoch002.safetensors"}
    assert plan.bytes == 10_000 and not plan.includes_best
    assert disk.checkpoint_bytes(store.runs())[run["id"]] == 15_000  # the hard link counts once
    assert disk.deletion_plan({**run, "status": "running"}).refused

    at = open_train()
    at.radio(key="disk_scope").set_value("the whole run folder, best checkpoint too").run()
    assert_clean(at)
    assert at.button(key="disk_delete").disabled  # not without the explicit confirmation
    at.checkbox(key="disk_confirm").check().run()
    at.button(key="disk_delete").click().run()
    assert_clean(at)
    assert not run_dir.exists() and store.run(run["id"])["status"] == "done"  # the journal row stays
    assert any("Deleted 5 file(s)" in s for s in texts(at, "success"))


# ---- pure helpers ----------------------------------------------------------------------------------------
def test_form_settings_round_trip_through_the_command_line() -> None:
    settings = train_views.settings_of({"model": "test_byobnet", "img_size": [32, 40], "augment": False, "lr": 0.01})
    assert settings["train_model"] == train_views.OTHER and settings["train_custom_model"] == "test_byobnet"
    values = train_views.form_values(settings)
    assert values["model"] == "test_byobnet" and values["img_size"] == (32, 40) and values["age_threshold"] is None
    config = TrainConfig.from_dict(values)
    flags = to_argv(config, "fit")
    assert flags[flags.index("--img-size"):flags.index("--img-size") + 3] == ["--img-size", "32", "40"]
    assert "--no-augment" in flags and "--age-threshold" not in flags
    from train.__main__ import build_parser

    assert from_args(build_parser().parse_args(["fit", *flags]), "fit") == config
    assert train_views.settings_of({})["train_model"] == TrainConfig().model


def runs_frame() -> pd.DataFrame:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"id": 1, "kind": "train", "status": "done", "config": {"model": "resnet10t", "epochs": 6},
         "metrics": {"best_macro_f1": 0.5, "epochs_done": 6}, "snapshot_hash": "a" * 64, "n_corrections": 0,
         "created_at": start.isoformat(), "started_at": start.isoformat(),
         "finished_at": (start + timedelta(minutes=3)).isoformat(), "note": "baseline", "run_dir": None},
        {"id": 2, "kind": "score", "status": "done", "config": {"model": "resnet10t"},
         "metrics": {"flagged_units": {"mask": 3, "gender": 2}, "mean_macro_f1": 0.4}, "snapshot_hash": "a" * 64,
         "n_corrections": 0, "created_at": start.isoformat(), "started_at": start.isoformat(),
         "finished_at": start.isoformat(), "note": "", "run_dir": None},
        {"id": 3, "kind": "train", "status": "running", "config": {"model": "lcnet_050", "epochs": 4},
         "metrics": None, "snapshot_hash": "b" * 64, "n_corrections": 7, "created_at": start.isoformat(),
         "started_at": start.isoformat(), "finished_at": None, "note": "=cmd()", "run_dir": None},
    ]
    return pd.DataFrame(rows)


def test_runs_overview_columns_and_corrections_since_the_previous_run() -> None:
    table = jv.runs_overview(runs_frame(), {1: 2_500_000}, now=datetime(2026, 1, 1, 0, 10, tzinfo=UTC))
    assert list(table["id"]) == [3, 2, 1] and list(table.columns) == jv.OVERVIEW_COLUMNS
    rows = table.set_index("id")
    assert rows.loc[1, "macro_f1"] == 0.5 and rows.loc[1, "duration_min"] == 3.0 and rows.loc[1, "checkpoint_mb"] == 2.5
    assert rows.loc[1, "epochs"] == "6/6" and pd.isna(rows.loc[1, "new_corrections"])
    assert rows.loc[3, "new_corrections"] == 7 and rows.loc[3, "duration_min"] == 10.0  # running: up to now
    assert rows.loc[2, "flagged"] == 5 and rows.loc[2, "macro_f1"] == 0.4 and rows.loc[2, "snapshot"] == "a" * 10
    assert list(jv.filter_overview(table, kinds=["train"], text="BASE")["id"]) == [1]
    assert list(jv.filter_overview(table, statuses=["running"])["id"]) == [3]
    edited = table.copy()
    edited.loc[edited["id"] == 2, "note"] = "gender fixes only"
    assert jv.changed_notes(table, edited) == {2: "gender fixes only"}
    csv = jv.csv_bytes(table).decode()
    assert "'=cmd()" in csv and ",baseline" in csv  # a formula-looking note is defused for spreadsheets


def test_progress_view_for_training_and_scoring() -> None:
    fit = {"id": 4, "kind": "train", "status": "running",
           "progress": {"epoch": 2, "epochs": 4, "step": 5, "total": 10, "eta_s": 100, "updated_at": 1000.0,
                        "phase": "train", "images_per_s": 80.0}}
    fraction, text = jv.progress_view(fit, now=1040.0)
    assert fraction == pytest.approx(15 / 40)
    assert text == "train run #4 · epoch 2/4 · step 5/10 · ETA 1 min 00 s · 80 img/s"
    score = {"id": 5, "kind": "score", "status": "running",
             "progress": {"fold": 2, "folds": 3, "epoch": 1, "epochs": 5, "step": 10, "total": 10, "phase": "train"}}
    assert jv.progress_view(score)[0] == pytest.approx(60 / 150)  # fold 1 done, fold 2 epoch 1 done
    assert "fold 2/3 · epoch 1/5" in jv.progress_view(score)[1]
    assert jv.progress_view({"id": 6, "kind": "train", "status": "queued"})[0] == 0.0
    assert jv.progress_view({"id": 6, "kind": "train", "status": "done", "metrics": {"best_macro_f1": 0.25}}) == \
        (1.0, "train run #6 done · macro F1 0.250")


def test_misclassified_and_flag_changes() -> None:
    predictions = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "person": ["p1", "p1", "p2"],
                                "true_mask": ["wear", "wear", "not_wear"], "pred_mask": ["wear", "incorrect", "wear"],
                                "true_gender": ["male", "male", "female"], "pred_gender": ["male", "male", "male"]})
    wrong = jv.misclassified(predictions)
    assert list(wrong["path"]) == ["c.jpg", "b.jpg"] and wrong.iloc[1]["mistakes"] == "mask: wear → incorrect"
    assert wrong.iloc[0]["first_target"] == "mask" and wrong.iloc[0]["wrong"] == 2
    old = pd.DataFrame({"key": ["a|mask", "b|mask", "p|gender"], "attribute": ["mask", "mask", "gender"],
                        "is_issue": [1, 1, 0]})
    new = pd.DataFrame({"key": ["a|mask", "b|mask", "p|gender"], "attribute": ["mask", "mask", "gender"],
                        "is_issue": [1, 0, 1]})
    changes = jv.flag_changes(new, old)
    assert (changes["flagged"], changes["appeared"], changes["cleared"], changes["kept"]) == (2, 1, 1, 1)
    assert changes["by_attribute"].set_index("attribute").loc["mask", "cleared"] == 1
    assert jv.flag_changes(new, None)["appeared"] == 2


def test_run_label_says_epoch_for_one_epoch() -> None:
    run = {"id": 8, "status": "done", "config": {"model": "test_resnet", "epochs": 1}, "metrics": {}}
    assert train_views.run_label(run) == "#8 · test_resnet · 1 epoch · done"
    run["config"]["epochs"] = 2
    assert train_views.run_label(run).startswith("#8 · test_resnet · 2 epochs · done")
