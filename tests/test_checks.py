"""core.checks: perceptual hash, multi-index near-duplicate search, and the data checks through a real store."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from core.__main__ import main
from core.checks import (
    find_data_issues,
    hash_bits,
    laplacian_variance,
    near_duplicate_pairs,
    phash,
    run_data_checks,
)
from core.ingest import ingest
from core.store import LabelStore
from tests.fixtures import build_clean_competition


def textured(seed: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A grey (h, w) float "photo": a gradient, random shapes with edges, light grain; different for every seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.fromarray(np.linspace(rng.uniform(40, 120), rng.uniform(130, 220), height)[:, None]
                            .repeat(width, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = rng.uniform(-20, width), rng.uniform(-20, height)
        box = (x0, y0, x0 + rng.uniform(15, 60), y0 + rng.uniform(15, 60))
        shade = int(rng.integers(0, 256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=shade)
    return np.clip(np.asarray(image, dtype=np.float64) + rng.normal(0, 3, (height, width)), 0, 255)


def reencoded(gray: np.ndarray, resize: bool = True) -> np.ndarray:
    """The same picture after a brightness change, a resize (a blur, too) and a JPEG round trip at quality 60."""
    image = ImageEnhance.Brightness(Image.fromarray(gray.astype(np.uint8))).enhance(1.1)
    if resize:
        image = image.resize((80, 107))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)
    return np.asarray(Image.open(buffer).resize(gray.shape[::-1]), dtype=np.float64)


def distance(a: str, b: str) -> int:
    return int((hash_bits([a]) != hash_bits([b])).sum())


def test_phash_is_stable_under_reencoding_and_far_for_other_pictures():
    pictures = [textured(seed) for seed in range(6)]
    hashes = [phash(p) for p in pictures]
    assert all(len(h) == 64 for h in hashes) and phash(pictures[0]) == hashes[0]
    assert distance(hashes[0], phash(reencoded(pictures[0]))) <= 16
    assert min(distance(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) > 60


def test_near_duplicate_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    bits = rng.random((400, 256)) < 0.5
    for source, target, flips in [(3, 10, 0), (20, 21, 5), (50, 300, 16), (70, 71, 17), (100, 399, 9)]:
        bits[target] = bits[source]
        bits[target, rng.choice(256, flips, replace=False)] ^= True
    pairs, distances = near_duplicate_pairs(bits, max_distance=16)
    full = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    i, j = np.nonzero(np.triu(full <= 16, k=1))
    assert pairs.tolist() == np.stack([i, j], axis=1).tolist()
    assert distances.tolist() == full[i, j].tolist()
    assert {(3, 10), (20, 21), (50, 300), (100, 399)} <= set(map(tuple, pairs.tolist()))
    assert (70, 71) not in set(map(tuple, pairs.tolist()))  # 17 bits: just outside
    assert near_duplicate_pairs(bits[:1])[0].shape == (0, 2)


def test_laplacian_variance_drops_with_blur():
    sharp = textured(1)
    blurred = np.asarray(Image.fromarray(sharp.astype(np.uint8)).filter(ImageFilter.GaussianBlur(2)), dtype=float)
    assert laplacian_variance(blurred) < laplacian_variance(sharp) / 10
    assert laplacian_variance(np.full((20, 20), 90.0)) == 0


def test_near_duplicates_count_only_across_people():
    pictures = [textured(seed) for seed in range(12)]
    facts = pd.DataFrame({
        "item_id": range(1, 13), "path": [f"img/{i}.jpg" for i in range(12)],
        "person": ["a", "a", "b", "c", "d", "e", "f", "g", "h", "i", None, None],
        "hash": [f"h{i}" for i in range(12)], "luminance": 120.0, "contrast": 30.0, "sharpness": 500.0,
        "phash": [phash(p) for p in pictures], "error": None})
    facts.loc[1, "phash"] = phash(reencoded(pictures[0]))  # same person: alike by design, not an issue
    facts.loc[3, "phash"] = phash(reencoded(pictures[2]))  # person c copies person b's picture
    facts.loc[11, "phash"] = phash(reencoded(pictures[10]))  # two eval images (no person) alike
    issues = find_data_issues(facts)
    assert set(issues["kind"]) == {"near_duplicate"}
    assert sorted(issues["item_id"]) == [3, 4, 11, 12]
    assert issues.set_index("item_id").loc[3, "detail"].startswith("looks like img/3.jpg")


@pytest.fixture
def checked_store(tmp_path: Path) -> LabelStore:
    """A competition dataset of 6 people where person 2 copies a file of person 1 and a picture of person 5,
    one image is black and one is blurred; ingested for real."""
    root = tmp_path / "data"
    build_clean_competition(root, n_persons=6)
    people = sorted(p for p in (root / "train" / "images").iterdir())
    files = sorted(root.glob("*/images/**/*.jpg"))
    for seed, image_path in enumerate(files):  # 96×128 pictures instead of the fixture's 24×32 noise
        Image.fromarray(textured(seed).astype(np.uint8)).convert("RGB").save(image_path, "JPEG", quality=92)
    shutil.copyfile(people[0] / "mask1.jpg", people[1] / "mask1.jpg")  # exact duplicate across people
    near = reencoded(np.asarray(Image.open(people[4] / "normal.jpg").convert("L"), dtype=float), resize=False)
    Image.fromarray(near.astype(np.uint8)).convert("RGB").save(people[1] / "normal.jpg", "JPEG", quality=85)
    Image.new("RGB", (96, 128), (6, 6, 8)).save(people[2] / "mask2.jpg", "JPEG")
    with Image.open(people[3] / "mask3.jpg") as image:
        image.filter(ImageFilter.GaussianBlur(3)).save(people[3] / "mask3.jpg", "JPEG", quality=92)
    store = LabelStore(tmp_path / "labels.db")
    ingest(root, store, workers=1)
    yield store
    store.close()


def test_data_checks_find_the_planted_problems_and_store_them(checked_store):
    issues = run_data_checks(checked_store, workers=2)
    paths = checked_store.items().set_index("item_id")["path"]
    found = {(kind, paths[item]) for kind, item in zip(issues["kind"], issues["item_id"])}
    people = sorted({p.split("/")[2] for p in paths if p.startswith("train/")})
    assert found == {
        ("duplicate", f"train/images/{people[0]}/mask1.jpg"), ("duplicate", f"train/images/{people[1]}/mask1.jpg"),
        ("near_duplicate", f"train/images/{people[1]}/normal.jpg"),
        ("near_duplicate", f"train/images/{people[4]}/normal.jpg"),
        ("dark", f"train/images/{people[2]}/mask2.jpg"), ("blurry", f"train/images/{people[3]}/mask3.jpg")}
    assert list(issues.columns) == ["item_id", "kind", "detail", "score"]
    stored = checked_store.data_issues()
    assert sorted(zip(stored["kind"], stored["path"])) == sorted(found)
    dark = issues[issues["kind"] == "dark"].iloc[0]
    assert dark["detail"].startswith("mean luminance") and 0.5 < dark["score"] <= 1


def test_rerun_replaces_issues_and_reports_files_gone_bad(checked_store):
    run_data_checks(checked_store, workers=1)
    victim = checked_store.items()["path"].iloc[5]
    (checked_store.root / victim).write_bytes(b"not an image any more")
    issues = run_data_checks(checked_store, workers=1)
    unreadable = issues[issues["kind"] == "unreadable"]
    assert unreadable["item_id"].tolist() == [int(checked_store.items()["item_id"].iloc[5])]
    assert unreadable["detail"].iloc[0].startswith("cannot decode")
    assert len(checked_store.data_issues()) == len(issues)  # replaced, not appended


def test_check_command_prints_counts(checked_store, capsys):
    assert main(["check", "--db", str(checked_store.path)]) == 0
    assert capsys.readouterr().out.strip() == "6 data issue(s): blurry 1, dark 1, duplicate 2, near_duplicate 2"


def test_dark_and_blurry_are_outliers_of_the_dataset_itself():
    """White digits on black: every image is dark by an absolute threshold, none is an outlier; a thin
    stroke is not a blur. Only the black image and the smoothed one stand out."""
    rng = np.random.default_rng(0)
    n = 60
    items = pd.DataFrame({"item_id": range(n), "path": [f"{i}.png" for i in range(n)], "person": None,
                          "hash": [f"{i:064x}" for i in range(n)], "error": None,
                          "luminance": rng.normal(33, 4, n), "contrast": rng.normal(70, 8, n),
                          "phash": [f"{i:064x}" for i in range(n)]})
    items["sharpness"] = items["contrast"] ** 2 * rng.normal(1.4, 0.1, n)  # edge energy follows the ink
    items.loc[5, "contrast"] = 20.0  # a thin stroke: little ink, as sharp per unit of contrast
    items.loc[5, "sharpness"] = 20.0 ** 2 * 1.4
    items.loc[7, ["luminance", "contrast", "sharpness"]] = [2.0, 5.0, 30.0]  # nearly black
    items.loc[9, "sharpness"] = items.loc[9, "contrast"] ** 2 * 0.02  # smoothed
    issues = find_data_issues(items)
    assert set(issues.loc[issues["kind"] == "dark", "item_id"]) == {7}
    assert set(issues.loc[issues["kind"] == "blurry", "item_id"]) == {9}
