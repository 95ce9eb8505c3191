"""The Browse page's link filter: a chart selection from a URL (``?filter=<json>``), checked against the schema.

A link can be edited by anyone, so nothing here raises: what a chart click could not have produced is dropped and
named. (Moved from ``core.stats``, whose job is the charts' aggregates.)
"""

from __future__ import annotations

import json
from typing import Any

from core.schema import Schema, SchemaError

CHART_FILTER_KEYS = ("labels", "ranges", "original", "corrected")
MAX_FILTER_TEXT = 10_000


def parse_chart_filter(text: str | None, schema: Schema) -> tuple[dict[str, Any], list[str]]:
    """A chart selection from a URL (``?filter=<json>``) checked against the schema: (filter, what was ignored).

    Only what a chart click can produce survives: ``labels`` {target or attribute: class or [classes]} with
    classes of the schema (integer attributes: whole numbers in range), ``ranges`` {integer attribute: [low,
    high]}, ``original`` (bool), ``corrected`` (bool or an attribute name). Everything else (malformed JSON,
    unknown keys, attributes or classes, wrong types) is dropped and named in the second value, never raised:
    a link can be edited by anyone.
    """
    if not text:
        return {}, []
    if len(text) > MAX_FILTER_TEXT:
        return {}, [f"the filter is too long ({len(text)} characters)"]
    try:
        data = json.loads(text)
    except ValueError:
        return {}, ["the filter is not valid JSON"]
    if not isinstance(data, dict):
        return {}, ["the filter is not a JSON object"]
    out: dict[str, Any] = {}
    ignored = [f"unknown key {str(k)[:40]!r}" for k in data if k not in CHART_FILTER_KEYS]
    labels = data.get("labels", {})
    if not isinstance(labels, dict):
        ignored.append("labels must be an object")
        labels = {}
    binned = {b.name: b for b in schema.binned}
    for name, wanted in labels.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if name in binned:
            allowed = set(binned[name].classes)
            good = [v for v in values if isinstance(v, str) and v in allowed]
        elif name in schema.names:
            attribute = schema.attribute(name)
            good = [v for v in values if _valid_value(attribute, v)]
        else:
            ignored.append(f"unknown attribute {str(name)[:40]!r}")
            continue
        if len(good) != len(values) or not good:
            ignored.append(f"unknown {name} value(s)")
        if good:
            out.setdefault("labels", {})[name] = good if isinstance(wanted, list) else good[0]
    ranges = data.get("ranges", {})
    if not isinstance(ranges, dict):
        ignored.append("ranges must be an object")
        ranges = {}
    for name, bounds in ranges.items():
        ranged = schema.attribute(name) if name in schema.names else None
        if ranged is None or ranged.kind != "integer" or not isinstance(bounds, list) or len(bounds) != 2 \
                or not all(_whole(v) for v in bounds) or bounds[0] > bounds[1]:
            ignored.append(f"bad range {str(name)[:40]!r}")
            continue
        out.setdefault("ranges", {})[name] = (int(bounds[0]), int(bounds[1]))
    if "original" in data:
        if isinstance(data["original"], bool):
            out["original"] = data["original"]
        else:
            ignored.append("original must be true or false")
    if "corrected" in data:
        corrected = data["corrected"]
        if isinstance(corrected, bool) or (isinstance(corrected, str) and corrected in schema.names):
            out["corrected"] = corrected
        else:
            ignored.append("corrected must be true, false or an attribute name")
    return out, ignored


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**62


def _valid_value(attribute: Any, value: Any) -> bool:
    if attribute.kind == "integer":
        if not _whole(value):
            return False
    elif not isinstance(value, str):
        return False
    try:
        attribute.parse(value)
    except (SchemaError, ValueError, TypeError):
        return False
    return True
