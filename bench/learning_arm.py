"""The cleaning loop's "learning queue" arm (``bench/cleaning_loop.py --orders ... learning``).

The simulated reviewer walks the Review page's units, but after every ``EVERY`` decisions the remaining
units are re-ranked by ``core.learning.learned_queue`` from the decisions the store holds (read with
``core.learning.decisions``, the function the Review page's learning queue uses: the reviewer's answers
reach the learner only through the store, exactly as a person's clicks would). Same budget accounting as
the static queue: one entry = one decision.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import embeddings, learning

EVERY = learning.EVERY
NAME = "learning queue (re-ranked every 10 decisions)"


def _entries(units: Any, order: Any, schema: Any, sizes: dict[str, int]) -> list[Any]:
    from bench.cleaning_loop import Entry

    out = []
    for row in order.itertuples(index=False):
        person = row.scope == "person"
        shown = int(sizes.get(str(row.target), 1)) if person else 1
        out.append(Entry(str(row.key), 1, ((str(row.target), str(row.stored)),), shown))
    return out


def make_reviewer(store: Any, record: dict[str, Any], truth: Any, every: int = EVERY) -> Any:
    """A ``Reviewer`` on the learning queue of the bench's score run."""
    from bench.cleaning_loop import Reviewer

    @dataclass
    class LearningReviewer(Reviewer):
        """``Reviewer`` whose remaining entries are re-ranked from the store's decisions every ``every``."""

        def review_until(self, budget: int) -> dict[str, int]:
            totals: dict[str, int] = {}
            while self.spent < budget:
                self.rerank()
                counts = Reviewer.review_until(self, min(budget, self.spent + every))
                for name, value in counts.items():
                    totals[name] = totals.get(name, 0) + value
                if counts["entries"] == 0:
                    break
            return totals

        def rerank(self) -> None:
            queue = learning.learned_queue(units, vectors, learning.decisions(self.store, run_id), every=every)
            self.entries = list(self.entries[:self.position]) + _entries(units, queue.order, schema, sizes)
            self.reranks.append({"decisions": queue.n_decisions, "errors": queue.n_errors, "active": queue.active,
                                 "moved_up": int((queue.order["why"].str.startswith("ranked up")).sum())})

    run_id = int(record["score_run"])
    emb = embeddings.load_run(store, run_id)
    units = learning.unit_table(store, run_id)
    vectors = embeddings.unit_vectors(emb, units)
    schema = store.schema
    sizes = store.current_labels(derived=False)["person"].value_counts().to_dict()
    reviewer = LearningReviewer(store, [], truth, score_run=run_id)
    reviewer.reranks = []
    return reviewer


# ---- the report ---------------------------------------------------------------------------------------------
PATTERNS = (("mask", "mask (swapped batch)"), ("gender", "gender (look-alike)"), ("age_group", "age group (rounded)"))


def report_lines(a: dict[str, Any], cfg: dict[str, Any], fits: dict[str, Any], inj: dict[str, int],
                 snapshots: dict[str, Any] | None = None) -> list[str]:
    """Each pattern's recall in every arm reviewed (the learning arm beside the static queue's), and the paired interval of learning -
    static queue on ``a["metric"]`` over every seed both were trained with (``a``: ``cleaning_loop.analyse``;
    ``snapshots``: the run's, for the errors left when an arm has no seed beside noisy and ceiling yet)."""
    from bench.cleaning_loop import ORDER_NAMES, _interval, paired, paired_interval

    top = max(cfg["budgets"])
    snaps = snapshots or {name: arm["snapshot"] for name, arm in a["arms"].items()}
    ours, static = snaps.get(f"learning@{top}"), snaps.get(f"queue@{top}")
    if not ours or not static:
        return []
    arms = [o for o in ("queue", "cleanlab", "pattern", "learning", "combined") if snaps.get(f"{o}@{top}")]
    lines = ["", f"Each pattern's recall at {top:.0%}, per arm (errors of that pattern fixed / injected; one score run, "
                 "so no seed spread):", "",
             "| pattern (systematic profile) | injected | " + " | ".join(ORDER_NAMES[o] for o in arms) + " |",
             "|---|---|" + "---|" * len(arms)]
    for kind, name in PATTERNS:
        total = inj[kind]
        row = [f"| {name} | {total}"]
        for o in arms:
            fixed = total - snaps[f"{o}@{top}"].get("errors_left", {}).get(kind, total)
            row.append(f"{fixed} ({fixed / total:.0%})" if total else "0")
        lines.append(" | ".join(row) + " |")
    lines.append(f"| wrong 18-class image labels | {inj['images']} | "
                 + " | ".join(str(inj['images'] - snaps[f"{o}@{top}"]['errors_left']['images']) for o in arms) + " |")
    seeds, q, lq = paired(fits, f"queue@{top}", f"learning@{top}", a["metric"])
    if not seeds:
        return lines
    mean, low, high = paired_interval(lq - q)
    verdict = ("no evidence of a difference" if math.isnan(low) or low <= 0 <= high
               else ("better" if low > 0 else "worse"))
    lines += ["", f"Learning - static queue, {a['metric']}, paired over training seeds {', '.join(seeds)}: "
              f"{_interval(mean, low, high)} ({verdict}); learning {lq.mean():.3f} "
              f"({', '.join(f'{v:.3f}' for v in lq)}), static {q.mean():.3f} ({', '.join(f'{v:.3f}' for v in q)}); "
              f"errors fixed {ours.get('errors_fixed')} vs {static.get('errors_fixed')}, images shown "
              f"{ours.get('images_shown')} vs {static.get('images_shown')}."]
    for first, second in (("combined", "pattern"), ("combined", "queue")):  # what learning adds after the patterns
        seeds, b, c = paired(fits, f"{second}@{top}", f"{first}@{top}", a["metric"])
        if not seeds:
            continue
        mean, low, high = paired_interval(c - b)
        verdict = ("no evidence of a difference" if math.isnan(low) or low <= 0 <= high
                   else ("better" if low > 0 else "worse"))
        lines.append(f"{ORDER_NAMES[first].capitalize()} - {ORDER_NAMES[second]}, {a['metric']}, paired over training "
                     f"seeds {', '.join(seeds)}: {_interval(mean, low, high)} ({verdict}).")
    return lines


def rerank_summary(snapshot: dict[str, Any]) -> str:
    """One line on the re-rankings of a simulated learning arm."""
    reranks = snapshot.get("reranks") or []
    if not reranks:
        return ""
    active = [r for r in reranks if r["active"]]
    return (f"{len(reranks)} re-rankings, {len(active)} with a learned model (the first after "
            f"{active[0]['decisions'] if active else '-'} decisions); median units ranked up with a reason: "
            f"{int(np.median([r['moved_up'] for r in active])) if active else 0}")


# ---- filling a results file's trainings from several processes ---------------------------------------------------
def fill(results: Path, names: list[str], seeds: list[int], out: Path) -> None:
    """Train and evaluate the cells (labelling ``names`` x training ``seeds``) of a cleaning-loop results file
    exactly as ``cleaning_loop.run`` does (same options, snapshot, held-out demo), writing them to ``out``
    (a part file that ``merge`` adds to the results). Lets idle CPU work on the trainings in parallel."""
    import shutil
    import time

    from bench.cleaning_loop import Holdout, evaluate
    from core.store import LabelStore
    from train.loop import fit

    data = json.loads(results.read_text())
    cfg, record = data["config"], data["record"]
    work = Path(record["snapshots"]["noisy"]["db"]).parent
    train_opts = {"model": cfg["model"], "img_size": tuple(cfg["img_size"]), "epochs": cfg["epochs"],
                  "threads": cfg["threads"], "batch_size": cfg["batch_size"], "cache_dir": str(work / "cache"),
                  "out": str(work / "runs")}
    with LabelStore(record["snapshots"]["noisy"]["db"]) as store:
        holdout = Holdout.from_demo(work / "holdout", store.schema)
    part: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"fits": {}}
    for seed in seeds:
        for name in names:
            if str(seed) in part["fits"].get(name, {}) or str(seed) in record["fits"].get(name, {}):
                continue
            snap = record["snapshots"][name]
            started = time.monotonic()
            result = fit(db=snap["db"], snapshot=snap["path"], echo=False, seed=seed, **train_opts)
            if result["status"] != "done":
                raise RuntimeError(f"{name} seed {seed}: training run {result['run_id']} ended {result['status']}")
            train_s = time.monotonic() - started
            metrics = evaluate(Path(result["run_dir"]) / "last.safetensors", holdout, work / "cache", cfg["threads"])
            metrics.update(train_s=round(train_s, 1), eval_s=round(time.monotonic() - started - train_s, 1))
            shutil.rmtree(result["run_dir"], ignore_errors=True)
            part["fits"].setdefault(name, {})[str(seed)] = metrics
            out.write_text(json.dumps(part, indent=1))
            print(f"{name} seed {seed}: macro F1 {metrics['macro_f1']:.4f} (train {train_s:.0f} s)", flush=True)


def merge(results: Path, parts: list[Path]) -> None:
    """Add the part files' trainings to the results file (cells it already has are kept)."""
    data = json.loads(results.read_text())
    fits = data["record"]["fits"]
    for path in parts:
        for name, cell in json.loads(path.read_text())["fits"].items():
            for seed, metrics in cell.items():
                fits.setdefault(name, {}).setdefault(seed, metrics)
    results.write_text(json.dumps(data, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="fill or merge a cleaning-loop results file's trainings")
    parser.add_argument("results", type=Path)
    parser.add_argument("--names", nargs="+", default=["queue@0.05", "learning@0.05"])
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--out", type=Path, help="part file to write (fill)")
    parser.add_argument("--merge", type=Path, nargs="+", help="part files to add to the results")
    args = parser.parse_args(argv)
    if args.merge:
        merge(args.results, args.merge)
    else:
        fill(args.results, args.names, args.seeds, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
