"""Trainer parts that need no training run: folds, cache, augmentation, metrics, checkpoints, retention."""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from core.images import load_rgb
from core.schema import COMPETITION
from tests.fixtures import write_random_pngs
from train import checkpoint as ckpt
from train.checkpoint import CheckpointError, load_model
from train.data import LUMA, AugmentConfig, ImageCache, augment, normalise, person_folds
from train.metrics import classification_metrics, predicted_codes
from train.model import HeadsModel, heads_for, load_pretrained

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def labels_frame(n_persons: int = 30, seed: int = 0) -> pd.DataFrame:
    """7 rows a person: 5 wear, 1 incorrect, 1 not_wear; gender/age per person."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_persons):
        gender, age = rng.choice(["male", "female"]), int(rng.integers(18, 61))
        for mask in ["wear"] * 5 + ["incorrect", "not_wear"]:
            rows.append({"person": f"p{p:03d}", "mask": mask, "gender": gender, "age": age})
    return COMPETITION.add_derived(pd.DataFrame(rows))


# ---- folds ---------------------------------------------------------------------------------------------
def test_person_folds_never_split_a_person_and_are_reproducible():
    labels = labels_frame(30)
    folds = person_folds(labels, k=5, seed=3)
    assert folds.shape == (len(labels),) and set(folds) == {0, 1, 2, 3, 4}
    assert (labels.assign(fold=folds).groupby("person")["fold"].nunique() == 1).all()
    people_per_fold = labels.assign(fold=folds).groupby("fold")["person"].nunique()
    assert people_per_fold.min() >= 5 and people_per_fold.max() <= 7
    assert np.array_equal(folds, person_folds(labels, k=5, seed=3))
    assert not np.array_equal(folds, person_folds(labels, k=5, seed=4))
    with pytest.raises(ValueError, match="3 people cannot fill 5"):
        person_folds(labels_frame(3), k=5)


# ---- image cache ---------------------------------------------------------------------------------------
def write_images(root: Path, n: int) -> list[str]:
    return write_random_pngs(root, [f"images/p{i}/img.png" for i in range(n)])


def test_image_cache_decodes_once_shares_duplicates_and_is_reused(tmp_path: Path):
    root = tmp_path / "data"
    paths = write_images(root, 4)
    hashes = ["h0", "h1", "h2", "h0"]  # the last item is a byte-identical copy of the first
    cache = ImageCache.open(root, paths, hashes, (12, 16), tmp_path / "cache", progress=False)
    assert cache.array.shape == (3, 16, 12, 3) and cache.array.dtype == np.uint8
    assert np.array_equal(cache.array[cache.rows[1]], load_rgb(root / paths[1], (12, 16)))
    batch = cache.batch([3, 1])
    assert batch.shape == (2, 3, 16, 12) and batch.dtype == torch.uint8
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch[0], torch.from_numpy(load_rgb(root / paths[0], (12, 16))).permute(2, 0, 1))
    for path in paths:  # a second open must not need the files any more: it reads the cache
        (root / path).unlink()
    again = ImageCache.open(root, paths, hashes, (12, 16), tmp_path / "cache", progress=False)
    assert again.path == cache.path and np.array_equal(np.asarray(again.array), np.asarray(cache.array))
    with pytest.raises(ValueError, match="outside the dataset root"):
        ImageCache.open(root, ["../escape.png"], ["hx"], (12, 16), tmp_path / "cache", progress=False)


# ---- augmentation ------------------------------------------------------------------------------------------
def test_augment_without_randomness_is_normalise_and_flip_mirrors():
    images = torch.randint(0, 256, (4, 3, 16, 12), dtype=torch.uint8)
    still = AugmentConfig(flip=0.0, degrees=0, scale=0, translate=0, jitter=0)
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(augment(images, generator, MEAN, STD, still), normalise(images, MEAN, STD), atol=1e-5)
    mirror = AugmentConfig(flip=1.0, degrees=0, scale=0, translate=0, jitter=0)
    assert torch.allclose(augment(images, generator, MEAN, STD, mirror), normalise(images.flip(3), MEAN, STD),
                          atol=1e-5)


def test_augment_colour_jitter_matches_the_sequential_definition():
    """The fused colour matrix equals brightness, then contrast around the mean grey, then saturation."""
    images = torch.randint(0, 256, (3, 3, 8, 6), dtype=torch.uint8)
    config = AugmentConfig(flip=0.0, degrees=0, scale=0, translate=0, jitter=0.3)
    fused = augment(images, torch.Generator().manual_seed(7), MEAN, STD, config)
    draws = torch.Generator().manual_seed(7)
    for _ in range(5):  # flip, angle, zoom, shift x, shift y: drawn even when unused
        torch.rand(3, generator=draws, dtype=torch.float64)
    b, c, s = (0.7 + 0.6 * torch.rand(3, generator=draws, dtype=torch.float64) for _ in range(3))
    luma = torch.tensor(LUMA, dtype=torch.float64).view(1, 3, 1, 1)
    x = images.double() / 255 * b.view(3, 1, 1, 1)
    mean_grey = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean_grey) * c.view(3, 1, 1, 1) + mean_grey
    grey = (x * luma).sum(1, keepdim=True)
    x = (x - grey) * s.view(3, 1, 1, 1) + grey
    reference = (x - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        STD, dtype=torch.float64).view(1, 3, 1, 1)
    assert torch.allclose(fused.double(), reference, atol=1e-4)


def test_augment_affine_warp_keeps_shape_and_is_reproducible():
    images = torch.randint(0, 256, (5, 3, 20, 16), dtype=torch.uint8)
    first = augment(images, torch.Generator().manual_seed(1), MEAN, STD)
    assert first.shape == (5, 3, 20, 16) and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(1), MEAN, STD))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(2), MEAN, STD))


# ---- metrics -----------------------------------------------------------------------------------------------
def test_metrics_macro_f1_is_the_competition_metric():
    rng = np.random.default_rng(0)
    truth = {"mask": rng.integers(0, 3, 200), "gender": rng.integers(0, 2, 200), "age_group": rng.integers(0, 3, 200)}
    predicted = {k: np.where(rng.random(200) < 0.8, v, (v + 1) % (3 if k != "gender" else 2))
                 for k, v in truth.items()}
    metrics = classification_metrics(COMPETITION, truth, predicted)
    true_class, pred_class = COMPETITION.encode_class(truth), COMPETITION.encode_class(predicted)
    assert metrics["macro_f1"] == pytest.approx(f1_score(true_class, pred_class, average="macro"))
    assert metrics["acc_gender"] == pytest.approx((truth["gender"] == predicted["gender"]).mean())
    assert np.array(metrics["confusion_mask"]).sum() == 200 and len(metrics["f1_per_class"]) == 18
    # A single 18-class head is decoded into the same per-attribute codes.
    one_hot = np.eye(18)[pred_class]
    decoded = predicted_codes(COMPETITION, ["class"], {"class": one_hot})
    assert all(np.array_equal(decoded[k], predicted[k]) for k in truth)


# ---- checkpoints -------------------------------------------------------------------------------------------
class Evil:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_model_refuses_pickled_checkpoints(tmp_path: Path):
    marker = tmp_path / "pwned"
    for name in ("evil.safetensors", "evil.pth", "evil.pt"):
        (tmp_path / name).write_bytes(pickle.dumps({"model": Evil(marker)}))
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_model(tmp_path / name)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": Evil(marker)}, tmp_path / "zip.pth")
    with pytest.raises(CheckpointError, match="zip"):
        load_model(tmp_path / "zip.pth")
    assert not marker.exists()
    plain = tmp_path / "plain.safetensors"  # safetensors without our metadata: refused with a hint
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="--pretrained-file"):
        load_model(plain)


def tiny_state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((64, 64), value)}


def test_retention_keeps_top_k_and_never_deletes_the_best(tmp_path: Path):
    run = tmp_path / "runs" / "0001"
    run.mkdir(parents=True)
    metrics = [0.50, 0.70, 0.60, 0.90, 0.20, 0.90]
    for epoch, metric in enumerate(metrics, 1):
        ckpt.write_checkpoint(run / "last.safetensors", tiny_state(epoch), {"epoch": epoch})
        ckpt.keep_top_k(run, tiny_state(epoch), {"metric": {"name": "f1"}, "epoch": epoch}, epoch, metric, k=2)
        top = ckpt.top_checkpoints(run)
        assert len(top) <= 2 and top[0][0] == max(metrics[:epoch])
        assert ckpt.read_meta(run / "best.safetensors")["metric"]["value"] == max(metrics[:epoch])
        assert (run / "best.safetensors").stat().st_ino == top[0][2].stat().st_ino  # a link, not a copy
    # Epoch 6 ties the best: it enters the top 2, but the earlier epoch stays the best.
    assert [p.name for _, _, p in ckpt.top_checkpoints(run)] == ["epoch004.safetensors", "epoch006.safetensors"]
    # A budget of zero bytes deletes everything it may, oldest first, and still keeps the best and `last`.
    deleted, used = ckpt.enforce_budget([run], 0, protect=[run / "last.safetensors"])
    assert [p.name for p in deleted] == ["epoch006.safetensors"]
    assert (run / "best.safetensors").exists() and (run / "last.safetensors").exists() and used > 0
    assert ckpt.read_tensors(run / "best.safetensors", "model.")["w"][0, 0] == 4
    # All-runs budget: another run's non-best files go, every run's best stays.
    other = tmp_path / "runs" / "0002"
    other.mkdir()
    for epoch, metric in enumerate([0.3, 0.4], 1):
        ckpt.keep_top_k(other, tiny_state(10 + epoch), {"metric": {}, "epoch": epoch}, epoch, metric, k=2)
    ckpt.write_checkpoint(other / "last.safetensors", tiny_state(12), {"epoch": 2})
    deleted, _ = ckpt.enforce_budget([run, other], 0)
    assert {p.name for p in deleted} == {"last.safetensors", "epoch001.safetensors"}
    assert ckpt.read_meta(other / "best.safetensors")["metric"]["value"] == 0.4
    assert (run / "best.safetensors").exists()


def test_resume_state_round_trips_without_pickle(tmp_path: Path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    for _ in range(3):
        model(torch.randn(8, 4)).square().mean().backward()
        optimizer.step()
        scheduler.step()
    np.random.seed(5)
    random.seed(6)
    tensors, resume = ckpt.resume_state(optimizer, scheduler)
    path = ckpt.write_checkpoint(tmp_path / "last.safetensors", model.state_dict(), {"resume": resume}, tensors)
    expected = (torch.rand(3), np.random.rand(), random.random())

    fresh_model = torch.nn.Linear(4, 3)
    fresh_model.load_state_dict(ckpt.read_tensors(path, "model."))
    fresh = torch.optim.AdamW(fresh_model.parameters(), lr=0.1)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 1 / (1 + step))
    torch.manual_seed(123)
    ckpt.restore_state(path, fresh, fresh_scheduler, ckpt.read_meta(path)["resume"])
    assert torch.equal(torch.rand(3), expected[0]) and np.random.rand() == expected[1] and random.random() == expected[2]
    assert fresh_scheduler.last_epoch == 3 and math.isclose(fresh.param_groups[0]["lr"], 0.1 / 4)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(fresh.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key])


def test_pretrained_file_loads_backbone_and_skips_a_mismatched_classifier(tmp_path: Path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = HeadsModel("test_resnet", heads_for(COMPETITION, "single"))  # 18 outputs
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.net.state_dict().items()}},
               tmp_path / "weights.pth")
    for name in ("weights.safetensors", "weights.pth"):
        target = HeadsModel("test_resnet", heads_for(COMPETITION, "multi"))  # 3 + 2 + 3 = 8 outputs
        notes = load_pretrained(target, tmp_path / name)
        assert any("skipped" in n and "fc.weight" in n for n in notes)
        conv = next(k for k in target.net.state_dict() if k.endswith("conv1.weight"))
        assert torch.equal(target.net.state_dict()[conv], source.net.state_dict()[conv])
    assert "skipped" in capsys.readouterr().out


def test_resume_reopens_only_an_unfinished_run_of_its_kind_and_clears_half_written_files(make_store, tmp_path: Path):
    from core.store import StoreError
    from train.run_folder import reopen

    store = make_store()
    run_dir = tmp_path / "runs" / "0001"
    run_dir.mkdir(parents=True)
    (run_dir / ".last.safetensors.123.tmp").write_bytes(b"half")
    (run_dir / "last.safetensors").write_bytes(b"kept")
    train_id = store.create_run("train", {"lr": 0.01}, status="failed", run_dir=str(run_dir))
    score_id = store.create_run("score", {}, status="cancelled", run_dir=str(run_dir))
    done_id = store.create_run("train", {}, status="done", run_dir=str(run_dir))
    with pytest.raises(StoreError, match="is a score run, not a training run"):
        reopen(store, score_id, "train")
    with pytest.raises(StoreError, match="already finished"):
        reopen(store, done_id, "train")
    alive = store.create_run("score", {}, status="running", run_dir=str(run_dir), pid=1)  # pid 1: alive, not us
    with pytest.raises(StoreError, match="still running"):
        reopen(store, alive, "score")
    row = reopen(store, train_id, "train")
    assert row["config"] == {"lr": 0.01} and store.run(train_id)["status"] == "running"
    assert not list(run_dir.glob(".*.tmp")) and (run_dir / "last.safetensors").read_bytes() == b"kept"
