"""Label schema: which attributes a dataset has, their classes, scope and the class encoding.

The competition preset and generic datasets are both plain `Schema` values; every other module
(ingest, store, trainer, scoring, dashboard) reads attributes from here instead of hard-coding them.

Conventions
-----------
* Categorical labels are stored and shown as class *names* (``"wear"``, ``"female"``); integer
  attributes (``age``) as ints. Codes (0..K-1) are the index of the name in ``Attribute.classes``.
* A *binned* attribute (``age_group``) is derived from an integer attribute by ``edges``:
  ``group = number of edges <= value``. Moving the old-age threshold to 58 for training is
  ``schema.with_bins("age_group", (30, 58))``: stored ages never change.
* ``class`` is a mixed-radix code over ``class_attributes`` (first is most significant):
  for the competition, ``mask*6 + gender*3 + age_group`` exactly as the organisers encode it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

Scope = Literal["image", "person"]


class SchemaError(ValueError):
    """A label value or schema definition is invalid; the message says which and why."""


@dataclass(frozen=True)
class Attribute:
    """One stored label column.

    kind ``categorical`` has ``classes``; kind ``integer`` is a whole number in [minimum, maximum].
    scope ``person`` means every image of a person shares the value and corrections fan out.
    """

    name: str
    scope: Scope = "image"
    kind: Literal["categorical", "integer"] = "categorical"
    classes: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    aliases: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    # Two classes photographed once each per person, so a label error exchanges them (``core.scoring``'s swap
    # test): the competition's incorrect / not_wear. None: no such pair.
    swap_pair: tuple[str, str] | None = None

    def parse(self, raw: Any) -> str | int:
        """Validate one raw value (from a CSV, a form, a corrections file) and return its stored form."""
        if raw is None or (isinstance(raw, float) and np.isnan(raw)):
            raise SchemaError(f"{self.name}: missing value")
        if self.kind == "integer":
            text = str(raw).strip()
            try:
                number = float(text)
            except ValueError:
                raise SchemaError(f"{self.name}: {raw!r} is not a number") from None
            if not np.isfinite(number) or not number.is_integer():
                raise SchemaError(f"{self.name}: {raw!r} is not a whole number")
            value = int(number)
            if self.minimum is not None and value < self.minimum:
                raise SchemaError(f"{self.name}: {value} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise SchemaError(f"{self.name}: {value} is above the maximum {self.maximum}")
            return value
        text = str(raw).strip()
        text = self.aliases.get(text.lower(), text)
        if text not in self.classes:
            raise SchemaError(f"{self.name}: {raw!r} is not one of {', '.join(self.classes)}")
        return text

    def code(self, value: str) -> int:
        return self.classes.index(value)


@dataclass(frozen=True)
class Binned:
    """A categorical attribute derived from an integer one: ``code = sum(value >= edge)``."""

    name: str
    source: str
    edges: tuple[int, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        bounds = list(self.edges)
        names = [f"<{bounds[0]}"]
        names += [f"{lo}-{hi - 1}" for lo, hi in zip(bounds, bounds[1:])]
        names.append(f">={bounds[-1]}")
        return tuple(names)

    def codes(self, values: np.ndarray | pd.Series) -> np.ndarray:
        return np.searchsorted(np.asarray(self.edges), np.asarray(values, dtype=np.int64), side="right")

    def bounds(self, value: Any) -> tuple[int | None, int | None]:
        """The inclusive range (low, high) of source values in a bin, given by class name or code; None where the
        bin is open (``<30``: (None, 29), ``30-59``: (30, 59), ``>=60``: (60, None))."""
        code = self.classes.index(value) if value in self.classes else int(value)
        low = self.edges[code - 1] if code > 0 else None
        high = self.edges[code] - 1 if code < len(self.edges) else None
        return low, high


@dataclass(frozen=True)
class Schema:
    """A dataset's labels: stored attributes, derived bins, and the combined class encoding."""

    name: str
    attributes: tuple[Attribute, ...]
    binned: tuple[Binned, ...] = ()
    class_attributes: tuple[str, ...] = ()

    # ---- lookup -------------------------------------------------------------------------------
    def attribute(self, name: str) -> Attribute:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise SchemaError(f"unknown attribute {name!r}; this dataset has {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def scope(self, name: str) -> Scope:
        return self.attribute(name).scope

    def target_classes(self, name: str) -> tuple[str, ...]:
        """Class names of a categorical target (stored categorical or binned)."""
        for binned in self.binned:
            if binned.name == name:
                return binned.classes
        attribute = self.attribute(name)
        if attribute.kind != "categorical":
            raise SchemaError(f"{name} is not categorical; use its binned form")
        return attribute.classes

    def class_name(self, target: str, value: Any) -> Any:
        """A class of ``target`` named: a code (0, "2", 2.0) -> its class name; names pass through, and so do
        values of targets without classes (an integer attribute) and values that are not a class (None for None)."""
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return None
        try:
            classes = self.target_classes(target)
        except SchemaError:
            return value
        if str(value) in classes:
            return str(value)
        try:
            return classes[int(float(value))]
        except (ValueError, IndexError):
            return value

    @property
    def targets(self) -> list[str]:
        """Categorical prediction targets, in class-encoding order first (the model's heads)."""
        binned_sources = {b.source for b in self.binned}
        names = [a.name for a in self.attributes if a.kind == "categorical"]
        names += [b.name for b in self.binned]
        ordered = [n for n in self.class_attributes if n in names]
        return ordered + [n for n in names if n not in ordered and n not in binned_sources]

    def target_source(self, target: str) -> str:
        """The stored attribute a target comes from (``age_group`` -> ``age``)."""
        for binned in self.binned:
            if binned.name == target:
                return binned.source
        return target

    def swap_codes(self, target: str) -> tuple[int, int] | None:
        """Class indices of the target's ``swap_pair`` (competition mask: (1, 2)), or None without one."""
        if self.target_source(target) != target:
            return None
        attribute = self.attribute(target)
        if attribute.swap_pair is None:
            return None
        missing = [c for c in attribute.swap_pair if c not in attribute.classes]
        if missing:
            raise SchemaError(f"{target}: swap_pair names {', '.join(missing)}, not one of {', '.join(attribute.classes)}")
        return attribute.code(attribute.swap_pair[0]), attribute.code(attribute.swap_pair[1])

    @property
    def n_classes(self) -> int:
        return int(np.prod([len(self.target_classes(n)) for n in self.class_attributes])) if self.class_attributes else 0

    def class_names(self) -> list[str]:
        """Human names of the combined classes, e.g. ``wear/male/<30`` for class 0."""
        grids = np.meshgrid(*[np.arange(len(self.target_classes(n))) for n in self.class_attributes], indexing="ij")
        flat = [g.ravel() for g in grids]
        return [
            "/".join(self.target_classes(n)[int(flat[i][k])] for i, n in enumerate(self.class_attributes))
            for k in range(self.n_classes)
        ]

    # ---- encoding ------------------------------------------------------------------------------
    def codes(self, labels: pd.DataFrame) -> dict[str, np.ndarray]:
        """Integer codes (int64, shape (n,)) for every target; labels hold stored values."""
        out: dict[str, np.ndarray] = {}
        for attribute in self.attributes:
            if attribute.kind == "categorical":
                lookup = {c: i for i, c in enumerate(attribute.classes)}
                out[attribute.name] = labels[attribute.name].map(lookup).to_numpy(dtype=np.int64)
        for binned in self.binned:
            out[binned.name] = binned.codes(labels[binned.source]).astype(np.int64)
        return out

    def encode_class(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """Mixed-radix class code over ``class_attributes`` (competition: mask*6 + gender*3 + age_group)."""
        result = np.zeros(len(next(iter(codes.values()))), dtype=np.int64)
        for name in self.class_attributes:
            result = result * len(self.target_classes(name)) + codes[name]
        return result

    def decode_class(self, classes: np.ndarray) -> dict[str, np.ndarray]:
        rest = np.asarray(classes, dtype=np.int64).copy()
        out: dict[str, np.ndarray] = {}
        for name in reversed(self.class_attributes):
            k = len(self.target_classes(name))
            out[name] = rest % k
            rest //= k
        return {n: out[n] for n in self.class_attributes}

    def add_derived(self, labels: pd.DataFrame) -> pd.DataFrame:
        """Return a copy with binned columns and ``class`` (codes) added."""
        out = labels.copy()
        codes = self.codes(labels)
        for binned in self.binned:
            out[binned.name] = codes[binned.name]
        if self.class_attributes:
            out["class"] = self.encode_class(codes)
        return out

    # ---- variants and serialisation --------------------------------------------------------------
    def with_bins(self, name: str, edges: tuple[int, ...] | list[int]) -> Schema:
        """Same schema with other bin edges for one binned attribute (stored values untouched)."""
        edges = tuple(int(e) for e in edges)
        if list(edges) != sorted(set(edges)):
            raise SchemaError(f"bin edges for {name} must be strictly increasing, got {edges}")
        binned = tuple(replace(b, edges=edges) if b.name == name else b for b in self.binned)
        if binned == self.binned and all(b.name != name for b in self.binned):
            raise SchemaError(f"{name} is not a binned attribute")
        return replace(self, binned=binned)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "attributes": [
                {
                    "name": a.name,
                    "scope": a.scope,
                    "kind": a.kind,
                    "classes": list(a.classes),
                    "minimum": a.minimum,
                    "maximum": a.maximum,
                    "aliases": a.aliases,
                    # written only where it differs from what from_dict infers, so the JSON (and every snapshot
                    # hash taken over it) of schemas saved before swap_pair existed stays the same
                    **({"swap_pair": list(a.swap_pair) if a.swap_pair else None}
                       if a.swap_pair != _legacy_swap_pair(self.name, {"name": a.name, "classes": a.classes}) else {}),
                }
                for a in self.attributes
            ],
            "binned": [{"name": b.name, "source": b.source, "edges": list(b.edges)} for b in self.binned],
            "class_attributes": list(self.class_attributes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls(
            name=data["name"],
            attributes=tuple(
                Attribute(
                    name=a["name"],
                    scope=a["scope"],
                    kind=a["kind"],
                    classes=tuple(a["classes"]),
                    minimum=a.get("minimum"),
                    maximum=a.get("maximum"),
                    aliases=dict(a.get("aliases") or {}),
                    swap_pair=tuple(a["swap_pair"]) if a.get("swap_pair") else _legacy_swap_pair(data["name"], a),
                )
                for a in data["attributes"]
            ),
            binned=tuple(Binned(b["name"], b["source"], tuple(b["edges"])) for b in data.get("binned", [])),
            class_attributes=tuple(data.get("class_attributes", [])),
        )

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls.from_dict(json.loads(text))


def _legacy_swap_pair(schema_name: str, attribute: dict[str, Any]) -> tuple[str, str] | None:
    """Schemas saved before ``swap_pair`` existed (stores, snapshots): the competition's mask gets its pair back."""
    if "swap_pair" in attribute or schema_name != "mask" or attribute["name"] != "mask":
        return None
    return ("incorrect", "not_wear") if tuple(attribute["classes"]) == MASK_CLASSES else None


MASK_CLASSES = ("wear", "incorrect", "not_wear")
GENDER_CLASSES = ("male", "female")
AGE_EDGES = (30, 60)

COMPETITION = Schema(
    name="mask",
    attributes=(
        Attribute("mask", scope="image", classes=MASK_CLASSES,
                  aliases={"mask": "wear", "incorrect_mask": "incorrect", "normal": "not_wear",
                           "0": "wear", "1": "incorrect", "2": "not_wear"},
                  swap_pair=("incorrect", "not_wear")),
        Attribute("gender", scope="person", classes=GENDER_CLASSES, aliases={"0": "male", "1": "female"}),
        Attribute("age", scope="person", kind="integer", minimum=0, maximum=120),
    ),
    binned=(Binned("age_group", "age", AGE_EDGES),),
    class_attributes=("mask", "gender", "age_group"),
)

# File stems of a person folder in the competition layout and the mask state each one shows.
MASK_FILES = {
    "mask1": "wear", "mask2": "wear", "mask3": "wear", "mask4": "wear", "mask5": "wear",
    "incorrect_mask": "incorrect", "normal": "not_wear",
}


def generic_schema(classes: dict[str, list[str]], name: str = "generic") -> Schema:
    """Schema for a generic dataset: one image-scope categorical attribute per label column.

    ``class`` encodes all attributes in the given order (a single attribute: class = its code).
    """
    if not classes:
        raise SchemaError("a dataset needs at least one label column")
    attributes = []
    for attr_name, values in classes.items():
        values = sorted({str(v) for v in values})
        if len(values) < 2:
            raise SchemaError(f"label column {attr_name!r} has fewer than two classes: {values}")
        attributes.append(Attribute(attr_name, scope="image", classes=tuple(values)))
    return Schema(name=name, attributes=tuple(attributes), class_attributes=tuple(classes))
