"""Answer keys: what a model's numbers are measured against, frozen and hashed like a label snapshot.

An answer key is a table of images (path, person, content hash) with the labels a prediction is judged
against and a ``reviewed`` mark (the image, or its person, has a review verdict or a correction). Two kinds:

* ``validation``: the current labels of a set of people of the store's own dataset (an experiment's
  validation people; ``people_key`` builds it from the people a run did not train on);
* ``heldout``: a labelled set outside the store (``--heldout CSV``: ``path`` relative to the CSV's folder, an
  optional ``person``, and one column per stored attribute, named as in the schema or ``true_<name>`` as in a
  demo's truth.csv).

The file is ``<db>.d/answer_keys/<hash16>.csv`` + ``.json``; the hash covers the schema, the kind, the image
root and the CSV bytes, so the same labels of the same images are the same key, and a changed label is another
key. Numbers measured on different keys are never put side by side (``train.compare``). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from core.files import csv_safe, replacing
from core.store import LabelStore, StoreError, now, read_snapshot
from core.store.snapshots import verified_table

KINDS = ("validation", "heldout")


def people_hash(people: Any) -> str:
    """The identity of a set of people (an experiment's split): sha256 of their sorted keys."""
    return hashlib.sha256("\n".join(sorted(str(p) for p in people)).encode()).hexdigest()


def reviewed_items(store: LabelStore, labels: pd.DataFrame) -> pd.Series:
    """Per row of ``labels`` (path, person): whether the image or its person has a review verdict or a correction."""
    targets: set[tuple[str, str]] = set()
    for table in (store.reviews(), store.history()):
        if len(table):
            targets |= set(zip(table["target_kind"].astype(str), table["target"].astype(str)))
    images = {t for kind, t in targets if kind == "image"}
    people = {t for kind, t in targets if kind == "person"}
    return pd.Series([p in images or str(q) in people for p, q in zip(labels["path"], labels["person"])],
                     index=labels.index, dtype=bool)


def write_answer_key(store: LabelStore, table: pd.DataFrame, *, kind: str, root: str | os.PathLike[str],
                     description: str = "") -> tuple[Path, dict[str, Any]]:
    """Freeze ``table`` (path, person, hash, the schema's stored attributes, reviewed) as an answer key of
    ``kind`` whose images lie under ``root``; record it in the store. Returns (file, metadata)."""
    if kind not in KINDS:
        raise ValueError(f"an answer key is {' or '.join(KINDS)}, not {kind!r}")
    schema = store.schema
    columns = ["path", "person", "hash", *schema.names, "reviewed"]
    frame = table[columns].sort_values("path").reset_index(drop=True).copy()
    frame["reviewed"] = frame["reviewed"].astype(int)
    frame["person"] = frame["person"].fillna("").astype(str)
    if frame.empty:
        raise StoreError("an answer key needs at least one labelled image")
    text = csv_safe(frame).to_csv(index=False, lineterminator="\n")
    root = str(Path(root).resolve())
    digest = hashlib.sha256("\n".join([schema.to_json(), kind, root, text]).encode()).hexdigest()
    people = sorted(set(frame["person"]) - {""}) or sorted(frame["path"])
    meta = {"hash": digest, "kind": kind, "root": root, "schema": schema.to_dict(), "created_at": now(),
            "n_items": len(frame), "n_people": len(people), "n_reviewed": int(frame["reviewed"].sum()),
            "people_hash": people_hash(people), "description": description}
    folder = store.files_dir / "answer_keys"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest[:16]}.csv"
    if not path.exists():
        with replacing(path) as tmp:
            tmp.write_bytes(text.encode())
        with replacing(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
    store.save_answer_key(digest, str(path.resolve()), kind=kind, people_hash=people_hash(people),
                          n_items=len(frame), n_people=len(people), n_reviewed=int(frame["reviewed"].sum()),
                          description=description)
    return path.resolve(), meta


def read_answer_key(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An answer key file: (table with the schema's derived columns, metadata); an edited file is refused."""
    path = Path(path)
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        text = path.read_bytes().decode()
    except (OSError, ValueError) as error:
        raise StoreError(f"{path}: not a readable answer key ({error})") from None
    return verified_table(path, text, meta, meta["kind"], meta["root"]), meta


def key_path(store: LabelStore, key: str) -> Path:
    """An answer key's file from its hash (or a unique prefix of at least 8 characters) or its path."""
    if Path(key).suffix == ".csv" and Path(key).exists():
        return Path(key).resolve()
    return Path(store.answer_key(key)["path"])


def people_key(store: LabelStore, people: Any, *, labels: str = "current", snapshot: str | None = None,
               description: str = "") -> tuple[Path, dict[str, Any]]:
    """A validation answer key of ``people``' images: their ``labels`` (current, original, or the labels of
    ``snapshot`` with ``labels="snapshot"``), reviewed units marked."""
    if labels == "snapshot":
        if snapshot is None:
            raise ValueError("labels='snapshot' needs the snapshot file")
        table, _ = read_snapshot(snapshot)
    else:
        table = store.current_labels(original=labels == "original")
    wanted = {str(p) for p in people}
    table = table[table["person"].astype(str).isin(wanted)].copy()
    if table.empty:
        raise StoreError("none of the given people has a labelled image in the store")
    table["reviewed"] = reviewed_items(store, table)
    return write_answer_key(store, table, kind="validation", root=store.root, description=description)


def heldout_key(store: LabelStore, csv: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """A held-out answer key from a labelled CSV outside the store (see the module doc for its columns).
    Refuses (one line naming the file and row) a missing column, an unknown label or a missing image."""
    from core.images import content_hash

    csv = Path(csv)
    if not csv.is_file():
        raise StoreError(f"{csv}: no such held-out CSV")
    schema = store.schema
    try:
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as error:
        raise StoreError(f"{csv}: not a readable CSV ({error})") from None
    if "path" not in raw:
        raise StoreError(f"{csv}: needs a path column (image paths relative to {csv.parent})")
    table = pd.DataFrame({"path": raw["path"], "person": raw["person"] if "person" in raw else ""})
    for name in schema.names:
        column = name if name in raw else f"true_{name}" if f"true_{name}" in raw else None
        if column is None:
            raise StoreError(f"{csv}: needs a {name} column (or true_{name}) with the true labels")
        attribute = schema.attribute(name)
        values = raw[column].str.strip()
        for line, value in enumerate(values, start=2):
            if attribute.kind == "categorical" and value not in attribute.classes:
                raise StoreError(f"{csv}:{line}: {name} {value!r} is not one of {', '.join(attribute.classes)}")
            if attribute.kind == "integer" and not value.lstrip("-").isdigit():
                raise StoreError(f"{csv}:{line}: {name} {value!r} is not a whole number")
        table[name] = values.astype(int) if attribute.kind == "integer" else values
    hashes = []
    for line, path in enumerate(table["path"], start=2):
        image = csv.parent / path
        if not path or not image.is_file():
            raise StoreError(f"{csv}:{line}: image {path!r} not found under {csv.parent}")
        hashes.append(content_hash(image))
    table["hash"] = hashes
    table["reviewed"] = False
    return write_answer_key(store, table, kind="heldout", root=csv.parent, description=f"held out: {csv.name}")


def describe(meta: dict[str, Any]) -> str:
    """An answer key in words: "validation key 1a2b3c4d: 96 people, 672 images (14 reviewed)"."""
    reviewed = f" ({meta['n_reviewed']} reviewed)" if meta.get("kind") == "validation" else ""
    return (f"{meta['kind']} key {str(meta['hash'])[:8]}: {meta['n_people']} people, {meta['n_items']} "
            f"images{reviewed}")
