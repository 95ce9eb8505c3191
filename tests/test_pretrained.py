"""``--pretrained``: timm's hub weights from the Hugging Face cache (a local one here: no network in tests),
the model's own input size and normalisation in the checkpoint, and a one-line refusal offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.store import LabelStore
from tests.fixtures import demo_db

ROOT = Path(__file__).resolve().parents[1]
MODEL = "test_resnet"  # timm's registry: hub id timm/test_resnet.r160_in1k, input 160x160, mean/std 0.5
HUB_ID = "timm/test_resnet.r160_in1k"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_db(tmp_path_factory.mktemp("pretrained"), persons=10, image_size=(32, 40))


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A Hugging Face cache holding ``HUB_ID``'s model.safetensors as the hub would leave it; returns the
    cache folder and the placed weights (a recognisable constant in the first conv)."""
    import timm
    import torch
    from safetensors.torch import save_file

    cache = tmp_path_factory.mktemp("hf") / "hub"
    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    state = timm.create_model(MODEL, pretrained=False).state_dict()
    key = next(k for k, v in state.items() if v.ndim == 4)  # the stem convolution
    state[key] = torch.full_like(state[key], 0.125)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return cache, {"key": key, "value": 0.125}


def run_train(args: list[str], cache: Path, db: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(cache.parent), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **env}
    return subprocess.run([sys.executable, "-m", "train", *args, "--db", str(db)], cwd=ROOT,
                          env={k: v for k, v in env.items() if v}, capture_output=True, text=True, timeout=600)


def test_pretrained_loads_the_hub_weights_with_the_models_size_and_normalisation(dataset: Path, hub_cache) -> None:
    cache, placed = hub_cache
    # lr 0: the optimizer moves nothing, so the checkpoint holds the weights the model started from.
    done = run_train(["fit", "--model", MODEL, "--pretrained", "--epochs", "1", "--lr", "0", "--batch-size", "8",
                      "--threads", "1", "--val-folds", "2", "--no-augment", "--quiet"], cache, dataset)
    assert done.returncode == 0, done.stderr[-3000:]
    with LabelStore(dataset) as store:
        run = store.runs("train").iloc[0].to_dict()
    assert run["config"]["pretrained"] is True and run["config"]["img_size"] == [160, 160]
    from safetensors import safe_open

    with safe_open(run["best_checkpoint"], "pt") as handle:
        meta = json.loads(handle.metadata()["meta"])
        stem = handle.get_tensor("model.net." + placed["key"])
    assert float(stem.min()) == float(stem.max()) == placed["value"]
    assert meta["image_size"] == [160, 160] and meta["mean"] == [0.5] * 3 and meta["std"] == [0.5] * 3
    from train import load_model

    model, loaded = load_model(run["best_checkpoint"])  # a fresh model: no hub access, weights from the file
    assert float(model.net.state_dict()[placed["key"]].flatten()[0]) == placed["value"]


@pytest.mark.parametrize("env", [{}, {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "https://hub.invalid"}],
                         ids=["HF_HUB_OFFLINE", "no-network"])
def test_offline_without_cached_weights_is_one_line_and_no_run_row(tmp_path: Path, dataset: Path,
                                                                   env: dict[str, str]) -> None:
    empty = tmp_path / "hub"
    empty.mkdir()
    with LabelStore(dataset) as store:
        before = len(store.runs(None))
    done = run_train(["fit", "--model", "efficientnet_b0", "--pretrained", "--epochs", "1"], empty, dataset, **env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: cannot fetch timm's pretrained weights for efficientnet_b0")
    assert "offline" in lines[0] and "--pretrained-file" in lines[0]
    with LabelStore(dataset) as store:
        assert len(store.runs(None)) == before  # refused before any run row


def test_connection_errors_count_as_offline() -> None:
    import urllib.error

    from train.model import _offline_error

    class ConnectError(Exception):  # httpx's name for a refused connection
        pass

    assert _offline_error(ConnectionError("refused")) and _offline_error(urllib.error.URLError("no route"))
    assert _offline_error(ConnectError("boom")) and not _offline_error(KeyError("classifier.weight"))


def test_model_info_and_the_forms_sizes_agree_with_timm() -> None:
    from app.train_views import MODELS, PRETRAINED_SIZES
    from train.model import pretrained_info

    assert set(PRETRAINED_SIZES) == set(MODELS)
    for model, size in PRETRAINED_SIZES.items():
        assert tuple(pretrained_info(model)["img_size"]) == size, model
    info = pretrained_info("efficientnet_b0")
    assert info["img_size"] == [224, 224] and info["mean"] == [0.485, 0.456, 0.406] and "efficientnet_b0" in info["source"]
    from train import jobs

    assert jobs.model_info("convnext_nano")["img_size"] == [224, 224]  # the dashboard's way: a subprocess
    with pytest.raises(ValueError, match="no model named"):
        jobs.model_info("no_such_model")


def test_score_pretrained_saves_the_backbones_embeddings_loaded_without_torch(dataset: Path, hub_cache) -> None:
    """``score --pretrained``: besides the out-of-fold features, the untouched hub backbone embeds every image
    (``embeddings_pretrained.npy``), and ``core.embeddings`` reads both back (no torch imported there)."""
    cache, placed = hub_cache
    done = run_train(["score", "--model", MODEL, "--pretrained", "--epochs", "1", "--batch-size", "8",
                      "--threads", "1", "--folds", "2", "--quiet"], cache, dataset)
    assert done.returncode == 0, done.stderr[-3000:]
    with LabelStore(dataset) as store:
        run = store.runs("score").iloc[0].to_dict()
        items = store.items()
    assert run["status"] == "done" and run["config"]["pretrained"] is True
    probe = ("import sys, json; from core import embeddings as e; o = e.load(sys.argv[1], 'oof'); "
             "p = e.load(sys.argv[1], 'pretrained'); print(json.dumps([list(o.vectors.shape), list(p.vectors.shape), "
             "str(p.vectors.dtype), bool((p.vectors == 0).all()), 'torch' in sys.modules, e.available(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", probe, run["run_dir"]], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    oof_shape, pre_shape, dtype, all_zero, torch_loaded, kinds = json.loads(out.stdout)
    assert pre_shape[0] == oof_shape[0] > len(items) // 2 and pre_shape[1] > 0  # every scored image, both files
    assert dtype == "float16" and not all_zero and not torch_loaded and set(kinds) >= {"oof", "pretrained"}
    assert "pretrained" in (Path(run["run_dir"]) / "embeddings.json").read_text()
    # the backbone is untouched by training: a second score run with another seed trains other fold models
    # (other out-of-fold features) but embeds every image with the same hub weights (the same pretrained file)
    again = run_train(["score", "--model", MODEL, "--pretrained", "--epochs", "1", "--batch-size", "8",
                       "--threads", "1", "--folds", "2", "--seed", "1", "--quiet"], cache, dataset)
    assert again.returncode == 0, again.stderr[-3000:]
    with LabelStore(dataset) as store:
        second = store.runs("score").iloc[0].to_dict()
    assert second["id"] != run["id"]
    import numpy as np

    first_dir, second_dir = Path(run["run_dir"]), Path(second["run_dir"])
    assert np.array_equal(np.load(first_dir / "embeddings_pretrained.npy"), np.load(second_dir / "embeddings_pretrained.npy"))
    assert not np.array_equal(np.load(first_dir / "embeddings.npy"), np.load(second_dir / "embeddings.npy"))
