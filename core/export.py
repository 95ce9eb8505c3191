"""Export the cleaned label table and read user-supplied tables (CSV or parquet) safely."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from core.files import csv_safe, replacing
from core.store import LabelStore, Snapshot, StoreError


def cleaned_table(store: LabelStore) -> pd.DataFrame:
    """One row per labelled image: path, person, <attributes>, <binned>, class, corrected (0/1).

    Competition datasets give ``path, person, mask, gender, age, age_group, class, corrected``; a binned
    column (``age_group``) holds its group's name (``<30``, ``30-59``, ``>=60``), ``class`` the class code.
    """
    labels = store.current_labels()
    schema = store.schema
    columns = ["path", "person", *schema.names, *[b.name for b in schema.binned]]
    columns += ["class"] if "class" in labels.columns else []
    table = labels[[*columns, "corrected"]].reset_index(drop=True)
    for binned in schema.binned:  # the group's name, as every page says it ("30-59"), not its code
        table[binned.name] = [binned.classes[int(c)] for c in table[binned.name]]
    return table


def export(store: LabelStore, out: Path) -> Snapshot:
    """Write the cleaned table to ``out`` (``.parquet`` by suffix, else CSV) and ``<out>.snapshot.json``.

    Text cells that start with ``= + - @`` (a formula to a spreadsheet) are written with a leading ``'``
    (``core.files.csv_safe``). The sidecar records the snapshot hash of exactly these labels, so a file handed to someone
    else can be traced back to the store state that produced it. Both writes are atomic.
    """
    out = Path(out)
    snapshot = store.snapshot()
    table = cleaned_table(store)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        if out.suffix.lower() == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            csv_safe(table).to_csv(tmp, index=False, lineterminator="\n")  # no cell a spreadsheet would run
    sidecar = out.with_name(out.name + ".snapshot.json")
    meta = {"snapshot_hash": snapshot.hash, "snapshot_file": str(snapshot.path.resolve()), "rows": len(table),
            "corrections": snapshot.n_corrections, "store": str(store.path.resolve())}
    with replacing(sidecar) as tmp_meta:
        tmp_meta.write_text(json.dumps(meta, indent=1))
    return snapshot


def read_table(path: Path) -> pd.DataFrame:
    """Read a user table (CSV in UTF-8, a BOM allowed; or parquet) as strings, with clear errors.

    Raises ``StoreError`` naming the file for a missing, empty, non-UTF-8 or unparsable file.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        try:
            return pd.read_parquet(path).astype(str)
        except Exception as error:  # pyarrow raises many types; the message is what matters
            raise StoreError(f"{path}: not a readable parquet file ({error})") from None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise StoreError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); "
                         "save the file as UTF-8") from None
    if not text.strip():
        raise StoreError(f"{path}: the file is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as error:
        raise StoreError(f"{path}: not a valid CSV ({error})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.attrs["lines"] = record_lines(text, len(frame))
    return frame


def record_lines(text: str, n_rows: int) -> list[int] | None:
    """The physical line (1-based) where each of the ``n_rows`` data records of a CSV starts, for messages.

    A quoted field may span lines and blank lines are skipped, so record k is not always line k + 2. None when
    the count does not match what pandas read (then callers fall back to record numbers).
    """
    if '"' not in text and "\n\n" not in text and "\r" not in text:
        return None  # one record per line: record k is line k + 2
    starts, end = [], 0
    reader = csv.reader(io.StringIO(text))
    try:
        for record in reader:
            if record:  # blank lines are skipped by pandas too
                starts.append(end + 1)
            end = reader.line_num
    except csv.Error:
        return None
    return starts[1:] if len(starts) == n_rows + 1 else None
