"""The cleaning loop's "learning queue" arm (``bench/cleaning_loop.py --orders ... learning``).

The simulated reviewer walks the Review page's units, but after every ``EVERY`` decisions the remaining
units are re-ranked by ``core.learning.learned_queue`` from the decisions the store holds (read with
``core.learning.decisions``, the function the Review page's learning queue uses: the reviewer's answers
reach the learner only through the store, exactly as a person's clicks would). Same budget accounting as
the static queue: one entry = one decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import embeddings, learning

EVERY = learning.EVERY
NAME = "learning queue (re-ranked every 10 decisions)"


def _entries(units: Any, order: Any, schema: Any, sizes: dict[str, int]) -> list[Any]:
    from bench.cleaning_loop import Entry

    out = []
    for row in order.itertuples(index=False):
        person = row.scope == "person"
        shown = int(sizes.get(str(row.target), 1)) if person else 1
        out.append(Entry(str(row.key), 1, ((str(row.target), str(row.stored)),), shown))
    return out


def make_reviewer(store: Any, record: dict[str, Any], truth: Any, every: int = EVERY) -> Any:
    """A ``Reviewer`` on the learning queue of the bench's score run."""
    from bench.cleaning_loop import Reviewer

    @dataclass
    class LearningReviewer(Reviewer):
        """``Reviewer`` whose remaining entries are re-ranked from the store's decisions every ``every``."""

        def review_until(self, budget: int) -> dict[str, int]:
            totals: dict[str, int] = {}
            while self.spent < budget:
                self.rerank()
                counts = Reviewer.review_until(self, min(budget, self.spent + every))
                for name, value in counts.items():
                    totals[name] = totals.get(name, 0) + value
                if counts["entries"] == 0:
                    break
            return totals

        def rerank(self) -> None:
            queue = learning.learned_queue(units, vectors, learning.decisions(self.store, run_id), every=every)
            self.entries = list(self.entries[:self.position]) + _entries(units, queue.order, schema, sizes)
            self.reranks.append({"decisions": queue.n_decisions, "errors": queue.n_errors, "active": queue.active,
                                 "moved_up": int((queue.order["why"].str.startswith("ranked up")).sum())})

    run_id = int(record["score_run"])
    emb = embeddings.load_run(store, run_id)
    units = learning.unit_table(store, run_id)
    vectors = embeddings.unit_vectors(emb, units)
    schema = store.schema
    sizes = store.current_labels(derived=False)["person"].value_counts().to_dict()
    reviewer = LearningReviewer(store, [], truth, score_run=run_id)
    reviewer.reranks = []
    return reviewer


# ---- the report ---------------------------------------------------------------------------------------------
PATTERNS = (("mask", "mask (swapped batch)"), ("gender", "gender (look-alike)"), ("age_group", "age group (rounded)"))


def report_lines(a: dict[str, Any], cfg: dict[str, Any], fits: dict[str, Any], inj: dict[str, int]) -> list[str]:
    """Per-pattern recall of the learning arm next to the static queue's, and the paired macro-F1 interval of
    learning - static queue (``a``: ``cleaning_loop.analyse``)."""
    from bench.cleaning_loop import _interval, paired, paired_interval

    top = max(cfg["budgets"])
    ours, static = a["arms"].get(f"learning@{top}"), a["arms"].get(f"queue@{top}")
    if not ours or not static:
        return []
    lines = ["", f"Learning queue vs the static Review-page queue at {top:.0%} ({a['metric']}):", "",
             "| pattern (systematic profile) | injected | static queue fixed (recall) | learning queue fixed (recall) |",
             "|---|---|---|---|"]
    for kind, name in PATTERNS:
        total = inj[kind]
        row = [f"| {name} | {total}"]
        for arm in (static, ours):
            left = arm["snapshot"].get("errors_left", {})
            fixed = total - left.get(kind, total)
            row.append(f"{fixed} ({fixed / total:.0%})" if total else "0")
        lines.append(" | ".join(row) + " |")
    _, q, lq = paired(fits, f"queue@{top}", f"learning@{top}", a["metric"])
    mean, low, high = paired_interval(lq - q)
    verdict = ("no evidence of a difference" if math.isnan(low) or low <= 0 <= high
               else ("better" if low > 0 else "worse"))
    lines += ["", f"Learning - static queue, paired over seeds {', '.join(a['arms'][f'learning@{top}']['seeds'])}: "
              f"{_interval(mean, low, high)} ({verdict}); errors fixed {ours['snapshot'].get('errors_fixed')} vs "
              f"{static['snapshot'].get('errors_fixed')}."]
    return lines


def rerank_summary(snapshot: dict[str, Any]) -> str:
    """One line on the re-rankings of a simulated learning arm."""
    reranks = snapshot.get("reranks") or []
    if not reranks:
        return ""
    active = [r for r in reranks if r["active"]]
    return (f"{len(reranks)} re-rankings, {len(active)} with a learned model (the first after "
            f"{active[0]['decisions'] if active else '-'} decisions); median units ranked up with a reason: "
            f"{int(np.median([r['moved_up'] for r in active])) if active else 0}")
