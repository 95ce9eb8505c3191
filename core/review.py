"""Review actions and the review queue, as plain functions the dashboard (and any script) calls.

A *unit* of review is one label decision: an image for an image-scope attribute (``mask``) or a
person for a person-scope one (``gender``, ``age``). Its ``target`` is the image path or the
person key, exactly as ``LabelStore.correct`` and ``mark_reviewed`` name it, and its
``attribute`` is the stored attribute (``age_group`` flags are decided on ``age``).

Every action takes the value the reviewer was shown (``shown``) and passes it to the store as
``expected``: if someone changed the label meanwhile the action is refused with a conflict and
nothing is overwritten. Actions return an ``Outcome`` instead of raising, so a page can show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.schema import Schema, SchemaError
from core.store import ConflictError, LabelStore, StoreError

# Sources of corrections the dashboard writes; undo only takes back these (imports have History).
DASHBOARD_SOURCES = ("review", "browse")
STATUSES = ("unreviewed", "skipped", "reviewed", "corrected")


@dataclass(frozen=True)
class Outcome:
    """What an action did: ``ok``, a one-line plain-text ``message``, ``conflict`` when refused
    because the label changed meanwhile, and the id of the correction or verdict written."""

    ok: bool
    message: str
    conflict: bool = False
    record_id: int | None = None


def stored_attribute(schema: Schema, attribute: str) -> str:
    """The stored attribute a (possibly binned) target is decided on: ``age_group`` -> ``age``."""
    return schema.target_source(attribute)


def target_of(schema: Schema, attribute: str, path: str, person: str | None) -> str:
    """The store target of a unit: the person key for person-scope attributes, else the path."""
    scope = schema.scope(stored_attribute(schema, attribute))
    return str(person) if scope == "person" and person else path


def suggestion_value(schema: Schema, attribute: str, suggested: Any, current: Any) -> Any:
    """The stored value that accepting ``suggested`` writes, or None when only the reviewer can say.

    For a binned target (``age_group`` on ``age``) the suggestion is a group, not an age: no age
    follows from it (an 18-year-old "30-59" may be 49), so this returns None and the page asks for
    the age (``accept_binned``). Other attributes take the suggestion as it is.
    """
    if any(binned.name == attribute for binned in schema.binned):
        return None
    return suggested


def group_range(schema: Schema, attribute: str, group: Any) -> tuple[int | None, int | None] | None:
    """(lowest, highest) stored value of a binned target's group (None: open end); None if not binned."""
    for binned in schema.binned:
        if binned.name == attribute:
            return binned.bounds(group)
    return None


def accept_binned(store: LabelStore, target: str, attribute: str, group: Any, value: Any, *, shown: Any,
                  annotator: str, **kwargs: Any) -> Outcome:
    """Accept a binned suggestion (``age_group`` -> ``30-59``) with the value the reviewer gave.

    Nothing is invented: without a value nothing is written; a value outside the group is refused
    (that is a plain "set", not accepting this group). ``attribute`` is the binned target.
    """
    schema = store.schema
    stored = stored_attribute(schema, attribute)
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return Outcome(False, f"Type the {stored} first: accepting the group {group} never invents a {stored}.")
    bounds = group_range(schema, attribute, group)
    try:
        number = int(schema.attribute(stored).parse(value))
    except (SchemaError, ValueError, TypeError) as error:
        return Outcome(False, str(error))
    if bounds is not None:
        low, high = bounds
        if (low is not None and number < low) or (high is not None and number > high):
            return Outcome(False, f"{stored} {number} is not in {group}; use Set {stored} for another value.")
    return set_label(store, target, stored, number, shown=shown, annotator=annotator, **kwargs)


def set_label(store: LabelStore, target: str, attribute: str, value: Any, *, shown: Any, annotator: str,
              reason: str = "", source: str = "review", tab: str | None = None, score_run: int | None = None,
              seen_review: int | None = None) -> Outcome:
    """Correct one stored attribute of an image or person from ``shown`` to ``value``.

    ``seen_review``: the label's newest verdict id when it was shown (``LabelStore.newest_review``):
    a verdict someone made meanwhile makes this a conflict. ``tab`` (the browser tab) lets undo take
    back only that tab's actions; ``score_run`` is the run the decision was made under."""
    try:
        correction_id = store.correct(target, attribute, value, expected=shown, annotator=annotator,
                                      reason=reason, source=source, tab=tab, score_run=score_run,
                                      seen_review=seen_review)
    except ConflictError as error:
        return Outcome(False, f"Conflict, nothing written: {error}", conflict=True)
    except (StoreError, SchemaError) as error:
        return Outcome(False, str(error))
    return Outcome(True, f"{target}: {attribute} {shown} -> {value} (correction #{correction_id})",
                   record_id=correction_id)


def verdict(store: LabelStore, target: str, attribute: str, *, shown: Any, annotator: str, kind: str = "correct",
            score_run: int | None = None, tab: str | None = None, seen_review: int | None = None) -> Outcome:
    """Record "label is correct" (``kind="correct"``) or ``skip`` for a unit.

    The label must still be ``shown``: confirming a value someone else just changed would confirm
    the wrong thing, so that is a conflict too, as is a verdict newer than ``seen_review`` (someone
    decided this label meanwhile). The verdict belongs to the label (its value now): it carries over
    to later score runs while the label is unchanged (``LabelStore.decisions``).
    """
    try:
        review_id = store.mark_reviewed(target, attribute, annotator=annotator, verdict=kind, score_run=score_run,
                                        expected=shown, tab=tab, seen_review=seen_review)
    except ConflictError as error:
        return Outcome(False, f"Conflict, nothing written: {error}", conflict=True)
    except (StoreError, SchemaError) as error:
        return Outcome(False, str(error))
    said = "label is correct" if kind == "correct" else "skipped"
    return Outcome(True, f"{target}: {attribute} {shown} - {said} (verdict #{review_id})", record_id=review_id)


def last_action(store: LabelStore, annotator: str, tab: str | None = None) -> dict[str, Any] | None:
    """The annotator's newest action that undo can take back, or None.

    Corrections from the dashboard that are not reverted yet, and verdicts not withdrawn by a
    later ``reopen`` of the same unit. With ``tab``, only the actions made in that browser tab (each
    tab has its own undo). Read from the database, so it survives a browser refresh.
    """
    log = store.history(annotator=annotator)
    candidates: list[dict[str, Any]] = []
    if len(log):
        live = log[log["source"].isin(DASHBOARD_SOURCES) & log["reverted_by"].isna()]
        if tab is not None and "tab" in live:
            live = live[live["tab"] == tab]
        if len(live):
            row = live.iloc[0]  # history is newest first
            candidates.append({"kind": "correction", "id": int(row["id"]), "target": row["target"],
                               "attribute": row["attribute"], "at": row["created_at"],
                               "text": f"{row['target']}: {row['attribute']} {row['old_value']} -> {row['new_value']}"})
    reviews = store.reviews()
    if len(reviews):
        mine = reviews[reviews["annotator"] == annotator].sort_values("id")
        reopened: dict[tuple[str, str], int] = {}
        for row in mine.itertuples(index=False):
            if row.verdict == "reopen":
                reopened[(row.target, row.attribute)] = row.id
        live_verdicts = [r for r in mine.itertuples(index=False)
                         if r.verdict != "reopen" and reopened.get((r.target, r.attribute), -1) < r.id
                         and (tab is None or getattr(r, "tab", None) == tab)]
        if live_verdicts:
            row = live_verdicts[-1]
            candidates.append({"kind": "verdict", "id": int(row.id), "target": row.target, "attribute": row.attribute,
                               "at": row.created_at, "text": f"{row.target}: {row.attribute} marked {row.verdict}"})
    return max(candidates, key=lambda c: c["at"]) if candidates else None


def undo_last(store: LabelStore, annotator: str, tab: str | None = None) -> Outcome:
    """Take back the annotator's newest action (of ``tab`` when given): revert a correction (a logged
    revert) or reopen a verdict."""
    action = last_action(store, annotator, tab)
    if action is None:
        return Outcome(False, "Nothing to undo: no correction or verdict of yours is still standing"
                              + (" in this tab." if tab is not None else "."))
    try:
        if action["kind"] == "correction":
            record = store.revert(action["id"], annotator=annotator, reason="undo", tab=tab)
        else:
            record = store.mark_reviewed(action["target"], action["attribute"], annotator=annotator, verdict="reopen",
                                         tab=tab)
    except ConflictError as error:
        return Outcome(False, f"Conflict, nothing undone: {error}", conflict=True)
    except StoreError as error:
        return Outcome(False, str(error))
    return Outcome(True, f"Undone: {action['text']}", record_id=record)


def statuses(store: LabelStore, since: str | None = None) -> pd.DataFrame:
    """Review status of every label someone decided that still stands (``LabelStore.decisions``).

    A decision belongs to the label, not to a score run: it carries over to later runs while the
    label is unchanged. Columns: ``target``, ``attribute`` (stored), ``status`` (``corrected``
    beats a verdict: ``reviewed`` for "label is correct", ``skipped``), ``annotator``, ``score_run``
    (the run it was made under), ``created_at``. Units not listed are ``unreviewed``. ``since`` (an
    ISO time) keeps only decisions made since then.
    """
    table = store.decisions()
    if since:
        table = table[table["created_at"] >= since]
    return table[["target", "attribute", "status", "annotator", "score_run", "created_at"]].reset_index(drop=True)


def _status_filter(status_table: pd.DataFrame, status: str | None) -> dict[str, list[str]]:
    """``review_units`` arguments for a status: units with it, or for ``unreviewed`` all but the acted-on."""
    if not status:
        return {}
    units = status_table["target"] + "|" + status_table["attribute"]
    if status == "unreviewed":
        return {"exclude_units": list(units)}
    return {"units": list(units[status_table["status"] == status])}


def queue_page(store: LabelStore, run_id: int, status_table: pd.DataFrame, *, offset: int = 0,
               limit: int | None = None, count: bool = True, status: str | None = None,
               **filters: Any) -> tuple[pd.DataFrame, int | None]:
    """Rows ``offset`` .. ``offset + limit`` of the filtered queue (``queue_units``' rows, ``status``
    included) and the number of matching units (None with ``count=False``), read from the store: only
    that page is loaded. Filters: ``attribute``, ``given``, ``suggested``, ``min_score``,
    ``flagged_only``, ``status`` (one of ``STATUSES``), ``issue_kind`` (a data-issue kind or ``"any"``).
    """
    rows, total = store.review_units(run_id, offset=offset, limit=limit, count=count, **filters,
                                     **_status_filter(status_table, status))
    rows["status"] = rows["unit"].map(status_lookup(status_table)).fillna("unreviewed") if len(rows) else []
    return rows, total


def queue_units(store: LabelStore, run_id: int, status_table: pd.DataFrame | None = None, *,
                status: str | None = None, **filters: Any) -> pd.DataFrame:
    """The review queue of a score run: every unit matching the filters, most suspicious first.

    There is one queue: the store's (``LabelStore.review_units``, ranked in SQL when the run's scores are
    saved, in ``core.scoring``'s order). The Review page reads it a page at a time (``queue_page``), the
    Train page compares two runs' queues and ``bench/cleaning_loop.py`` walks it, all through this module.
    A unit is one label decision: an image for an image-scope attribute, a person for a person-scope
    one (represented by its most suspicious image). Columns: ``key`` (``target|attribute`` as scored,
    unique), ``unit`` (``target|stored``, what verdicts and corrections name), ``target``, ``scope``,
    ``attribute`` (as scored, e.g. ``age_group``), ``stored`` (``age``), ``item_id``, ``path``,
    ``person``, ``given``, ``suggested`` (class names), ``score``, ``is_issue``, and ``status`` (one of
    ``STATUSES``) when ``status_table`` (``statuses()``) is given. Filters as ``queue_page``. A unit's
    probabilities: ``store.score_detail(run_id, item_id, attribute)``.
    """
    if status_table is None:
        if status is not None:
            raise ValueError("a status filter needs the status table (review.statuses)")
        return store.review_units(run_id, count=False, **filters)[0]
    return queue_page(store, run_id, status_table, count=False, status=status, **filters)[0]


def queue_position(store: LabelStore, run_id: int, status_table: pd.DataFrame, key: str, *,
                   status: str | None = None, **filters: Any) -> int | None:
    """Position of the unit ``key`` in the filtered queue (as ``queue_page`` orders it), None if absent."""
    return store.review_unit_position(run_id, key, **filters, **_status_filter(status_table, status))


def queue_progress(store: LabelStore, run_id: int, status_table: pd.DataFrame) -> tuple[int, int]:
    """(reviewed, flagged): the run's flagged units, and how many of them have a verdict "correct" or a
    correction in ``status_table``; read from the store without loading the queue."""
    flagged = store.review_summary(run_id)["n_flagged"]
    done = status_table[status_table["status"].isin(("reviewed", "corrected"))]
    if flagged == 0 or done.empty:
        return 0, flagged
    _, reviewed = store.review_units(run_id, flagged_only=True, units=list(done["target"] + "|" + done["attribute"]),
                                     limit=0)
    return int(reviewed or 0), flagged


def status_lookup(status_table: pd.DataFrame) -> dict[str, str]:
    """``target|attribute`` -> status, from ``statuses()``."""
    return dict(zip(status_table["target"] + "|" + status_table["attribute"], status_table["status"]))


def probabilities(detail: Any, classes: tuple[str, ...] | list[str] = ()) -> dict[str, float]:
    """Class -> probability from a score row's ``detail`` (JSON text or dict); {} when it has none.

    ``core.scoring`` stores ``probabilities`` as a list in class order; ``classes`` names them.
    """
    detail = _detail_dict(detail)
    for key in ("probabilities", "pred_probs", "probs"):
        found = detail.get(key)
        if isinstance(found, dict):
            return {str(k): float(v) for k, v in found.items()}
        if isinstance(found, list) and found:
            names = list(classes) if len(classes) == len(found) else [str(i) for i in range(len(found))]
            return {name: float(v) for name, v in zip(names, found)}
    return {}


def _detail_dict(detail: Any) -> dict[str, Any]:
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            return {}
    return detail if isinstance(detail, dict) else {}


def swap_pair(detail: Any, given: Any = None, suggested: Any = None,
              classes: tuple[str, ...] | list[str] = ()) -> tuple[str, str] | None:
    """The two classes of a swap verdict, else None.

    ``train.score`` marks a swap by ``log_ratio`` in the detail (given -> suggested is the swap);
    ``core.scoring``'s own queue detail names the ``pair`` as class codes.
    """
    found = _detail_dict(detail)
    pair = found.get("pair")
    if isinstance(pair, list) and len(pair) == 2:
        return tuple(classes[int(c)] if str(c).isdigit() and int(c) < len(classes) else str(c)  # type: ignore[return-value]
                     for c in pair)
    if "log_ratio" in found and given is not None and suggested is not None:
        return str(given), str(suggested)
    return None


def evidence(detail: Any) -> dict[str, Any]:
    """The plain numbers behind a verdict (self-confidence, margin, images against, disagreement ...),
    without the probabilities and bookkeeping, for showing beside the score."""
    skip = {"probabilities", "image_probabilities", "pred_probs", "probs", "rank", "pair", "n_first"}
    return {k: v for k, v in _detail_dict(detail).items() if k not in skip and isinstance(v, (int, float, str, bool))}


COUNT_NAMES = {"person_mean": "confident learning on person means", "image_vote": "per-image votes",
               "expected": "posterior sum"}


def count_note(attribute: str, detail: Any) -> str | None:
    """For a person unit, a plain sentence when the estimates of how many people are wrong disagree (the number
    flagged is their median, ``core.scoring.issue_counts``): the unflagged units ranked just after the flagged ones
    may be errors too. None when they agree or the detail has none (image units, older runs)."""
    found = _detail_dict(detail)
    counts, flagged = found.get("count_estimates"), found.get("n_flagged")
    if not isinstance(counts, dict) or len(counts) < 2 or not isinstance(flagged, int):
        return None
    values = {k: int(v) for k, v in counts.items() if isinstance(v, (int, float))}
    if not values or max(values.values()) == min(values.values()):
        return None
    ways = ", ".join(f"{v} ({COUNT_NAMES.get(k, k)})" for k, v in values.items())
    return (f"{flagged} flagged for {attribute}: the median of three estimates of how many people are wrong: {ways}. "
            "The next units in the queue may be errors too: switch off \"Flagged only\" in Filters.")


def flagged_counts(store: LabelStore, run_id: int) -> dict[str, int]:
    """Flagged units of a score run by attribute (as scored).

    The one definition of *flagged* everywhere (Review, Rescore message, Runs table): a review
    unit whose verdict ``is_issue`` is set, where a unit is an image for an image-scope attribute
    and a person for a person-scope one (a mask swap counts its two images).
    """
    units, _ = store.review_units(run_id, flagged_only=True)
    return {str(a): int(n) for a, n in units.groupby("attribute").size().items()} if len(units) else {}


def photo_opinion(detail: Any, classes: tuple[str, ...] | list[str] = ()) -> tuple[str, float] | None:
    """The model's own opinion of one image: (most likely class, its probability), from the image's
    score row ``detail`` (``image_probabilities``, else ``probabilities``); None without any."""
    found = _detail_dict(detail)
    probs = found.get("image_probabilities") or found.get("probabilities")
    if isinstance(probs, list):
        probs = {name: p for name, p in zip(classes if len(classes) == len(probs) else map(str, range(len(probs))),
                                            probs)}
    if not isinstance(probs, dict) or not probs:
        return None
    best = max(probs, key=lambda k: float(probs[k]))
    return str(best), float(probs[best])


def reason(attribute: str, given: Any, suggested: Any, detail: Any,
           opinions: list[tuple[str, float] | None] | None = None) -> str:
    """Why a unit is flagged, in plain words (numbers come after, in the evidence).

    ``opinions`` are the per-photo opinions (``photo_opinion``) of a person's images for a
    person-scope unit; without them the unit's own probabilities speak.
    """
    found = _detail_dict(detail)
    given, suggested = str(given), str(suggested)
    seen = [o for o in (opinions or []) if o is not None]
    if len(seen) > 1:
        agree = [p for c, p in seen if c == suggested]
        text = f"model says {suggested} on {len(agree)} of {len(seen)} photos"
        if agree:
            text += f", mean {sum(agree) / len(agree):.2f}"
        return f"{text}; labelled {given}"
    probs = probabilities(found)
    if suggested == given or suggested == "None":
        return f"model agrees with the label {given}" + (f" ({probs[given]:.2f})" if given in probs else "")
    said = f"model says {suggested}" + (f" ({probs[suggested]:.2f})" if suggested in probs else "")
    mine = f" ({probs[given]:.2f})" if given in probs else ""
    return f"{said}; labelled {given}{mine}. The model never saw this image (out-of-fold)"
