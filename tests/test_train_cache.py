"""The image cache's disk budget: least recently used caches go first, caches in use by any process stay,
a truncated or half-written cache is rebuilt (never trusted), and ``python -m train cache`` lists and clears."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.images import load_rgb
from tests.fixtures import write_random_pngs
from train import cache
from train.__main__ import main as train_main
from train.data import ImageCache

REPO = Path(__file__).resolve().parents[1]
SIZE = (12, 16)  # w, h
N = 6  # images per cache: 6 * 16 * 12 * 3 = 3456 bytes of pixels


def image_set(root: Path, name: str, n: int = N) -> tuple[list[str], list[str]]:
    """``n`` random PNGs under root/<name>/; returns (relative paths, hashes) as ImageCache.open takes them."""
    paths = write_random_pngs(root, [f"{name}/img{i}.png" for i in range(n)], seed=abs(hash(name)) % 2**32)
    return paths, [f"{name}-{i}" for i in range(n)]


def open_set(root: Path, folder: Path, name: str, budget_mb: float | None = None) -> ImageCache:
    paths, hashes = image_set(root, name) if not (root / name).exists() else \
        ([f"{name}/img{i}.png" for i in range(N)], [f"{name}-{i}" for i in range(N)])
    return ImageCache.open(root, paths, hashes, SIZE, folder, progress=False, budget_mb=budget_mb)


def set_last_use(c: ImageCache, seconds_ago: float) -> None:
    moment = time.time() - seconds_ago
    os.utime(cache.sidecar(c.path), (moment, moment))


def test_budget_deletes_least_recently_used_caches_first(tmp_path: Path):
    root, folder = tmp_path / "data", tmp_path / "cache"
    a, b, c = (open_set(root, folder, name) for name in "abc")
    assert all(x.created and not x.evicted for x in (a, b, c))
    entry_bytes = cache.entries(folder)[0].bytes
    assert entry_bytes >= N * SIZE[0] * SIZE[1] * 3
    for x in (a, b, c):
        x.close()
    set_last_use(a, 300), set_last_use(b, 200), set_last_use(c, 100)
    assert [e.path for e in cache.entries(folder)] == [a.path, b.path, c.path]
    reused = open_set(root, folder, "a", budget_mb=0)  # reusing is a use (and deletes nothing: no new cache)
    assert not reused.created and not reused.evicted and reused.path == a.path
    reused.close()
    assert [e.path for e in cache.entries(folder)] == [b.path, c.path, a.path]

    d = open_set(root, folder, "d", budget_mb=2.5 * entry_bytes / 2**20)  # room for two caches
    assert d.created
    assert [(e.path, e.reason) for e in d.evicted] == [(b.path, "budget"), (c.path, "budget")]
    assert all(e.bytes == entry_bytes for e in d.evicted) and "last used" in d.evicted[0].describe()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{x.path.stem}{suffix}" for x in (a, d) for suffix in (".u8", ".json", ".lock"))
    assert cache.folder_bytes(folder) <= 2.5 * entry_bytes
    assert np.array_equal(d.array[d.rows[2]], load_rgb(root / "d/img2.png", SIZE))


def test_caches_in_use_here_or_by_another_process_are_never_deleted(tmp_path: Path):
    root, folder = tmp_path / "data", tmp_path / "cache"
    held = open_set(root, folder, "held")  # this process uses it (the object holds its shared lock)
    old = open_set(root, folder, "old")
    old.close()
    set_last_use(held, 500), set_last_use(old, 400)
    entry_bytes = cache.entries(folder)[0].bytes
    new = open_set(root, folder, "new", budget_mb=0.5 * entry_bytes / 2**20)  # over budget with the new one alone
    assert [e.path for e in new.evicted] == [old.path]  # not the oldest (in use), not the new one
    assert held.path.exists() and new.path.exists() and not old.path.exists()
    assert {e.path: e.in_use for e in cache.entries(folder)} == {held.path: True, new.path: True}
    assert np.array_equal(held.array[held.rows[0]], load_rgb(root / "held/img0.png", SIZE))

    # another process (a running job) holds "old" again: clearing keeps it, and it goes once that process ends
    held.close(), new.close()
    script = ("import sys\nfrom train.data import ImageCache\n"
              f"c = ImageCache.open({str(root)!r}, [f'old/img{{i}}.png' for i in range({N})], "
              f"[f'old-{{i}}' for i in range({N})], {SIZE}, {str(folder)!r}, progress=False)\n"
              "print('ready', c.path, flush=True)\nsys.stdin.readline()\n")
    job = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = job.stdout.readline().split()
        assert line and line[0] == "ready" and Path(line[1]) == old.path
        sizes = {e.path: e.bytes for e in cache.entries(folder)}
        freed, busy = cache.clear(folder)
        assert busy == [old.path] and old.path.exists() and not held.path.exists() and not new.path.exists()
        assert freed == sizes[held.path] + sizes[new.path]
        assert cache.evict(folder, 0) == [] and old.path.exists()
    finally:
        job.communicate("\n", timeout=60)
    assert cache.clear(folder) == (sizes[old.path], []) and not old.path.exists()


def test_a_truncated_or_half_written_cache_is_rebuilt_not_trusted(tmp_path: Path):
    root, folder = tmp_path / "data", tmp_path / "cache"
    first = open_set(root, folder, "a")
    expected = np.array(first.array)
    first.close()
    size = first.path.stat().st_size
    with open(first.path, "r+b") as handle:  # a crash (or a full disk) cut the file short
        handle.truncate(size // 2)
    again = open_set(root, folder, "a")
    assert again.created and again.path.stat().st_size == size and np.array_equal(np.asarray(again.array), expected)
    again.close()

    cache.sidecar(first.path).unlink()  # pixels without their sidecar: not known complete
    third = open_set(root, folder, "a")
    assert third.created and json.loads(cache.sidecar(first.path).read_text())["shape"] == list(expected.shape)
    third.close()

    # A decode killed mid-write leaves only its temp file (the final name appears last, complete): never
    # read, and deleted as stale by the next cache written, since its process is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f".{first.path.name}.{dead.pid}.tmp"
    stale.write_bytes(b"\0" * 1000)
    other = open_set(root, folder, "b")
    assert [(e.path, e.reason) for e in other.evicted] == [(stale, "stale temp")] and not stale.exists()
    assert not list(folder.glob(".*.tmp"))

    # A decode that fails (a bad image) leaves no temp file and no cache behind.
    (root / "c").mkdir()
    (root / "c/img0.png").write_bytes(b"not a png")
    with pytest.raises(RuntimeError, match="cannot decode"):
        ImageCache.open(root, ["c/img0.png"], ["c-0"], SIZE, folder, progress=False)
    assert not list(folder.glob(".*.tmp")) and len(cache.entries(folder)) == 2


@pytest.mark.timeout(60)
def test_a_cache_damaged_while_this_process_holds_it_is_refused_not_a_hang(tmp_path: Path):
    root, folder = tmp_path / "data", tmp_path / "cache"
    held = open_set(root, folder, "a")
    size = held.path.stat().st_size
    cache.sidecar(held.path).unlink()  # damaged on disk while still open here (flock would wait on itself)
    with pytest.raises(RuntimeError, match="still has it open"):
        open_set(root, folder, "a")
    held.close()
    rebuilt = open_set(root, folder, "a")  # once released, it is rebuilt
    assert rebuilt.created and rebuilt.path.stat().st_size == size
    rebuilt.close()


def test_budget_setting_comes_from_the_option_then_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(cache.ENV, raising=False)
    assert cache.budget_mb() == 2048
    monkeypatch.setenv(cache.ENV, "512")
    assert cache.budget_mb() == 512 and cache.budget_mb(100) == 100
    monkeypatch.setenv(cache.ENV, "lots")
    with pytest.raises(ValueError, match="LABELS_CACHE_MB must be a number"):
        cache.budget_mb()
    with pytest.raises(ValueError, match=">= 0 MB"):
        cache.budget_mb(-1)


def test_cache_command_lists_trims_and_clears(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root, folder = tmp_path / "data", tmp_path / "cache"
    a, b = open_set(root, folder, "a"), open_set(root, folder, "b")
    a.close()
    set_last_use(a, 100)
    entry_bytes = cache.entries(folder)[0].bytes

    assert train_main(["cache", "--cache-dir", str(folder), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["folder"] == str(folder) and listing["budget_mb"] == cache.budget_mb()
    assert [(c["name"], c["size"], c["images"], c["in_use"]) for c in listing["caches"]] == \
        [(a.path.name, "12x16", N, False), (b.path.name, "12x16", N, True)]

    assert train_main(["cache", "--cache-dir", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "2 cache(s), least recently used first" in text and a.path.name in text and "in_use" in text

    budget = 1.5 * entry_bytes / 2**20
    assert train_main(["cache", "--cache-dir", str(folder), "--trim", "--cache-mb", str(budget)]) == 0
    text = capsys.readouterr().out
    assert f"deleted {a.path.name}" in text and "1 file(s) deleted" in text and not a.path.exists()

    assert train_main(["cache", "--cache-dir", str(folder), "--clear"]) == 0
    text = capsys.readouterr().out
    assert "kept 1 cache(s) in use" in text and b.path.exists()
    b.close()
    assert train_main(["cache", "--cache-dir", str(folder), "--clear"]) == 0
    assert f"{entry_bytes / 2**20:.1f} MB freed" in capsys.readouterr().out and not b.path.exists()

    assert train_main(["cache", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no label store at" in capsys.readouterr().err and not (tmp_path / "missing.db").exists()
