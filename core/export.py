"""Export the cleaned label table and read user-supplied tables (CSV or parquet) safely."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from core.files import replacing
from core.store import LabelStore, Snapshot, StoreError


def cleaned_table(store: LabelStore) -> pd.DataFrame:
    """One row per labelled image: path, person, <attributes>, <binned>, class, corrected (0/1).

    Competition datasets give ``path, person, mask, gender, age, age_group, class, corrected``.
    """
    labels = store.current_labels()
    schema = store.schema
    columns = ["path", "person", *schema.names, *[b.name for b in schema.binned]]
    columns += ["class"] if "class" in labels.columns else []
    return labels[[*columns, "corrected"]].reset_index(drop=True)


def export(store: LabelStore, out: Path) -> Snapshot:
    """Write the cleaned table to ``out`` (``.parquet`` by suffix, else CSV) and ``<out>.snapshot.json``.

    The sidecar records the snapshot hash of exactly these labels, so a file handed to someone
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
            table.to_csv(tmp, index=False, lineterminator="\n")
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
    return frame
