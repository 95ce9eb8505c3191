"""The cleaning-loop benchmark's pattern arm: the Review page's queue with patterns folded in.

The simulated reviewer first reviews the patterns ``core.pattern_actions.scan`` finds on the score run (most
significant first), each as the Patterns page shows it: the suspected units, most confident first, each ticked
*fix* (a wrong label: the true value is written, as a reviewer edits the proposal) or *keep*, applied with
``core.pattern_actions.apply_pattern`` as one bulk step. **Honest budget: a pattern costs the number of units
shown and ticked** (every suspected unit displayed, not 1); a pattern larger than what is left of the budget is
shown only as far as the budget goes (its other units stay undecided, in the queue). Then the Review page's
queue (``bench.cleaning_loop.review_queue_entries``), skipping units a pattern already decided (the page's
default filter hides them), one decision per entry as in the ``queue`` arm.

Hooked into ``bench/cleaning_loop.py`` as the order ``pattern`` (``arm_entries`` / ``arm_reviewer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import cleaning_loop as loop
from core import pattern_actions
from core.patterns import Pattern
from core.store import LabelStore


@dataclass(frozen=True)
class PatternEntry(loop.Entry):
    """A pattern shown on the Patterns page: costs one decision per suspected unit shown."""

    pattern: Pattern | None = None


def pattern_entries(store: LabelStore, record: dict[str, Any], seed: int) -> list[loop.Entry]:
    """Patterns of the score run first (each costs its suspected units), then the Review page's queue."""
    _, found = pattern_actions.scan(store, record["score_run"], seed=seed)
    record["patterns"] = [{"key": p.key, "kind": p.kind, "attribute": p.attribute, "summary": p.summary,
                           "q_value": p.q_value, "n_suspected": len(p.units)} for p in found]
    entries: list[loop.Entry] = []
    for p in found:
        if not p.units:
            continue
        decisions = tuple(dict.fromkeys((str(t), str(a)) for t, a in zip(p.suspected["target"], p.suspected["attribute"])))
        entries.append(PatternEntry(p.key, len(p.units), decisions, len(p.units), pattern=p))
    return entries + loop.review_queue_entries(store, record["score_run"], person_cost=False)


@dataclass
class PatternReviewer(loop.Reviewer):
    """``Reviewer`` that takes a ``PatternEntry`` as one bulk step (and skips queue units already decided)."""

    def review_until(self, budget: int) -> dict[str, int]:
        counts = {"entries": 0, "images": 0, "corrected": 0, "confirmed": 0, "repeated": 0, "failed": 0}
        while self.position < len(self.entries):
            entry = self.entries[self.position]
            if isinstance(entry, PatternEntry):
                if self.spent >= budget:
                    break
                self._pattern(entry, budget - self.spent, counts)
                self.position += 1
                continue
            if all(d in self.decided for d in entry.decisions):  # hidden on the page: costs nothing
                self.position += 1
                continue
            if self.spent + entry.cost > budget:
                break
            single = loop.Reviewer(self.store, [entry], self.truth, self.annotator, self.score_run,
                                   decided=self.decided)
            got = single.review_until(entry.cost)
            self.log += [{**row, "entry": self.position} for row in single.log]
            for key in counts:
                counts[key] += got.get(key, 0)
            self.spent += entry.cost
            self.shown += entry.shown
            self.position += 1
        return counts

    def _pattern(self, entry: PatternEntry, left: int, counts: dict[str, int]) -> None:
        pattern, schema = entry.pattern, self.store.schema
        assert pattern is not None
        choices, values, shown_units, images = {}, {}, 0, 0
        sizes = self.store.current_labels(derived=False)["person"].value_counts().to_dict()
        for unit in pattern.units:
            rows = pattern.suspected[pattern.suspected["unit"] == unit]
            todo = [(str(t), str(a)) for t, a in zip(rows["target"], rows["attribute"]) if (str(t), str(a)) not in self.decided]
            if not todo:
                continue
            if shown_units >= left:
                break
            shown_units += 1
            images += int(sizes.get(unit, 1))  # a person unit shows the person's strip
            for target, attribute in todo:  # the unit's photos on screen: each correction ticked on its own
                true = self.truth.value(schema, target, attribute)
                shown = self.store.label_of(target, attribute)
                wrong = not loop.same_label(schema, attribute, shown, true)
                choices[target] = "fix" if wrong else "keep"
                if wrong:
                    values[(target, attribute)] = true
            for target, attribute in todo:
                self.decided.add((target, attribute))
        if not choices:
            return
        result = pattern_actions.apply_pattern(self.store, pattern, choices, annotator=self.annotator, values=values)
        for row in result.written:
            action = "corrected" if row["action"] == "corrected" else "confirmed"
            counts[action] += 1
            self.log.append({"entry": self.position, "target": row["target"], "attribute": row["attribute"],
                             "shown": None, "true": None, "action": action, "ok": True, "message": pattern.key})
        for row in result.refused:
            counts["failed"] += 1
            self.log.append({"entry": self.position, "target": row["target"], "attribute": row["attribute"],
                             "shown": None, "true": None, "action": "failed", "ok": False, "message": row["reason"]})
        self.spent += shown_units
        self.shown += images
        counts["entries"] += 1
        counts["images"] += shown_units


def report_lines(record: dict[str, Any]) -> list[str]:
    """The patterns the arm reviewed (for the bench report): kind, units suspected, q value, summary."""
    found = record.get("patterns") or []
    if not found:
        return []
    lines = ["", f"Patterns found on the score run ({len(found)}, most significant first; the pattern arm reviews "
                 "them before the queue, each costing the units it shows):", ""]
    for p in found:
        lines.append(f"* {p['kind']} of {p['attribute']}, {p['n_suspected']} suspected, q = {p['q_value']:.2g}: "
                     f"{p['summary']}")
    return lines


# ---- patterns, then the learning queue (the Review page with both switched on) ------------------------------------
class CombinedReviewer:
    """The ``combined`` arm: the patterns first (``PatternReviewer``, each costing the units it shows), then the
    learning queue (``bench.learning_arm``) for the rest of the budget. The pattern decisions reach the learner
    through the store (a fix = a confirmed error, a keep = a confirmed-correct label), as the reviewer's clicks on
    the Patterns page reach the Review page's learning queue; units a pattern decided leave the queue."""

    def __init__(self, store: LabelStore, record: dict[str, Any], truth: Any, seed: int):
        from bench import learning_arm

        found = [e for e in pattern_entries(store, record, seed) if isinstance(e, PatternEntry)]
        self.patterns = PatternReviewer(store, found, truth, score_run=int(record["score_run"]))
        self.learning = learning_arm.make_reviewer(store, record, truth)

    def review_until(self, budget: int) -> dict[str, int]:
        counts = self.patterns.review_until(budget)
        learner = self.learning
        learner.spent, learner.decided = max(learner.spent, self.patterns.spent), learner.decided | self.patterns.decided
        for key, value in learner.review_until(budget).items():
            counts[key] = counts.get(key, 0) + value
        return counts

    @property
    def position(self) -> int:  # entries taken: the patterns' and the queue's
        return self.patterns.position + self.learning.position

    @property
    def shown(self) -> int:
        return self.patterns.shown + self.learning.shown

    @property
    def spent(self) -> int:  # decisions spent: the patterns' units shown, then one a queue entry
        return max(self.patterns.spent, self.learning.spent)

    @property
    def log(self) -> list[dict[str, Any]]:
        return self.patterns.log + self.learning.log

    @property
    def reranks(self) -> list[dict[str, Any]]:
        return self.learning.reranks
