"""The one place that opens image files: path confinement, inspection, decoding and thumbnails.

* ``resolve_inside(root, relative)`` turns a path read from a CSV or the database into a real path,
  refusing anything that would leave the dataset root (absolute paths, ``..``, outbound symlinks).
* ``inspect_image(path)`` reads a file once: size, content hash, full decode (to catch truncation),
  or an ``ImageProblem`` whose message is a short human reason ("truncated image").
* ``open_image(path)`` is the one decode guard: every reader opens images through it, and a header claiming
  more than ``MAX_PIXELS`` is refused before any pixel is decoded.
* ``load_rgb(path, size)`` decodes any mode (CMYK, grayscale, RGBA, 16-bit) to uint8 RGB.
* ``thumbnail(store, relative_path)`` lazily writes a cached JPEG under ``<db>.d/thumbs/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # the store imports nothing from here; avoid a runtime cycle anyway
    from core.store import LabelStore

# 50 megapixels: far above any photo this tool is meant for, far below what exhausts memory.
MAX_PIXELS = 50_000_000
HASH_NAME = "sha256"
POOL_THRESHOLD = 64  # below this many files a process pool costs more than it saves


class ImageProblem(ValueError):
    """A file is not a usable image; ``str(error)`` is the reason shown to the user."""


class PathRefused(ValueError):
    """A path would leave the dataset root; ``path`` is the path as given, ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ImageFacts:
    """What ``inspect_image`` learnt: pixel size (w, h), file size in bytes, content hash, PIL mode and format."""

    width: int
    height: int
    bytes: int
    hash: str
    mode: str
    format: str


def resolve_inside(root: str | os.PathLike[str], relative: str | os.PathLike[str], *, root_is_real: bool = False) -> Path:
    """Resolve ``relative`` (a path from a CSV or the database) to a real path inside ``root``.

    Raises ``PathRefused`` (a ``ValueError``) naming the path and the reason for an empty or
    absolute path, a ``..`` that climbs out of ``root``, or a symlink whose target lies outside
    ``root``. The file need not exist. ``root_is_real=True``: ``root`` is already a resolved real path
    (ingest resolves it once, not once per row).
    """
    text = os.fspath(relative)
    if not text.strip():
        raise PathRefused(text, "empty path")
    if "\x00" in text:
        raise PathRefused(repr(text), "path contains a NUL byte")
    # A drive letter or UNC prefix is absolute on Windows even where POSIX would accept it.
    if os.path.isabs(text) or text[1:3] in (":\\", ":/") or text.startswith("\\\\"):
        raise PathRefused(text, "absolute paths are refused; give a path relative to the dataset root")
    if os.path.normpath(text).split(os.sep)[0] == "..":
        raise PathRefused(text, "'..' leads outside the dataset root")
    # os.path.realpath on strings: pathlib's resolve() is several times slower, and ingest calls this per file.
    real_root = os.fspath(root) if root_is_real else os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, text))
    if target != real_root and not target.startswith(os.path.join(real_root, "")):
        raise PathRefused(text, f"a symlink leads outside the dataset root (to {target})")
    return Path(target)


@contextlib.contextmanager
def open_image(source: str | os.PathLike[str] | io.BytesIO, *, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """The one decode guard: open an image lazily and refuse it before any pixel is decoded when its header
    claims more than ``max_pixels`` (decompression bombs), whoever reads it (ingest, thumbnails, checks, the
    trainer's image cache). Raises ``ImageProblem`` ("image too large (W×H)", "not a decodable image", ...).
    """
    try:
        image = Image.open(source)
    except Image.DecompressionBombError:
        raise ImageProblem(f"image too large (over {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels)") from None
    except UnidentifiedImageError:
        raise ImageProblem("not a decodable image") from None
    except FileNotFoundError:
        raise ImageProblem("file not found") from None
    except OSError as error:
        if error.errno is None:  # PIL's decoders raise plain OSError for bad data ("Truncated File Read")
            raise ImageProblem(_decode_reason(error)) from None
        raise ImageProblem(f"unreadable file ({error.strerror or error})") from None
    except Exception as error:  # any decoder failure on hostile input
        raise ImageProblem(_decode_reason(error)) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:  # the header alone tells the size: nothing decoded yet
            raise ImageProblem(f"image too large ({width}×{height})")
        yield image


def inspect_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> ImageFacts:
    """Read one file exactly once, hash its bytes and decode it fully.

    Returns ``ImageFacts``; raises ``ImageProblem`` with reason ``"empty file"``,
    ``"not a decodable image"``, ``"truncated image"``, ``"image too large (W×H)"``,
    ``"corrupt image data (...)"`` or ``"unreadable file (...)"``. The extension is not checked:
    a PNG named ``.jpg`` decodes and is accepted (``format`` says what it really is).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ImageProblem(f"unreadable file ({error.strerror or error})") from None
    if not data:
        raise ImageProblem("empty file")
    digest = hashlib.new(HASH_NAME, data).hexdigest()
    # Decoders raise many exception types on hostile input (struct.error, IndexError, ...); any of
    # them means "this file is not a usable image", and one bad file must never stop an ingest.
    with open_image(io.BytesIO(data), max_pixels=max_pixels) as image:
        width, height = image.size
        try:
            image.load()
        except Image.DecompressionBombError:
            raise ImageProblem(f"image too large ({width}×{height})") from None
        except Exception as error:  # any decoder failure, see above
            raise ImageProblem(_decode_reason(error)) from None
        return ImageFacts(width, height, len(data), digest, image.mode, image.format or "")


def inspect_many(paths: Sequence[str | os.PathLike[str]], workers: int = 2) -> list[ImageFacts | str]:
    """``inspect_image`` over many files in ``workers`` processes, in order; a str result is the problem.

    ``workers <= 1`` (or a short list) runs in this process: the single-process baseline.
    """
    names = [os.fspath(p) for p in paths]
    if workers <= 1 or len(names) < POOL_THRESHOLD:
        return [_inspect_or_reason(name) for name in names]
    # Chunks amortise pickling; many chunks per worker keep all busy when file sizes vary.
    chunksize = max(1, min(256, len(names) // (workers * 16)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_inspect_or_reason, names, chunksize=chunksize))


def _inspect_or_reason(path: str) -> ImageFacts | str:
    try:
        return inspect_image(path)
    except ImageProblem as problem:
        return str(problem)


def _decode_reason(error: BaseException) -> str:
    message = str(error)
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return "truncated image"
    return f"corrupt image data ({message})"


def _decoded(image: Image.Image, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """``convert(image)`` with decoder failures (truncation, corrupt data) as ``ImageProblem``."""
    try:
        return convert(image)
    except ImageProblem:
        raise
    except Image.DecompressionBombError:
        raise ImageProblem(f"image too large ({image.size[0]}×{image.size[1]})") from None
    except Exception as error:  # any decoder failure on hostile input
        raise ImageProblem(_decode_reason(error)) from None


def content_hash(path: str | os.PathLike[str]) -> str:
    """Hex digest of a file's bytes, the same function ``inspect_image`` uses."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, HASH_NAME).hexdigest()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha over white, 16/32-bit grayscale scaled rather than clipped."""
    image = ImageOps.exif_transpose(image)  # what a viewer shows is what gets labelled and trained on
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit files hold 0..65535; a 32-bit "I" image may hold 8-bit data, so scale by its range.
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to a uint8 array of shape (h, w, 3); ``size`` is (w, h), aspect not kept.

    EXIF orientation is applied; transparent pixels become white. JPEGs are first reduced in the
    DCT domain (``draft``) when much larger than ``size``, then resized with Lanczos.
    """
    with open_image(path) as image:
        if size is not None and image.format == "JPEG":
            image.draft("RGB", size)  # keeps at least ``size``; cuts decode time for small targets
        rgb = _decoded(image, _to_rgb)
        if size is not None and rgb.size != tuple(size):
            rgb = rgb.resize((int(size[0]), int(size[1])), Image.Resampling.LANCZOS)
        return np.asarray(rgb, dtype=np.uint8).copy()


def thumbnail(store: LabelStore, relative_path: str, size: int = 160, *, content_hash_hex: str | None = None) -> Path:
    """Path of a thumbnail (longest side ``size`` px) of an item, created on first request.

    A larger image is shrunk (Lanczos, JPEG). A smaller one (32 px digits) is enlarged by the
    largest whole factor that fits, nearest neighbour, as PNG: its pixels stay sharp squares instead
    of a blur, and it is never shown at a few pixels wide. Thumbnails live in
    ``store.files_dir / "thumbs"`` named by content hash and size, so a replaced file gets a new
    thumbnail and identical images share one. Pass ``content_hash_hex`` (the item's ``hash`` column)
    to skip reading the file when the thumbnail already exists. The write is atomic (temp file +
    ``os.replace``), so concurrent callers never see half a file.
    """
    # a stored hash names a file: hex only, or it is ignored and the file's content is hashed instead
    digest = content_hash_hex if isinstance(content_hash_hex, str) and re.fullmatch(r"[0-9a-f]{64}", content_hash_hex) \
        else None
    folder = store.files_dir / "thumbs"
    if digest:
        for done in (folder / f"{digest}_{int(size)}.jpg", folder / f"{digest}_{int(size)}.png"):
            if done.exists():
                return done
    source = resolve_inside(store.root, relative_path)
    digest = digest or content_hash(source)
    with open_image(source) as image:
        factor = int(size) // max(image.size) if max(image.size) > 0 else 1
        if factor < 2:
            image.draft("RGB", (size, size))
        rgb = _decoded(image, _to_rgb)
    if factor >= 2:
        out = folder / f"{digest}_{int(size)}.png"
        rgb = rgb.resize((rgb.width * factor, rgb.height * factor), Image.Resampling.NEAREST)
        kind, options = "PNG", {}
    else:
        out = folder / f"{digest}_{int(size)}.jpg"
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
        kind, options = "JPEG", {"quality": 85}
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")  # unique per thread and process
    rgb.save(tmp, kind, **options)
    os.replace(tmp, out)
    return out
