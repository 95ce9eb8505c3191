"""Which change helped? Compare two runs: config values that differ, how their label snapshots differ, and
whether each metric moved by more than run-to-run noise.

Runs are compared in run order: "before" is the lower run id whichever is named first. Each metric
difference (after - before, from the runs' best validation epochs) gets a 95 % interval:

* both runs in repeat groups (``fit --repeats``) with >= 2 finished runs each: Welch's t interval of
  the difference of the groups' means;
* otherwise the journal's measured run-to-run spread of that config (the pooled standard deviation
  within sets of finished training runs with the same config apart from the seed, on the same label
  snapshot: repeat groups or identical configs), scaled by sqrt(1/n_before + 1/n_after), with t on
  the pooled degrees of freedom;
* otherwise no interval: "no spread known: train ×3 to know".

A difference whose interval holds 0 is "within run-to-run noise"; only one whose interval excludes 0
is "improved" or "worse" (losses: lower is better). ``compare_runs`` is torch-free and is what both
``python -m train diff`` and the dashboard's Compare show.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
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
        classes = schema.target_classes(name) if binned else ()
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
    """Config and label differences of two runs (snapshot files are read from the runs' configs), in run
    order: ``run_a`` is the earlier (lower id) of the two whichever is passed first."""
    run_a, run_b = sorted((int(run_a), int(run_b)))
    a, b = store.run(run_a), store.run(run_b)
    config = config_diff(a["config"] or {}, b["config"] or {})
    out: dict[str, Any] = {"run_a": run_a, "run_b": run_b,
                           "config": {k: v for k, v in config.items() if k not in LOCATION_KEYS},
                           "locations": {k: v for k, v in config.items() if k in LOCATION_KEYS}}
    paths = [(r["config"] or {}).get("snapshot") for r in (a, b)]
    if a["snapshot_hash"] == b["snapshot_hash"] and a["snapshot_hash"]:
        out["labels"] = {"hash_a": a["snapshot_hash"], "hash_b": b["snapshot_hash"], "same": True}
    elif all(p and Path(p).exists() for p in paths):
        out["labels"] = {**snapshot_diff(str(paths[0]), str(paths[1])), "same": False}
    else:
        gone = [f"run #{r['id']}: " + (f"{p} is gone" if p else f"none taken (the run is {r['status']})")
                for r, p in zip((a, b), paths) if not (p and Path(p).exists())]
        raise StoreError("cannot compare labels: no label snapshot for " + "; ".join(gone))
    return out


def format_diff(diff: dict[str, Any], verdicts: dict[str, Any] | None = None) -> str:
    """The diff as the lines ``python -m train diff`` prints (with ``compare_runs``' verdicts if given)."""
    lines = [f"run {diff['run_a']} (before) -> run {diff['run_b']} (after)", "config:"]
    lines += [f"  {k}: {a!r} -> {b!r}" for k, (a, b) in diff["config"].items()] or ["  (same)"]
    labels = diff["labels"]
    lines.append(f"labels: snapshot {str(labels['hash_a'])[:12]} -> {str(labels['hash_b'])[:12]}")
    if labels.get("same"):
        lines.append("  (same labels)")
    else:
        if labels["added"] or labels["removed"]:
            lines.append(f"  images: {labels['added']} added, {labels['removed']} removed")
        for name, info in labels["attributes"].items():
            who = f" ({info['people']} {'person' if info['people'] == 1 else 'people'})" if info["people"] else ""
            detail = ", ".join(f"{k} {v}" for k, v in list(info["changes"].items())[:8])
            lines.append(f"  {name}: {info['images']} image(s) changed{who}" + (f": {detail}" if detail else ""))
    if verdicts is not None:
        lines += format_verdicts(verdicts)
    return "\n".join(lines)


def group_summaries(runs: pd.DataFrame) -> dict[int, str]:
    """Repeat group id -> "×n mean ± SD" of the best validation macro F1 of its finished runs."""
    out: dict[int, str] = {}
    if "repeat_group" not in runs or runs.empty:
        return out
    for group, members in runs[runs["repeat_group"].notna()].groupby("repeat_group"):
        values = [float((m or {})["best_macro_f1"]) for m, status in zip(members["metrics"], members["status"])
                  if status == "done" and (m or {}).get("best_macro_f1") is not None]
        total = len(members)
        if len(values) >= 2:
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            text = f"{mean:.4f} ± {sd:.4f} (SD, {len(values)} of {total} runs)"
        elif values:
            text = f"{values[0]:.4f} (1 of {total} runs done)"
        else:
            text = f"0 of {total} runs done"
        out[int(group)] = f"#{int(group)} ×{total}: {text}"
    return out


def runs_table(store: LabelStore, kind: str | None = "train") -> pd.DataFrame:
    """One line per run for ``python -m train runs``: id, status, model, epochs, best macro F1, its repeat
    group's mean ± SD, labels."""
    rows = []
    all_runs = store.runs(kind)
    groups = group_summaries(all_runs)
    for run in all_runs.to_dict("records"):
        config = run["config"] if isinstance(run["config"], dict) else {}  # a predict run has no training config
        metrics = run["metrics"] if isinstance(run["metrics"], dict) else {}
        rows.append({"id": run["id"], "kind": run["kind"], "status": run["status"],
                     "created": str(run["created_at"])[:19], "model": config.get("model"),
                     "epochs": f"{metrics.get('epochs_done', 0)}/{config.get('epochs', '?')}",
                     "best_f1": metrics.get("best_macro_f1"), "repeat_group": _group_text(run, groups),
                     "lr": config.get("lr"),
                     "corrections": run["n_corrections"], "snapshot": run["snapshot_hash"][:10] if isinstance(run["snapshot_hash"], str) else "",
                     "labels": run.get("labels") if isinstance(run.get("labels"), str) else "",
                     "measured_on": key_text(run),
                     "best_checkpoint": run["best_checkpoint"]})
    return pd.DataFrame(rows)


def key_text(run: Mapping[str, Any]) -> str:
    """Which answer key a training run's numbers are measured on, short: "key 1a2b3c4d" or "own labels"."""
    if run.get("kind") != "train":
        return ""
    key = answer_key_of(run)
    return "own labels" if key.startswith("own:") else f"key {key[:8]}"


def _group_text(run: Mapping[str, Any], groups: Mapping[int, str]) -> str:
    group = run.get("repeat_group")
    if group is None or (isinstance(group, float) and math.isnan(group)):
        return ""
    return groups.get(int(group), "")


# ---- did it help: differences with intervals ----------------------------------------------------------------------
IMPROVED, WORSE, NOISE, NO_SPREAD = "improved", "worse", "within run-to-run noise", "no spread known: train ×3 to know"
KEY_METRICS = ("macro_f1", "acc_class", "val_loss", "train_loss")  # accuracies per target follow
# What may differ between repeats of one config (the labels are the snapshot's, told apart by its hash).
CONFIG_IGNORED = LOCATION_KEYS | {"seed", "repeat_of", "labels"}


def config_hash(config: Mapping[str, Any] | None) -> str:
    """A config's identity for run-to-run spread: every setting except the seed and file locations."""
    kept = {k: v for k, v in (config or {}).items() if k not in CONFIG_IGNORED and v is not None}  # None: unset
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


def t_quantile(df: float, q: float = 0.975) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def difference(before: Sequence[float], after: Sequence[float], *, spread: Mapping[str, Any] | None = None,
               lower_better: bool = False) -> dict[str, Any]:
    """after - before (means) with a 95 % interval and a verdict (``IMPROVED``, ``WORSE``, ``NOISE``, ``NO_SPREAD``).

    Both sides with >= 2 values: Welch's t interval. Else ``spread`` ({"sd", "df", ...}, a measured
    run-to-run standard deviation): diff ± t(df) · sd · sqrt(1/n_before + 1/n_after). Else no interval.
    """
    a = [float(v) for v in before if v is not None and not math.isnan(float(v))]
    b = [float(v) for v in after if v is not None and not math.isnan(float(v))]
    out: dict[str, Any] = {"before": None, "after": None, "change": None, "low": None, "high": None,
                           "verdict": NO_SPREAD, "interval": "none"}
    if not a or not b:
        out["verdict"] = "not measured in both runs"
        return out
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    out.update(before=ma, after=mb, change=mb - ma)
    if len(a) >= 2 and len(b) >= 2:
        va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
        vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
        out["interval"] = "repeats"
    elif spread is not None and spread.get("sd") is not None and spread.get("df", 0) >= 1:
        se, df = float(spread["sd"]) * math.sqrt(1 / len(a) + 1 / len(b)), spread["df"]
        out["interval"] = "journal"
    else:
        return out
    half = t_quantile(df) * se
    out.update(low=out["change"] - half, high=out["change"] + half)
    out["verdict"] = _verdict(out["low"], out["high"], lower_better)
    return out


def _verdict(low: float, high: float, lower_better: bool) -> str:
    """The words for a 95 % interval of a change: outside zero on either side, or within the noise."""
    if low > 0:
        return WORSE if lower_better else IMPROVED
    if high < 0:
        return IMPROVED if lower_better else WORSE
    return NOISE


def paired_difference(before: Sequence[float], after: Sequence[float], *, lower_better: bool = False) -> dict[str, Any]:
    """Paired after - before (one pair per seed): the mean difference with the paired t 95 % interval
    (n - 1 degrees of freedom) and a verdict as ``difference``'s; ``sd`` is the SD of the per-pair differences."""
    pairs = [(float(a), float(b)) for a, b in zip(before, after)
             if a is not None and b is not None and not math.isnan(float(a)) and not math.isnan(float(b))]
    out: dict[str, Any] = {"before": None, "after": None, "change": None, "low": None, "high": None, "n": len(pairs),
                           "sd": None, "verdict": "not measured in both", "interval": "paired"}
    if not pairs:
        return out
    diffs = [b - a for a, b in pairs]
    n = len(diffs)
    mean = sum(diffs) / n
    out.update(before=sum(a for a, _ in pairs) / n, after=sum(b for _, b in pairs) / n, change=mean)
    if n < 2:
        out["verdict"] = NO_SPREAD
        return out
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    out.update(sd=sd, low=mean - half, high=mean + half, verdict=_verdict(mean - half, mean + half, lower_better))
    return out


POWER = 0.8  # the chance of seeing a real difference that the power lines promise


def detectable_difference(sd: float, pairs: int, power: float = POWER) -> float | None:
    """The smallest true paired difference that ``pairs`` pairs with per-pair SD ``sd`` would find (its 95 %
    interval excluding 0) with probability ``power``: (t(0.975, n-1) + t(power, n-1)) · sd / sqrt(n)."""
    if pairs < 2 or sd is None or math.isnan(sd):
        return None
    return (t_quantile(pairs - 1) + t_quantile(pairs - 1, power)) * sd / math.sqrt(pairs)


def pairs_needed(sd: float, change: float, power: float = POWER, most: int = 1000) -> int | None:
    """Pairs needed to detect a true paired difference of ``change`` with ``power`` (None: over ``most``)."""
    if sd is None or math.isnan(sd) or change == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        detectable = detectable_difference(sd, n, power)
        if detectable is not None and detectable <= abs(change):
            return n
    return None


# ---- answer keys: numbers are only compared on the same one -------------------------------------------------------
class AnswerKeyMismatch(StoreError):
    """Two runs' numbers were measured on different answer keys: they are not put side by side."""


def answer_key_of(run: Mapping[str, Any]) -> str:
    """The answer key a run's own (epoch) numbers were measured on: its ``answer_key`` hash, else its own
    snapshot's labels (``own:<snapshot hash>``)."""
    key = run.get("answer_key")
    if isinstance(key, str) and key:
        return key
    return f"own:{run.get('snapshot_hash') or '?'}"


def describe_key(key: str) -> str:
    return f"its own labels (snapshot {key[4:14]})" if key.startswith("own:") else f"answer key {key[:8]}"


def common_answer_key(store: LabelStore, run_ids: Sequence[int]) -> str | None:
    """An answer key every run was measured on (own numbers or a stored evaluation): the runs' own key if they
    share it, else the newest evaluated key they all have; None when there is none."""
    keys: list[set[str]] = []
    newest: dict[str, str] = {}
    for rid in run_ids:
        own = answer_key_of(store.run(rid))
        evaluated = store.evaluations(rid)
        for key, when in zip(evaluated.get("answer_key", []), evaluated.get("created_at", [])):
            newest[key] = max(newest.get(key, ""), str(when))
        keys.append({own, *evaluated.get("answer_key", [])})
    shared = set.intersection(*keys) if keys else set()
    if not shared:
        return None
    owns = {answer_key_of(store.run(r)) for r in run_ids}
    if len(owns) == 1 and owns <= shared:
        return next(iter(owns))
    return max(shared, key=lambda k: newest.get(k, ""))


def record_on(store: LabelStore, run_id: int, key: str) -> dict[str, Any]:
    """The run's best-epoch record measured on answer key ``key``: its own best epoch when that is its key,
    else its stored evaluation on ``key`` ({} if none)."""
    run = store.run(run_id)
    if answer_key_of(run) == key:
        return best_record(run, store.epochs(run_id))
    evaluation = store.evaluation(run_id, key)
    return dict(evaluation["metrics"]) if evaluation else {}


def best_record(run: Mapping[str, Any], epochs: pd.DataFrame) -> dict[str, Any]:
    """The ``epochs`` row of the run's best epoch (``metrics.best_epoch``; the last if unknown), {} if none."""
    if epochs.empty:
        return {}
    best = (run.get("metrics") or {}).get("best_epoch")
    rows = epochs[epochs["epoch"] == best] if best is not None else epochs.iloc[0:0]
    record = (rows if len(rows) else epochs.tail(1)).iloc[0].to_dict()
    return {k: v for k, v in record.items() if not (isinstance(v, float) and pd.isna(v))}


def _scalar(value: Any) -> float | None:
    if value is None or isinstance(value, bool | dict | list | str):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def metric_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    names = [m for m in KEY_METRICS if any(m in r for r in records)]
    return names + sorted({k for r in records for k in r if k.startswith("acc_") and k not in names})


def journal_spread(runs: pd.DataFrame, records: Mapping[int, Mapping[str, Any]], configs: set[str],
                   metric: str, per_class: str | None = None) -> dict[str, Any] | None:
    """Pooled within-set standard deviation of ``metric`` (or of class ``per_class``'s F1) over finished
    training runs with a config hash in ``configs``, a set = one config hash on one snapshot with >= 2 runs.
    None when no such set exists. ``records``: run id -> best-epoch record."""
    done = runs[(runs["kind"] == "train") & (runs["status"] == "done")]
    sets: dict[tuple[str, str], list[float]] = {}
    for run in done.to_dict("records"):
        key = config_hash(run.get("config"))
        if key not in configs or int(run["id"]) not in records:
            continue
        record = records[int(run["id"])]
        value = _scalar((record.get("f1_per_class") or {}).get(per_class)) if per_class else _scalar(record.get(metric))
        if value is not None:
            sets.setdefault((key, str(run.get("snapshot_hash"))), []).append(value)
    groups = [v for v in sets.values() if len(v) >= 2]
    spread = pooled_spread(groups)
    if spread is None:
        return None
    sd, df = spread
    return {"sd": sd, "df": df, "runs": sum(len(g) for g in groups), "sets": len(groups)}


def pooled_spread(groups: Sequence[Sequence[float]]) -> tuple[float, int] | None:
    """(pooled within-group standard deviation, its degrees of freedom) over the groups of >= 2 values; None
    without any. Groups are sets of runs that differ only in their seed: the run-to-run spread."""
    kept = [list(g) for g in groups if len(g) >= 2]
    if not kept:
        return None
    df = sum(len(g) - 1 for g in kept)
    ss = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in kept)
    return math.sqrt(ss / df), df


def _side(store: LabelStore, runs: pd.DataFrame, run_id: int) -> list[int]:
    """The finished runs standing for ``run_id``: its repeat group's, else the run itself."""
    row = store.run(run_id)
    experiments = store.experiments_of(run_id)
    if experiments:  # a run of an experiment stands with the experiment's runs on the same labels
        members = store.experiment_runs(experiments[0])
        side = members.loc[members["run_id"] == int(run_id), "side"].iloc[0]
        done = members[(members["side"] == side) & (members["status"] == "done")]["run_id"].astype(int).tolist()
        return sorted(done) or [int(run_id)]
    group = row.get("repeat_group")
    if group is None or (isinstance(group, float) and math.isnan(group)):
        return [int(run_id)]
    members = runs[(runs["repeat_group"] == group) & (runs["status"] == "done")]["id"].astype(int).tolist()
    return sorted(members) or [int(run_id)]


def compare_runs(store: LabelStore, run_a: int, run_b: int) -> dict[str, Any]:
    """Did it help? Run ``before`` (the lower id) vs ``after``: each best-epoch metric and per-class F1 as
    ``difference`` rows, with the interval's source in words (``source``)."""
    before, after = sorted((int(run_a), int(run_b)))
    runs = store.runs("train")
    side_a, side_b = _side(store, runs, before), _side(store, runs, after)
    if set(side_a) & set(side_b):  # two runs of one repeat group: each stands for itself
        side_a, side_b = [before], [after]
    key = common_answer_key(store, side_a + side_b)
    if key is None:
        keys = {r: answer_key_of(store.run(r)) for r in (before, after)}
        raise AnswerKeyMismatch(
            f"runs #{before} and #{after} were measured on different answer keys (#{before}: "
            f"{describe_key(keys[before])}; #{after}: {describe_key(keys[after])}): judge them on one with "
            f"python -m train evaluate {before} {after}, or run python -m train experiment")
    configs = {config_hash(store.run(r)["config"]) for r in (before, after)}
    wanted = set(side_a) | set(side_b) | {
        int(r["id"]) for r in runs.to_dict("records") if r["status"] == "done" and config_hash(r["config"]) in configs
        and answer_key_of(r) == key}
    records = {rid: record_on(store, rid, key) for rid in wanted}
    rec_a, rec_b = [records[r] for r in side_a], [records[r] for r in side_b]
    repeats = len(side_a) >= 2 and len(side_b) >= 2

    def row(name: str, per_class: str | None = None) -> dict[str, Any]:
        def values(recs: Sequence[Mapping[str, Any]]) -> list[float]:
            got = [_scalar((r.get("f1_per_class") or {}).get(per_class)) if per_class else _scalar(r.get(name))
                   for r in recs]
            return [v for v in got if v is not None]
        spread = None if repeats else journal_spread(runs, records, configs, name, per_class)
        result = difference(values(rec_a), values(rec_b), spread=spread, lower_better=lower_is_better(name))
        return {"metric": per_class or name, **result, "spread": spread}

    metrics = [row(name) for name in metric_names(rec_a + rec_b)]
    classes = list(dict.fromkeys(c for r in rec_a + rec_b for c in (r.get("f1_per_class") or {})))
    per_class = [row("f1", c) for c in classes]
    f1 = next((m for m in metrics if m["metric"] == "macro_f1"), None)
    if repeats:
        source = (f"95 % interval from the repeat groups: {len(side_a)} run(s) before, {len(side_b)} after "
                  "(Welch's t on the groups' means)")
    elif f1 is not None and f1["spread"] is not None:
        sp = f1["spread"]
        source = (f"95 % interval from the journal's measured run-to-run spread of this config: macro F1 SD "
                  f"{sp['sd']:.4f} over {sp['runs']} runs in {sp['sets']} set(s) of the same config and labels "
                  f"({sp['df']} degrees of freedom)")
    else:
        source = ("no run-to-run spread known for this config: no interval; train it ×3 (fit --repeats 3, or "
                  "× 3 on the Train page) to know what a difference means")
    return {"before": before, "after": after, "runs_before": side_a, "runs_after": side_b, "source": source,
            "swapped": int(run_a) != before, "metrics": metrics, "per_class": per_class, "answer_key": key}


def headline(verdicts: Mapping[str, Any], metric: str = "macro_f1") -> str:
    """One line for ``metric``: before -> after, change [interval]: verdict."""
    row = next((m for m in verdicts["metrics"] if m["metric"] == metric), None)
    if row is None or row["change"] is None:
        return f"{metric}: not measured in both runs"
    interval = "" if row["low"] is None else f" [{row['low']:+.4f}, {row['high']:+.4f}]"
    return f"{metric} {row['before']:.4f} -> {row['after']:.4f}: {row['change']:+.4f}{interval}, {row['verdict']}"


def format_verdicts(verdicts: Mapping[str, Any]) -> list[str]:
    """``compare_runs`` as the lines ``python -m train diff`` prints after the config and label changes."""
    groups = "" if len(verdicts["runs_before"]) == 1 and len(verdicts["runs_after"]) == 1 else \
        f" (runs {verdicts['runs_before']} vs {verdicts['runs_after']})"
    lines = [f"did it help: after - before{groups}; {verdicts['source']}"]
    if verdicts.get("answer_key"):
        lines.append(f"measured on {describe_key(verdicts['answer_key'])}")
    lines += [f"  {headline(verdicts, m['metric'])}" for m in verdicts["metrics"]]
    moved = [m for m in verdicts["per_class"] if m["verdict"] in (IMPROVED, WORSE)]
    noise = sum(m["verdict"] == NOISE for m in verdicts["per_class"])
    lines.append(f"per-class F1: {len(moved)} class(es) moved beyond the interval" +
                 (f", {noise} within run-to-run noise" if noise else "") + (":" if moved else ""))
    lines += [f"  {m['metric']}: {m['before']:.3f} -> {m['after']:.3f} ({m['change']:+.3f} "
              f"[{m['low']:+.3f}, {m['high']:+.3f}]) {m['verdict']}" for m in moved]
    return lines
