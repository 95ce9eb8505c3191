"""The product's "Did cleaning help?" against the truth: ``bench/cleaning_loop.py``'s arms rerun through
``python -m train experiment`` (the product path: ``train.__main__.main``, nothing copied).

    PYTHONPATH=. .venv/bin/python bench/cleaning_loop.py --quick --orders random --experiment-arm random
    PYTHONPATH=. .venv/bin/python bench/cleaning_loop.py --profile random --orders random --experiment-arm random \\
        --experiment-seed-sets 0 5 10 --out /tmp/cl-exp.json --write-experiment

For an arm's store (after its simulated review: the labels as ingested = the noisy demo, the current labels = the
reviewed ones) and each seed set (``--experiment-seed-sets S...``: seeds S, S+1, ..., S+N-1 for
``--experiment-pairs N``; S also seeds the person split), the product trains both labellings with the bench's
training settings and judges every model on

* its own answer key: the current labels of the validation people (the product's verdict, what a user sees), and
* the bench's noise-free held-out demo (``--heldout``: ``truth.csv`` of ``--holdout`` other people), read back as
  the **held-out verdict**: the truth the product's verdict is checked against.

Checks, per seed set: the two verdicts agree (helped / hurt / no evidence), and the product's 95 % interval
covers the held-out difference (the mean over the pairs of current - original on the held-out set). The bench's
own arm (its ``last`` checkpoints, the same seeds, ``random@budget`` - ``noisy``) is printed beside it.
``--experiment-arm ceiling`` runs the same on the store with every error corrected (a case where cleaning must
help). Results go into the results JSON under ``experiment_arm``; ``--write-experiment`` writes the section
"Did cleaning help? (the product's experiment against the truth)" of BENCHMARKS.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common

SECTION = "Did cleaning help? (the product's experiment against the truth)"
ARMS = ("random", "ceiling")
SEED_SETS = (0, 5, 10)
PAIRS = 5


def _verdict(row: dict[str, Any]) -> str:
    if row.get("low") is None:
        return "no interval"
    return "helped" if row["low"] > 0 else "hurt" if row["high"] < 0 else "no evidence"


def arm_db(arm: str, record: dict[str, Any], budgets: Sequence[float]) -> str:
    """The store whose original vs current labels the arm compares."""
    snapshots = record["snapshots"]
    name = "ceiling" if arm == "ceiling" else f"{arm}@{max(budgets)}"
    if name not in snapshots:
        raise RuntimeError(f"the bench has no {name} labelling: run its {arm} arm (--orders {arm})")
    return snapshots[name]["db"]


def run(cfg: dict[str, Any], work: Path, results: Any, log: Callable[[str], None]) -> None:
    """Each arm x seed set through ``python -m train experiment``; finished cells are kept (resume)."""
    from core.store import LabelStore
    from train.__main__ import main as train_main

    record = results.record
    cells: dict[str, Any] = record.setdefault("experiment_arm", {})
    pairs = int(cfg.get("experiment_pairs", PAIRS))
    heldout = work / "holdout" / "truth.csv"
    for arm in cfg.get("experiment_arms", []):
        db = arm_db(arm, record, cfg["budgets"])
        for start in cfg.get("experiment_seed_sets", SEED_SETS):
            name = f"{arm}:{start}+{pairs}"
            if name in cells:
                continue
            with LabelStore(db) as store:
                same = store.snapshot(original=True).hash == store.snapshot().hash
            if same:  # the product refuses (one line): nothing to compare; the bench says so and goes on
                cells[name] = {"arm": arm, "seed_start": start, "pairs": pairs, "skipped": "the review corrected "
                               "nothing: the current labels are the labels as ingested"}
                results.save()
                log(f"experiment arm {name}: skipped ({cells[name]['skipped']})")
                continue
            argv = ["experiment", "--db", str(db), "--repeats", str(pairs), "--seed", str(start),
                    "--heldout", str(heldout), "--model", cfg["model"], "--img-size", *map(str, cfg["img_size"]),
                    "--epochs", str(cfg["epochs"]), "--batch-size", str(cfg["batch_size"]),
                    "--threads", str(cfg["threads"]), "--cache-dir", str(work / "cache"), "--out", str(work / "runs"),
                    "--quiet"]
            started = time.monotonic()
            code = train_main(argv)
            if code != 0:
                raise RuntimeError(f"python -m train {' '.join(argv)} exited {code}")
            with LabelStore(db) as store:
                experiments = store.runs("experiment")
                report = experiments.iloc[0]["metrics"]
            if experiments.iloc[0]["status"] != "done" or report["pairs"] != pairs:
                raise RuntimeError(f"experiment #{experiments.iloc[0]['id']} ended {experiments.iloc[0]['status']} "
                                   f"with {report['pairs']} of {pairs} pairs")
            cells[name] = {"arm": arm, "seed_start": start, "pairs": pairs, "report": report,
                           "seconds": round(time.monotonic() - started, 1), "command": "python -m train " +
                           " ".join(argv)}
            results.save()
            check = judge(cells[name])
            log(f"experiment arm {name}: product {check['product']} vs held-out {check['heldout']}: "
                f"{'agree' if check['agree'] else 'DISAGREE'}, covers {check['covers']}")


def judge(cell: dict[str, Any], metric: str = "macro_f1") -> dict[str, Any]:
    """The product's verdict (validation key) against the held-out one: agreement and coverage."""
    keys = cell["report"]["keys"]
    product, held = keys["validation"]["metrics"][metric], keys["heldout"]["metrics"][metric]
    covers = product.get("low") is not None and product["low"] <= held["change"] <= product["high"]
    return {"product": _verdict(product), "heldout": _verdict(held), "agree": _verdict(product) == _verdict(held),
            "covers": covers, "product_row": product, "heldout_row": held}


def _interval(row: dict[str, Any]) -> str:
    if row.get("change") is None:
        return "n/a"
    if row.get("low") is None:
        return f"{row['change']:+.3f} [n/a]"
    return f"{row['change']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"


def bench_own(data: dict[str, Any], arm: str, seeds: Sequence[int], metric: str = "macro_f1") -> str:
    """The bench's own held-out difference for the arm on those seeds (its ``last`` checkpoints), if it ran them."""
    from bench.cleaning_loop import paired_interval  # noqa: PLC0415 (the bench's statistics, not a copy)

    fits = data["record"].get("fits", {})
    name = "ceiling" if arm == "ceiling" else f"{arm}@{max(data['config']['budgets'])}"
    common = [str(s) for s in seeds if str(s) in fits.get(name, {}) and str(s) in fits.get("noisy", {})]
    if len(common) < 2:
        return "—"
    diffs = [fits[name][s][metric] - fits["noisy"][s][metric] for s in common]
    mean, low, high = paired_interval(diffs)
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] (seeds {common[0]}–{common[-1]})"


def report_lines(data: dict[str, Any]) -> list[str]:
    """Markdown: one table row per arm x seed set, then the acceptance lines."""
    cells = data["record"].get("experiment_arm", {})
    if not cells:
        return []
    cfg = data["config"]
    lines = ["| arm | seeds | product verdict: your validation people (current labels), macro F1 current − original "
             "[95 % CI] | held-out truth (noise-free), same models | agree | product CI covers held-out | power "
             "(product) | bench's own held-out diff (`last` ckpt) | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    skipped = [c for c in cells.values() if c.get("skipped")]
    cells = {k: c for k, c in cells.items() if not c.get("skipped")}
    for cell in cells.values():
        check = judge(cell)
        report = cell["report"]
        seeds = report["seeds"]
        lines.append(f"| {cell['arm']} | {seeds[0]}–{seeds[-1]} | {check['product']}: {_interval(check['product_row'])} "
                     f"| {check['heldout']}: {_interval(check['heldout_row'])} | {'yes' if check['agree'] else 'NO'} "
                     f"| {'yes' if check['covers'] else 'NO'} | {report['keys']['validation']['power']} "
                     f"| {bench_own(data, cell['arm'], seeds)} | {cell['seconds'] / 60:.0f} |")
    n = len(cells)
    lines += [f"Skipped {c['arm']} seeds {c['seed_start']}+: {c['skipped']}." for c in skipped]
    if not n:
        return lines
    key = next(iter(cells.values()))["report"]["keys"]
    lines += ["", f"Answer keys: {key['validation']['description']} (the current labels of the experiment's "
              f"validation people, seed set 1) and {key['heldout']['description']}. Every training: `{cfg['model']}` "
              f"{cfg['img_size'][0]}x{cfg['img_size'][1]}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
              f"{cfg['threads']} thread(s), best checkpoint by the validation key.",
              ""]
    for arm in dict.fromkeys(c["arm"] for c in cells.values()):
        mine = [judge(c) for c in cells.values() if c["arm"] == arm]
        a, c = sum(x["agree"] for x in mine), sum(x["covers"] for x in mine)
        what = "Acceptance" if arm == "random" else "Positive control (not an acceptance criterion)"
        lines.append(f"{arm} arm: verdicts agree on {a} of {len(mine)} seed sets; the product's interval covers the "
                     f"held-out difference on {c} of {len(mine)}. {what} (agree and cover on every seed set): "
                     f"{'met' if a == len(mine) and c == len(mine) else 'missed'}.")
    return lines


def write_section(data: dict[str, Any], commands: Sequence[str]) -> None:
    machine = data.get("machine", "this machine")
    body = [f"`{c}`" for c in commands]
    text = "\n".join([" and ".join(body) + f" ({machine}).", "", *report_lines(data)])
    common.write_section(SECTION, text)


def summary(data: dict[str, Any]) -> dict[str, float]:
    """Agreement and coverage rates (for tests and the log)."""
    cells = data["record"].get("experiment_arm", {})
    checks = [judge(c) for c in cells.values() if not c.get("skipped")]
    return {"cells": len(checks), "agree": float(np.mean([c["agree"] for c in checks])) if checks else math.nan,
            "covers": float(np.mean([c["covers"] for c in checks])) if checks else math.nan}
