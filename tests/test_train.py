"""Trainer end to end on a tiny demo dataset: journal, fresh-process loading, determinism, resume after
SIGKILL, cancel, DDP under torchrun, prediction, diff. A tiny model (test_resnet at 32x40) keeps it fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from core.ingest import ingest
from core.store import LabelStore
from tests.fixtures import demo_db
from train import fit
from train.__main__ import main as train_main
from train.checkpoint import read_meta

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# One thread: with the 2 CI cores shared by other processes, OpenMP's 2-thread barriers stall badly.
TINY = {"model": "test_resnet", "img_size": (32, 40), "epochs": 3, "batch_size": 16, "val_folds": 4, "lr": 0.01,
        "threads": 1}


def flags(**overrides: object) -> list[str]:
    """TINY (with overrides) as `python -m train fit` options."""
    out: list[str] = []
    for key, value in {**TINY, **overrides}.items():
        out += [f"--{key.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else [value])]
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-person demo dataset (clean labels) ingested into <tmp>/labels.db; returns the db path."""
    return demo_db(tmp_path_factory.mktemp("train"), persons=24)


@pytest.fixture(scope="module")
def first_run(dataset: Path) -> dict:
    """One finished tiny run; the reference for determinism and resume tests."""
    return fit(db=str(dataset), echo=False, **TINY)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def epoch_metrics(db: Path, run_id: int) -> list[dict]:
    with LabelStore(db) as store:
        frame = store.epochs(run_id)
    return frame.drop(columns=["seconds", "images_per_s"]).to_dict("records")


def test_fit_journals_the_run_and_its_epochs(dataset: Path, first_run: dict):
    assert first_run["status"] == "done"
    with LabelStore(dataset) as store:
        run = store.run(first_run["run_id"])
        epochs = store.epochs(first_run["run_id"])
        snapshot = store.snapshots().iloc[0]
    assert run["status"] == "done" and run["finished_at"] and run["pid"] and run["host"]
    assert run["config"]["lr"] == 0.01 and run["config"]["weight_decay"] == 0.05  # defaults recorded too
    assert run["snapshot_hash"] == snapshot["hash"] and run["n_corrections"] == 0
    assert run["config"]["snapshot"] == snapshot["path"] and run["seed"] == 0
    assert run["environment"]["packages"]["torch"] and "git_commit" in run
    assert Path(run["log_path"]).read_text().count("epoch ") >= 3
    assert run["progress"]["epochs"] == 3 and "eta_s" in run["progress"]
    assert list(epochs["epoch"]) == [1, 2, 3]
    for column in ("train_loss", "val_loss", "acc_mask", "acc_gender", "acc_age_group", "macro_f1",
                   "f1_per_class", "confusion_mask"):
        assert column in epochs
    assert run["metrics"]["best_epoch"] in (1, 2, 3) and run["best_checkpoint"] == first_run["best_checkpoint"]
    files = sorted(p.name for p in Path(run["run_dir"]).glob("*.safetensors"))
    assert files[0] == "best.safetensors" and "last.safetensors" in files and len(files) == 3


def test_load_model_in_a_fresh_process_needs_only_the_path(first_run: dict, tmp_path: Path):
    script = (
        "import json, sys, torch\n"
        "from train import load_model\n"
        "model, meta = load_model(sys.argv[1])\n"
        "w, h = meta['image_size']\n"
        "out = model(torch.zeros(2, 3, h, w))\n"
        "print(json.dumps({'model': meta['model'], 'shapes': {k: list(v.shape) for k, v in out.items()},\n"
        "                  'heads': [h['name'] for h in meta['heads']], 'snapshot': meta['snapshot_hash'],\n"
        "                  'bins': meta['schema']['binned'][0]['edges'], 'mean': meta['mean'], 'epoch': meta['epoch'],\n"
        "                  'metric': meta['metric']['name']}))\n")
    done = subprocess.run([sys.executable, "-c", script, first_run["best_checkpoint"]], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["model"] == "test_resnet" and info["heads"] == ["mask", "gender", "age_group"]
    assert info["shapes"] == {"mask": [2, 3], "gender": [2, 2], "age_group": [2, 3]}
    assert info["bins"] == [30, 60] and len(info["mean"]) == 3 and info["metric"] == "val_macro_f1"
    assert len(info["snapshot"]) == 64


def test_same_config_snapshot_and_seed_reproduce_the_metrics(dataset: Path, first_run: dict):
    with LabelStore(dataset) as store:
        snapshot = store.run(first_run["run_id"])["config"]["snapshot"]
    again = fit(db=str(dataset), echo=False, snapshot=snapshot, **TINY)
    assert epoch_metrics(dataset, again["run_id"]) == epoch_metrics(dataset, first_run["run_id"])


def start_fit(dataset: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "train", "fit", "--db", str(dataset), "--quiet", *extra],
                            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_last(dataset: Path, process: subprocess.Popen) -> dict:
    """Wait until the newest run has written `last` (epoch 1 over, epoch 2 under way); return its row."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with LabelStore(dataset) as store:
            run = store.runs("train").iloc[0].to_dict()
        if run["pid"] == process.pid and run["run_dir"] and (Path(run["run_dir"]) / "last.safetensors").exists():
            return run
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.02)
    raise AssertionError("no last checkpoint within 180 s")


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_and_completes_like_an_uninterrupted_run(dataset: Path, first_run: dict):
    with LabelStore(dataset) as store:
        snapshot = store.run(first_run["run_id"])["config"]["snapshot"]
    process = start_fit(dataset, *flags(snapshot=snapshot))
    run = wait_for_last(dataset, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with LabelStore(dataset) as store:
        killed = store.run(run["id"])
    assert killed["status"] == "running" and len(epoch_metrics(dataset, run["id"])) < 3  # died mid-run
    assert train_main(["fit", "--db", str(dataset), "--resume", str(run["id"]), "--quiet"]) == 0
    with LabelStore(dataset) as store:
        resumed = store.run(run["id"])
    assert resumed["status"] == "done" and Path(resumed["best_checkpoint"]).exists()
    # Optimizer, schedule and RNG state came back: the metrics equal those of the uninterrupted run.
    assert epoch_metrics(dataset, run["id"]) == epoch_metrics(dataset, first_run["run_id"])


@pytest.mark.slow
def test_sigterm_cancels_and_keeps_the_last_checkpoint(dataset: Path):
    process = start_fit(dataset, *flags(epochs=40))
    run = wait_for_last(dataset, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    with LabelStore(dataset) as store:
        cancelled = store.run(run["id"])
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    assert (Path(cancelled["run_dir"]) / "last.safetensors").exists()
    assert (Path(cancelled["run_dir"]) / "best.safetensors").exists()


@pytest.mark.slow
def test_two_process_torchrun_on_cpu_completes(dataset: Path):
    with LabelStore(dataset) as store:
        before = len(store.runs("train"))
    done = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "train", "fit",
                           "--db", str(dataset), "--quiet", *flags(epochs=2)], cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with LabelStore(dataset) as store:
        runs = store.runs("train")
        run = runs.iloc[0].to_dict()
        epochs = store.epochs(run["id"])
    assert len(runs) == before + 1  # rank 1 wrote no row of its own
    assert run["status"] == "done" and run["environment"]["world_size"] == 2
    assert list(epochs["epoch"]) == [1, 2] and Path(run["best_checkpoint"]).exists()


def test_generic_folder_dataset_gets_one_head_per_label_column(tmp_path: Path):
    for index in range(24):
        colour = "red" if index % 2 else "blue"
        (tmp_path / "data" / colour).mkdir(parents=True, exist_ok=True)
        shade = 120 + 5 * index
        Image.new("RGB", (24, 24), (shade, 20, 40) if colour == "red" else (20, 40, shade)).save(
            tmp_path / "data" / colour / f"{index}.png")
    with LabelStore(tmp_path / "labels.db") as store:
        ingest(tmp_path / "data", store, fmt="folder")
    result = fit(db=str(tmp_path / "labels.db"), echo=False, **{**TINY, "epochs": 1, "img_size": (24, 24)})
    meta = read_meta(result["best_checkpoint"])
    assert meta["heads"] == [{"name": "label", "classes": ["blue", "red"]}]
    with LabelStore(tmp_path / "labels.db") as store:
        epoch = store.epochs(result["run_id"]).iloc[0]
    assert 0 <= epoch["acc_label"] <= 1 and 0 <= epoch["macro_f1"] <= 1


def test_a_failing_run_is_journaled_with_its_error(dataset: Path, monkeypatch: pytest.MonkeyPatch):
    # An unknown model name is refused before anything is written (tests/test_attacks.py); a failure inside
    # the run (here: building the backbone) is journaled.
    def broken(*args, **kwargs):
        raise RuntimeError("no-such-model: the backbone could not be built")

    monkeypatch.setattr("train.loop.HeadsModel", broken)
    with pytest.raises(RuntimeError, match="no-such-model"):
        fit(db=str(dataset), echo=False, **TINY)
    with LabelStore(dataset) as store:
        run = store.runs("train").iloc[0].to_dict()
    assert run["status"] == "failed" and "no-such-model" in run["error_tail"] and run["finished_at"]
    assert "Traceback" in Path(run["log_path"]).read_text()


def test_predict_writes_one_row_per_info_row_and_ensembles(dataset: Path, first_run: dict, tmp_path: Path):
    # Also: single 18-class head, age bins moved for training only, focal loss, balanced sampling and a
    # disk budget too small for anything but `best` and `last`.
    single = fit(db=str(dataset), echo=False, **{**TINY, "epochs": 2, "heads": "single", "age_threshold": 58,
                                                   "loss": "focal", "balanced": True, "keep_top": 2,
                                                   "keep_mb": 0.001})
    run_dir = Path(single["run_dir"])
    assert sorted(p.name for p in run_dir.glob("*.safetensors"))[:1] == ["best.safetensors"]
    assert len(list(run_dir.glob("*.safetensors"))) in (2, 3)  # best (+ its epoch file, the same inode) + last
    assert "disk budget (this run, 0.001 MB)" in (run_dir / "train.log").read_text()
    meta = read_meta(single["best_checkpoint"])
    assert [h["name"] for h in meta["heads"]] == ["class"] and len(meta["heads"][0]["classes"]) == 18
    assert meta["train_schema"]["binned"][0]["edges"] == [30, 58] and meta["schema"]["binned"][0]["edges"] == [30, 60]
    out = tmp_path / "submission.csv"
    code = train_main(["predict", "--db", str(dataset), "--run", str(first_run["run_id"]), "--checkpoint",
                       single["best_checkpoint"], "--tta", "flip", "--out", str(out)])
    assert code == 0
    info = pd.read_csv(dataset.parent / "data" / "eval" / "info.csv", dtype=str)
    submission = pd.read_csv(out, dtype={"ImageID": str})
    assert list(submission.columns) == ["ImageID", "ans"] and list(submission["ImageID"]) == list(info["ImageID"])
    assert submission["ans"].between(0, 17).all()
    probs = pd.read_csv(out.with_suffix(".probs.csv"))
    assert len(probs) == len(info)
    assert probs[[f"p{k}" for k in range(18)]].sum(1).round(3).eq(1).all()
    assert (probs[[f"p{k}" for k in range(18)]].to_numpy().argmax(1) == submission["ans"].to_numpy()).all()


def test_diff_reports_a_changed_learning_rate_and_a_changed_label(dataset: Path, first_run: dict, capsys):
    with LabelStore(dataset) as store:
        person = store.persons()["person"].iloc[0]
        gender = store.label_of(person, "gender")
        flipped = "male" if gender == "female" else "female"
        store.correct(person, "gender", flipped, expected=gender, annotator="test", reason="diff test")
    second = fit(db=str(dataset), echo=False, **{**TINY, "epochs": 1, "lr": 0.02})
    # Different labels, each run measured on its own: the changes are listed, the numbers refused in one line.
    assert train_main(["diff", "--db", str(dataset), str(first_run["run_id"]), str(second["run_id"])]) == 2
    captured = capsys.readouterr()
    text = captured.out
    assert captured.err.count("\n") == 1 and "measured on different answer keys" in captured.err
    assert "Traceback" not in captured.err and f"python -m train evaluate {first_run['run_id']}" in captured.err
    assert "lr: 0.01 -> 0.02" in text and "epochs: 3 -> 1" in text
    assert f"gender: 7 image(s) changed (1 person): {gender} -> {flipped} 7" in text
    assert "mask: 0 image(s) changed" in text
    assert train_main(["runs", "--db", str(dataset), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    newest = runs[0]
    assert newest["id"] == second["run_id"] and newest["n_corrections"] == 1
    assert {"id", "status", "best_checkpoint", "metrics", "config"} <= set(newest)
