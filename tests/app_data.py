"""Builders for dashboard tests and the dashboard benchmark: stores with a score run, without a model,
and a real ``streamlit run`` server on a free port for browser tests and screenshots.

``add_score_run(store)`` writes a finished score run in the shape ``LabelStore.save_scores`` takes
(one row per labelled image and target: given, suggested, score, is_issue, detail with class
probabilities), flagging a deterministic set of images and people, so the review queue has work.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from core.schema import COMPETITION, MASK_FILES
from core.store import LabelStore

REPO = Path(__file__).resolve().parents[1]


def synthetic_store(path: Path, n_images: int, *, seed: int = 0, eval_images: int = 100) -> LabelStore:
    """A competition-shaped store of ``n_images`` labelled images (7 per person) without image files.

    Ages follow the real skew (many under 30, few at exactly 60); thumbnails fall back to the
    placeholder since no file exists. Built directly through ``LabelStore.ingest``.
    """
    rng = np.random.default_rng(seed)
    n_persons = n_images // len(MASK_FILES)
    ids = [f"{i + 1:06d}" for i in range(n_persons)]
    genders = np.where(rng.random(n_persons) < 0.61, "female", "male")
    ages = np.where(rng.random(n_persons) < 0.07, 60, rng.integers(18, 60, n_persons))
    folders = [f"{i}_{g}_Asian_{a}" for i, g, a in zip(ids, genders, ages)]
    persons = pd.DataFrame({"person": folders, "source_id": ids, "info": '{"race": "Asian"}'})
    stems, masks = list(MASK_FILES), list(MASK_FILES.values())
    items = pd.DataFrame({
        "path": [f"train/images/{f}/{stem}.jpg" for f in folders for stem in stems],
        "person": np.repeat(folders, len(stems)), "split": "train", "width": 384, "height": 512, "bytes": 60_000,
        "hash": [f"{i:064x}" for i in range(n_persons * len(stems))], "source_id": np.repeat(ids, len(stems)),
        "mask": masks * n_persons, "gender": np.repeat(genders, len(stems)), "age": np.repeat(ages, len(stems)),
    })
    unlabelled = pd.DataFrame({
        "path": [f"eval/images/{i:040x}.jpg" for i in range(eval_images)], "person": None, "split": "eval",
        "width": 384, "height": 512, "bytes": 60_000, "hash": [f"e{i:063x}" for i in range(eval_images)],
        "source_id": [f"{i:040x}.jpg" for i in range(eval_images)], "mask": None, "gender": None, "age": None})
    store = LabelStore(path)
    store.ingest(root=Path(path).parent / "synthetic-images", schema=COMPETITION, dataset_format="competition",
                 persons=persons, items=pd.concat([items, unlabelled], ignore_index=True), problems=[])
    return store


def add_score_run(store: LabelStore, *, flag_every: int = 5, seed: int = 0) -> int:
    """A 'done' score run over the current labels; every ``flag_every``-th unit is flagged.

    Image-scope targets flag images, person-scope targets flag whole people (every image of a
    flagged person carries the same verdict, as person-level scoring does). Returns the run id.
    """
    schema = store.schema
    labels = schema.add_derived(store.current_labels(derived=False))
    rng = np.random.default_rng(seed)
    persons = {p: i for i, p in enumerate(sorted(labels["person"].dropna().unique()))}
    frames = []
    for target in schema.targets:
        classes = list(schema.target_classes(target))
        codes = labels[target].to_numpy()
        given_codes = codes if np.issubdtype(np.asarray(codes).dtype, np.integer) else \
            np.array([classes.index(v) for v in codes])
        person_scope = schema.scope(schema.target_source(target)) == "person"
        unit = labels["person"].map(persons).to_numpy() if person_scope else np.arange(len(labels))
        flagged = unit % flag_every == 0
        suggested_codes = np.where(flagged, (given_codes + 1) % len(classes), given_codes)
        unit_score = (np.sin(unit * 12.9898 + len(target)) + 1) / 2  # deterministic per unit
        score = np.where(flagged, 0.6 + 0.4 * unit_score, 0.5 * unit_score)
        probs = rng.dirichlet(np.ones(len(classes)), size=len(labels))
        frames.append(pd.DataFrame({
            "item_id": labels["item_id"].to_numpy(), "attribute": target,
            "given": [classes[c] for c in given_codes], "suggested": [classes[c] for c in suggested_codes],
            "score": score, "is_issue": flagged.astype(int),
            # train.score's detail: the unit's probabilities by class name and the numbers behind it
            "detail": [json.dumps({"rank": int(u), "probabilities": dict(zip(classes, np.round(p, 4).tolist())),
                                   "self_confidence": round(float(p[g]), 4)})
                       for u, p, g in zip(unit, probs, given_codes)],
        }))
    run_id = store.create_run("score", {"folds": 2, "model": "synthetic"}, status="running")
    store.save_scores(run_id, pd.concat(frames, ignore_index=True))
    store.update_run(run_id, status="done")
    return run_id


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serve(db: Path, *, timeout: float = 60.0, log: Path | None = None) -> Iterator[str]:
    """``streamlit run app/Home.py`` on a free local port with ``LABELS_DB=db``; yields the base URL.

    The server is stopped (its process group) on exit; the first-start demo is off.
    """
    port = free_port()
    env = {**os.environ, "LABELS_DB": str(db), "LABELS_AUTO_DEMO": "0", "PYTHONPATH": str(REPO)}
    output = open(log or os.devnull, "wb")  # noqa: SIM115  (closed below, after the server)
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "Home.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start on port {port} (exit code {server.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        output.close()
