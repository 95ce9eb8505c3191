"""Speed of the Map, "more like this" and the learning queue on a big store (``bench/dashboard.py --learning``,
or on its own):

    PYTHONPATH=. .venv/bin/python bench/learning_speed.py [--sizes 18900 200000] [--dim 512]

The store is ``bench/dashboard.py``'s synthetic one (``core.synthetic``: a finished score run, no image files);
its run folder gets **synthetic embeddings** (float16, ``--dim`` dimensions, 64 Gaussian clusters, written the
way ``train.embed`` writes them), since no model is trained here: the timings are the code's, not a model's.
Measured, each against a brute-force baseline on the same data:

* ``prepare``: load + check the file, unit table, unit vectors (a person = its photos' mean), the index: once per
  score run (cached by the pages);
* ``more like this``: ``UnitIndex.similar`` (label-partitioned float32 blocks, ``argpartition``), median of 20
  random anchors; baseline: cosine against every unit recomputed from the float16 file, a full sort, then the
  same-label filter;
* ``map``: 2-D PCA (randomized SVD) + the point table + the figure; baseline: exact PCA by a full SVD;
* ``learning step``: ``learned_queue`` with 100 decisions (20 % errors), median of 3 (no baseline: it is the
  step itself; target ≤ 2 s at 18,900); ``learning click``: the 101st decision, inside the epoch, with the
  epoch's fit kept (``learned_queue(learned=)``, what the Review page does between re-rankings);
* the Map and More-like-this pages through Streamlit's AppTest: cold (caches cleared) and warm.

Targets: map and more-like-this ≤ 1 s at 18,900 images, ≤ 3 s at 200,000; learning step ≤ 2 s at 18,900.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import embeddings, learning, maps  # noqa: E402
from core.files import csv_safe  # noqa: E402
from core.store import LabelStore  # noqa: E402

TARGETS = {18_900: {"similar": 1.0, "map": 1.0, "learning": 2.0}, 200_000: {"similar": 3.0, "map": 3.0}}


def add_embeddings(db: Path, dim: int = 512, seed: int = 0) -> int:
    """Give the store's current score run a folder with items.csv and synthetic float16 embeddings; returns the
    run id."""
    with LabelStore(db) as store:
        run_id = store.current_score_run()
        items = store.items(split="train")[["item_id", "path", "person"]].reset_index(drop=True)
        run_dir = db.parent / f"run-{run_id}"
        run_dir.mkdir(exist_ok=True)
        items = items.assign(fold=np.arange(len(items)) % 3)
        csv_safe(items).to_csv(run_dir / "items.csv", index=False)
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(64, dim)).astype(np.float32) * 2
        vectors = centres[rng.integers(0, 64, len(items))] + rng.normal(size=(len(items), dim)).astype(np.float32)
        np.save(run_dir / "embeddings.npy", vectors.astype(np.float16))
        meta = {"oof": {"file": "embeddings.npy", "model": "synthetic", "n": len(items), "dim": dim,
                        "dtype": "float16", "items": embeddings.fingerprint(items["item_id"], items["path"])}}
        (run_dir / embeddings.META).write_text(json.dumps(meta))
        store.update_run(run_id, run_dir=str(run_dir))
    return run_id


CPU: dict[str, float] = {}  # CPU seconds of the last _time(name=...) call: what the step costs a loaded machine


def _time(action: Any, repeats: int = 1, name: str = "") -> tuple[float, Any]:
    times, cpus, value = [], [], None
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        value = action()
        times.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    if name:
        CPU[name] = statistics.median(cpus)
    return statistics.median(times), value


def brute_similar(emb: embeddings.Embeddings, units: pd.DataFrame, rows: list[np.ndarray], anchor: int,
                  k: int = 24) -> tuple[list[int], np.ndarray]:
    """Baseline: every unit's vector rebuilt from the float16 file (same definition: unit-length photos, their
    mean), cosine to the anchor, a full sort, then the same attribute and given label kept. Returns the rows and
    their similarities."""
    x = emb.vectors.astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    vec = np.stack([x[r].mean(0) if len(r) else np.zeros(x.shape[1], np.float32) for r in rows])
    vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    sims = vec @ vec[anchor]
    order = np.argsort(-sims)
    same = ((units["attribute"] == units["attribute"].iat[anchor]) & (units["given"] == units["given"].iat[anchor])
            ).to_numpy()
    keep = [int(i) for i in order if same[i] and i != anchor][:k]
    return keep, sims[keep]


def measure(db: Path, size: int, run_id: int) -> dict[str, float]:
    from app import map_views

    out: dict[str, float] = {}
    with LabelStore(db) as store:
        def prepare() -> tuple[Any, ...]:
            emb = embeddings.load_run(store, run_id)
            units = learning.unit_table(store, run_id)
            vectors = embeddings.unit_vectors(emb, units)
            return emb, units, vectors, learning.UnitIndex(units, vectors)

        out["prepare_s"], (emb, units, vectors, index) = _time(prepare, name="prepare")
        rng = np.random.default_rng(1)
        anchors = rng.choice(len(units), 20, replace=False)
        times = []
        for a in anchors:
            started = time.perf_counter()
            index.similar([units["key"].iat[int(a)]], k=24)
            times.append(time.perf_counter() - started)
        out["similar_s"] = statistics.median(times)
        rows = embeddings.unit_rows(emb, units)
        base = []
        for a in anchors[:3]:
            started = time.perf_counter()
            _, brute = brute_similar(emb, units, rows, int(a))
            base.append(time.perf_counter() - started)
            ours = index.similar([units["key"].iat[int(a)]], k=24)["similarity"].to_numpy()
            assert np.allclose(ours, brute, atol=1e-4), "the index and brute force disagree"  # same top-k (ties aside)
        out["similar_brute_s"] = statistics.median(base)

        statuses = {}
        def draw() -> Any:
            xy = maps.project(emb.normalised())
            points = maps.point_table(emb.items, units, "gender", statuses)
            return map_views.figure(points, xy, maps.sample(points))
        out["map_s"], _ = _time(draw, name="map")

        def exact_pca() -> np.ndarray:
            x = emb.normalised()
            x = x - x.mean(0)
            _, _, vt = np.linalg.svd(x, full_matrices=False)
            return x @ vt[:2].T
        out["map_brute_s"], _ = _time(exact_pca, name="map_brute")

        decided_rows = rng.choice(len(units), 100, replace=False)
        decided = pd.DataFrame({"unit": units["unit"].iloc[decided_rows].to_numpy(),
                                "error": (rng.random(100) < 0.2).astype(int)})
        out["learning_s"], queue = _time(lambda: learning.learned_queue(units, vectors, decided), repeats=3,
                                         name="learning")
        assert queue.active
        # a click inside an epoch: one more decision, the epoch's fit kept (what the Review page does)
        kept = learning.learn(units, vectors, learning.used_decisions(decided))
        one_more = pd.concat([decided, pd.DataFrame({"unit": [units["unit"].iloc[
            np.setdiff1d(np.arange(len(units)), decided_rows)[0]]], "error": [0]})], ignore_index=True)
        out["learning_click_s"], _ = _time(lambda: learning.learned_queue(units, vectors, one_more, learned=kept),
                                           repeats=3, name="learning_click")
    out.update({f"{k}_cpu_s": v for k, v in CPU.items()})
    out.update(pages(db, units))
    return out


def pages(db: Path, units: pd.DataFrame) -> dict[str, float]:
    """Cold and warm script seconds of the Map and More-like-this pages (AppTest)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
    os.environ["LABELS_DB"], os.environ["LABELS_AUTO_DEMO"] = str(db), "0"
    out = {}
    for name, page, state in (("map_page", "app_pages/map.py", {}),
                              ("similar_page", "app_pages/similar.py", {"similar_anchors": [units["key"].iat[0]]})):
        at = AppTest.from_file(app, default_timeout=600)
        at.session_state["annotator"] = "bench"
        for key, value in state.items():
            at.session_state[key] = value
        at.switch_page(page).run()  # AppTest's start-up
        st.cache_data.clear()
        st.cache_resource.clear()
        started = time.perf_counter()
        at.run()
        out[f"{name}_cold_s"] = time.perf_counter() - started
        warm = []
        for _ in range(3):
            started = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - started)
        if at.exception:
            raise RuntimeError(at.exception[0].value)
        out[f"{name}_warm_s"] = statistics.median(warm)
    return out


def report(size: int, t: dict[str, float]) -> str:
    target = TARGETS.get(size, {})

    def mark(value: float, key: str) -> str:
        if key not in target:
            return ""
        return f" (target ≤ {target[key]:.0f} s: {'met' if value <= target[key] else 'missed'})"
    return "\n".join([
        f"{size:,} images (load average {os.getloadavg()[0]:.1f}):",
        f"  prepare (once per score run) {t['prepare_s']:.2f} s (CPU {t['prepare_cpu_s']:.2f} s)",
        f"  more like this {t['similar_s'] * 1000:.1f} ms vs brute force {t['similar_brute_s'] * 1000:.0f} ms "
        f"({t['similar_brute_s'] / t['similar_s']:.0f}x){mark(t['similar_s'], 'similar')}; page warm "
        f"{t['similar_page_warm_s']:.2f} s, cold {t['similar_page_cold_s']:.2f} s",
        f"  map (PCA + points + figure) {t['map_s']:.2f} s (CPU {t['map_cpu_s']:.2f}) vs exact PCA alone "
        f"{t['map_brute_s']:.2f} s (CPU {t['map_brute_cpu_s']:.2f}; {t['map_brute_s'] / t['map_s']:.1f}x)"
        f"{mark(t['map_s'], 'map')}; page warm {t['map_page_warm_s']:.2f} s, "
        f"cold {t['map_page_cold_s']:.2f} s",
        f"  learning step (100 decisions) {t['learning_s']:.2f} s (CPU {t['learning_cpu_s']:.2f} s)"
        f"{mark(t['learning_s'], 'learning')}; a click inside the epoch (fit kept) {t['learning_click_s']:.2f} s "
        f"({t['learning_s'] / t['learning_click_s']:.1f}x)"])


def main(argv: list[str] | None = None) -> int:
    from bench.dashboard import build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[18_900, 200_000])
    parser.add_argument("--dim", type=int, default=512, help="embedding dimensions (ResNet-18/34: 512)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            db, _ = build(Path(folder), size)
            run_id = add_embeddings(db, args.dim)
            results[size] = measure(db, size, run_id)
            print(json.dumps(results[size]) if args.json else report(size, results[size]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
