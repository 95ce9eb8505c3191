"""core.demo: exact competition layout, truth.csv consistency, noise counts, determinism, refusals."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.demo import MARKER, NOISE_KINDS, DemoInfo, _plan, generate
from core.schema import COMPETITION, MASK_FILES

SIZE = (48, 64)  # (w, h): tiny images keep the tests fast
PERSONS, NOISE = 14, 0.5  # 7 corrupted people: 3 gender flips, 3 mask swaps, 1 wrong age
FOLDER = re.compile(r"^(\d{6})_(male|female)_(Asian)_(\d+)$")
TRUTH_COLUMNS = ["path", "person", "true_mask", "true_gender", "true_age", "given_mask", "given_gender",
                 "given_age", "true_class", "given_class", "noise_kind"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoInfo]:
    out = tmp_path_factory.mktemp("demo") / "data"
    return out, generate(out, persons=PERSONS, noise=NOISE, seed=3, image_size=SIZE, workers=1)


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_truth(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "truth.csv", dtype={"noise_kind": str}, keep_default_na=False)


def test_train_layout_is_exactly_the_competitions(demo: tuple[Path, DemoInfo]) -> None:
    root, info = demo
    # the competition's columns, then what a real export has beside them (core.patterns slices by them)
    assert (root / "train" / "train.csv").read_text().splitlines()[0] == "id,gender,race,age,path,annotator,batch"
    table = pd.read_csv(root / "train" / "train.csv", dtype={"id": str})
    assert len(table) == info.persons == PERSONS
    folders = sorted(p.name for p in (root / "train" / "images").iterdir())
    assert folders == sorted(table.path)
    extensions, junk = set(), 0
    for row in table.itertuples(index=False):
        assert FOLDER.match(row.path).groups() == (row.id, row.gender, row.race, str(row.age))
        files = sorted((root / "train" / "images" / row.path).iterdir())
        images = [f for f in files if not f.name.startswith(".")]
        assert sorted(f.stem for f in images) == sorted(MASK_FILES)
        assert len({f.suffix for f in images}) == 1  # one extension per person, like the real folders
        extensions.add(images[0].suffix)
        for hidden in (f for f in files if f.name.startswith(".")):
            assert hidden.name[2:] in {f.name for f in images} and hidden.name.startswith("._")
            assert hidden.read_bytes()[:4] == b"\x00\x05\x16\x07"  # AppleDouble magic, then garbage
            junk += 1
        with Image.open(images[0]) as image:
            assert image.size == SIZE and image.mode == "RGB"
    assert extensions == {".jpg", ".png", ".jpeg"}
    assert junk >= 1


def test_eval_layout_and_truth_eval(demo: tuple[Path, DemoInfo]) -> None:
    root, info = demo
    assert (root / "eval" / "info.csv").read_text().splitlines()[0] == "ImageID,ans"
    listed = pd.read_csv(root / "eval" / "info.csv")
    assert len(listed) == info.eval_images == PERSONS // 2
    assert (listed.ans == 0).all()
    assert all(re.fullmatch(r"[0-9a-f]{40}\.jpg", name) for name in listed.ImageID)
    assert sorted(p.name for p in (root / "eval" / "images").iterdir()) == sorted(listed.ImageID)
    truth = pd.read_csv(root / "truth_eval.csv")
    assert list(truth.columns) == ["ImageID", "true_mask", "true_gender", "true_age", "true_class"]
    assert list(truth.ImageID) == list(listed.ImageID)
    codes = COMPETITION.codes(truth.rename(columns={"true_mask": "mask", "true_gender": "gender", "true_age": "age"}))
    assert (COMPETITION.encode_class(codes) == truth.true_class).all()


def test_truth_given_columns_say_what_the_dataset_says(demo: tuple[Path, DemoInfo]) -> None:
    root, info = demo
    truth = read_truth(root)
    assert list(truth.columns) == TRUTH_COLUMNS
    assert len(truth) == info.images == 7 * PERSONS
    table = pd.read_csv(root / "train" / "train.csv", dtype={"id": str}).set_index("path")
    for row in truth.itertuples(index=False):
        split, folder, file = row.path.split("/")[:2], row.path.split("/")[2], row.path.split("/")[3]
        assert split == ["train", "images"] and folder == row.person and (root / row.path).is_file()
        assert row.given_mask == MASK_FILES[Path(file).stem]
        assert (row.given_gender, row.given_age) == (table.gender[folder], table.age[folder])
    for prefix in ("true", "given"):
        labels = truth[[f"{prefix}_mask", f"{prefix}_gender", f"{prefix}_age"]]
        labels.columns = ["mask", "gender", "age"]
        assert (COMPETITION.encode_class(COMPETITION.codes(labels)) == truth[f"{prefix}_class"]).all()
    clean = truth[truth.noise_kind == ""]
    assert (clean.true_class == clean.given_class).all()


def test_noise_counts_match_truth_and_rate(demo: tuple[Path, DemoInfo]) -> None:
    root, info = demo
    truth = read_truth(root)
    people = truth.groupby("person")
    kinds = people.noise_kind.first()
    assert (people.noise_kind.nunique() == 1).all()
    assert info.corrupted == {kind: int((kinds == kind).sum()) for kind in NOISE_KINDS} == \
        {"gender_flip": 3, "mask_swap": 3, "age": 1}
    assert sum(info.corrupted.values()) == round(NOISE * PERSONS)
    for person, rows in people:
        kind = rows.noise_kind.iloc[0]
        wrong = {column: (rows[f"true_{column}"] != rows[f"given_{column}"]).sum() for column in ("mask", "gender", "age")}
        expected = {"": {}, "gender_flip": {"gender": 7}, "mask_swap": {"mask": 2}, "age": {"age": 7}}[kind]
        assert {k: v for k, v in wrong.items() if v} == expected, person
        if kind == "mask_swap":  # the incorrect-mask photo is saved as normal.<ext> and vice versa
            shown = dict(zip(rows.path.map(lambda p: Path(p).stem), rows.true_mask))
            assert (shown["incorrect_mask"], shown["normal"]) == ("not_wear", "incorrect")
        if kind == "age":
            groups = COMPETITION.binned[0].codes(rows[["true_age", "given_age"]].iloc[0].to_numpy())
            assert groups[0] != groups[1]
    assert "3 gender_flip, 3 mask_swap, 1 age" in info.summary() and f"{PERSONS} people" in info.summary()


def test_plan_at_scale_matches_the_real_proportions() -> None:
    plan = _plan(2700, 0.05, seed=0)  # labels only, no images: the real training set's size
    persons = plan.drop_duplicates("folder")
    assert len(persons) == 2700
    assert plan.noise_kind.value_counts().to_dict() == {"": 2565, "gender_flip": 61, "mask_swap": 60, "age": 14}
    assert abs((plan.gender == "female").mean() - 1658 / 2700) < 0.002
    assert plan.age.between(18, 60).all() and (plan.age == 60).sum() == 192
    young = (plan.age < 30).mean()
    assert 0.40 < young < 0.55 and (plan.ext == "jpg").mean() > 0.9
    assert (plan.given_age[plan.given_age >= 60] == 60).all()


def test_old_group_holds_only_age_60(demo: tuple[Path, DemoInfo]) -> None:
    truth = read_truth(demo[0])
    for column in ("true_age", "given_age"):
        assert truth[column].between(18, 60).all()
        assert set(truth[column][truth[column] >= 60]) <= {60}
    assert (truth.true_age == 60).any()  # round(7.1% of 14) = 1 person


def test_same_seed_same_bytes_whatever_the_workers(demo: tuple[Path, DemoInfo], tmp_path: Path) -> None:
    root, _ = demo
    again = generate(tmp_path / "again", persons=PERSONS, noise=NOISE, seed=3, image_size=SIZE, workers=2)
    assert again.corrupted == demo[1].corrupted
    assert tree_hashes(tmp_path / "again") == tree_hashes(root)
    generate(tmp_path / "other", persons=PERSONS, noise=NOISE, seed=4, image_size=SIZE, workers=1)
    mine, other = tree_hashes(root), tree_hashes(tmp_path / "other")
    assert sorted(mine) != sorted(other)  # other people: other folder names
    images = {digest for name, digest in mine.items() if name.startswith(("train/images/", "eval/images/"))}
    assert images and images.isdisjoint(other.values())


def test_images_differ_within_a_person_and_show_the_mask(demo: tuple[Path, DemoInfo]) -> None:
    root = demo[0]
    truth = read_truth(root)
    first = truth[truth.person == truth.person.iloc[0]]
    pixels = {Path(p).stem: np.asarray(Image.open(root / p), dtype=np.int16) for p in first.path}
    assert len({array.tobytes() for array in pixels.values()}) == 7
    assert all(np.abs(pixels["mask1"] - pixels[k]).mean() > 1 for k in ("mask2", "normal"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"persons": 0}, "persons must be a whole number >= 1"),
    ({"persons": 2.5}, "persons must be a whole number >= 1"),
    ({"noise": -0.1}, "noise must be a fraction"),
    ({"noise": 1.5}, "noise must be a fraction"),
    ({"noise": float("nan")}, "noise must be a fraction"),
    ({"eval_images": -1}, "eval_images must be a whole number >= 0"),
    ({"image_size": (8, 8)}, "image_size must be"),
    ({"workers": 0}, "workers must be >= 1"),
])
def test_bad_arguments_are_refused_before_writing(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", **{"persons": 2, **kwargs})
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and holds no demo"):
        generate(tmp_path / "mine", persons=1, image_size=SIZE, workers=1)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        generate(tmp_path / "file", persons=1, image_size=SIZE, workers=1)


def test_overwrites_a_previous_demo_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    generate(out, persons=3, noise=0, image_size=SIZE, workers=1)
    (out / "README.txt").write_text("a user's note")  # not the demo's: must survive
    info = generate(out, persons=2, noise=0, eval_images=1, image_size=SIZE, workers=1)
    assert (out / MARKER).is_file() and (out / "README.txt").read_text() == "a user's note"
    assert len(list((out / "train" / "images").iterdir())) == info.persons == 2
    assert len(list((out / "eval" / "images").iterdir())) == 1 and len(read_truth(out)) == 14


def test_ingest_reads_the_demo_without_problems(demo: tuple[Path, DemoInfo], tmp_path: Path) -> None:
    from core.ingest import ingest
    from core.store import LabelStore

    root, info = demo
    with LabelStore(tmp_path / "labels.db") as store:
        result = ingest(root, store)
    assert result.problems == []
    assert (result.report.n_items, result.n_persons) == (info.images + info.eval_images, info.persons)


def test_systematic_profile_reproduces_its_truth_exactly_for_a_seed(demo: tuple[Path, DemoInfo],
                                                                     tmp_path: Path) -> None:
    """Every change of ``--noise-profile systematic`` is in truth.csv, follows its pattern, and the whole
    folder (truth.csv included) is byte-identical for a seed; the people are the random profile's."""
    info = generate(tmp_path / "a", persons=PERSONS, noise=NOISE, seed=3, image_size=SIZE, workers=1,
                    profile="systematic")
    again = generate(tmp_path / "b", persons=PERSONS, noise=NOISE, seed=3, image_size=SIZE, workers=2,
                     profile="systematic")
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b") and info.corrupted == again.corrupted
    truth, random_truth = read_truth(tmp_path / "a"), read_truth(demo[0])
    # Same people (true labels, in order) as the random profile of the seed: only the given labels differ.
    assert list(truth.person.str[:6]) == list(random_truth.person.str[:6])
    for column in ("true_gender", "true_age"):  # (true_mask: what a photo shows, swapped or not)
        assert list(truth[column]) == list(random_truth[column])
    table = pd.read_csv(tmp_path / "a" / "train" / "train.csv", dtype={"id": str}).set_index("path")
    batch = []
    for person, rows in truth.groupby("person", sort=False):
        kinds = set(filter(None, rows.noise_kind.iloc[0].split("+")))
        first = rows.iloc[0]
        assert (first.given_gender, first.given_age) == (table.gender[person], table.age[person])
        wrong = {c for c in ("mask", "gender", "age") if (rows[f"true_{c}"] != rows[f"given_{c}"]).any()}
        assert wrong == {{"mask_batch": "mask", "age_rounded": "age", "gender_lookalike": "gender"}[k] for k in kinds}
        if "mask_batch" in kinds:
            batch.append(int(person[:6]))
            shown = dict(zip(rows.path.map(lambda p: Path(p).stem), rows.true_mask))
            assert (shown["incorrect_mask"], shown["normal"]) == ("not_wear", "incorrect")
            assert (rows.true_mask != rows.given_mask).sum() == 2
        if "age_rounded" in kinds:
            assert (first.true_age, first.given_age) in {(a, 30) for a in (27, 28, 29)} | {(a, 60) for a in (57, 58, 59)}
        elif first.true_age in (27, 28, 29, 57, 58, 59):  # noise 0.5: the rounding staff enter every age
            raise AssertionError(f"{person}: age {first.true_age} not rounded")
    assert batch == list(range(batch[0], batch[0] + round(NOISE / 2 * PERSONS)))  # one batch of consecutive ids
    assert info.corrupted == {k: int(truth.drop_duplicates("person").noise_kind.str.contains(k).sum())
                              for k in ("mask_batch", "age_rounded", "gender_lookalike")}
    assert "(systematic)" in info.summary()


def test_systematic_shares_at_scale_and_bad_profile() -> None:
    plan = _plan(200, 0.1, seed=1, profile="systematic")  # share of the rounding / look-alike staff: 40 %
    kinds = plan.noise_kind.str.split("+")
    batch = plan.id[kinds.map(lambda k: "mask_batch" in k)].astype(int)
    assert len(batch) == 10 and (batch.diff().dropna() == 1).all()
    eligible = plan.age.isin([27, 28, 29, 57, 58, 59])
    rounded = kinds.map(lambda k: "age_rounded" in k)
    assert (rounded <= eligible).all() and 0.2 < rounded[eligible].mean() < 0.6
    flipped = kinds.map(lambda k: "gender_lookalike" in k)
    assert ((plan.gender != plan.given_gender) == flipped).all() and flipped.sum() > 0
    with pytest.raises(ValueError, match="noise profile must be one of random, systematic"):
        _plan(10, 0.1, seed=0, profile="bursty")
