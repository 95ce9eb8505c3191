"""Trainer crash safety: SIGKILL at each atomic replace of a checkpoint save never leaves a corrupt
``best`` or ``last``, and ``--resume`` completes; a run refuses to start when the disk is too full."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from core.store import LabelStore, StoreError
from tests.fixtures import demo_db
from train import fit, load_model
from train.__main__ import main as train_main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "test_resnet", "--img-size", "32", "40", "--epochs", "3", "--batch-size", "16",
        "--val-folds", "4", "--lr", "0.01", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_db(tmp_path_factory.mktemp("faults"), persons=16)


# Replace points per epoch: last, then (if the epoch is a new best) epochNNN and the best link.
# 2 = epoch 1's checkpoint file, 3 = the first best link, 4/5 = inside epoch 2's save.
@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [2, 3, 4, 5])
def test_sigkill_during_a_checkpoint_save_leaves_loadable_files_and_resume_completes(dataset: Path, kill_at: int):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "LABELFIX_FAULT": f"replace:{kill_at}"}
    done = subprocess.run([sys.executable, "-m", "train", "fit", "--db", str(dataset), *TINY], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stdout + done.stderr
    assert "fault injection: SIGKILL" in done.stdout
    with LabelStore(dataset) as store:
        run = store.runs("train").iloc[0]
    run_dir = Path(run["run_dir"])
    assert run["status"] == "running"  # died without recording an end
    for name in ("best.safetensors", "last.safetensors"):
        if (run_dir / name).exists():  # whatever is in place is complete, never a half-written file
            model, meta = load_model(run_dir / name)
            assert meta["epoch"] >= 1
    assert list(run_dir.glob(".*.tmp"))  # the unfinished write stayed a temp file
    assert train_main(["fit", "--db", str(dataset), "--resume", str(int(run["id"])), "--quiet"]) == 0
    with LabelStore(dataset) as store:
        resumed = store.run(int(run["id"]))
    assert resumed["status"] == "done"
    model, meta = load_model(resumed["best_checkpoint"])
    assert meta["epoch"] >= 1 and not list(run_dir.glob(".*.tmp"))


def test_a_run_refuses_to_start_when_the_disk_is_too_full(dataset: Path, monkeypatch, tmp_path: Path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("train.run_folder.shutil.disk_usage", lambda path: usage(10**9, 10**9 - 10 * 2**20, 10 * 2**20))
    with LabelStore(dataset) as store:
        before = len(store.runs())
    with pytest.raises(StoreError, match="not enough free disk"):
        fit(db=str(dataset), echo=False, model="test_resnet", img_size=(32, 40), epochs=1, out=str(tmp_path / "runs"))
    with LabelStore(dataset) as store:
        assert len(store.runs()) == before  # refused before any journal row or folder
    assert not (tmp_path / "runs").exists()
