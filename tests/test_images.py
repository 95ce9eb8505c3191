"""core.images: path confinement, inspection of every bad-file kind, decoding, thumbnails."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.images import (
    ImageProblem,
    PathRefused,
    inspect_image,
    inspect_many,
    load_rgb,
    resolve_inside,
    thumbnail,
)
from core.store import LabelStore
from tests.fixtures import build_clean_competition, write_image, write_truncated_jpeg


# ---- resolve_inside ------------------------------------------------------------------------------------
def test_resolve_inside_accepts_paths_that_stay_inside(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "b.jpg")
    assert resolve_inside(tmp_path, "a/b.jpg") == (tmp_path / "a" / "b.jpg").resolve()
    assert resolve_inside(tmp_path, "a/../a/./b.jpg") == (tmp_path / "a" / "b.jpg").resolve()
    (tmp_path / "alias").symlink_to(tmp_path / "a")  # a symlink that stays inside is fine
    assert resolve_inside(tmp_path, "alias/b.jpg") == (tmp_path / "a" / "b.jpg").resolve()
    assert resolve_inside(tmp_path, "not/yet/there.jpg").name == "there.jpg"  # existence is not its business


@pytest.mark.parametrize(("relative", "reason"), [
    ("../x.jpg", "'..' leads outside"),
    ("a/../../x.jpg", "'..' leads outside"),
    ("/etc/passwd", "absolute paths are refused"),
    ("C:\\data\\x.jpg", "absolute paths are refused"),
    ("", "empty path"),
])
def test_resolve_inside_refuses_escapes(tmp_path: Path, relative: str, reason: str) -> None:
    with pytest.raises(PathRefused, match=reason) as caught:
        resolve_inside(tmp_path, relative)
    assert isinstance(caught.value, ValueError) and caught.value.reason.startswith(reason.split("'")[0])


def test_resolve_inside_refuses_symlinks_leaving_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", write_image(tmp_path / "outside" / "secret.jpg")
    root.mkdir()
    (root / "file.jpg").symlink_to(outside)
    (root / "dir").symlink_to(outside.parent)
    for relative in ("file.jpg", "dir/secret.jpg"):
        with pytest.raises(PathRefused, match=f"^{relative}: a symlink leads outside"):
            resolve_inside(root, relative)


# ---- inspect_image -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "mode", "fmt", "expected_mode"), [
    ("rgb.jpg", "RGB", None, "RGB"), ("cmyk.jpg", "CMYK", None, "CMYK"), ("gray.jpg", "L", None, "L"),
    ("rgba.png", "RGBA", None, "RGBA"), ("deep.png", "I;16", None, "I;16"), ("png.jpg", "RGB", "PNG", "RGB"),
])
def test_inspect_image_facts_for_every_mode(tmp_path: Path, name: str, mode: str, fmt: str | None,
                                            expected_mode: str) -> None:
    path = write_image(tmp_path / name, mode=mode, fmt=fmt)
    facts = inspect_image(path)
    data = path.read_bytes()
    assert (facts.width, facts.height, facts.bytes) == (24, 32, len(data))
    assert facts.hash == hashlib.sha256(data).hexdigest()
    assert facts.mode == expected_mode
    assert facts.format == (fmt or ("PNG" if name.endswith(".png") else "JPEG"))


def test_inspect_image_reasons(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    write_truncated_jpeg(tmp_path / "cut.jpg")
    write_image(tmp_path / "big.png")
    cases = {"empty.jpg": "empty file", "text.jpg": "not a decodable image", "cut.jpg": "truncated image",
             "missing.jpg": "unreadable file"}
    for name, reason in cases.items():
        with pytest.raises(ImageProblem, match=reason):
            inspect_image(tmp_path / name)
    with pytest.raises(ImageProblem, match="image too large \\(24×32\\)"):
        inspect_image(tmp_path / "big.png", max_pixels=24 * 32 - 1)


def test_inspect_many_matches_single_process_and_keeps_order(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{index}.png") for index in range(70)]  # above the pool threshold
    (tmp_path / "bad.jpg").write_bytes(b"")
    paths.insert(35, tmp_path / "bad.jpg")
    pooled, single = inspect_many(paths, workers=2), inspect_many(paths, workers=1)
    assert pooled == single
    assert pooled[35] == "empty file"
    assert [f.hash for f in pooled if not isinstance(f, str)] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.name != "bad.jpg"]


# ---- load_rgb -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["RGB", "CMYK", "L", "RGBA", "I;16", "P"])
def test_load_rgb_any_mode_to_uint8_rgb(tmp_path: Path, mode: str) -> None:
    path = write_image(tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg", mode=mode)
    full = load_rgb(path)
    assert full.shape == (32, 24, 3) and full.dtype == np.uint8
    small = load_rgb(path, size=(12, 20))
    assert small.shape == (20, 12, 3) and small.dtype == np.uint8


def test_load_rgb_scales_16_bit_and_puts_transparency_on_white(tmp_path: Path) -> None:
    deep = np.full((4, 4), 40_000, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert load_rgb(tmp_path / "deep.png")[0, 0].tolist() == [156, 156, 156]  # 40000 / 65535 * 255, not 255
    clear = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    clear.save(tmp_path / "clear.png")
    assert load_rgb(tmp_path / "clear.png")[0, 0].tolist() == [255, 255, 255]


# ---- thumbnail ------------------------------------------------------------------------------------------
def test_thumbnail_is_created_once_and_reused(tmp_path: Path) -> None:
    from core.ingest import ingest

    build_clean_competition(tmp_path / "data", n_persons=1)
    with LabelStore(tmp_path / "labels.db") as store:
        ingest(tmp_path / "data", store)
        item = store.items().iloc[0]
        first = thumbnail(store, item.path, size=16)
        assert first.parent == store.files_dir / "thumbs" and first.name == f"{item.hash}_16.jpg"
        with Image.open(first) as image:
            assert image.format == "JPEG" and max(image.size) == 16
        stamp = first.stat().st_mtime_ns
        (tmp_path / "data" / item.path).unlink()  # with the hash given, an existing thumbnail needs no source
        assert thumbnail(store, item.path, size=16, content_hash_hex=item.hash) == first
        assert first.stat().st_mtime_ns == stamp
        assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp files left behind
        with pytest.raises(PathRefused):
            thumbnail(store, "../labels.db")
        assert os.listdir(first.parent) == [first.name]
