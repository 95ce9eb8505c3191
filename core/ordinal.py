"""Ordinal groups of a numeric label (age -> age group): how far a label is from the group the model suggests.

A binned target (``age_group`` on ``age``, edges 30 and 60) turns a one-year difference at an edge into a
different class: a correct 59 that looks 60 is "flagged" with the confidence of a real error. Two things
follow, both here:

* ``edge_distance``: the years a label must change to enter the suggested group (59 -> ">=60": 1). A
  label within ``EDGE_YEARS`` of the suggested group is *near the edge*: the photos cannot tell it apart
  (apparent-age estimates from photos are off by several years, far more than this margin), so the review
  page says so ("59: 1 year from the edge") instead of presenting it as a clear error.
* ``edge_step``: one small step after ``core.scoring.review_queue`` ranked the units (its verdicts are
  untouched): flagged units near an edge move below every clear flagged unit, keeping their order and
  their verdict. ``train.oof.score_rows`` applies it before it numbers the ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.schema import Binned, Schema

# A label this many years (or fewer) from the suggested group is "near the edge" (1 or 2 years: what the
# face-mask dataset's age flags were, 17 of 19 of them correct labels).
EDGE_YEARS = 2


def edge_distance(value: Any, binned: Binned, suggested: Any) -> int | None:
    """Years ``value`` must change to fall into the group ``suggested`` (class name or code); 0 when it
    already does, None when either is unknown."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    if suggested is None or (isinstance(suggested, float) and np.isnan(suggested)):
        return None
    code = binned.classes.index(suggested) if suggested in binned.classes else int(suggested)
    if not 0 <= code <= len(binned.edges):
        return None
    low, high = binned.bounds(code)
    if low is not None and number < low:
        return low - number
    if high is not None and number > high:
        return number - high
    return 0


def near_edge(distance: int | None) -> bool:
    """True for a label 1 .. ``EDGE_YEARS`` years from the suggested group."""
    return distance is not None and 0 < distance <= EDGE_YEARS


def edge_note(value: Any, binned: Binned, suggested: Any) -> str | None:
    """``"59: 1 year from the edge (>=60 starts at 60)"`` for a label near the suggested group, else None."""
    distance = edge_distance(value, binned, suggested)
    if not near_edge(distance):
        return None
    code = binned.classes.index(suggested) if suggested in binned.classes else int(suggested)
    name = binned.classes[code]
    low, high = binned.bounds(code)
    bound = f"{name} starts at {low}" if low is not None and int(value) < low else f"{name} ends at {high}"
    return f"{int(value)}: {distance} year{'s' if distance != 1 else ''} from the edge ({bound})"


def edge_step(schema: Schema, queue: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """``queue`` (``core.scoring.review_queue``'s, in its order) with flagged units of a binned target that
    are near the edge moved below every clear flagged unit (stable), and ``edge_distance`` added to those
    units' ``detail``. ``values`` holds the stored attributes by queue row (``rows`` index it)."""
    if queue.empty:
        return queue
    bins = {b.name: b for b in schema.binned if b.source in values.columns}
    near = np.zeros(len(queue), dtype=bool)
    details = list(queue["detail"])
    for position, unit in enumerate(queue.itertuples(index=False)):
        binned = bins.get(unit.attribute)
        if binned is None or not unit.rows:
            continue
        value = values[binned.source].iloc[int(unit.rows[0])]
        distance = edge_distance(value, binned, int(unit.suggested))
        if near_edge(distance):
            details[position] = {**details[position], "edge_distance": int(distance or 0)}
            near[position] = bool(unit.is_issue)
    if not near.any():
        return queue
    out = queue.assign(detail=details, _group=np.where(queue["is_issue"].astype(bool), np.where(near, 1, 0), 2))
    return out.sort_values("_group", kind="stable").drop(columns="_group").reset_index(drop=True)
