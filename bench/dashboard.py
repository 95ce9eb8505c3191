"""Dashboard benchmark: each page's script time (Streamlit AppTest) and correction write latency.

    PYTHONPATH=. .venv/bin/python -m bench.dashboard [--sizes 18900 200000] [--writes 300] [--json]

For each size a synthetic competition-shaped store is built directly through ``LabelStore.ingest``
(no image files: thumbnails show the placeholder), with a finished score run saved through
``LabelStore.save_scores`` (3 targets per image; the reported score-run time includes ranking the
review queue), some corrections, verdicts and data issues. Per page:

* ``cold``: one run right after clearing Streamlit's caches (a user's first visit after a server
  start or a new score run: nothing is cached in the process; what the store saved with the ingest
  and the score run, such as the ranked queue and the original label counts, is read from it);
* ``after write``: median of 3 runs each right after a correction (what every relabeling click
  costs: charts and review statuses are recomputed);
* ``warm``: median of 3 runs while nothing changed (navigating, paging, filtering).

AppTest's one-off start-up (component discovery) is excluded by a first untimed run. Write latency
is ``core.review.set_label`` (the call behind the dashboard's buttons, conflict check included),
half image-scope (mask) and half person-scope (gender: 7 rows) corrections, on the same store.
Targets: page ≤ 0.5 s at 18,900 images, ≤ 1.5 s at 200,000; write p95 ≤ 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import review
from core.store import LabelStore
from core.synthetic import add_score_run, synthetic_store

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
PAGES = {"Distributions": "app_pages/distributions.py", "Review queue": "app_pages/review.py",
         "Browse": "app_pages/browse.py", "History": "app_pages/history.py", "Data health": "app_pages/health.py"}
TARGET_PAGE = {18_900: 0.5, 200_000: 1.5}
TARGET_WRITE_P95_MS = 20.0


def build(folder: Path, n_images: int) -> tuple[Path, dict[str, float]]:
    """A synthetic store with a score run, 50 corrections, 50 verdicts and 1% data issues."""
    timings = {}
    started = time.perf_counter()
    store = synthetic_store(folder / f"bench-{n_images}.db", n_images)
    timings["ingest_s"] = time.perf_counter() - started
    started = time.perf_counter()
    add_score_run(store)
    timings["score_run_s"] = time.perf_counter() - started
    labels, _ = store.select_items(split="train", limit=100)
    for row in labels.head(50).itertuples(index=False):
        store.correct(row.path, "mask", "incorrect" if row.mask != "incorrect" else "wear", expected=row.mask,
                      annotator="bench")
    for row in labels.tail(50).itertuples(index=False):
        store.mark_reviewed(row.path, "mask", annotator="bench")
    items = store.items(split="train")
    issues = items.sample(frac=0.01, random_state=0)[["item_id"]].assign(kind="dark", detail="mean 9", score=0.9)
    store.save_data_issues(issues, ["dark"])
    store.close()
    return folder / f"bench-{n_images}.db", timings


def _timed(at: AppTest) -> tuple[float, float]:
    """(wall, CPU) seconds of one script run; CPU (all threads of this process) is what the script
    itself costs when other work shares the machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    at.run()
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return time.perf_counter() - wall, time.process_time() - cpu


def page_times(db: Path) -> dict[str, dict[str, float]]:
    """Cold, after-write and warm script seconds (wall and CPU) of every page on the store at ``db``."""
    os.environ["LABELS_DB"] = str(db)
    os.environ["LABELS_AUTO_DEMO"] = "0"
    out = {}
    for name, page in PAGES.items():
        at = AppTest.from_file(APP, default_timeout=600)
        at.session_state["annotator"] = "bench"
        at.switch_page(page)
        _timed(at)  # untimed: AppTest's start-up
        st.cache_data.clear()
        st.cache_resource.clear()
        cold = _timed(at)
        warm = [_timed(at) for _ in range(3)]
        after_write = []
        with LabelStore(db) as store:
            for _ in range(3):
                _flip_one(store)
                after_write.append(_timed(at))
        out[name] = {"cold_s": cold[0], "cold_cpu_s": cold[1],
                     "after_write_s": statistics.median(t[0] for t in after_write),
                     "after_write_cpu_s": statistics.median(t[1] for t in after_write),
                     "warm_s": statistics.median(t[0] for t in warm), "warm_cpu_s": statistics.median(t[1] for t in warm)}
    return out


def _flip_one(store: LabelStore) -> None:
    """One image-scope correction through the dashboard's call (changes the store version)."""
    row = store.select_items(split="train", offset=int(np.random.default_rng().integers(1000)), limit=1)[0].iloc[0]
    new = "not_wear" if row["mask"] != "not_wear" else "wear"
    outcome = review.set_label(store, row["path"], "mask", new, shown=row["mask"], annotator="bench")
    if not outcome.ok:
        raise RuntimeError(outcome.message)


def write_latency(db: Path, writes: int) -> dict[str, float]:
    """p50/p95 milliseconds of dashboard corrections (image- and person-scope alternating)."""
    rng = np.random.default_rng(1)
    with LabelStore(db) as store:
        labels, total = store.select_items(split="train", limit=None)
        picks = labels.iloc[rng.choice(total, size=writes, replace=False)]
        image_ms, person_ms = [], []
        for index, row in enumerate(picks.itertuples(index=False)):
            if index % 2 == 0:
                new = "not_wear" if row.mask != "not_wear" else "wear"
                started = time.perf_counter()
                outcome = review.set_label(store, row.path, "mask", new, shown=row.mask, annotator="bench")
                image_ms.append((time.perf_counter() - started) * 1000)
            else:
                shown = store.label_of(row.person, "gender")
                new = "male" if shown == "female" else "female"
                started = time.perf_counter()
                outcome = review.set_label(store, row.person, "gender", new, shown=shown, annotator="bench")
                person_ms.append((time.perf_counter() - started) * 1000)
            if not outcome.ok:
                raise RuntimeError(outcome.message)
    both = image_ms + person_ms
    return {"p50_ms": float(np.percentile(both, 50)), "p95_ms": float(np.percentile(both, 95)),
            "image_p95_ms": float(np.percentile(image_ms, 95)), "person_p95_ms": float(np.percentile(person_ms, 95)),
            "writes": len(both)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[18_900, 200_000], help="labelled images per store")
    parser.add_argument("--writes", type=int, default=300, help="corrections timed per store (default 300)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, "
                          f"streamlit {st.__version__}", "sizes": {}}
    if not args.json:
        print(results["machine"])
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            db, timings = build(Path(folder), size)
            pages = page_times(db)
            writes = write_latency(db, args.writes)
            results["sizes"][size] = {"build": timings, "pages": pages, "writes": writes}
            if not args.json:
                target = TARGET_PAGE.get(size)
                print(f"\n{size:,} images (store built in {timings['ingest_s']:.1f} s, score run "
                      f"{timings['score_run_s']:.1f} s); page target {target} s" if target else "")
                print(f"{'page (wall / cpu s)':<20} {'cold':>13} {'after write':>13} {'warm':>13}")
                for name, t in pages.items():
                    worst = max(t["cold_s"], t["after_write_s"], t["warm_s"])  # a first visit counts too
                    flag = "" if target is None or worst <= target else "  over target (wall)"
                    print(f"{name:<20} {t['cold_s']:6.3f}/{t['cold_cpu_s']:6.3f} "
                          f"{t['after_write_s']:6.3f}/{t['after_write_cpu_s']:6.3f} "
                          f"{t['warm_s']:6.3f}/{t['warm_cpu_s']:6.3f}{flag}")
                print(f"writes: p50 {writes['p50_ms']:.1f} ms, p95 {writes['p95_ms']:.1f} ms (image p95 "
                      f"{writes['image_p95_ms']:.1f}, person p95 {writes['person_p95_ms']:.1f}; target p95 "
                      f"{TARGET_WRITE_P95_MS:.0f} ms) over {writes['writes']} corrections")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
