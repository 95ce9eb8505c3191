"""Which change helped? Compare two runs: config values that differ and how their label snapshots differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from core.schema import Schema
from core.store import LabelStore, StoreError, read_snapshot

# Where a run wrote or read its files (and its cache budget), not what it trained: reported, but not a "change".
LOCATION_KEYS = {"out", "cache_dir", "cache_mb", "snapshot", "tensorboard", "mlflow"}


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (value in a, value in b)} for every config key whose value differs (missing = None)."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def snapshot_diff(path_a: str | Path, path_b: str | Path) -> dict[str, Any]:
    """How two label snapshots differ: images added/removed and, per attribute, changed images
    (and people, for person-scope attributes) with counts per ``old -> new`` change."""
    labels_a, meta_a = read_snapshot(path_a)
    labels_b, meta_b = read_snapshot(path_b)
    schema = Schema.from_dict(meta_b["schema"])
    merged = labels_a.merge(labels_b, on="path", how="outer", suffixes=("_a", "_b"), indicator=True)
    both = merged[merged["_merge"] == "both"]
    result: dict[str, Any] = {"hash_a": meta_a["hash"], "hash_b": meta_b["hash"], "images_a": len(labels_a),
                              "images_b": len(labels_b), "added": int((merged["_merge"] == "right_only").sum()),
                              "removed": int((merged["_merge"] == "left_only").sum()), "attributes": {}}
    names = schema.names + [b.name for b in schema.binned]
    for name in names:
        if f"{name}_a" not in both or f"{name}_b" not in both:
            continue
        binned = name not in schema.names  # derived codes: show their class names (">=60")
        classes = schema.target_classes(name) if binned else None
        old, new = ([classes[int(v)] for v in both[f"{name}_{s}"]] if binned else both[f"{name}_{s}"].astype(str)
                    for s in "ab")
        old, new = pd.Series(list(old), index=both.index), pd.Series(list(new), index=both.index)
        changed = both[old != new]
        scope = schema.scope(schema.target_source(name))
        pairs = (old[changed.index] + " -> " + new[changed.index]).value_counts()
        result["attributes"][name] = {"images": int(len(changed)),
                                      "people": int(changed["person_b"].nunique()) if scope == "person" else None,
                                      "changes": {k: int(v) for k, v in pairs.items()}}
    return result


def diff_runs(store: LabelStore, run_a: int, run_b: int) -> dict[str, Any]:
    """Config and label differences of two runs (snapshot files are read from the runs' configs)."""
    a, b = store.run(run_a), store.run(run_b)
    config = config_diff(a["config"] or {}, b["config"] or {})
    out: dict[str, Any] = {"run_a": run_a, "run_b": run_b,
                           "config": {k: v for k, v in config.items() if k not in LOCATION_KEYS},
                           "locations": {k: v for k, v in config.items() if k in LOCATION_KEYS}}
    paths = [(r["config"] or {}).get("snapshot") for r in (a, b)]
    if a["snapshot_hash"] == b["snapshot_hash"] and a["snapshot_hash"]:
        out["labels"] = {"hash_a": a["snapshot_hash"], "hash_b": b["snapshot_hash"], "same": True}
    elif all(p and Path(p).exists() for p in paths):
        out["labels"] = {**snapshot_diff(paths[0], paths[1]), "same": False}
    else:
        raise StoreError(f"cannot compare labels: snapshot file missing ({paths[0]} / {paths[1]})")
    return out


def format_diff(diff: dict[str, Any]) -> str:
    """The diff as the lines ``python -m train diff`` prints."""
    lines = [f"run {diff['run_a']} -> run {diff['run_b']}", "config:"]
    lines += [f"  {k}: {a!r} -> {b!r}" for k, (a, b) in diff["config"].items()] or ["  (same)"]
    labels = diff["labels"]
    lines.append(f"labels: snapshot {str(labels['hash_a'])[:12]} -> {str(labels['hash_b'])[:12]}")
    if labels.get("same"):
        lines.append("  (same labels)")
        return "\n".join(lines)
    if labels["added"] or labels["removed"]:
        lines.append(f"  images: {labels['added']} added, {labels['removed']} removed")
    for name, info in labels["attributes"].items():
        who = f" ({info['people']} {'person' if info['people'] == 1 else 'people'})" if info["people"] else ""
        detail = ", ".join(f"{k} {v}" for k, v in list(info["changes"].items())[:8])
        lines.append(f"  {name}: {info['images']} image(s) changed{who}" + (f": {detail}" if detail else ""))
    return "\n".join(lines)


def runs_table(store: LabelStore, kind: str | None = "train") -> pd.DataFrame:
    """One line per run for ``python -m train runs``: id, status, model, epochs, best macro F1, labels."""
    rows = []
    for run in store.runs(kind).to_dict("records"):
        config = run["config"] if isinstance(run["config"], dict) else {}  # a predict run has no training config
        metrics = run["metrics"] if isinstance(run["metrics"], dict) else {}
        rows.append({"id": run["id"], "kind": run["kind"], "status": run["status"],
                     "created": str(run["created_at"])[:19], "model": config.get("model"),
                     "epochs": f"{metrics.get('epochs_done', 0)}/{config.get('epochs', '?')}",
                     "best_f1": metrics.get("best_macro_f1"), "lr": config.get("lr"),
                     "corrections": run["n_corrections"],
                     "snapshot": run["snapshot_hash"][:10] if isinstance(run["snapshot_hash"], str) else "",
                     "best_checkpoint": run["best_checkpoint"]})
    return pd.DataFrame(rows)
