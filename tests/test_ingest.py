"""core.ingest: the competition layout with every quirk, csv and folder formats, fatal errors, re-ingest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from core.ingest import IngestError, ingest
from core.store import LabelStore, StoreError
from tests.fixtures import (
    Expected,
    build_clean_competition,
    build_competition,
    build_csv_dataset,
    build_folder_dataset,
    write_image,
    write_person,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def quirky(tmp_path: Path) -> tuple[Path, Expected]:
    root = tmp_path / "data"
    return root, build_competition(root)


def assert_problems(problems: list[tuple[str, str]], expected: Expected) -> None:
    """Exactly one problem line per bad thing, at the expected path, with the expected reason."""
    paths = [path for path, _ in problems]
    assert sorted(paths) == sorted(expected.problems), "problem paths differ"
    for path, reason in problems:
        assert expected.problems[path] in reason, f"{path}: {reason!r} lacks {expected.problems[path]!r}"


# ---- the competition layout -------------------------------------------------------------------------------
def test_competition_exact_counts_and_one_problem_per_bad_thing(quirky: tuple[Path, Expected], tmp_path: Path) -> None:
    root, expected = quirky
    with LabelStore(tmp_path / "labels.db") as store:
        result = ingest(root, store)
        report = result.report
        assert (report.n_items, report.n_new, report.n_labelled, report.n_unlabelled) == (
            expected.n_items, expected.n_items, expected.n_train, expected.n_eval)
        assert report.n_problems == len(expected.problems) == 18
        assert result.n_persons == expected.n_persons == 12
        assert_problems(result.problems, expected)
        assert sorted(map(tuple, store.problems()[["path", "reason"]].to_numpy())) == sorted(result.problems)
        assert len(store.items()) == expected.n_items and len(store.persons()) == expected.n_persons
        assert f"ingested {expected.n_items} images of 12 people" in result.summary()
        assert "18 problem(s)" in result.summary() and "images/s" in result.summary()
        assert store.dataset_format == "competition" and store.root == root.resolve()


def test_competition_labels_people_and_paths(quirky: tuple[Path, Expected], tmp_path: Path) -> None:
    root, expected = quirky
    with LabelStore(tmp_path / "labels.db") as store:
        ingest(root, store)
        labels = store.current_labels().set_index("path")
        persons = store.persons().set_index("person")
        items = store.items().set_index("path")
    for folder, facts in expected.persons.items():
        mine = labels[labels["person"] == folder]
        assert set(mine["gender"]) == {facts["gender"]} and set(mine["age"]) == {facts["age"]}
        assert persons.loc[folder, "source_id"] == facts["source_id"]  # read as text: 000001 keeps its zeros
        assert json.loads(persons.loc[folder, "info"])["race"] == "Asian"
    # id 003397 names two people; people are keyed by folder
    assert sorted(persons.index[persons["source_id"] == "003397"]) == ["003397_female_Asian_20", "003397_male_Asian_58"]
    assert persons.loc["001498-1_male_Asian_30", "n_images"] == 7
    assert json.loads(persons.loc["000002_male_Asian_25", "info"])["line"] == 4
    # mask from the file stem, whatever the extension's case
    quirks = "train/images/000002_male_Asian_25"
    assert labels.loc[f"{quirks}/mask1.png", "mask"] == "wear"
    assert labels.loc[f"{quirks}/incorrect_mask.jpg", "mask"] == "incorrect"
    assert labels.loc[f"{quirks}/normal.JPG", "mask"] == "not_wear"
    assert labels.loc[f"{quirks}/mask2.jpeg", "class"] == 0 * 6 + 0 * 3 + 0  # wear, male, <30
    modes = "train/images/000005_female_Asian_60"
    assert {f"{modes}/mask{n}.{e}" for n, e in [(1, "jpg"), (2, "jpg"), (3, "png"), (4, "png"), (5, "jpg")]} <= set(labels.index)
    # eval images: unlabelled, no person, their ImageID as source id
    evals = items[items["split"] == "eval"]
    assert len(evals) == expected.n_eval and evals["person"].isna().all()
    assert sorted(evals["source_id"]) == sorted(Path(p).name for p in evals.index)
    assert not any(p.startswith("eval/") for p in labels.index)
    # facts from the one read of each file
    for path, row in items.iterrows():
        assert "\\" not in path and not path.startswith("/")
        data = (root / path).read_bytes()
        assert (row["bytes"], row["hash"]) == (len(data), hashlib.sha256(data).hexdigest())
        assert (row["width"], row["height"]) == (24, 32)


def test_reingest_is_idempotent_and_keeps_corrections(quirky: tuple[Path, Expected], tmp_path: Path) -> None:
    root, expected = quirky
    with LabelStore(tmp_path / "labels.db") as store:
        first = ingest(root, store)
        store.correct("000001_female_Asian_45", "gender", "male", expected="female", annotator="ana", reason="beard")
        store.correct("train/images/000002_male_Asian_25/normal.JPG", "mask", "incorrect", expected="not_wear",
                      annotator="ana")
        before = (store.items(), store.current_labels(), store.current_labels(original=True), store.history())
        second = ingest(root, store, workers=1)
        after = (store.items(), store.current_labels(), store.current_labels(original=True), store.history())
        assert second.report.n_new == 0 and second.report.n_items == expected.n_items
        assert sorted(second.problems) == sorted(first.problems)
        for old, new in zip(before, after):
            assert old.equals(new)
        assert store.label_of("000001_female_Asian_45", "gender") == "male"
        assert store.verify_current() == []


def test_reingest_after_source_edits(tmp_path: Path) -> None:
    root = tmp_path / "data"
    build_clean_competition(root, n_persons=2)
    with LabelStore(tmp_path / "labels.db") as store:
        ingest(root, store)
        csv = root / "train" / "train.csv"
        csv.write_text(csv.read_text().replace("000001,female,Asian", "000001,FEMALE,Asian"))  # same label
        assert ingest(root, store).problems == []
        (root / "eval" / "images" / f"{0:040x}.jpg").unlink()
        result = ingest(root, store)
        assert [reason for _, reason in result.problems] == ["listed in eval/info.csv line 2 but the file is missing"]
        (root / "eval" / "info.csv").write_text("ImageID,ans\n")  # no eval rows at all is fine, not fatal
        result = ingest(root, store)
        assert result.problems == [(f"eval/images/{1:040x}.jpg", "not listed in eval/info.csv; left out")]


def test_competition_refuses_symlinks_and_ids_leaving_the_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    expected = build_clean_competition(root, n_persons=2)
    outside = write_image(tmp_path / "elsewhere" / "face.jpg")
    person = next(iter(expected.persons))
    (root / "train" / "images" / person / "mask1.jpg").unlink()
    (root / "train" / "images" / person / "mask1.jpg").symlink_to(outside)
    inside = root / "train" / "images" / person / "mask2.jpg"
    (root / "eval" / "images" / "alias.jpg").symlink_to(inside)  # a symlink that stays inside is fine
    with open(root / "eval" / "info.csv", "a") as info:
        info.write(f"../train/images/{person}/mask3.jpg,0\nalias.jpg,0\n")
    write_person(tmp_path / "elsewhere", "000009_male_Asian_33")  # a whole person folder linked in from outside
    (root / "train" / "images" / "000009_male_Asian_33").symlink_to(tmp_path / "elsewhere" / "000009_male_Asian_33")
    with open(root / "train" / "train.csv", "a") as rows:
        rows.write("000009,male,Asian,33,000009_male_Asian_33\n")
    with LabelStore(tmp_path / "labels.db") as store:
        result = ingest(root, store)
        assert sorted(result.problems) == sorted([
            (f"eval/images/../train/images/{person}/mask3.jpg",
             "eval/info.csv line 4: '..' leads outside the dataset root"),
            ("train/images/000009_male_Asian_33", "train.csv line 4: a symlink leads outside the dataset root"
                                                  f" (to {os.path.realpath(tmp_path / 'elsewhere')}/000009_male_Asian_33)"),
            (f"train/images/{person}/mask1.jpg", f"a symlink leads outside the dataset root (to {os.path.realpath(outside)})")])
        assert result.report.n_items == expected.n_items - 1 + 1
        assert "eval/images/alias.jpg" in set(store.items()["path"])


# ---- fatal problems leave the store untouched ---------------------------------------------------------------
def _break_missing_csv(root: Path) -> None:
    (root / "train" / "train.csv").unlink()


def _break_columns(root: Path) -> None:
    (root / "train" / "train.csv").write_text("id,sex,race,age,path\n000001,female,Asian,22,x\n")


def _break_encoding(root: Path) -> None:
    (root / "train" / "train.csv").write_bytes("id,gender,race,age,path\n000001,f\xe9male,Asian,22,x\n".encode("latin-1"))


def _break_empty(root: Path) -> None:
    (root / "train" / "train.csv").write_text("id,gender,race,age,path\n")


def _break_no_images(root: Path) -> None:
    for path in sorted((root / "train" / "images").rglob("*.jpg")):
        path.write_bytes(b"")


@pytest.mark.parametrize(("damage", "message"), [
    (_break_missing_csv, r"train\.csv: missing"),
    (_break_columns, r"train\.csv: missing column\(s\) gender"),
    (_break_encoding, r"train\.csv, line 2: not UTF-8 text \(byte 0xe9\)"),
    (_break_empty, r"train\.csv: no data rows"),
    (_break_no_images, r"no readable labelled image \(\d+ problem\(s\), e\.g\. .*empty file"),
])
def test_fatal_problems_leave_the_store_byte_for_byte_unchanged(tmp_path: Path, damage: Callable[[Path], None],
                                                                message: str) -> None:
    root, db = tmp_path / "data", tmp_path / "labels.db"
    build_clean_competition(root, n_persons=2)
    with LabelStore(db) as store:
        ingest(root, store)
    before = db.read_bytes()
    damage(root)
    with LabelStore(db) as store:
        with pytest.raises(IngestError, match=message) as caught:
            ingest(root, store)
        assert isinstance(caught.value, StoreError)
    assert db.read_bytes() == before
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def test_fatal_problems_on_a_fresh_store(tmp_path: Path) -> None:
    with LabelStore(tmp_path / "labels.db") as store:
        with pytest.raises(IngestError, match="nowhere: no such file or folder"):
            ingest(tmp_path / "nowhere", store)
        (tmp_path / "empty").mkdir()
        with pytest.raises(IngestError, match="cannot tell the dataset layout"):
            ingest(tmp_path / "empty", store)
        (tmp_path / "bare" / "train" / "images").mkdir(parents=True)
        (tmp_path / "bare" / "train" / "train.csv").write_text("id,gender,race,age,path\n000001,male,Asian,30,x\n")
        with pytest.raises(IngestError, match="empty dataset, no image files found .*folder does not exist"):
            ingest(tmp_path / "bare", store)
        assert store.is_empty and store.problems().empty


def test_cli_prints_problems_and_summary_or_one_error_line(quirky: tuple[Path, Expected], tmp_path: Path) -> None:
    root, expected = quirky
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "core", "ingest", str(root), "--db", str(tmp_path / "labels.db")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(expected.problems) + 1 and lines[-1].startswith(f"ingested {expected.n_items} images")
    (root / "train" / "train.csv").write_bytes(b"\xff\xfei\x00d\x00")  # UTF-16: not UTF-8
    failed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ") and "not UTF-8" in failed.stderr


# ---- csv and folder formats ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bom", [False, True])
def test_csv_format_confines_paths_per_row(tmp_path: Path, bom: bool) -> None:
    root = tmp_path / "data"
    expected = build_csv_dataset(root, bom=bom)
    with LabelStore(tmp_path / "labels.db") as store:
        result = ingest(root, store, person_column="subject")  # detected: a folder holding labels.csv
        assert result.fmt == "csv" and result.report.n_items == expected.n_items
        assert result.n_persons == expected.n_persons
        assert_problems(result.problems, expected)
        schema = store.schema
        assert schema.names == ["species", "colour"]
        assert schema.attribute("species").classes == ("cat", "dog")
        labels = store.current_labels().set_index("path")
        assert labels.loc["img/2.png", "species"] == "dog" and labels.loc["img/2.png", "person"] == "s1"
        assert (store.persons()["n_images"] == 2).all()
        csv = root / "labels.csv"
        csv.write_bytes(csv.read_bytes().replace(b"img/0.png,s0,cat", b"img/0.png,s0,dog"))
        again = ingest(root, store, person_column="subject")
        changed = [reason for path, reason in again.problems if path == "img/0.png"]
        assert changed == ["species is now 'dog' in the source but was ingested as 'cat'; the original is kept"
                           " (record a correction instead)"]
        assert store.label_of("img/0.png", "species") == "cat" and again.report.n_new == 0


def test_csv_format_options_and_fatal_errors(tmp_path: Path) -> None:
    root = tmp_path / "data"
    build_csv_dataset(root)
    csv = root / "labels.csv"
    with LabelStore(tmp_path / "labels.db") as store:
        with pytest.raises(IngestError, match="no label column\\(s\\) size"):
            ingest(csv, store, label_columns=["size"])
        with pytest.raises(IngestError, match="missing column\\(s\\) who"):
            ingest(csv, store, person_column="who")
        result = ingest(csv, store, fmt="csv", label_columns=["species"])
        assert store.schema.names == ["species"] and result.report.n_items == 6
        assert result.n_persons == 6  # without a person column each image is its own person
    (tmp_path / "only_paths.csv").write_text("path\nimg/0.png\n")
    (tmp_path / "Upper.csv").write_text("path,Species\ndata/img/0.png,cat\n")
    with LabelStore(tmp_path / "other.db") as store:
        with pytest.raises(IngestError, match="only_paths.csv: no label column besides 'path'"):
            ingest(tmp_path / "only_paths.csv", store)
        with pytest.raises(IngestError, match="Upper.csv: 'Species' cannot be a label column"):
            ingest(tmp_path / "Upper.csv", store)
        assert store.is_empty


def test_folder_format(tmp_path: Path) -> None:
    root = tmp_path / "data"
    expected = build_folder_dataset(root)
    with LabelStore(tmp_path / "labels.db") as store:
        result = ingest(root, store)  # detected: one folder per class
        assert result.fmt == "folder" and result.report.n_items == expected.n_items
        assert_problems(result.problems, expected)
        assert store.schema.attribute("label").classes == ("bird", "cat", "dog")
        labels = store.current_labels().set_index("path")
        assert labels.loc["cat/more/c.jpg", "label"] == "cat" and labels.loc["cat/more/c.jpg", "person"] == "cat/more/c.jpg"
        assert not any(".hidden" in p or "._" in p for p in labels.index)
    write_image(tmp_path / "one" / "only" / "a.jpg")
    with LabelStore(tmp_path / "one.db") as store, pytest.raises(IngestError, match="fewer than two classes"):
        ingest(tmp_path / "one", store, fmt="folder")


def test_another_root_is_refused_before_inspection(tmp_path: Path) -> None:
    build_clean_competition(tmp_path / "a", n_persons=1)
    build_clean_competition(tmp_path / "b", n_persons=1)
    with LabelStore(tmp_path / "labels.db") as store:
        ingest(tmp_path / "a", store)
        with pytest.raises(IngestError, match="already holds the dataset at"):
            ingest(tmp_path / "b", store)
