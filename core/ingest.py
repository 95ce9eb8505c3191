"""Dataset ingest: scan a dataset root, inspect every image once, register it in the label store.

Formats (``fmt``; ``None`` detects them in this order):

``competition``  ``ROOT/train/train.csv`` (id,gender,race,age,path) + ``ROOT/train/images/<folder>/`` with
                 mask1..mask5, incorrect_mask, normal as .jpg/.jpeg/.png; optionally ``ROOT/eval/info.csv``
                 (ImageID,ans) + ``ROOT/eval/images/<ImageID>`` (split ``eval``, unlabelled). People are
                 keyed by folder name: one csv id can name two people.
``csv``          a CSV file (or a folder holding ``labels.csv``/``train.csv``, the dataset root): a path
                 column relative to the CSV's folder, and label columns.
``folder``       ``ROOT/<class>/<images>`` (subfolders count as the class); one attribute ``label``; each
                 image is its own person. Split folders (``ROOT/train/<class>``) are not understood.

Nothing is written until the scan is complete: fatal problems raise ``IngestError`` first, so the
store is unchanged. Everything else is a per-file or per-row problem ``(path, reason)``: that file
or person is left out and the rest ingests. Hidden and macOS ``._*`` files are skipped silently.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.export import read_table
from core.images import PathRefused, inspect_many, resolve_inside
from core.schema import COMPETITION, MASK_FILES, Schema, SchemaError, generic_schema
from core.store import IngestReport, LabelStore, StoreError, quote

COMPETITION_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_SUFFIXES = frozenset({*COMPETITION_SUFFIXES, ".bmp", ".gif", ".webp", ".tif", ".tiff"})
FOLDER_NAME = re.compile(r"^(?P<id>[^_]+)_(?P<gender>[^_]+)_(?P<race>.+)_(?P<age>[^_]+)$")
EXPECTED_FILES = "mask1-mask5, incorrect_mask, normal as .jpg, .jpeg or .png"
COMPETITION_LABEL_COLUMNS = ("id", "gender", "age", "path")  # other train.csv columns (race, annotator, ...) are metadata
# A CSV column with one of these names is metadata, not a label, unless --label-columns names it: who, where and
# when an item was labelled or uploaded (core.patterns slices the labels by them).
META_COLUMNS = frozenset({
    "annotator", "annotators", "labeler", "labeller", "labeled_by", "labelled_by", "rater", "worker", "worker_id",
    "annotator_id", "operator", "reviewer", "site", "site_id", "center", "centre", "hospital", "clinic", "location",
    "batch", "batch_id", "upload", "upload_batch", "upload_id", "source", "dataset", "session", "shift", "device",
    "camera", "scanner", "date", "time", "timestamp", "created", "created_at", "uploaded_at", "split_source",
    "origin", "vendor", "study"})


class IngestError(StoreError):
    """A dataset cannot be ingested at all; raised before anything is written."""


@dataclass
class Candidate:
    """One image file the layout names, with what the layout says about it (before inspection)."""

    path: str  # relative to the dataset root, forward slashes: the item's key in the store
    file: str  # real path, already confined to the root (str: pathlib costs ~1 s per 20k files)
    person: str | None
    split: str
    source_id: str | None
    labels: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, str] | None = None  # item metadata kept at ingest (store v4): not labels


@dataclass
class Scan:
    """A dataset's layout read without opening any image."""

    fmt: str
    root: Path
    schema: Schema
    candidates: list[Candidate] = field(default_factory=list)
    persons: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # key -> (source_id, info JSON)
    problems: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class IngestResult:
    """What an ingest did: the store's report, every problem (path, reason), timing."""

    report: IngestReport
    problems: list[tuple[str, str]]
    root: Path
    fmt: str
    n_persons: int
    n_files: int  # files opened and decoded
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds of scan, inspect, store

    def summary(self) -> str:
        """One line: counts, problems and the inspection rate."""
        r = self.report
        rate = self.n_files / self.seconds if self.seconds > 0 else float("inf")
        return (f"ingested {r.n_items} images of {self.n_persons} people from {self.root} ({self.fmt}):"
                f" {r.n_new} new, {r.n_labelled} labelled, {r.n_unlabelled} unlabelled;"
                f" {len(self.problems)} problem(s); {self.seconds:.1f} s ({rate:.0f} images/s)")


def ingest(root: str | os.PathLike[str], store: LabelStore, fmt: str | None = None,
           label_columns: list[str] | None = None, path_column: str = "path", person_column: str | None = None,
           workers: int = 2, meta_columns: list[str] | None = None) -> IngestResult:
    """Scan ``root``, inspect every image (``workers`` processes), register the result in ``store``.

    Idempotent: re-ingesting the same root adds nothing and keeps every correction (the store
    never rewrites an original label; a label that changed in the source becomes a problem).
    Raises ``IngestError`` for fatal problems before writing anything.
    """
    started = time.perf_counter()
    root = Path(root)
    if not root.exists():
        raise IngestError(f"{root}: no such file or folder")
    fmt = fmt or detect_format(root)
    if fmt == "competition":
        scan = scan_competition(root)
    elif fmt == "csv":
        scan = scan_csv(root, label_columns, path_column, person_column, meta_columns)
    elif fmt == "folder":
        scan = scan_folder(root)
    else:
        raise IngestError(f"unknown format {fmt!r}; use competition, csv or folder")
    _check_store_accepts(store, scan)
    phases = {"scan": time.perf_counter() - started}
    if not scan.candidates:
        raise IngestError(f"{root}: empty dataset, no image files found{_first_problems(scan.problems)}")

    problems = [(_storable(path), _storable(reason)) for path, reason in scan.problems]
    rows = []
    inspected = inspect_many([c.file for c in scan.candidates], workers)
    phases["inspect"] = time.perf_counter() - started - phases["scan"]
    for candidate, facts in zip(scan.candidates, inspected):
        if isinstance(facts, str):
            problems.append((candidate.path, facts))
            continue
        rows.append({"path": candidate.path, "person": candidate.person, "split": candidate.split,
                     "width": facts.width, "height": facts.height, "bytes": facts.bytes, "hash": facts.hash,
                     "source_id": candidate.source_id,
                     "meta": json.dumps(candidate.meta, ensure_ascii=False) if candidate.meta else None,
                     **{name: candidate.labels.get(name) for name in scan.schema.names}})
    if not any(row["split"] == "train" for row in rows):
        raise IngestError(f"{root}: no readable labelled image{_first_problems(problems)}")
    items = pd.DataFrame(rows, dtype=object)  # plain objects: iterating arrow-backed strings is slow
    used = sorted(set(items["person"].dropna()))
    persons = pd.DataFrame([(key, *scan.persons[key]) for key in used], columns=["person", "source_id", "info"])
    report = store.ingest(root=scan.root, schema=scan.schema, dataset_format=scan.fmt, persons=persons,
                          items=items, problems=problems)
    # The store adds its own problems (labels that changed since the first ingest): report those too.
    stored = store.problems()
    stored = stored[stored["kind"] == "ingest"]
    seconds = time.perf_counter() - started
    phases["store"] = seconds - phases["scan"] - phases["inspect"]
    return IngestResult(report, list(stored[["path", "reason"]].itertuples(index=False, name=None)), scan.root,
                        scan.fmt, len(used), len(scan.candidates), seconds, phases)


def detect_format(root: Path) -> str:
    """``competition`` if ROOT has train/ or eval/ in that layout, ``csv`` for a CSV, else ``folder``."""
    if root.is_file():
        return "csv"
    if (root / "train" / "train.csv").exists() or (root / "train" / "images").is_dir() \
            or (root / "eval" / "info.csv").exists():
        return "competition"
    if (root / "labels.csv").is_file() or (root / "train.csv").is_file():
        return "csv"
    if any(entry.is_dir() and not _hidden(entry.name) for entry in os.scandir(root)):
        return "folder"
    raise IngestError(f"{root}: cannot tell the dataset layout (expected train/train.csv + train/images, a CSV,"
                      " or one folder per class); pass --format")


# ---- competition ---------------------------------------------------------------------------------------
def scan_competition(root: Path) -> Scan:
    """Read train.csv, check every person folder and list its images; eval images if present."""
    root = root.resolve()
    csv_path, images_dir = root / "train" / "train.csv", root / "train" / "images"
    if not csv_path.is_file():
        raise IngestError(f"{csv_path}: missing; the competition layout needs train/train.csv and train/images/")
    if not images_dir.is_dir():
        raise IngestError(f"{images_dir}: missing; the competition layout needs train/images/<person folder>/")
    for folder in ("train", "train/images", "eval", "eval/images"):
        try:  # a layout folder that is a symlink leading elsewhere would make every file "inside"
            resolve_inside(root, folder, root_is_real=True)
        except PathRefused as refused:
            raise IngestError(f"{root / folder}: {refused.reason}") from None
    table = _read_csv(csv_path, ("id", "gender", "race", "age", "path"))
    scan = Scan("competition", root, COMPETITION)
    listing = {e.name: e for e in os.scandir(images_dir) if not _hidden(e.name)}
    rows_by_folder: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for line, row in _rows(table):
        if not row["path"]:
            scan.problems.append((f"train/train.csv:{line}", "empty path column"))
        else:
            rows_by_folder.setdefault(row["path"], []).append((line, row))
    for folder in sorted(rows_by_folder):
        rows = rows_by_folder[folder]
        where = f"train/images/{folder}"
        line, row = rows[0]
        if any(other != row for _, other in rows[1:]):
            scan.problems.append((where, f"train.csv lines {', '.join(str(n) for n, _ in rows)} give different"
                                         " labels for this folder; person left out"))
            continue
        scan.problems += [(where, f"train.csv line {n} repeats line {line}; ignored") for n, _ in rows[1:]]
        reason = _person_problem(images_dir, listing.get(folder), folder, line, row)
        if reason:
            scan.problems.append((where, reason))
            continue
        labels = {"gender": COMPETITION.attribute("gender").parse(row["gender"].lower()),
                  "age": COMPETITION.attribute("age").parse(row["age"])}
        scan.persons[folder] = (row["id"], json.dumps({"race": row["race"], "line": line}))
        meta = {k: v for k, v in row.items() if k not in COMPETITION_LABEL_COLUMNS and v}
        before = len(scan.candidates)
        _scan_person(scan, folder, labels, row["id"])
        for candidate in scan.candidates[before:]:
            candidate.meta = meta or None
    for name, entry in sorted(listing.items()):
        if name in rows_by_folder or _undecodable(scan, f"train/images/{name}"):
            continue
        kind = "folder has no row in train/train.csv" if entry.is_dir() else "unexpected file in train/images"
        scan.problems.append((f"train/images/{entry.name}", f"{kind}; left out"))
    _scan_eval(scan)
    return scan


def _person_problem(images_dir: Path, entry: os.DirEntry[str] | None, folder: str, line: int,
                    row: dict[str, str]) -> str | None:
    """Why a train.csv row cannot be used (None if it can); ``entry``: the folder as listed, or None."""
    if "/" in folder or "\\" in folder or folder in (".", ".."):
        return f"train.csv line {line}: path must name one folder inside train/images"
    if entry is None or not entry.is_dir():
        return f"listed in train.csv line {line} but the folder does not exist"
    if entry.is_symlink():  # a plain name in a listed folder can only leave the root through a link
        try:
            resolve_inside(images_dir, folder)
        except PathRefused as refused:
            return f"train.csv line {line}: {refused.reason}"
    match = FOLDER_NAME.match(folder)
    if match is None:
        return "folder name does not match {id}_{gender}_{race}_{age}"
    errors = []
    for name, raw in (("gender", row["gender"].lower()), ("age", row["age"])):
        try:
            COMPETITION.attribute(name).parse(raw)
        except SchemaError as error:
            errors.append(str(error))
    if errors:
        return f"train.csv line {line}: {'; '.join(errors)}"
    differ = [f"{key} {match[key]!r} in the folder name, {row[key]!r} in the csv"
              for key in ("id", "gender", "race", "age") if _canonical(match[key]) != _canonical(row[key])]
    if differ:
        return f"folder name disagrees with train.csv line {line}: {'; '.join(differ)}"
    return None


def _scan_person(scan: Scan, folder: str, labels: dict[str, Any], source_id: str) -> None:
    """Add a person's seven images as candidates; missing, doubled and unexpected files as problems."""
    where = f"train/images/{folder}"
    by_stem: dict[str, list[os.DirEntry[str]]] = {}
    for entry in os.scandir(scan.root / where):
        if _hidden(entry.name) or _undecodable(scan, f"{where}/{entry.name}"):
            continue
        stem, _, suffix = entry.name.rpartition(".")
        if entry.is_file() and stem in MASK_FILES and f".{suffix.lower()}" in COMPETITION_SUFFIXES:
            by_stem.setdefault(stem, []).append(entry)
        else:
            scan.problems.append((f"{where}/{entry.name}",
                                  f"unexpected {'file' if entry.is_file() else 'entry'} in a person folder"
                                  f" (expected {EXPECTED_FILES}); left out"))
    for stem, mask in MASK_FILES.items():
        entries = sorted(by_stem.get(stem, []), key=lambda e: e.name)
        if not entries:
            scan.problems.append((f"{where}/{stem}", f"missing {stem} (no {stem}.jpg, .jpeg or .png)"))
        elif len(entries) > 1:
            names = ", ".join(e.name for e in entries)
            scan.problems.append((f"{where}/{stem}", f"{len(entries)} files for {stem} ({names}); neither is used"))
        else:
            _add(scan, f"{where}/{entries[0].name}", folder, "train", source_id, {**labels, "mask": mask},
                 entry=entries[0])


def _scan_eval(scan: Scan) -> None:
    """Register eval/info.csv's images (unlabelled); missing and unlisted files are problems."""
    info, images = scan.root / "eval" / "info.csv", scan.root / "eval" / "images"
    files = {e.name: e for e in os.scandir(images) if not _hidden(e.name)} if images.is_dir() else {}
    if not info.is_file():
        if files:
            scan.problems.append(("eval/info.csv", f"missing; the {len(files)} files in eval/images are left out"))
        return
    table = _read_csv(info, ("ImageID",), allow_empty=True)  # a dataset without eval images is fine
    listed: dict[str, int] = {}
    for line, row in _rows(table):
        image_id = row["ImageID"]
        where = f"eval/images/{image_id}"
        if not image_id:
            scan.problems.append((f"eval/info.csv:{line}", "empty ImageID"))
            continue
        if image_id in listed:
            scan.problems.append((where, f"eval/info.csv line {line} repeats line {listed[image_id]}; ignored"))
            continue
        listed[image_id] = line
        if image_id not in files:  # an ImageID naming a subfolder path must still stay inside eval/images
            try:
                found = resolve_inside(images, image_id).is_file()
            except PathRefused as refused:
                scan.problems.append((where, f"eval/info.csv line {line}: {refused.reason}"))
                continue
            if not found:
                scan.problems.append((where, f"listed in eval/info.csv line {line} but the file is missing"))
                continue
        _add(scan, where, None, "eval", image_id, {}, line=line, entry=files.get(image_id))
    scan.problems += [(f"eval/images/{name}", "not listed in eval/info.csv; left out")
                      for name in sorted(files) if name not in listed and not _undecodable(scan, f"eval/images/{name}")]


# ---- csv and folder ------------------------------------------------------------------------------------
def scan_csv(root: Path, label_columns: list[str] | None, path_column: str, person_column: str | None,
             meta_columns: list[str] | None = None) -> Scan:
    """A CSV of (path, labels...) rows; paths are relative to the CSV's folder and confined to it.

    Label columns: ``label_columns``, else every column but the path, the person and metadata. Metadata:
    ``meta_columns``, else every column that is neither a label, the path nor the person (by default the
    columns named in ``META_COLUMNS``, e.g. annotator, site, batch, source), kept per item (store v4)."""
    if root.is_file():
        csv_path = root
    else:
        found = [root / name for name in ("labels.csv", "train.csv") if (root / name).is_file()]
        if not found:
            raise IngestError(f"{root}: no labels.csv or train.csv here; pass the CSV file itself")
        csv_path = found[0]
    base = csv_path.parent.resolve()
    table = _read_csv(csv_path, (path_column, *([person_column] if person_column else [])))
    if label_columns is None:
        label_columns = [c for c in table.columns if c not in (path_column, person_column)
                         and c not in (meta_columns or ()) and str(c).strip().lower() not in META_COLUMNS]
    if meta_columns is None:
        meta_columns = [c for c in table.columns if c not in (path_column, person_column, *label_columns)]
    missing_meta = [c for c in meta_columns if c not in table.columns]
    if missing_meta:
        raise IngestError(f"{csv_path}: no metadata column(s) {', '.join(missing_meta)} (columns: {', '.join(table.columns)})")
    missing = [c for c in label_columns if c not in table.columns]
    if missing:
        raise IngestError(f"{csv_path}: no label column(s) {', '.join(missing)} (columns: {', '.join(table.columns)})")
    if not label_columns:
        raise IngestError(f"{csv_path}: no label column besides {path_column!r}; add one or name it with --label-columns")
    try:
        for column in label_columns:
            quote(column)  # the store's rule for column names, checked before the slow part
    except SchemaError as error:
        raise IngestError(f"{csv_path}: {error}") from None
    scan = Scan("csv", base, COMPETITION)  # the real schema is known once the rows are read
    seen: dict[str, int] = {}
    for line, row in _rows(table):
        if not row[path_column]:
            scan.problems.append((f"{csv_path.name}:{line}", f"empty {path_column}"))
            continue
        path = os.path.normpath(row[path_column]).replace(os.sep, "/")  # a/./b.jpg and a//b.jpg are a/b.jpg
        empty = [c for c in (*label_columns, *([person_column] if person_column else [])) if not row[c]]
        if path in seen:
            scan.problems.append((path, f"line {line} repeats line {seen[path]}; ignored"))
        elif empty:
            scan.problems.append((path, f"line {line}: empty {', '.join(empty)}; left out"))
        else:
            seen[path] = line
            if _add(scan, path, row[person_column] if person_column else path, "train", None,
                    {c: row[c] for c in label_columns}, line=line):
                scan.candidates[-1].meta = {str(c): row[c] for c in meta_columns if row[c]} or None
                scan.persons.setdefault(scan.candidates[-1].person,  # type: ignore[arg-type]
                                        (row[person_column] if person_column else None, json.dumps({"line": line})))
    if not scan.candidates:  # say so, rather than blame the label column for having no classes
        raise IngestError(f"{csv_path}: none of the {len(table)} row(s) names an image file under {base} (column "
                          f"{path_column!r}, paths relative to the CSV's folder){_first_problems(scan.problems)}")
    scan.schema = _generic(csv_path, {c: [x.labels[c] for x in scan.candidates] for c in label_columns})
    return scan


def scan_folder(root: Path) -> Scan:
    """One folder per class; every image file below a class folder is one item."""
    root = root.resolve()
    scan = Scan("folder", root, COMPETITION)  # replaced below once the classes are known
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if _hidden(entry.name):
            continue
        if _undecodable(scan, entry.name):
            continue
        if not entry.is_dir():
            if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                scan.problems.append((entry.name, "image outside a class folder; left out"))
            continue
        if entry.is_symlink():  # a class folder linking out of the root is not walked (nor its names listed)
            try:
                resolve_inside(root, entry.name, root_is_real=True)
            except PathRefused as refused:
                scan.problems.append((entry.name, f"class folder left out: {refused.reason}"))
                continue
        for directory, subdirs, names in os.walk(entry.path):
            subdirs[:] = sorted(d for d in subdirs if not _hidden(d))
            for name in sorted(n for n in names if not _hidden(n)):
                path = Path(directory, name).relative_to(root).as_posix()
                if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    scan.problems.append((path, "not an image file (by its extension); left out"))
                elif _add(scan, path, path, "train", None, {"label": entry.name}):  # symlinks are resolved
                    scan.persons[path] = (None, json.dumps({"class_folder": entry.name}))
                    sub = Path(directory).relative_to(entry.path).as_posix()
                    if sub != ".":  # ROOT/<class>/<folder>/...: the folder an image came in is metadata
                        scan.candidates[-1].meta = {"folder": sub}
    scan.schema = _generic(root, {"label": [c.labels["label"] for c in scan.candidates]})
    return scan


# ---- helpers -------------------------------------------------------------------------------------------
def _add(scan: Scan, path: str, person: str | None, split: str, source_id: str | None,
         labels: dict[str, Any], line: int | None = None, entry: os.DirEntry[str] | None = None) -> bool:
    """Append a candidate if its file is a regular file inside the root; else record why not.

    ``entry``: the file as listed in a folder already confined to the root; unless it is a symlink
    it needs no resolving (saves a realpath per image on the full dataset).
    """
    if _undecodable(scan, path):
        return False
    if entry is not None and not entry.is_symlink() and entry.is_file():
        scan.candidates.append(Candidate(path, entry.path, person, split, source_id, labels))
        return True
    where = "" if line is None else f"line {line}: "
    if _plainly_relative(path) and not os.path.lexists(os.path.join(scan.root, path)):
        scan.problems.append((path, where + "file not found"))  # one stat: a CSV of a million missing paths
        return False  # fails in seconds (nothing was read, so confinement needs no realpath here)
    try:
        file = resolve_inside(scan.root, path, root_is_real=True)  # every scan's root is resolved already
    except PathRefused as refused:
        scan.problems.append((path, where + refused.reason))
        return False
    if not file.is_file():
        scan.problems.append((path, where + "file not found"))
        return False
    scan.candidates.append(Candidate(path, str(file), person, split, source_id, labels))
    return True


def _read_csv(path: Path, required: tuple[str, ...], allow_empty: bool = False) -> pd.DataFrame:
    """A label CSV as stripped strings; IngestError for an unreadable file, missing columns, no rows."""
    try:
        table = read_table(path)
    except StoreError as error:
        raise IngestError(str(error)) from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(table.columns)})")
    if table.empty and not allow_empty:
        raise IngestError(f"{path}: no data rows")
    lines = table.attrs.get("lines")
    table = table.apply(lambda column: column.str.strip())
    table.attrs["lines"] = lines
    return table


def _rows(table: pd.DataFrame) -> list[tuple[int, dict[str, str]]]:
    """(physical line number in the file where the row starts, row) pairs; line 1 is the header.

    ``read_table`` records where each record starts (a quoted field may span lines, blank lines are skipped).
    """
    lines = table.attrs.get("lines") or range(2, len(table) + 2)
    return list(zip(lines, table.to_dict("records")))


def _plainly_relative(path: str) -> bool:
    """A path ``resolve_inside`` would not refuse on its face (empty, NUL, absolute, drive letter, ``..``)."""
    return bool(path.strip()) and "\x00" not in path and not os.path.isabs(path) and path[1:3] not in (":\\", ":/") \
        and not path.startswith("\\\\") and ".." not in path.replace("\\", "/").split("/")


def _undecodable(scan: Scan, path: str) -> bool:
    """Record a problem (and return True) for a file or folder name that is not valid UTF-8: such a name cannot
    be stored or shown, and one must not stop the ingest of every other file."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        scan.problems.append((path, "file or folder name is not valid UTF-8; rename it (left out)"))
        return True
    return False


def _storable(text: str) -> str:
    """Text safe to store and print: undecodable file-name bytes shown as escapes (``\\udcff``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _generic(source: Path, classes: dict[str, list[str]]) -> Schema:
    try:
        return generic_schema({name: sorted(set(values)) for name, values in classes.items()})
    except SchemaError as error:
        raise IngestError(f"{source}: {error}") from None


def _check_store_accepts(store: LabelStore, scan: Scan) -> None:
    """Refuse early (before the slow part) what ``store.ingest`` would refuse at the end."""
    if store.is_empty:
        return
    if store.root != scan.root:
        raise IngestError(f"{store.path} already holds the dataset at {store.root}; use another --db for {scan.root}")
    if store.schema.names != scan.schema.names:
        raise IngestError(f"{store.path}: the dataset's attributes changed ({store.schema.names} ->"
                          f" {scan.schema.names}); use another --db")


def _first_problems(problems: list[tuple[str, str]], limit: int = 3) -> str:
    if not problems:
        return ""
    shown = "; ".join(f"{p}: {r}" for p, r in problems[:limit])
    return f" ({len(problems)} problem(s), e.g. {shown})"


def _canonical(text: str) -> str:
    """Compare folder-name parts with csv values: case-insensitive, 45 == 45.0."""
    text = text.strip().lower()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _hidden(name: str) -> bool:
    """Hidden files, including macOS ``._*`` AppleDouble companions and ``.DS_Store``."""
    return name.startswith(".")
