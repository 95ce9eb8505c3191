"""Aggregates for the dashboard's charts: pure pandas on top of the store's SQL ``GROUP BY`` verbs.

Every function takes a ``LabelStore`` and returns a small DataFrame (one row per bar or cell), so
the dashboard can cache it by ``store.version()``. Counts come from ``store.label_counts`` (the
original counts saved with the ingest, corrected by the images of corrected people: cost grows with
the corrections, not the dataset), never from loading the label table. Binned targets (``age_group``)
are derived from the stored integer counts with the schema's edges, which keeps person counts exact:
every person has one age, so summing persons over the ages of a bin counts each person once.

Each row also carries ``filter``: the keyword arguments of ``store.select_items`` that select
exactly the images behind that bar or cell (click a bar, open those images).

Pass a ``Counts(store)`` instead of the store to let several aggregates share their queries: it
answers every ``count_by`` from one table over all attributes (current and original) plus one
over the person-scope attributes, which is what the dashboard caches per store version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.schema import Schema
from core.store import LabelStore


class Counts:
    """Memoised ``count_by`` answers for one state of the store (build a new one after a write).

    Grouping by fewer attributes is summed from a wider table when that is exact: dropping a
    person-scope attribute never counts a person twice (each person has one value of it), dropping
    an image-scope one would, so those groupings fall back to their own query.
    """

    # Reads that only an ingest changes (corrections never touch them): kept in ``per_ingest``.
    INGEST_STABLE = ("person_image_counts",)

    def __init__(self, store: LabelStore, per_ingest: dict[Any, Any] | None = None):
        """``per_ingest``: a memo the caller keeps per ingest (original labels, the persons table and
        item counts only change with an ingest), so those queries are skipped after a correction."""
        self.store = store
        self.schema = store.schema
        self._tables: dict[tuple[tuple[str, ...], bool], pd.DataFrame] = {}
        self._per_ingest = per_ingest if per_ingest is not None else {}
        self._memo: dict[Any, Any] = {}

    def _table(self, sources: tuple[str, ...], original: bool) -> pd.DataFrame:
        if original:
            if sources not in self._per_ingest:
                self._per_ingest[sources] = self.store.label_counts(list(sources), original=True)
            return self._per_ingest[sources]
        if (sources, False) not in self._tables:
            self._tables[(sources, False)] = self.store.label_counts(list(sources))
        return self._tables[(sources, False)]

    def _once(self, name: str) -> Any:
        """A store read shared by several aggregates (person_image_counts, changed_counts, correction_counts)."""
        memo = self._per_ingest if name in self.INGEST_STABLE else self._memo
        if name not in memo:
            memo[name] = getattr(self.store, name)()
        return memo[name]

    def item_counts(self) -> tuple[int, int]:
        """(all items, eval items); only an ingest changes them."""
        if "item_counts" not in self._per_ingest:
            self._per_ingest["item_counts"] = (self.store.count_items(), self.store.count_items("eval"))
        return self._per_ingest["item_counts"]

    def count_by(self, sources: list[str], *, original: bool = False) -> pd.DataFrame:
        """Same columns as ``LabelStore.count_by(sources)``, from the widest exact table."""
        names = tuple(self.schema.names)
        person_scope = tuple(n for n in names if self.schema.scope(n) == "person")
        for wide in (names, person_scope):
            dropped = set(wide) - set(sources)
            if set(sources) <= set(wide) and all(self.schema.scope(n) == "person" for n in dropped):
                table = self._table(wide, original)
                if not dropped:
                    return table[[*sources, "images", "persons"]]
                if table.empty:
                    return pd.DataFrame(columns=[*sources, "images", "persons"])
                summed = table.groupby(list(sources), as_index=False)[["images", "persons"]].sum()
                return summed.sort_values(list(sources), kind="stable").reset_index(drop=True)
        return self._table(tuple(sources), original)


def _counts(source: LabelStore | Counts) -> Counts:
    return source if isinstance(source, Counts) else Counts(source)


def overview(source: LabelStore | Counts) -> dict[str, int]:
    """Headline numbers: images, labelled images, eval images, people, corrections, changed labels."""
    counts = _counts(source)
    store = counts.store
    labelled = counts.count_by([counts.schema.names[0]])
    n_items, n_eval = counts.item_counts()
    return {
        "images": n_items,
        "labelled": int(labelled["images"].sum()),
        "eval": n_eval,
        "people": int(counts._once("person_image_counts")["persons"].sum()),
        "corrections": store.n_corrections(),
        "changed_labels": int(sum(counts._once("changed_counts").values())),
    }


def _sources(schema: Schema, targets: list[str]) -> list[str]:
    """Stored attributes behind the targets, once each, in order."""
    out: list[str] = []
    for target in targets:
        source = schema.target_source(target)
        if source not in out:
            out.append(source)
    return out


def _derive(schema: Schema, frame: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """Add binned targets (as class names) to a count_by frame of their stored sources."""
    frame = frame.copy()
    for binned in schema.binned:
        if binned.name in targets and len(frame):
            frame[binned.name] = [binned.classes[c] for c in binned.codes(frame[binned.source])]
    return frame


def grouped_counts(source: LabelStore | Counts, targets: list[str], *, original: bool = False) -> pd.DataFrame:
    """Images and persons per combination of targets (stored or binned), in class order.

    Columns: the targets, ``images``, ``persons``. Empty combinations are left out.
    """
    counts = _counts(source)
    key = ("grouped", tuple(targets), original)
    memo = counts._per_ingest if original else counts._memo  # original labels change only with an ingest
    if key not in memo:
        memo[key] = _grouped(counts, targets, original)
    return memo[key]


def _grouped(counts: Counts, targets: list[str], original: bool) -> pd.DataFrame:
    schema = counts.schema
    raw = _derive(schema, counts.count_by(_sources(schema, targets), original=original), targets)
    if raw.empty:
        return pd.DataFrame(columns=[*targets, "images", "persons"])
    out = raw.groupby(targets, sort=False, as_index=False)[["images", "persons"]].sum()
    # Class order (wear, incorrect, not_wear), not alphabetical; integer attributes sort by value.
    rank = {t: out[t].map(_class_order(schema, t)).fillna(out[t] if out[t].dtype.kind in "iuf" else 0)
            for t in targets}
    order = pd.DataFrame(rank).sort_values(targets, kind="stable").index
    return out.loc[order].reset_index(drop=True)


def _class_order(schema: Schema, target: str) -> dict[Any, int]:
    """Class name -> position for categorical targets; {} for integer attributes."""
    if target in schema.names and schema.attribute(target).kind == "integer":
        return {}
    return {name: i for i, name in enumerate(schema.target_classes(target))}


def _filter(values: dict[str, Any], original: bool = False) -> dict[str, Any]:
    """``select_items`` keyword arguments for images whose targets have these values."""
    labels = {k: int(v) if isinstance(v, np.integer) else v for k, v in values.items()}
    return {"labels": labels, "original": original}


def target_counts(source: LabelStore | Counts, target: str) -> pd.DataFrame:
    """Original vs current image counts per class of one target.

    Columns: ``value``, ``original``, ``current``, ``persons`` (current), ``filter_original``,
    ``filter_current``. Every class of the target appears, with 0 where it has no image.
    """
    counts = _counts(source)
    schema = counts.schema
    current = grouped_counts(counts, [target]).set_index(target)
    original = grouped_counts(counts, [target], original=True).set_index(target)
    values = list(schema.target_classes(target))
    out = pd.DataFrame({
        "value": values,
        "original": [int(original["images"].get(v, 0)) for v in values],
        "current": [int(current["images"].get(v, 0)) for v in values],
        "persons": [int(current["persons"].get(v, 0)) for v in values],
    })
    out["filter_original"] = [_filter({target: v}, original=True) for v in values]
    out["filter_current"] = [_filter({target: v}) for v in values]
    return out


def class_counts(source: LabelStore | Counts) -> pd.DataFrame:
    """The combined classes (18 for the competition): ``class``, ``name``, ``original``, ``current``,
    ``persons``, ``filter``. Every class appears, with 0 where it is empty."""
    counts = _counts(source)
    schema = counts.schema
    targets = list(schema.class_attributes)
    names = schema.class_names()
    rows = []
    for original in (False, True):
        grouped = grouped_counts(counts, targets, original=original)
        codes = {t: grouped[t].map(_class_order(schema, t)).to_numpy() for t in targets} if len(grouped) else {}
        classes = schema.encode_class(codes) if len(grouped) else np.array([], dtype=np.int64)
        rows.append(pd.DataFrame({"class": classes, "images": grouped["images"].to_numpy(),
                                  "persons": grouped["persons"].to_numpy()}))
    current, original = (r.set_index("class") for r in rows)
    decoded = schema.decode_class(np.arange(len(names)))
    return pd.DataFrame({
        "class": np.arange(len(names)),
        "name": names,
        "original": [int(original["images"].get(k, 0)) for k in range(len(names))],
        "current": [int(current["images"].get(k, 0)) for k in range(len(names))],
        "persons": [int(current["persons"].get(k, 0)) for k in range(len(names))],
        "filter": [_filter({t: schema.target_classes(t)[int(decoded[t][k])] for t in targets})
                   for k in range(len(names))],
    })


def integer_histogram(source: LabelStore | Counts, attribute: str) -> pd.DataFrame:
    """Persons and images per value of an integer attribute (current labels), every value between
    the smallest and largest present: ``value``, ``persons``, ``images``, ``filter``."""
    counts = _counts(source).count_by([attribute])
    if counts.empty:
        return pd.DataFrame(columns=["value", "persons", "images", "filter"])
    counts = counts.set_index(attribute)
    values = np.arange(int(counts.index.min()), int(counts.index.max()) + 1)
    return pd.DataFrame({
        "value": values,
        "persons": [int(counts["persons"].get(v, 0)) for v in values],
        "images": [int(counts["images"].get(v, 0)) for v in values],
        "filter": [{"ranges": {attribute: (int(v), int(v))}, "original": False} for v in values],
    })


def bin_edges(source: LabelStore | Counts, attribute: str) -> list[int]:
    """The bin edges defined on an integer attribute (``age`` -> [30, 60]); [] when none."""
    return [e for b in _counts(source).schema.binned if b.source == attribute for e in b.edges]


def heatmap(source: LabelStore | Counts, rows: str, columns: str) -> pd.DataFrame:
    """Persons per (row class, column class) of two targets, current labels, every cell present.

    Columns: ``row``, ``column``, ``persons``, ``images``, ``filter`` (long form; pivot to draw).
    """
    counts = _counts(source)
    schema = counts.schema
    grouped = grouped_counts(counts, [rows, columns]).set_index([rows, columns])
    cells = []
    for row in schema.target_classes(rows):
        for column in schema.target_classes(columns):
            key = (row, column)
            found = key in grouped.index
            cells.append({"row": row, "column": column,
                          "persons": int(grouped.at[key, "persons"]) if found else 0,
                          "images": int(grouped.at[key, "images"]) if found else 0,
                          "filter": _filter({rows: row, columns: column})})
    return pd.DataFrame(cells)


def images_per_person(source: LabelStore | Counts) -> pd.DataFrame:
    """How many people have n images: ``images`` (per person), ``persons``."""
    out = _counts(source)._once("person_image_counts")
    if out.empty:
        return pd.DataFrame(columns=["images", "persons"])
    return pd.DataFrame({"images": out["images"].to_numpy(dtype=int), "persons": out["persons"].to_numpy(dtype=int)})


def corrections_by_attribute(source: LabelStore | Counts) -> pd.DataFrame:
    """Per stored attribute: ``corrections`` logged (reverts excluded), ``reverts``, ``changed_images``
    (labelled images whose current value differs from the original now), ``filter`` (those images)."""
    counts = _counts(source)
    schema = counts.schema
    logged = counts._once("correction_counts").set_index("attribute")
    changed = counts._once("changed_counts")
    rows = []
    for name in schema.names:
        found = name in logged.index
        rows.append({"attribute": name, "corrections": int(logged.at[name, "corrections"]) if found else 0,
                     "reverts": int(logged.at[name, "reverts"]) if found else 0,
                     "changed_images": changed.get(name, 0), "filter": {"corrected": name}})
    return pd.DataFrame(rows)


def has_groups(source: LabelStore | Counts) -> bool:
    """True when some person holds more than one image: only then is a person panel (all images of
    this person) worth showing; in a folder-per-class dataset every image is its own person."""
    counts = images_per_person(source)
    return bool(((counts["images"] > 1) & (counts["persons"] > 0)).any())
