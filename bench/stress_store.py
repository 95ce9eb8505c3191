"""Concurrent annotators against one store: nothing accepted is lost, every collision is refused.

``PYTHONPATH=. python -m bench.stress_store [--workers 8] [--per-worker 250]`` builds a synthetic competition
store, then runs W writer processes, each making N corrections — a mix of image-scope (mask) and
person-scope (gender, age) corrections, a deliberate share of them on targets other writers also
touch (collisions: all writers expect the same original value, so only the first can win) — while a
reader process keeps reading the label table and aggregates like the dashboard does.

Checks: accepted == rows in the log; each contested target has exactly one winner; the replayed
log equals the current table; ``PRAGMA integrity_check`` is ok; the reader never failed.
Prints a table; `python -m bench.reliability --write` puts its numbers in BENCHMARKS.md under "Reliability".
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.schema import MASK_FILES
from core.store import ConflictError, LabelStore
from core.synthetic import competition_frames


def _people(n_persons: int) -> list[tuple[str, str, int]]:
    persons, items = competition_frames(n_persons)
    first = items[items["split"] == "train"].drop_duplicates("person")
    return [(r.person, r.gender, int(r.age)) for r in first.itertuples()]


def writer(args: tuple[str, int, int, int, int]) -> dict[str, int]:
    """One annotator: own targets (must all succeed) interleaved with contested ones."""
    db, worker, per_worker, n_persons, seed = args
    store = LabelStore(db)
    people = _people(n_persons)
    rng = np.random.default_rng(seed + worker)
    stems = list(MASK_FILES)
    accepted = conflicts = refused_other = 0
    latencies = []
    own = [p for i, p in enumerate(people) if i % (workers_of(db) + 1) == worker + 1]
    contested = [p for i, p in enumerate(people) if i % (workers_of(db) + 1) == 0]
    for step in range(per_worker):
        if step % 4 == 3 and contested:  # a quarter of the writes collide on purpose
            person, gender, age = contested[(step // 4) % len(contested)]
            kind = ("gender", "age", "mask")[(step // 4 // len(contested)) % 3]
        else:
            person, gender, age = own[step % len(own)]
            kind = ("mask", "gender", "age")[step % 3]
        try:
            started = time.perf_counter()
            if kind == "mask":
                stem = stems[int(rng.integers(len(stems)))]
                path = f"train/images/{person}/{stem}.jpg"
                current = store.label_of(path, "mask") if (step % 4 != 3) else MASK_FILES[stem]
                new = "incorrect" if current != "incorrect" else "wear"
                store.correct(path, "mask", new, expected=current, annotator=f"w{worker}", source="stress")
            elif kind == "gender":
                current = store.label_of(person, "gender") if (step % 4 != 3) else gender
                store.correct(person, "gender", "male" if current == "female" else "female", expected=current,
                              annotator=f"w{worker}", source="stress")
            else:
                current = store.label_of(person, "age") if (step % 4 != 3) else age
                store.correct(person, "age", (current + 1) % 100 + 1, expected=current, annotator=f"w{worker}",
                              source="stress")
            latencies.append(time.perf_counter() - started)
            accepted += 1
        except ConflictError:
            conflicts += 1
        except Exception:  # noqa: BLE001 (e.g. "already" after a collision changed the value): counted, not lost
            refused_other += 1
    store.close()
    return {"accepted": accepted, "conflicts": conflicts, "refused_other": refused_other,
            "p95_ms": int(np.percentile(latencies, 95) * 1000) if latencies else 0}


def workers_of(db: str) -> int:
    return int(Path(db).with_suffix(".workers").read_text())


def reader(db: str, ready: mp.Event, stop: mp.Event, out: mp.Queue) -> None:
    """Reads like the dashboard until told to stop; always at least once before and once after."""
    store = LabelStore(db)
    reads = failures = 0
    first = True
    while first or not stop.is_set():
        try:
            labels = store.current_labels()
            store.count_by(["mask", "gender"])
            assert len(labels) > 0
            reads += 1
        except Exception:  # noqa: BLE001
            failures += 1
        if first:
            ready.set()  # the writers start only once the reader is reading (a spawned process starts slowly)
            first = False
    out.put((reads, failures))


def run(workers: int = 8, per_worker: int = 250, n_persons: int = 180, seed: int = 0,
        directory: Path | None = None) -> dict[str, int | str]:
    directory = Path(directory or tempfile.mkdtemp(prefix="stress-"))
    db = directory / "stress.db"
    db.with_suffix(".workers").write_text(str(workers))
    store = LabelStore(db)
    persons, items = competition_frames(n_persons)
    store.ingest(root=directory, schema=store_schema(), dataset_format="competition", persons=persons, items=items,
                 problems=[])
    ctx = mp.get_context("spawn")
    ready, stop, queue = ctx.Event(), ctx.Event(), ctx.Queue()
    read_process = ctx.Process(target=reader, args=(str(db), ready, stop, queue))
    read_process.start()
    if not ready.wait(timeout=120):
        raise RuntimeError("the reader process did not start reading within 120 s")
    started = time.perf_counter()
    with ctx.Pool(workers) as pool:
        results = pool.map(writer, [(str(db), w, per_worker, n_persons, seed) for w in range(workers)])
    elapsed = time.perf_counter() - started
    stop.set()
    reads, read_failures = queue.get(timeout=60)
    read_process.join()
    accepted = sum(r["accepted"] for r in results)
    logged = store.n_corrections()
    problems = store.verify_current()
    integrity = store.conn.execute("PRAGMA integrity_check").fetchone()[0]
    log = store.history(source="stress")
    contested = {p for i, (p, _, _) in enumerate(_people(n_persons)) if i % (workers + 1) == 0}
    person_log = log[log["target"].isin(contested)]
    max_winners = int(person_log.groupby(["target", "attribute"]).size().max()) if len(person_log) else 0
    store.close()
    return {"workers": workers, "attempted": workers * per_worker, "accepted": accepted, "logged": logged,
            "conflicts_refused": sum(r["conflicts"] for r in results),
            "other_refusals": sum(r["refused_other"] for r in results), "replay_mismatches": len(problems),
            "max_winners_per_contested_label": max_winners,
            "integrity": integrity, "dashboard_reads": reads, "read_failures": read_failures,
            "write_p95_ms": max(r["p95_ms"] for r in results), "seconds": round(elapsed, 1)}


def store_schema():
    from core.schema import COMPETITION
    return COMPETITION


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--per-worker", type=int, default=250)
    parser.add_argument("--persons", type=int, default=180)
    args = parser.parse_args()
    result = run(args.workers, args.per_worker, args.persons)
    for key, value in result.items():
        print(f"{key:>20}: {value}")
    ok = (result["accepted"] == result["logged"] and result["replay_mismatches"] == 0
          and result["max_winners_per_contested_label"] <= 1
          and result["integrity"] == "ok" and result["read_failures"] == 0)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
