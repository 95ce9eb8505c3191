"""The bad-input corpus: every kind gets one clear line naming the file or row, the right exit code,
and nothing half-written. Each case builds a clean dataset, damages it one way, and runs the CLI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from core.__main__ import main as core_main
from core.store import LabelStore
from tests.fixtures import build_clean_competition, write_image, write_truncated_jpeg

PERSON = "000001_female_Asian_22"
IMAGES = Path("train/images")


@dataclass(frozen=True)
class Case:
    kind: str
    damage: Callable[[Path], None]
    exit_code: int  # 0: the rest ingests and the bad thing is one problem line; 2: fatal, nothing written
    message: str  # fragment of the one line naming the file/row
    names: str  # path fragment the line must name


def _replace_image(stem: str, writer: Callable[[Path], object]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        target = root / IMAGES / PERSON / f"{stem}.jpg"
        target.unlink()
        writer(target)
    return damage


def _csv_row(old: str, new: str, rename: tuple[str, str] | None = None) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        csv = root / "train" / "train.csv"
        csv.write_text(csv.read_text().replace(old, new))
        if rename:
            (root / IMAGES / rename[0]).rename(root / IMAGES / rename[1])
    return damage


def _bomb(path: Path) -> None:
    # A PNG whose header claims 20000×20000 pixels (400 MP): refused from the header, never decoded.
    Image.new("1", (20_000, 20_000)).save(path, "PNG")


def _symlink_out(root: Path) -> None:
    outside = write_image(root.parent / "outside" / "face.jpg")
    target = root / IMAGES / PERSON / "mask2.jpg"
    target.unlink()
    target.symlink_to(outside)


def _write(relative: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / relative).write_bytes(data)


CSV_HEADER = b"id,gender,race,age,path\n"
CORPUS = [
    Case("truncated JPEG", _replace_image("mask1", write_truncated_jpeg), 0, "truncated image", "mask1.jpg"),
    Case("zero-byte file", _replace_image("mask2", lambda p: p.write_bytes(b"")), 0, "empty file", "mask2.jpg"),
    Case("text named .jpg", _replace_image("mask3", lambda p: p.write_text("hello")), 0, "not a decodable image",
         "mask3.jpg"),
    Case("decompression-bomb sized image", _replace_image("mask4", _bomb), 0, "too large", "mask4.jpg"),
    Case("symlink leaving the root", _symlink_out, 0, "outside", "mask2.jpg"),
    Case("missing expected file", lambda root: (root / IMAGES / PERSON / "normal.jpg").unlink(), 0, "missing normal",
         PERSON),
    Case("unexpected file", _write(f"train/images/{PERSON}/notes.txt", b"x"), 0, "unexpected file", "notes.txt"),
    Case("non-numeric age", _csv_row("Asian,22,000001_female_Asian_22", "Asian,abc,000001_female_Asian_abc",
                                     (PERSON, "000001_female_Asian_abc")), 0, "not a number", "000001_female_Asian_abc"),
    Case("negative age", _csv_row("Asian,22,000001_female_Asian_22", "Asian,-5,000001_female_Asian_-5",
                                  (PERSON, "000001_female_Asian_-5")), 0, "below the minimum", "000001_female_Asian_-5"),
    Case("absurd age", _csv_row("Asian,22,000001_female_Asian_22", "Asian,200,000001_female_Asian_200",
                                (PERSON, "000001_female_Asian_200")), 0, "above the maximum", "000001_female_Asian_200"),
    Case("unknown gender", _csv_row("000001,female,Asian,22,000001_female_Asian_22",
                                    "000001,robot,Asian,22,000001_robot_Asian_22", (PERSON, "000001_robot_Asian_22")),
         0, "not one of", "000001_robot_Asian_22"),
    Case("conflicting duplicate rows", lambda root: (root / "train/train.csv").open("a").write(
        "000001,male,Asian,22,000001_female_Asian_22\n"), 0, "different labels", PERSON),
    Case("row without a folder", lambda root: (root / "train/train.csv").open("a").write(
        "000099,male,Asian,40,000099_male_Asian_40\n"), 0, "folder does not exist", "000099_male_Asian_40"),
    Case("non-UTF-8 train.csv", _write("train/train.csv", CSV_HEADER + "000001,f\xe9male,Asian,22,x\n".encode("latin-1")),
         2, "UTF-8", "train.csv"),
    Case("train.csv missing columns", _write("train/train.csv", b"id,gender\n000001,female\n"), 2, "column", "train.csv"),
    Case("train.csv missing", lambda root: (root / "train/train.csv").unlink(), 2, "train.csv", "train.csv"),
    Case("empty dataset", _write("train/train.csv", CSV_HEADER), 2, "", "train.csv"),
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


@pytest.mark.parametrize("case", CORPUS, ids=[c.kind for c in CORPUS])
def test_bad_input_gets_one_clear_line_and_nothing_half_written(case: Case, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    expected = build_clean_competition(root, n_persons=3)
    case.damage(root)
    db = tmp_path / "labels.db"
    LabelStore(db).close()
    before = _digest(db)
    code = core_main(["ingest", str(root), "--db", str(db)])
    out, err = capsys.readouterr()
    assert code == case.exit_code, out + err
    if case.exit_code:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert case.names in lines[0] and case.message in lines[0]
        assert _digest(db) == before  # nothing written
        assert LabelStore(db).is_empty
    else:
        named = [line for line in out.splitlines() if case.names in line and case.message in line]
        assert len(named) == 1, out
        store = LabelStore(db)
        labels = store.current_labels()
        assert 0 < len(labels) <= expected.n_train
        if case.names.endswith(".jpg"):  # the bad file is left out, the person's other images stay
            assert not labels["path"].str.endswith(f"{PERSON}/{case.names}").any()
            assert (labels["person"] == PERSON).sum() == 6
        elif case.names != PERSON:  # a bad row or folder: that person is left out
            assert not (labels["person"] == case.names).any()
        problems = store.problems()
        assert problems["path"].str.contains(case.names, regex=False).any()
        store.close()


def test_corrections_csv_with_bad_rows_names_each_line_and_applies_nothing(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    build_clean_competition(root, n_persons=3)
    db = str(tmp_path / "labels.db")
    assert core_main(["ingest", str(root), "--db", db]) == 0
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("target,attribute,value\n000002,gender,female\nnobody,gender,male\n"
                     f"{PERSON}/normal,mask,sideways\n000003,age,-1\n")
    capsys.readouterr()
    assert core_main(["import", str(fixes), "--db", db]) == 2
    err = capsys.readouterr().err
    assert "line 3: unknown person 'nobody'" in err
    assert "line 4: mask: 'sideways' is not one of" in err
    assert "line 5: age: -1 is below the minimum" in err
    assert LabelStore(db).n_corrections() == 0


def test_corpus_covers_at_least_fifteen_kinds() -> None:
    assert len({c.kind for c in CORPUS}) >= 15
