"""Optional experiment writers on real tiny runs: TensorBoard event files read back and checked against the
journal, MLflow's file store likewise (where mlflow is installed), a missing package refused before anything is
written; and the image cache budget reported in the run's log."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.store import LabelStore
from tests.fixtures import demo_db
from train import fit
from train.__main__ import main as train_main
from train.score import score
from train.writers import MLFLOW_RUN_FILE, WriterUnavailable, check

TINY = {"model": "test_resnet", "img_size": (32, 40), "epochs": 2, "batch_size": 16, "val_folds": 4, "lr": 0.01,
        "threads": 1}
SCORE_TINY = {k: v for k, v in TINY.items() if k != "val_folds"} | {"epochs": 1}  # score's folds are its own
HEADS = ("mask", "gender", "age_group")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-person demo dataset (clean labels) ingested into <tmp>/labels.db; returns the db path."""
    return demo_db(tmp_path_factory.mktemp("writers"), persons=24)


def read_events(folder: Path) -> list:
    """Every event of the TFRecord event files in ``folder`` (length, crc, payload, crc per record)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, position = path.read_bytes(), 0
        while position < len(data):
            (length,) = struct.unpack("<Q", data[position:position + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[position + 12:position + 12 + length])
            events.append(event)
            position += 12 + length + 4
    return events


def scalars_of(events: list) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def plugin_content(events: list, tag: str):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    for event in events:
        for value in event.summary.value:
            if value.tag == tag:
                data = HParamsPluginData()
                data.ParseFromString(value.metadata.plugin_data.content)
                return data
    return None


def fake_cache(folder: Path, age_s: float) -> Path:
    """An old cache file of some other image set (8x8, 4 images), last used ``age_s`` ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "images-8x8-0123456789abcdef0123.u8"
    path.write_bytes(bytes(4 * 8 * 8 * 3))
    path.with_suffix(".json").write_text(json.dumps({"size": [8, 8], "shape": [4, 8, 8, 3], "keys": []}))
    moment = time.time() - age_s
    os.utime(path.with_suffix(".json"), (moment, moment))
    return path


def test_fit_writes_tensorboard_scalars_and_config_and_logs_cache_evictions(dataset: Path, tmp_path: Path):
    board, cache_dir = tmp_path / "tb", tmp_path / "cache"
    old = fake_cache(cache_dir, 3600)
    result = fit(db=str(dataset), echo=False, tensorboard=str(board), cache_dir=str(cache_dir), cache_mb=0, **TINY)
    assert result["status"] == "done"
    with LabelStore(dataset) as store:
        run, epochs = store.run(result["run_id"]), store.epochs(result["run_id"])
    run_dir = Path(run["run_dir"])
    assert run["config"]["tensorboard"] == str(board)
    events = read_events(board / run_dir.name)
    scalars = scalars_of(events)
    for name in ("train_loss", "val_loss", "lr", "macro_f1", *(f"acc_{h}" for h in HEADS)):
        assert [step for step, _ in scalars[name]] == [1, 2], name
        assert np.allclose([v for _, v in scalars[name]], epochs[name].astype(float), rtol=1e-6), name
    assert "epoch" not in scalars and "seconds" in scalars
    start = plugin_content(events, "_hparams_/session_start_info").session_start_info
    assert start.hparams["lr"].number_value == 0.01 and start.hparams["model"].string_value == "test_resnet"
    assert start.hparams["img_size"].string_value == "32x40" and start.hparams["mlflow"].string_value == "none"
    experiment = plugin_content(events, "_hparams_/experiment").experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"macro_f1", "acc_mask", "val_loss"}
    assert plugin_content(events, "_hparams_/session_end_info").session_end_info.status == 1  # success
    texts = [v.tensor.string_val[0].decode() for e in events for v in e.summary.value if v.tag.startswith("config")]
    assert texts and '"lr": 0.01' in texts[0]

    # The cache budget (0 MB): writing this run's cache deleted the old one, never the one in use; the log says so.
    log = Path(run["log_path"]).read_text()
    assert not old.exists() and f"image cache budget (0 MB): deleted {old.name}" in log
    assert "last used" in log and len(list(cache_dir.glob("images-32x40-*.u8"))) == 1
    assert f"experiment writers: tensorboard {board / run_dir.name}" in log


def test_score_writes_tensorboard_scalars_per_fold(dataset: Path, tmp_path: Path):
    board = tmp_path / "tb"
    result = score(db=str(dataset), folds=2, tensorboard=str(board), echo=False, **SCORE_TINY)
    assert result["status"] == "done"
    with LabelStore(dataset) as store:
        folds = store.epochs(result["run_id"])
    scalars = scalars_of(read_events(board / Path(result["run_dir"]).name))
    for name in ("train_loss", "macro_f1", "acc_mask", "acc_gender"):
        assert [step for step, _ in scalars[name]] == [1, 2], name
        assert np.allclose([v for _, v in scalars[name]], folds[name].astype(float), rtol=1e-6), name
    assert "fold" not in scalars and "n_train" not in scalars


def test_a_missing_writer_package_is_refused_before_anything_is_written(dataset: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # the state where mlflow is not installed (import fails)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with LabelStore(dataset) as store:
        runs_before = len(store.runs(None))
    runs_folder = dataset.parent / "runs"
    folders_before = sorted(runs_folder.iterdir()) if runs_folder.exists() else []

    code = train_main(["fit", "--db", str(dataset), "--quiet", "--mlflow", str(tmp_path / "mlruns"),
                       *("--model test_resnet --img-size 32 40 --epochs 1 --threads 1".split())])
    assert code == 2
    error = capsys.readouterr().err
    assert "--mlflow needs the Python package 'mlflow-skinny'" in error and "pip install mlflow-skinny" in error
    with pytest.raises(WriterUnavailable, match=r"--tensorboard needs .*pip install tensorboardX==2\.6\.5"):
        fit(db=str(dataset), echo=False, tensorboard=str(tmp_path / "tb"), **TINY)
    with pytest.raises(WriterUnavailable, match="pip install mlflow-skinny"):
        score(db=str(dataset), folds=2, mlflow="file:" + str(tmp_path / "mlruns"), echo=False, **SCORE_TINY)
    with LabelStore(dataset) as store:
        assert len(store.runs(None)) == runs_before  # no journal row, no run folder, nothing trained
    assert (sorted(runs_folder.iterdir()) if runs_folder.exists() else []) == folders_before
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "tb").exists()
    check({"tensorboard": None, "mlflow": None})  # off (the default) needs neither package


def test_fit_logs_params_and_metrics_to_an_mlflow_file_store(dataset: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("mlflow", reason="mlflow is optional (pip install mlflow-skinny); not in requirements.txt")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "writers-test")
    store_dir = tmp_path / "mlruns"
    result = fit(db=str(dataset), echo=False, mlflow=str(store_dir), **TINY)
    with LabelStore(dataset) as store:
        epochs = store.epochs(result["run_id"])
    marker = json.loads((Path(result["run_dir"]) / MLFLOW_RUN_FILE).read_text())
    assert marker["uri"] == store_dir.resolve().as_uri()
    (run_folder,) = list(store_dir.glob(f"*/{marker['run_id']}"))
    assert (run_folder / "params" / "lr").read_text() == "0.01"
    assert (run_folder / "params" / "model").read_text() == "test_resnet"
    assert (run_folder / "tags" / "run_id").read_text() == str(result["run_id"])
    assert "status: 3" in (run_folder / "meta.yaml").read_text()  # FINISHED
    assert "name: writers-test" in (run_folder.parent / "meta.yaml").read_text()
    for name in ("train_loss", "val_loss", "macro_f1", *(f"acc_{h}" for h in HEADS)):
        lines = [line.split() for line in (run_folder / "metrics" / name).read_text().splitlines()]
        assert [int(step) for _, _, step in lines] == [1, 2], name
        assert np.allclose([float(v) for _, v, _ in lines], epochs[name].astype(float)), name
