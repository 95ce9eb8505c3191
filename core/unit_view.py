"""One review unit as the Review page shows it, from one store query (``LabelStore.unit_evidence``).

``unit_view(store, run_id, unit, decisions)`` gathers the photos (with their labels and the model's opinion
of each), the unit's probabilities, why it is flagged, a swap's partner, how near a group edge an ordinal
label is, the label now and the decision that stands on it. The page only lays this out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core import ordinal, review
from core.store import LabelStore


@dataclass
class UnitView:
    """What the Review page shows of one unit (plain data; text is data, render it literally)."""

    unit: dict[str, Any]
    title: str
    classes: tuple[str, ...]
    shown: Any  # the stored attribute's current value (None when the photos disagree)
    shown_text: str
    photos: pd.DataFrame  # path, hash, caption, opinion, highlight
    probabilities: dict[str, float]
    reason: str
    swap: str | None  # a swap's partner sentence, None for other units
    edge: str | None  # "59: 1 year from the edge (>=60 starts at 60)" for a label near a group edge
    evidence: dict[str, Any]
    review_id: int  # the label's newest verdict id when read (conflict check of every action)
    estimate: Any = None  # the model's own value of the stored attribute, where it gives one
    group: tuple[int | None, int | None] | None = None  # a binned suggestion's value range
    decision: dict[str, Any] | None = None  # the decision standing on the label (who, status, run, when)
    count_note: str | None = None  # a person attribute whose estimates of how many are wrong disagree
    warnings: list[str] = field(default_factory=list)


def _decision(decisions: pd.DataFrame | None, unit: dict[str, Any]) -> dict[str, Any] | None:
    if decisions is None or decisions.empty:
        return None
    hit = decisions[(decisions["target"] == unit["target"]) & (decisions["attribute"] == unit["stored"])]
    return None if hit.empty else hit.iloc[0].to_dict()


def decision_text(decision: dict[str, Any] | None) -> str | None:
    """``"label is correct: ana, under score run #1, 2026-12-07 13:05"`` for a standing decision."""
    if not decision:
        return None
    said = {"reviewed": "label is correct", "skipped": "skipped", "corrected": "corrected"}.get(
        str(decision.get("status")), str(decision.get("status")))
    run = decision.get("score_run")
    under = f", under score run #{int(run)}" if run is not None and not pd.isna(run) else ""
    when = str(decision.get("created_at") or "")[:16].replace("T", " ")
    return f"{said}: {decision.get('annotator')}{under}, {when}"


def unit_view(store: LabelStore, run_id: int, unit: dict[str, Any], decisions: pd.DataFrame | None = None) -> UnitView:
    """The Review page's view of ``unit`` (a ``review_units`` row) under score run ``run_id``.

    ``decisions``: the standing decisions (``review.statuses`` / ``LabelStore.decisions``), to say who
    decided the label and under which run. Reads the store once (``unit_evidence``).
    """
    schema = store.schema
    attribute, stored, scope = unit["attribute"], unit["stored"], unit["scope"]
    person_scope = scope == "person"
    classes = tuple(schema.target_classes(attribute))
    rows = store.unit_evidence(run_id, unit["item_id"], attribute, stored, unit["target"], scope)
    warnings: list[str] = []
    review_id = int(rows["review_id"].iloc[0]) if len(rows) else 0
    labelled = rows[rows["stored_value"].notna()]
    mine = labelled if person_scope else labelled[labelled["item_id"] == unit["item_id"]]
    values = {str(v) for v in mine["stored_value"]}
    shown = mine["stored_value"].iloc[0] if len(values) == 1 else None
    if len(values) > 1:
        warnings.append(f"{unit['target']}: its images disagree on {stored}: {sorted(values)}")
    if shown is not None and schema.attribute(stored).kind == "integer":
        shown = int(shown)
    binned = next((b for b in schema.binned if b.name == attribute), None)
    shown_text = "" if shown is None else str(shown)
    if binned is not None and shown is not None:
        shown_text = f"{shown} ({binned.classes[int(binned.codes([shown])[0])]})"
    own = rows[rows["item_id"] == unit["item_id"]]
    detail = own["detail"].iloc[0] if len(own) else None

    # The model's own opinion of each photo (person units: every photo is evidence).
    image_attributes = [a.name for a in schema.attributes if a.scope == "image"]
    captions, opinions, said = [], [], []
    for row in rows.itertuples(index=False):
        labels = ", ".join(str(getattr(row, a)) for a in image_attributes if getattr(row, a) is not None)
        captions.append(str(row.path).rsplit("/", 1)[-1].rsplit(".", 1)[0] + (f" · {labels}" if labels else ""))
        opinion = review.photo_opinion(row.detail, classes) if (person_scope or row.item_id == unit["item_id"]) \
            else None
        if person_scope:
            said.append(opinion)
        opinions.append(f"model {opinion[0]} {opinion[1]:.2f}" if opinion is not None else "")
    photos = pd.DataFrame({"path": rows["path"], "hash": rows["hash"], "caption": captions, "opinion": opinions,
                           "highlight": rows["path"] == unit["path"], "item_id": rows["item_id"]})
    if not person_scope:  # the image itself first, then the other images of its person
        photos = photos.sort_values("highlight", ascending=False, kind="stable").reset_index(drop=True)

    why = review.reason(attribute, unit["given"], unit["suggested"], detail, said if person_scope else None)
    swap_text = None
    pair = review.swap_pair(detail, unit["given"], unit["suggested"], classes)
    if pair:
        # The partner: the person's images scored the other way round (given <-> suggested).
        partner = rows[(rows["item_id"] != unit["item_id"]) & (rows["given"].astype(str) == str(unit["suggested"]))
                       & (rows["suggested"].astype(str) == str(unit["given"]))]
        names = ", ".join(p.rsplit("/", 1)[-1] for p in partner["path"]) or "its partner image"
        swap_text = (f"Flagged as a swap: this person's {pair[0]} and {pair[1]} images look exchanged. Accept here and "
                     f"on the partner ({names}, a unit of its own in this queue).")
    edge = ordinal.edge_note(shown, binned, unit["suggested"]) if binned is not None and shown is not None else None
    found = review._detail_dict(detail)
    estimate = found.get("estimate", found.get(f"{stored}_estimate"))
    group = review.group_range(schema, attribute, unit["suggested"]) if binned is not None and \
        unit.get("suggested") in classes else None
    if person_scope:
        title = f"Person {unit['target']}: {attribute}"
    else:
        title = f"Image {unit['path']}: {attribute}"
    return UnitView(unit=unit, title=title, classes=classes, shown=shown, shown_text=shown_text, photos=photos,
                    probabilities=review.probabilities(detail, classes), reason=why, swap=swap_text, edge=edge,
                    evidence=review.evidence(detail), review_id=review_id,
                    estimate=estimate if isinstance(estimate, (int, float)) else None, group=group,
                    decision=_decision(decisions, unit), warnings=warnings,
                    count_note=review.count_note(attribute, detail) if person_scope else None)
