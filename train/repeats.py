"""Repeat groups: one config trained on one label snapshot with N seeds (``python -m train fit --repeats N``).

The N journal rows are created up front (status ``queued``) with ``repeat_group`` = the first run's
id, so the runs table and Compare see the whole group from the start; then each is trained in turn by
``train.loop.fit`` adopting its row, with seeds ``seed``, ``seed + 1``, ... and the same snapshot file
(taken once, before the first). As a dashboard job the job lock follows the run being trained, and
``train.jobs.recover_stale`` treats a group with queued members as one unfinished job. A cancelled or
failed repeat ends the group: its queued rows are marked cancelled.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from typing import Any

from core.store import LabelStore, now


def fit_repeats(config: Any, repeats: int, *, db: str | None = None, run_id: int | None = None,
                echo: bool = True) -> list[dict[str, Any]]:
    """Train ``config`` ``repeats`` times (seeds config.seed + i) as one repeat group; returns fit's results.

    ``run_id`` adopts a queued row (a job launcher's) as the group's first run. Stops at the first run
    that does not end ``done`` (its result is the last one returned).
    """
    from train.jobs import JOB_LOCK
    from train.loop import fit
    from train.run_folder import take_snapshot

    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    with LabelStore(db) as store:
        snapshot, _ = take_snapshot(store, config.snapshot, config.labels)  # one snapshot for the whole group
        first = run_id if run_id is not None else store.create_run("train", {}, status="queued")
        store.update_run(first, repeat_group=first)
        ids = [first] + [store.create_run("train", {**asdict(config), "seed": config.seed + i, "repeat_of": first},
                                          status="queued", repeat_group=first) for i in range(1, repeats)]
    config = replace(config, snapshot=str(snapshot), labels=config.labels or ("snapshot" if config.snapshot else "current"))
    results: list[dict[str, Any]] = []
    try:
        for i, rid in enumerate(ids):
            with LabelStore(db) as store:
                holder = store.lock_holder(JOB_LOCK)
                if holder is not None and holder["pid"] == os.getpid():  # a dashboard job: the lock follows
                    store.update_lock(JOB_LOCK, run_id=rid, pid=os.getpid())
            result = fit(replace(config, seed=config.seed + i), db=db, run_id=rid, echo=echo)
            results.append(result)
            if result["status"] != "done":
                break
    finally:
        with LabelStore(db) as store:  # whatever stopped the group: its runs not started never will be
            for rid in ids:
                if store.run(rid)["status"] == "queued":
                    store.update_run(rid, status="cancelled", finished_at=now(),
                                     error_tail=f"repeat group #{first} stopped before this run started")
    return results
