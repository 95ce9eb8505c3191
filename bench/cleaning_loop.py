"""Does cleaning pay? Train on noisy labels, review the top of a queue, retrain, compare with the truth,
paired over training seeds, with intervals.

    PYTHONPATH=. .venv/bin/python -m bench.cleaning_loop --quick                       # tiny, 1 epoch: the code path
    PYTHONPATH=. .venv/bin/python -m bench.cleaning_loop --profile systematic --out /tmp/cl-sys.json
    PYTHONPATH=. .venv/bin/python -m bench.cleaning_loop --profile random --out /tmp/cl-rand.json
    PYTHONPATH=. .venv/bin/python -m bench.cleaning_loop --report /tmp/cl-sys.json /tmp/cl-rand.json --write

One demo per run (``core.demo.generate`` with ``--profile`` random or systematic, ``--noise`` and
``--demo-seed``), and a separate noise-free held-out demo of ``--holdout`` other people (demo seed +
10,000) that never reaches the store: its images are predicted with ``train.checkpoint.load_model`` and
``train.loop.predict_probs`` against the true labels of its ``truth.csv``.

1. ``core.ingest`` the training demo; ``train.score.score`` it once (cross-validated out-of-fold
   probabilities, training seed = the first of ``--seeds``).
2. A simulated reviewer ("simulated") walks each arm's queue and answers from truth.csv, through the very
   functions the dashboard's buttons call (``core.review.set_label`` / ``verdict``, the shown value read by
   ``store.label_of`` as the Review page does), until the budget is spent. **The budget counts decisions: one
   queue entry = one decision**, whatever it shows (a person unit shows the person's whole strip; the images
   shown are reported beside it). Budgets are fractions of the labelled images (5 %: 0.05 x images decisions)
   and cumulative. Arms, each in its own copy of the store:
   * ``queue``: the Review page's queue (the store's, read by ``core.review.queue_units``): flagged units first (the
     page's default filter), then the rest, in queue order. A unit is one attribute of one image (mask) or of
     one person (gender, age group).
   * ``cleanlab``: cleanlab's per-image order on the same out-of-fold probabilities (18-class joint =
     product of the heads'): ``find_label_issues`` by self-confidence, then ``get_label_quality_scores``.
     An entry is an image; the reviewer fixes every label it carries (a gender or age fix applies to the
     person, as the Browse page does).
   * ``random``: the Review page's units in a random order (seeded by the demo seed).
   A third copy gets every injected error corrected: the ceiling.
3. Every labelling (noisy, ceiling, each arm at each budget) is trained with **every training seed** in
   ``--seeds`` (``fit``'s seed: initialisation, sampling, augmentation and its 80/20 person split), the
   same seeds in every arm, and scored on the held-out people (``last`` checkpoint: fixed epochs).

Statistics, over training seeds (the paired unit is a seed): each arm's mean macro F1; the 95 % interval of
its paired difference from noisy (and of ceiling - noisy, and queue - cleanlab) by the paired t
distribution (n - 1 degrees of freedom); the gap recovered ``mean(arm - noisy) / mean(ceiling - noisy)``
with its 95 % Fieller interval for a ratio of paired means (unbounded when the gap itself is not
significantly above 0). Run-to-run spread = the pooled within-labelling standard deviation of macro F1
over seeds. Errors fixed are a property of the queue and the demo (one score run), so they have no seed
spread. The demo seed is fixed within a run: intervals cover training noise, not the draw of the dataset.
Results go to ``--out`` (JSON) after every fit, and a killed run resumes from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench import common, learning_arm  # noqa: E402
from bench.common import BENCHMARKS, add_write_flag, pooled_sd, t_quantile  # noqa: E402
from core import review  # noqa: E402
from core.files import replacing  # noqa: E402
from core.schema import Schema  # noqa: E402
from core.store import LabelStore, read_snapshot  # noqa: E402

SECTION = "## Does cleaning pay?"
ANNOTATOR = "simulated"
BUDGETS = (0.05,)
ORDERS = ("queue", "cleanlab", "random", "pattern", "learning", "combined")
ORDER_NAMES = {"queue": "Review page", "cleanlab": "cleanlab per image", "random": "random order",
               "pattern": "patterns, then Review page",  # bench/pattern_arm.py
               "learning": "learning queue",  # bench/learning_arm.py
               "combined": "patterns, then learning queue"}  # bench/pattern_arm.py CombinedReviewer
SEEDS = (0, 1, 2, 3, 4)
# test_resnet (timm's 0.4 M-parameter ResNet) at 48x64: 2 CPU cores shared with other jobs must train
# 5 seeds x 5 labellings in about an hour per profile.
DEFAULT = {"persons": 320, "holdout": 300, "noise": 0.2, "profile": "systematic", "demo_seed": 0,
           "image_size": (48, 64), "model": "test_resnet", "img_size": (48, 64), "epochs": 6, "folds": 3,
           "batch_size": 32}
QUICK = {"persons": 40, "holdout": 20, "noise": 0.2, "profile": "systematic", "demo_seed": 0,
         "image_size": (32, 40), "model": "test_resnet", "img_size": (32, 40), "epochs": 1, "folds": 2,
         "batch_size": 16}
QUICK_SEEDS = (0, 1)


# ---- truth and label errors -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Truth:
    """The true stored values of a demo: per image (``mask``) and per person (``gender``, ``age``)."""

    images: dict[str, dict[str, Any]]
    persons: dict[str, dict[str, Any]]

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Truth:
        """Read a demo's truth.csv (``true_*`` columns; person = folder name, the store's person key)."""
        table = pd.read_csv(path, dtype={"path": str, "person": str})
        images = {p: {"mask": m} for p, m in zip(table["path"], table["true_mask"])}
        people = table.drop_duplicates("person")
        persons = {p: {"gender": g, "age": int(a)} for p, g, a in
                   zip(people["person"], people["true_gender"], people["true_age"])}
        return cls(images, persons)

    def value(self, schema: Schema, target: str, attribute: str) -> Any:
        """The true stored value of ``attribute`` for an image path or a person key."""
        table = self.persons if schema.scope(attribute) == "person" else self.images
        return table[str(target)][attribute]


def same_label(schema: Schema, attribute: str, shown: Any, true: Any) -> bool:
    """Whether the shown value is right as far as the task goes: integer attributes feeding a bin
    (age -> age_group) are compared by bin, since a reviewer judges the group, not the exact age."""
    for binned in schema.binned:
        if binned.source == attribute:
            return bool(binned.codes([int(shown)])[0] == binned.codes([int(true)])[0])
    return str(shown) == str(true)


def label_errors(store: LabelStore, truth: Truth) -> dict[str, int]:
    """Wrong labels in the store now, as review decisions: ``mask`` (images), ``gender`` and
    ``age_group`` (people), their sum ``errors``, and ``images`` whose 18-class label is wrong."""
    schema = store.schema
    labels = store.current_labels()
    true = labels[["path", "person"]].copy()
    true["mask"] = [truth.images[p]["mask"] for p in labels["path"]]
    true["gender"] = [truth.persons[p]["gender"] for p in labels["person"]]
    true["age"] = [truth.persons[p]["age"] for p in labels["person"]]
    given, actual = schema.codes(labels), schema.codes(true)
    wrong = {t: given[t] != actual[t] for t in ("mask", "gender", "age_group")}
    person = labels["person"].to_numpy()
    out = {"mask": int(wrong["mask"].sum()),
           "gender": len(set(person[wrong["gender"]])), "age_group": len(set(person[wrong["age_group"]]))}
    out["errors"] = out["mask"] + out["gender"] + out["age_group"]
    out["images"] = int((schema.encode_class(given) != schema.encode_class(actual)).sum())
    return out


# ---- queues -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One queue entry the reviewer looks at: what it costs (images seen) and the (target, stored
    attribute) decisions it asks for."""

    name: str
    cost: int
    decisions: tuple[tuple[str, str], ...]
    shown: int = 1  # images on screen for it (a person unit shows the person's strip)


def review_queue_entries(store: LabelStore, run_id: int, *, person_cost: bool = True) -> list[Entry]:
    """The Review page's queue of score run ``run_id``: flagged unreviewed units in queue order (the
    page's default filters), then the other unreviewed units. A person unit costs the person's images
    (``person_cost=False``: every unit costs 1, i.e. the budget counts decisions)."""
    status_table = review.statuses(store, store.run(run_id)["created_at"])
    flagged = review.queue_units(store, run_id, status_table, flagged_only=True, status="unreviewed")
    rest = review.queue_units(store, run_id, status_table, status="unreviewed")
    rows = pd.concat([flagged, rest[~rest["key"].isin(set(flagged["key"]))]], ignore_index=True)
    sizes = store.current_labels(derived=False)["person"].value_counts().to_dict()
    schema, entries = store.schema, []
    for row in rows.itertuples(index=False):
        # The unit's scope from the schema: the queue leaves ``scope`` empty for a binned target
        # (age_group -> age), whose unit is still a person.
        target = review.target_of(schema, row.attribute, row.path, row.person)
        person = schema.scope(row.stored) == "person" and target == row.person
        shown = int(sizes.get(target, 1)) if person else 1
        entries.append(Entry(row.key, shown if person_cost else 1, ((str(target), str(row.stored)),), shown))
    return entries


def cleanlab_order(given: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Row order (n,) of cleanlab's per-image ranking: ``find_label_issues`` by self-confidence,
    then every other row by ``get_label_quality_scores`` (lowest quality first)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.clip(probs, 1e-12, None)
    probs = probs / probs.sum(1, keepdims=True)
    issues = np.asarray(find_label_issues(given, probs, return_indices_ranked_by="self_confidence", n_jobs=1),
                        dtype=np.int64)
    quality = get_label_quality_scores(given, probs)
    rest = np.setdiff1d(np.arange(len(given)), issues)
    return np.concatenate([issues, rest[np.argsort(quality[rest], kind="stable")]])


def cleanlab_entries(store: LabelStore, run_dir: str | os.PathLike[str], snapshot: str | os.PathLike[str]) -> list[Entry]:
    """cleanlab's per-image queue on a score run's out-of-fold probabilities (18-class joint), given
    labels from the scored snapshot. Each image costs 1 and asks for all its labels."""
    from train.predict import joint_probs
    from train.score import load_oof

    schema = store.schema
    items, probs = load_oof(run_dir)
    labels, _ = read_snapshot(snapshot)
    labels = items[["path"]].merge(labels, on="path", how="left", validate="one_to_one")
    given = schema.encode_class(schema.codes(labels))
    joint = joint_probs(schema, {n: probs[n].astype(np.float64) for n in schema.class_attributes})
    order = cleanlab_order(given, joint)
    stored = [schema.target_source(t) for t in schema.class_attributes]  # mask, gender, age
    entries = []
    for i in order:
        path, person = str(labels["path"].iat[i]), labels["person"].iat[i]
        decisions = tuple((review.target_of(schema, a, path, person), a) for a in stored)
        entries.append(Entry(path, 1, decisions))
    return entries


# ---- the reviewer ------------------------------------------------------------------------------------------
@dataclass
class Reviewer:
    """Walks ``entries`` in order and answers from ``truth`` through the dashboard's actions.

    ``review_until(budget)`` continues where the last call stopped and takes entries while their
    cost fits the cumulative budget (images); it stops at the first entry that does not fit. A
    wrong label gets ``review.set_label(..., shown=<store.label_of>)``, a right one
    ``review.verdict(kind="correct")``, exactly like the Review page's Accept/Set and "Label is
    correct" buttons. ``log`` keeps one row per decision.
    """

    store: LabelStore
    entries: Sequence[Entry]
    truth: Truth
    annotator: str = ANNOTATOR
    score_run: int | None = None
    position: int = 0
    spent: int = 0
    shown: int = 0  # images shown for the entries taken
    log: list[dict[str, Any]] = field(default_factory=list)
    decided: set[tuple[str, str]] = field(default_factory=set)

    def review_until(self, budget: int) -> dict[str, int]:
        """Review until ``budget`` images are spent in all; returns this call's counts."""
        schema = self.store.schema
        counts = {"entries": 0, "images": 0, "corrected": 0, "confirmed": 0, "repeated": 0, "failed": 0}
        while self.position < len(self.entries):
            entry = self.entries[self.position]
            if self.spent + entry.cost > budget:
                break
            for target, attribute in entry.decisions:
                if (target, attribute) in self.decided:
                    counts["repeated"] += 1
                    continue
                self.decided.add((target, attribute))
                shown = self.store.label_of(target, attribute)
                true = self.truth.value(schema, target, attribute)
                if same_label(schema, attribute, shown, true):
                    outcome = review.verdict(self.store, target, attribute, shown=shown, annotator=self.annotator,
                                             kind="correct", score_run=self.score_run)
                    action = "confirmed"
                else:
                    outcome = review.set_label(self.store, target, attribute, true, shown=shown,
                                               annotator=self.annotator, reason="simulated reviewer (truth.csv)",
                                               source="review")
                    action = "corrected"
                counts[action if outcome.ok else "failed"] += 1
                self.log.append({"entry": self.position, "target": target, "attribute": attribute, "shown": shown,
                                 "true": true, "action": action, "ok": outcome.ok, "message": outcome.message})
            self.spent += entry.cost
            self.shown += entry.shown
            self.position += 1
            counts["entries"] += 1
            counts["images"] += entry.cost
        return counts


def correct_everything(store: LabelStore, truth: Truth, annotator: str = "truth") -> int:
    """Correct every wrong label to the truth (the ceiling's labels); returns the number of corrections."""
    schema = store.schema
    labels = store.current_labels(derived=False)
    decisions = [(p, "mask") for p in labels["path"]]
    decisions += [(p, a) for p in labels["person"].dropna().unique() for a in ("gender", "age")]
    done = 0
    for target, attribute in decisions:
        shown = store.label_of(target, attribute)
        true = truth.value(schema, target, attribute)
        if not same_label(schema, attribute, shown, true):
            outcome = review.set_label(store, target, attribute, true, shown=shown, annotator=annotator,
                                       reason="ceiling: true label", source="import")
            if not outcome.ok:
                raise RuntimeError(outcome.message)
            done += 1
    return done


def gap_recovered(noisy: float, cleaned: float, ceiling: float, min_gap: float = 1e-9) -> float | None:
    """(cleaned - noisy) / (ceiling - noisy); None when the ceiling is not above the noisy model."""
    gap = ceiling - noisy
    return None if gap <= min_gap else (cleaned - noisy) / gap


# ---- held-out evaluation -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Holdout:
    """Held-out images (paths relative to ``root``) with content hashes and their true label codes."""

    root: Path
    paths: list[str]
    hashes: list[str]
    truth: dict[str, np.ndarray]

    @classmethod
    def from_demo(cls, root: str | os.PathLike[str], schema: Schema) -> Holdout:
        from core.images import content_hash

        root = Path(root)
        table = pd.read_csv(root / "truth.csv", dtype={"path": str, "person": str})
        labels = pd.DataFrame({"mask": table["true_mask"], "gender": table["true_gender"], "age": table["true_age"]})
        return cls(root, table["path"].tolist(), [content_hash(root / p) for p in table["path"]],
                   schema.codes(labels))


def evaluate(checkpoint: str | os.PathLike[str], holdout: Holdout, cache_dir: str | os.PathLike[str],
             threads: int = 2) -> dict[str, Any]:
    """Held-out metrics of a checkpoint: ``macro_f1`` (18 classes), ``acc_<head>``, ``acc_class``."""
    import torch

    from train.checkpoint import load_model
    from train.data import ImageCache
    from train.loop import predict_probs
    from train.metrics import classification_metrics, predicted_codes

    torch.set_num_threads(threads)
    model, meta = load_model(checkpoint, "cpu")
    schema = Schema.from_dict(meta["schema"])
    cache = ImageCache.open(holdout.root, holdout.paths, holdout.hashes, tuple(meta["image_size"]), cache_dir,
                            threads=threads, progress=False)
    probs, _ = predict_probs(model, cache, np.arange(len(cache)), meta["mean"], meta["std"], torch.device("cpu"), 128)
    metrics = classification_metrics(schema, holdout.truth, predicted_codes(schema, list(probs), probs))
    return {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}


# ---- statistics over paired seeds ------------------------------------------------------------------------------
def paired_interval(diffs: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): 95 % paired-t interval of the mean of per-seed differences (nan bounds for n < 2)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def ratio_interval(num: Sequence[float], den: Sequence[float]) -> tuple[float | None, float, float]:
    """(ratio, low, high): mean(num) / mean(den) with Fieller's 95 % interval for paired samples; the bounds
    are nan when unbounded (the denominator not significantly different from 0), the ratio None when
    mean(den) <= 0."""
    a_, b_ = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    n = len(a_)
    a, b = float(a_.mean()), float(b_.mean())
    ratio = a / b if b > 1e-12 else None
    if n < 2:
        return ratio, math.nan, math.nan
    t2 = t_quantile(n - 1) ** 2
    vaa, vbb = float(a_.var(ddof=1)) / n, float(b_.var(ddof=1)) / n
    vab = float(np.cov(a_, b_, ddof=1)[0, 1]) / n
    qa, qb, qc = b * b - t2 * vbb, -2 * (a * b - t2 * vab), a * a - t2 * vaa
    disc = qb * qb - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return ratio, math.nan, math.nan
    root = math.sqrt(disc)
    return ratio, (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)


# ---- the loop -------------------------------------------------------------------------------------------------
def _setup(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs' numbers comparable: the configuration without the queues, budgets and seeds."""
    return {k: v for k, v in config.items() if k not in ("orders", "budgets", "seeds", "threads")
            and not k.startswith("experiment_")}  # bench/experiment_arm.py's settings: added later, resumable


class Results:
    """The results document, saved (atomically) after every step so a killed run keeps what it did."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = path
        self.data: dict[str, Any] = {"config": config, "record": {"times": {}, "fits": {}, "snapshots": {}}}
        if path.exists():  # resume: keep finished steps of the same setup (queues, budgets, seeds may be added)
            old = json.loads(path.read_text())
            if _setup(old.get("config", {})) == _setup(config):
                self.data = old
                self.data["config"].update({k: config[k] for k in config if k in ("orders", "budgets", "seeds")
                                            or k.startswith("experiment_")})

    @property
    def record(self) -> dict[str, Any]:
        return self.data["record"]

    def save(self) -> None:
        with replacing(self.path, fsync=False) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1, default=str))


def timed(record: dict[str, Any], name: str, action: Callable[[], Any]) -> Any:
    """Run ``action``, storing its wall seconds under ``record["times"][name]``."""
    started = time.monotonic()
    value = action()
    record["times"][name] = round(time.monotonic() - started, 1)
    return value


def copy_store(source: Path, target: Path) -> Path:
    """A consistent copy of a store's database (sqlite backup API); its ``.d`` folder starts empty."""
    if target.exists():
        target.unlink()
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def arm_entries(order: str, store: LabelStore, record: dict[str, Any], snapshot: Any, seed: int) -> list[Entry]:
    """An arm's queue: every entry costs one decision (``shown`` = the images on screen for it)."""
    if order == "cleanlab":
        return cleanlab_entries(store, record["score_dir"], snapshot)
    if order == "pattern":  # bench/pattern_arm.py: patterns first, each costing the units it shows
        from bench.pattern_arm import pattern_entries
        return pattern_entries(store, record, seed)
    entries = review_queue_entries(store, record["score_run"], person_cost=False)
    if order == "random":
        entries = [entries[i] for i in np.random.default_rng([seed, 77]).permutation(len(entries))]
    return entries


def arm_reviewer(order: str, store: LabelStore, record: dict[str, Any], truth: Truth, snapshot: Any,
                 seed: int) -> Any:
    """The simulated reviewer of an arm (the pattern arm's takes a pattern as one bulk step; the learning arm's
    re-ranks from the decisions; the combined arm's does the patterns, then the learning queue)."""
    if order == "learning":
        return learning_arm.make_reviewer(store, record, truth)
    if order == "combined":
        from bench.pattern_arm import CombinedReviewer
        return CombinedReviewer(store, record, truth, seed)
    entries = arm_entries(order, store, record, snapshot, seed)
    if order == "pattern":
        from bench.pattern_arm import PatternReviewer
        return PatternReviewer(store, entries, truth, score_run=record["score_run"])
    return Reviewer(store, entries, truth, score_run=record["score_run"])


def run(cfg: dict[str, Any], work: Path, results: Results, log: Callable[[str], None]) -> None:
    """The whole loop for one demo; finished steps (in ``results``) are not repeated."""
    from core.demo import generate
    from core.ingest import ingest
    from train.loop import fit
    from train.score import score

    record = results.record
    seeds = [int(s) for s in cfg["seeds"]]
    cache_dir, runs = work / "cache", work / "runs"
    train_opts = {"model": cfg["model"], "img_size": tuple(cfg["img_size"]), "epochs": cfg["epochs"],
                  "threads": cfg["threads"], "batch_size": cfg["batch_size"], "cache_dir": str(cache_dir),
                  "out": str(runs)}
    data, held, main_db = work / "data", work / "holdout", work / "noisy.db"
    demo_seed = int(cfg["demo_seed"])

    if "generate" not in record["times"]:
        def make() -> None:
            info = generate(data, persons=cfg["persons"], noise=cfg["noise"], seed=demo_seed, eval_images=0,
                            image_size=tuple(cfg["image_size"]), profile=cfg["profile"])
            record["corrupted_people"] = info.corrupted
            generate(held, persons=cfg["holdout"], noise=0.0, seed=demo_seed + 10_000, eval_images=0,
                     image_size=tuple(cfg["image_size"]))
            for path in work.glob("*.db*"):
                path.unlink() if path.is_file() else shutil.rmtree(path)
            with LabelStore(main_db) as store:
                ingest(data, store)
        timed(record, "generate", make)
        results.save()
    truth = Truth.from_csv(data / "truth.csv")
    with LabelStore(main_db) as store:
        schema = store.schema
        noisy_snapshot = store.snapshot()
        before = label_errors(store, truth)
        record["n_images"] = int(len(store.current_labels(derived=False)))
    holdout = Holdout.from_demo(held, schema)
    record["errors_injected"] = before
    record["n_holdout_images"] = len(holdout.paths)
    record["n_holdout_people"] = int(cfg["holdout"])

    if "score_run" not in record:
        result = timed(record, "score", lambda: score(db=str(main_db), folds=cfg["folds"], echo=False, seed=seeds[0],
                                                      snapshot=str(noisy_snapshot.path), **train_opts))
        if result["status"] != "done":
            raise RuntimeError(f"score run ended {result['status']}")
        record["score_run"], record["score_dir"] = result["run_id"], result["run_dir"]
        results.save()
        log(f"score: run {result['run_id']} in {record['times']['score']:.0f} s")

    snapshots: dict[str, Any] = record["snapshots"]
    snapshots["noisy"] = {"hash": noisy_snapshot.hash, "path": str(noisy_snapshot.path), "db": str(main_db)}
    truth_db = work / "truth.db"
    if "ceiling" not in snapshots:
        def build_ceiling() -> None:
            copy_store(main_db, truth_db)
            with LabelStore(truth_db) as store:
                record["ceiling_corrections"] = correct_everything(store, truth)
                record["ceiling_errors_left"] = label_errors(store, truth)
                snap = store.snapshot()
                snapshots["ceiling"] = {"hash": snap.hash, "path": str(snap.path), "db": str(truth_db)}
        timed(record, "ceiling_labels", build_ceiling)
        results.save()
    orders = list(cfg["orders"])
    for order in orders:
        if all(f"{order}@{b}" in snapshots for b in cfg["budgets"]):
            continue
        def simulate(order: str = order) -> None:
            db = copy_store(main_db, work / f"review-{order}.db")
            with LabelStore(db) as store:
                reviewer = arm_reviewer(order, store, record, truth, noisy_snapshot.path, demo_seed)
                for budget in sorted(cfg["budgets"]):
                    decisions = int(budget * record["n_images"])
                    reviewer.review_until(decisions)
                    snap = store.snapshot()
                    left = label_errors(store, truth)
                    actions = pd.DataFrame(reviewer.log)
                    snapshots[f"{order}@{budget}"] = {
                        "hash": snap.hash, "path": str(snap.path), "db": str(db), "budget_decisions": decisions,
                        "entries": reviewer.position, "images_shown": reviewer.shown, "spent": reviewer.spent,
                        "corrections": int((actions["action"] == "corrected").sum()) if len(actions) else 0,
                        "confirmed": int((actions["action"] == "confirmed").sum()) if len(actions) else 0,
                        "failed": int((~actions["ok"]).sum()) if len(actions) else 0,
                        "errors_left": left, "errors_fixed": before["errors"] - left["errors"],
                        **({"reranks": reviewer.reranks} if order in ("learning", "combined") else {})}
                    log(f"{order} {budget:.0%}: {reviewer.position} entries ({reviewer.shown} images shown), "
                        f"{snapshots[f'{order}@{budget}']['corrections']} corrections, "
                        f"{before['errors'] - left['errors']}/{before['errors']} errors fixed")
        timed(record, f"review_{order}", simulate)
        results.save()

    fits: dict[str, dict[str, Any]] = record["fits"]
    names = ["noisy", "ceiling", *(f"{o}@{b}" for b in sorted(cfg["budgets"], reverse=True) for o in orders)]
    by_hash: dict[str, dict[str, Any]] = {}  # same labels, same seed: one training
    for name in names:
        for seed, metrics in fits.get(name, {}).items():
            by_hash[f"{snapshots[name]['hash']}:{seed}"] = metrics
    for seed in seeds:  # seeds outermost: a run stopped early still has every arm of its first seeds
        for name in names:
            cell = fits.setdefault(name, {})
            if str(seed) in cell:
                continue
            snap = snapshots[name]
            key = f"{snap['hash']}:{seed}"
            if key in by_hash:
                cell[str(seed)] = {**by_hash[key], "reused": True}
                continue
            started = time.monotonic()
            result = fit(db=snap["db"], snapshot=snap["path"], echo=False, seed=seed, **train_opts)
            if result["status"] != "done":  # fit turns SIGTERM/SIGINT into a "cancelled" run: stop here too
                raise RuntimeError(f"{name} seed {seed}: training run {result['run_id']} ended {result['status']}")
            train_s = time.monotonic() - started
            metrics = evaluate(Path(result["run_dir"]) / "last.safetensors", holdout, cache_dir, cfg["threads"])
            metrics.update(train_s=round(train_s, 1), eval_s=round(time.monotonic() - started - train_s, 1))
            shutil.rmtree(result["run_dir"], ignore_errors=True)  # checkpoints are not needed again
            cell[str(seed)] = by_hash[key] = metrics
            results.save()
            log(f"{name} seed {seed}: macro F1 {metrics['macro_f1']:.4f} (train {train_s:.0f} s)")
    if cfg.get("experiment_arms"):  # arms rerun through the product's `python -m train experiment`
        from bench import experiment_arm

        experiment_arm.run(cfg, work, results, log)


# ---- the report -----------------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def _interval(mean: float, low: float, high: float, spec: str = "+.3f") -> str:
    if math.isnan(low):
        return f"{_fmt(mean, spec)} [n/a]"
    return f"{_fmt(mean, spec)} [{_fmt(low, spec)}, {_fmt(high, spec)}]"


def _ratio(ratio: float | None, low: float, high: float) -> str:
    if ratio is None:
        return "n/a (no gap)"
    return f"{ratio:.0%} [" + ("unbounded" if math.isnan(low) else f"{low:.0%}, {high:.0%}") + "]"


def paired(fits: dict[str, dict[str, Any]], a: str, b: str,
           metric: str = "macro_f1") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Seeds trained in both labellings, and their ``metric`` in each."""
    seeds = [s for s in fits.get(a, {}) if s in fits.get(b, {})]
    return seeds, np.array([fits[a][s][metric] for s in seeds]), np.array([fits[b][s][metric] for s in seeds])


def analyse(data: dict[str, Any], metric: str = "macro_f1") -> dict[str, Any]:
    """The numbers the report and its target lines are made of, for one held-out ``metric``."""
    cfg, record = data["config"], data["record"]
    fits, snaps = record.get("fits", {}), record.get("snapshots", {})
    out: dict[str, Any] = {"arms": {}, "metric": metric}
    seeds, noisy, ceiling = paired(fits, "noisy", "ceiling", metric)
    out["seeds"] = seeds
    out["gap"] = paired_interval(ceiling - noisy) if seeds else (math.nan,) * 3
    out["spread"] = pooled_sd([[m[metric] for m in cell.values()] for cell in fits.values()])
    for budget in sorted(cfg["budgets"]):
        for order in cfg["orders"]:
            name = f"{order}@{budget}"
            common = [s for s in fits.get(name, {}) if s in seeds]
            if not common:
                continue
            f_arm = np.array([fits[name][s][metric] for s in common])
            f_noisy = np.array([fits["noisy"][s][metric] for s in common])
            f_ceiling = np.array([fits["ceiling"][s][metric] for s in common])
            out["arms"][name] = {"order": order, "budget": budget, "seeds": common, "values": f_arm,
                                 "diff": paired_interval(f_arm - f_noisy),
                                 "recovered": ratio_interval(f_arm - f_noisy, f_ceiling - f_noisy),
                                 "snapshot": snaps.get(name, {})}
    return out


METRIC_NAMES = {"macro_f1": "macro F1 (18 classes)", "acc_class": "18-class accuracy"}


def _by_kind(snap: dict[str, Any], inj: dict[str, int]) -> str:
    """Errors fixed per kind, mask / gender / age group, e.g. " (37/64, 1/26, 10/49)"."""
    left = snap.get("errors_left")
    if not left:
        return ""
    return " (" + ", ".join(f"{inj[k] - left[k]}/{inj[k]}" for k in ("mask", "gender", "age_group")) + ")"


def _table(a: dict[str, Any], fits: dict[str, Any], inj: dict[str, int]) -> list[str]:
    metric = a["metric"]
    lines = [f"| arm | budget (decisions) | entries / images shown | errors fixed (mask, gender, age group) | "
             f"{METRIC_NAMES[metric]}, mean "
             "(per seed) | paired diff from noisy [95 % CI] | gap recovered [95 % CI] |",
             "|---|---|---|---|---|---|---|"]
    for name in ("noisy", "ceiling"):
        values = [fits[name][s][metric] for s in a["seeds"]]
        diff = "—" if name == "noisy" else _interval(*a["gap"])
        fixed = "0" if name == "noisy" else f"{inj['errors']}/{inj['errors']} (all)"
        lines.append(f"| {name} | — | — | {fixed} | {np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)}) "
                     f"| {diff} | {'0 %' if name == 'noisy' else '100 %'} |")
    for arm in a["arms"].values():
        snap, values = arm["snapshot"], arm["values"]
        lines.append(f"| {ORDER_NAMES.get(arm['order'], arm['order'])} | {arm['budget']:.0%} "
                     f"({snap.get('budget_decisions', '?')}) | {snap.get('entries', '?')} / "
                     f"{snap.get('images_shown', '?')} | {snap.get('errors_fixed', '?')}/{inj['errors']}{_by_kind(snap, inj)} "
                     f"| {values.mean():.3f} ({', '.join(f'{v:.3f}' for v in values)}) | {_interval(*arm['diff'])} "
                     f"| {_ratio(*arm['recovered'])} |")
    gap, spread = a["gap"][0], a["spread"]
    ratio = gap / spread if spread and not math.isnan(spread) and spread > 0 else math.nan
    lines += ["", f"Run-to-run spread of {METRIC_NAMES[metric]} (pooled within-labelling SD over training seeds): "
              f"{spread:.4f}; noisy->ceiling gap {gap:+.4f} = {_fmt(ratio, '.1f')}x the spread "
              f"({'at least' if ratio >= 3 else 'less than'} the 3x required)."]
    return lines


def _targets(a: dict[str, Any], cfg: dict[str, Any], fits: dict[str, Any], label: str) -> list[str]:
    _metric, lines = a["metric"], []
    top = max(cfg["budgets"])
    for arm in ("queue", "pattern", "combined"):
        lines += _arm_targets(a, cfg, fits, label, arm, top)
    return lines


def _arm_name(arm: str) -> str:
    return "" if arm == "queue" else f", {ORDER_NAMES[arm]}"  # the queue arm's lines read as before


def _arm_targets(a: dict[str, Any], cfg: dict[str, Any], fits: dict[str, Any], label: str, arm: str,
                 top: float) -> list[str]:
    metric, lines = a["metric"], []
    ours, theirs = a["arms"].get(f"{arm}@{top}"), a["arms"].get(f"cleanlab@{top}")
    if ours:
        rec, low, _ = ours["recovered"]
        met = rec is not None and rec >= 0.8 and not math.isnan(low) and low > 0.5
        lines.append(f"{label} 1 ({cfg['profile']}, {METRIC_NAMES[metric]}{_arm_name(arm)}), recover >= 80 % of the noisy->ceiling "
                     f"gap at {top:.0%} with the interval's lower end above 50 %: {'met' if met else 'missed'} "
                     f"({_ratio(*ours['recovered'])}).")
    if ours and theirs:
        _, q, c = paired(fits, f"{arm}@{top}", f"cleanlab@{top}", metric)
        mean, low, high = paired_interval(q - c)
        fq, fc = ours["snapshot"].get("errors_fixed", 0), theirs["snapshot"].get("errors_fixed", 0)
        met = fq > fc and not math.isnan(low) and low > 0
        lines.append(f"{label} 2 ({cfg['profile']}, {METRIC_NAMES[metric]}{_arm_name(arm)}), beat cleanlab's order at {top:.0%} on "
                     f"errors fixed and on the metric (interval of the paired difference above 0): "
                     f"{'met' if met else 'missed'} (errors fixed {fq} vs {fc}; {arm} - cleanlab "
                     f"{_interval(mean, low, high)}).")
    return lines


def report(data: dict[str, Any]) -> str:
    """Markdown for one run (one demo): setup, per-arm tables (macro F1, then 18-class accuracy) with paired
    intervals, the spread check, the target lines computed from the numbers, and wall times."""
    cfg, record = data["config"], data["record"]
    fits = record.get("fits", {})
    a = analyse(data)
    if not a["seeds"]:
        return f"### Profile `{cfg['profile']}`\n\n(no seed with both noisy and ceiling trainings yet)"
    inj = record["errors_injected"]
    lines = [
        f"### Profile `{cfg['profile']}`, noise {cfg['noise']}, {cfg['epochs']} epochs",
        "",
        " and ".join(f"`{c}`" for c in data.get("commands") or ["python -m bench.cleaning_loop"]) +
        f" ({data.get('machine', 'this machine')}; {data.get('total_s', 0) / 60:.0f} min of wall time).",
        "",
        f"Demo `--noise-profile {cfg['profile']}`, noise {cfg['noise']}, demo seed {cfg['demo_seed']}: "
        f"{cfg['persons']} people ({record['n_images']:,} training images); people changed per pattern: "
        + ", ".join(f"{k} {v}" for k, v in record.get("corrupted_people", {}).items())
        + f". Injected label errors as decisions: {inj['errors']} ({inj['mask']} mask images, {inj['gender']} "
        f"people's gender, {inj['age_group']} people's age group; {inj['images']} images with a wrong 18-class "
        f"label). Held out: {record['n_holdout_people']} other people ({record['n_holdout_images']:,} images, "
        f"noise-free). Every training: `{cfg['model']}` from scratch, {cfg['img_size'][0]}x{cfg['img_size'][1]} px, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, `last` checkpoint; training seeds "
        f"{', '.join(a['seeds'])} in every arm (paired). Scoring: `train.score`, {cfg['folds']} folds, seed "
        f"{cfg['seeds'][0]}.",
        "",
        *_table(a, fits, inj),
    ]
    lines += _targets(a, cfg, fits, "Target")
    if record.get("patterns"):  # bench/pattern_arm.py: what the pattern arm reviewed
        from bench.pattern_arm import report_lines
        lines += report_lines(record)
    lines += learning_arm.report_lines(a, cfg, fits, inj, record.get("snapshots"))
    acc = analyse(data, "acc_class")
    lines += ["", *_table(acc, fits, inj), *_targets(acc, cfg, fits, "Same test")]
    times = record.get("times", {})
    train_s = [m.get("train_s", 0) + m.get("eval_s", 0) for cell in fits.values() for m in cell.values()
               if not m.get("reused")]
    lines += ["", "Wall time, seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items())
              + f"; {len(train_s)} trainings {sum(train_s):.0f} (median {np.median(train_s) if train_s else 0:.0f} "
              "each, training + held-out prediction)."]
    if record.get("experiment_arm"):
        from bench import experiment_arm

        lines += ["", "The product's experiment against the truth (bench/experiment_arm.py):", "",
                  *experiment_arm.report_lines(data)]
    return "\n".join(lines)


def report_all(documents: Sequence[dict[str, Any]]) -> str:
    return "\n\n".join(report(d) for d in documents)


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the "## Does cleaning pay?" section of BENCHMARKS.md; other sections untouched."""
    common.write_section(SECTION.removeprefix("## "), text, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run: " + json.dumps(QUICK))
    parser.add_argument("--profile", choices=["random", "systematic"], help="the demo's noise profile")
    parser.add_argument("--persons", type=int)
    parser.add_argument("--holdout", type=int, help="held-out people (a separate demo)")
    parser.add_argument("--noise", type=float, help="the demo's noise (see core.demo)")
    parser.add_argument("--demo-seed", type=int)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), help="generated image size")
    parser.add_argument("--model")
    parser.add_argument("--img-size", type=int, nargs=2, metavar=("W", "H"), help="training input size")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--folds", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS),
                        help="fractions of the labelled images, spent as decisions")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"training seeds (default {list(SEEDS)})")
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=list(ORDERS))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared, loaded machine a second thread made training 4x slower)")
    parser.add_argument("--work", type=Path, help="working folder (default /tmp/cleaning-loop-<profile>[-quick])")
    parser.add_argument("--out", type=Path, help="results JSON (default <work>/results.json); resumed if present")
    parser.add_argument("--report", type=Path, nargs="+", help="print the report of existing results JSON files")
    add_write_flag(parser, SECTION.removeprefix("## "))
    parser.add_argument("--experiment-arm", nargs="+", default=[], choices=["random", "ceiling"],
                        help="also rerun these arms through python -m train experiment (bench/experiment_arm.py)")
    parser.add_argument("--experiment-seed-sets", type=int, nargs="+", default=[0, 5, 10],
                        help="first seed of each seed set of the experiment arm (default 0 5 10)")
    parser.add_argument("--experiment-pairs", type=int, default=5, help="pairs per seed set (default 5)")
    parser.add_argument("--write-experiment", action="store_true",
                        help="write the experiment arm's section into BENCHMARKS.md")
    args = parser.parse_args(argv)

    if args.report:
        documents = [json.loads(path.read_text()) for path in args.report]
        text = report_all(documents)
        print(text)
        if args.write:
            write_section(text)
        if args.write_experiment:
            from bench import experiment_arm

            for document in documents:
                experiment_arm.write_section(document, document.get("commands", []))
        return 0
    cfg = dict(QUICK if args.quick else DEFAULT)
    for key in ("profile", "persons", "holdout", "noise", "demo_seed", "image_size", "model", "img_size", "epochs",
                "folds", "batch_size"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    seeds = args.seeds or list(QUICK_SEEDS if args.quick else SEEDS)
    cfg.update(budgets=sorted(args.budgets), threads=args.threads, seeds=seeds, orders=list(args.orders))
    if args.experiment_arm:
        cfg.update(experiment_arms=list(args.experiment_arm), experiment_seed_sets=list(args.experiment_seed_sets),
                   experiment_pairs=args.experiment_pairs)
    cfg["image_size"], cfg["img_size"] = list(cfg["image_size"]), list(cfg["img_size"])
    work = args.work or Path(f"/tmp/cleaning-loop-{cfg['profile']}" + ("-quick" if args.quick else ""))
    work.mkdir(parents=True, exist_ok=True)
    results = Results(args.out or work / "results.json", cfg)
    results.data["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start"
    command = "PYTHONPATH=. .venv/bin/python -m bench.cleaning_loop " + " ".join(sys.argv[1:] if argv is None else argv)
    results.data["commands"] = list(dict.fromkeys([*results.data.get("commands", []), command.strip()]))
    started, earlier = time.monotonic(), float(results.data.get("total_s", 0))  # a resumed run adds its time

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.0f} s] {message}", flush=True)
        results.data["total_s"] = round(earlier + time.monotonic() - started, 1)

    run(cfg, work, results, log)
    results.data["total_s"] = round(earlier + time.monotonic() - started, 1)
    results.save()
    print(report(results.data), flush=True)
    if args.write:
        write_section(report(results.data))
    if args.write_experiment:
        from bench import experiment_arm

        experiment_arm.write_section(results.data, results.data.get("commands", []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
