"""Fixture builders: tiny datasets on disk in every supported layout, quirks included.

Each builder writes into a folder (pytest's ``tmp_path``) and returns what an ingest of it must
find, so tests compare exact counts instead of re-deriving them::

    expected = build_competition(tmp_path / "data")
    result = ingest(tmp_path / "data", store)
    assert result.report.n_items == expected.n_items

Images are 24×32 (w×h) and distinct per file (their colour encodes a counter), so content
hashes differ unless a test makes a duplicate on purpose.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.schema import MASK_FILES

SIZE = (24, 32)  # (w, h)
_counter = itertools.count(1)


@dataclass
class Expected:
    """What ingesting a built dataset must report.

    ``problems`` maps each problem path (relative to the root) to a fragment of its reason.
    """

    n_items: int = 0
    n_train: int = 0
    n_eval: int = 0
    n_persons: int = 0
    problems: dict[str, str] = field(default_factory=dict)
    persons: dict[str, dict[str, object]] = field(default_factory=dict)  # folder -> gender, age, source_id


def write_image(path: Path, mode: str = "RGB", fmt: str | None = None, size: tuple[int, int] = SIZE,
                seed: int | None = None) -> Path:
    """Write a small image with textured, unique content; ``fmt`` overrides the extension's format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = next(_counter) if seed is None else seed
    rng = np.random.default_rng(seed)
    width, height = size
    base = rng.integers(0, 256, 3)
    pixels = (base + rng.integers(-40, 40, (height, width, 3))).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        image = image.convert(mode)
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), "PNG")
    image.save(path, fmt)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    """A JPEG whose scan data stops half-way (the header parses, decoding fails)."""
    write_image(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def write_person(images_dir: Path, folder: str, suffixes: dict[str, str] | None = None,
                 skip: tuple[str, ...] = ()) -> int:
    """Write a person folder with the seven competition files; returns how many were written."""
    written = 0
    for stem in MASK_FILES:
        if stem in skip:
            continue
        write_image(images_dir / folder / f"{stem}{(suffixes or {}).get(stem, '.jpg')}")
        written += 1
    return written


def build_competition(root: Path) -> Expected:
    """The competition layout with every quirk and bad-file kind; returns the exact expected outcome.

    Good people: plain, mixed extensions (.png/.jpeg/.JPG), id with a suffix (001498-1), two people
    sharing id 003397, odd image modes (CMYK, grayscale, RGBA, 16-bit, PNG named .jpg).
    Files that fail (the person's other images ingest): truncated JPEG, zero-byte file, text named
    .jpg, missing mask3, an unexpected file, mask2 as both .jpg and .png.
    Rows/folders left out: no folder, no row, bad folder name, folder disagreeing with its row,
    ages 'abc'/-5/200, unknown gender, conflicting duplicate rows; plus an exact duplicate row
    (ignored, person kept). AppleDouble ``._*`` and ``.DS_Store`` files everywhere are skipped.
    Eval: three images (one .png), one listed but missing, one present but unlisted.
    """
    images = root / "train" / "images"
    expected = Expected()
    rows: list[str] = []

    def good(source_id: str, gender: str, age: int, n_images: int, **suffixes: str) -> str:
        folder = f"{source_id}_{gender}_Asian_{age}"
        rows.append(f"{source_id},{gender},Asian,{age},{folder}")
        expected.persons[folder] = {"gender": gender, "age": age, "source_id": source_id}
        expected.n_persons += 1
        expected.n_train += n_images
        return folder

    def bad(source_id: str, gender: str, age: str, reason: str, folder: str | None = None,
            write: bool = True) -> None:
        folder = folder or f"{source_id}_{gender}_Asian_{age}"
        rows.append(f"{source_id},{gender},Asian,{age},{folder}")
        if write:
            write_person(images, folder)
        expected.problems[f"train/images/{folder}"] = reason

    # -- people who ingest completely
    folder = good("000001", "female", 45, 7)
    write_person(images, folder)
    (images / folder / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (images / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    rows.append(rows[-1])  # exact duplicate row: ignored with a problem, the person is kept
    expected.problems[f"train/images/{folder}"] = "repeats line 2"
    folder = good("000002", "male", 25, 7)
    write_person(images, folder, {"mask1": ".png", "mask2": ".jpeg", "normal": ".JPG"})
    write_person(images, good("001498-1", "male", 30, 7))
    write_person(images, good("003397", "female", 20, 7))
    write_person(images, good("003397", "male", 58, 7))
    folder = good("000005", "female", 60, 7)
    write_person(images, folder, skip=("mask1", "mask2", "mask3", "mask4", "mask5"))
    write_image(images / folder / "mask1.jpg", mode="CMYK")
    write_image(images / folder / "mask2.jpg", mode="L")
    write_image(images / folder / "mask3.png", mode="RGBA")
    write_image(images / folder / "mask4.png", mode="I;16")
    write_image(images / folder / "mask5.jpg", fmt="PNG")  # a PNG named .jpg decodes: accepted

    # -- people with one bad file (their other six images ingest)
    folder = good("000007", "male", 33, 6)
    write_person(images, folder, skip=("mask1",))
    write_truncated_jpeg(images / folder / "mask1.jpg")
    expected.problems[f"train/images/{folder}/mask1.jpg"] = "truncated image"
    folder = good("000008", "female", 41, 6)
    write_person(images, folder, skip=("incorrect_mask",))
    (images / folder / "incorrect_mask.jpg").write_bytes(b"")
    expected.problems[f"train/images/{folder}/incorrect_mask.jpg"] = "empty file"
    folder = good("000009", "male", 19, 6)
    write_person(images, folder, skip=("mask3",))
    expected.problems[f"train/images/{folder}/mask3"] = "missing mask3"
    folder = good("000010", "female", 50, 7)
    write_person(images, folder)
    (images / folder / "notes.txt").write_text("taken on a cloudy day\n")
    expected.problems[f"train/images/{folder}/notes.txt"] = "unexpected file"
    folder = good("000011", "male", 22, 6)
    write_person(images, folder)
    write_image(images / folder / "mask2.png")
    expected.problems[f"train/images/{folder}/mask2"] = "2 files for mask2"
    folder = good("000012", "female", 27, 6)
    write_person(images, folder, skip=("normal",))
    (images / folder / "normal.jpg").write_text("this is not an image\n")
    expected.problems[f"train/images/{folder}/normal.jpg"] = "not a decodable image"

    # -- rows and folders left out entirely
    bad("000014", "female", "35", "folder does not exist", write=False)
    write_person(images, "000015_male_Asian_40")  # a folder without a csv row
    expected.problems["train/images/000015_male_Asian_40"] = "no row in train/train.csv"
    bad("000016", "female", "29", "does not match", folder="000016-female-Asian-29")
    bad("000017", "male", "31", "disagrees", folder="000017_female_Asian_31")
    bad("000018", "male", "abc", "'abc' is not a number")
    bad("000019", "female", "-5", "below the minimum")
    bad("000020", "male", "200", "above the maximum")
    bad("000021", "unknown", "30", "'unknown' is not one of")
    bad("000022", "male", "44", "give different labels")
    rows.append("000022,male,Asian,45,000022_male_Asian_44")
    (images / "._000001_female_Asian_45").write_bytes(b"\x00\x05\x16\x07")

    header = "id,gender,race,age,path\n"
    (root / "train" / "train.csv").write_text(header + "\n".join(rows) + "\n", encoding="utf-8")

    # -- eval: ImageID,ans with a missing file and an unlisted one
    eval_images = root / "eval" / "images"
    names = [f"{index:040x}.jpg" for index in range(1, 3)] + [f"{3:040x}.png"]
    for name in names:
        write_image(eval_images / name)
    missing = f"{4:040x}.jpg"
    write_image(eval_images / "stray.jpg")
    (eval_images / "._stray.jpg").write_bytes(b"\x00\x05\x16\x07")
    (root / "eval" / "info.csv").write_text("ImageID,ans\n" + "".join(f"{n},0\n" for n in [*names, missing]))
    expected.problems[f"eval/images/{missing}"] = "file is missing"
    expected.problems["eval/images/stray.jpg"] = "not listed in eval/info.csv"
    expected.n_eval = len(names)
    expected.n_items = expected.n_train + expected.n_eval
    return expected


def build_clean_competition(root: Path, n_persons: int = 4) -> Expected:
    """A competition layout without any problem: ``n_persons`` people × 7 images, two eval images."""
    images = root / "train" / "images"
    expected = Expected(n_persons=n_persons)
    rows = []
    for index in range(n_persons):
        gender, age = ("female", "male")[index % 2], (22, 35, 60, 45)[index % 4]
        source_id = f"{index + 1:06d}"
        folder = f"{source_id}_{gender}_Asian_{age}"
        rows.append(f"{source_id},{gender},Asian,{age},{folder}\n")
        expected.n_train += write_person(images, folder)
        expected.persons[folder] = {"gender": gender, "age": age, "source_id": source_id}
    (root / "train" / "train.csv").write_text("id,gender,race,age,path\n" + "".join(rows))
    names = [f"{index:040x}.jpg" for index in range(2)]
    for name in names:
        write_image(root / "eval" / "images" / name)
    (root / "eval" / "info.csv").write_text("ImageID,ans\n" + "".join(f"{n},0\n" for n in names))
    expected.n_eval = len(names)
    expected.n_items = expected.n_train + expected.n_eval
    return expected


def build_csv_dataset(root: Path, bom: bool = False) -> Expected:
    """``root/labels.csv`` (path,subject,species,colour) over ``root/img/``; three rows escape the root.

    Rows refused: ``../outside.jpg``, an absolute path, a symlink whose target is outside ``root``;
    plus a missing file. Six good rows from three subjects.
    """
    outside = write_image(root.parent / f"{root.name}-outside" / "secret.jpg")
    rows = []
    for index, (species, colour) in enumerate([("cat", "black"), ("cat", "white"), ("dog", "black"),
                                               ("dog", "white"), ("cat", "white"), ("dog", "black")]):
        write_image(root / "img" / f"{index}.png")
        rows.append(f"img/{index}.png,s{index // 2},{species},{colour}")
    (root / "img" / "link.jpg").symlink_to(outside)
    rows += ["../outside.jpg,s9,cat,black", f"{outside},s9,cat,black", "img/link.jpg,s9,dog,white",
             "img/nothere.png,s9,dog,white"]
    text = "path,subject,species,colour\n" + "\n".join(rows) + "\n"
    (root / "labels.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return Expected(n_items=6, n_train=6, n_persons=3, problems={
        "../outside.jpg": "'..' leads outside", str(outside): "absolute paths are refused",
        "img/link.jpg": "symlink leads outside", "img/nothere.png": "file not found"})


def build_folder_dataset(root: Path) -> Expected:
    """``root/<class>/`` with three classes, one nested subfolder, a stray text file and hidden files."""
    for name in ("cat/a.jpg", "cat/b.png", "cat/more/c.jpg", "dog/a.jpg", "dog/b.jpeg", "bird/a.png"):
        write_image(root / name)
    (root / "dog" / "readme.txt").write_text("dogs\n")
    (root / "dog" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07")
    (root / ".hidden").mkdir(parents=True)
    write_image(root / ".hidden" / "x.jpg")
    return Expected(n_items=6, n_train=6, n_persons=6, problems={"dog/readme.txt": "not an image file"})


def demo_db(base: Path, persons: int, noise: float = 0.0, image_size: tuple[int, int] = (48, 64)) -> Path:
    """A small generated demo (``persons`` people, ``noise`` of them mislabelled) under ``base/data``, ingested
    into ``base/labels.db``; returns the db path. The shared set-up of the trainer and scoring tests."""
    from core.demo import generate
    from core.ingest import ingest
    from core.store import LabelStore

    generate(base / "data", persons=persons, noise=noise, image_size=image_size)
    with LabelStore(base / "labels.db") as store:
        ingest(base / "data", store)
    return base / "labels.db"


def write_random_pngs(root: Path, relatives: list[str], seed: int = 0, size: tuple[int, int] = (30, 40)) -> list[str]:
    """Random-noise RGB PNGs of ``size`` (w, h) at ``root/<relative>``; returns ``relatives``."""
    rng = np.random.default_rng(seed)
    for relative in relatives:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / relative)
    return relatives
