"""Does cleaning pay? Train on noisy labels, review the top of the queue, retrain, compare with the truth.

    PYTHONPATH=. .venv/bin/python bench/cleaning_loop.py --quick                 # ~160 people, small images
    PYTHONPATH=. .venv/bin/python bench/cleaning_loop.py --seeds 0 1 --out /tmp/cleaning.json
    PYTHONPATH=. .venv/bin/python bench/cleaning_loop.py --report /tmp/cleaning.json   # the table again

Per seed (the demo's seed and the training seed; the same model, epochs and image size in every step):

1. ``core.demo.generate`` a training demo with injected noise (``--noise``, a fraction of *people*),
   and a separate noise-free held-out demo of other people (same generator, seed + 10,000). The
   held-out people never reach the store: they are only predicted, with ``train.checkpoint.load_model``
   and ``train.loop.predict_probs``, against the true labels of their ``truth.csv``.
2. ``core.ingest`` the training demo; ``fit`` on the noisy snapshot -> held-out macro F1 ("noisy").
3. ``train.score.score`` (cross-validated out-of-fold probabilities, stored scores) on the same snapshot.
4. A simulated reviewer ("simulated") walks a queue and answers from truth.csv, through the very
   functions the dashboard's buttons call (``core.review.set_label`` / ``verdict``, with the shown
   value read by ``store.label_of`` as the Review page does), until a budget of 1 %, 2 %, 5 % of the
   training images is spent. Budgets are cumulative: the 2 % review continues the 1 % one.
   Two queues, each in its own copy of the store:
   * ``queue``: the dashboard's Review page (``core.review.queue`` + ``filter_queue``): flagged units
     first (the page's default filter), then the rest, in queue order. A unit is one decision on one
     attribute. Cost: an image unit (mask) 1 image; a person unit (gender, age group) as many images
     as the person has, because the page shows the person's whole strip.
   * ``cleanlab``: cleanlab's per-image order on the same out-of-fold probabilities (18-class joint
     probabilities = product of the heads'): ``find_label_issues`` ranked by self-confidence, then the
     other images by ``get_label_quality_scores``. Each entry costs 1 image and the reviewer decides
     every label the image carries (its mask; its person's gender and age, which the store applies
     to the whole person, as the Browse page does). A label already decided is not decided twice,
     but the entry is still paid for.
5. ``fit`` on each cleaned snapshot -> held-out macro F1; ``fit`` on the fully true labels (every
   injected error corrected in a third copy) -> the ceiling.

Reported per budget: noisy, cleaned and ceiling F1, the fraction of the noisy->ceiling gap
recovered ``(cleaned - noisy) / (ceiling - noisy)``, injected label errors fixed, and wall times.
The evaluated checkpoint is each run's ``last`` (fixed epochs; ``best`` is chosen on validation
labels that are themselves noisy). Results are written to ``--out`` (JSON) after every step;
``--write`` puts the table under "## Does cleaning pay?" in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
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

from bench import sections  # noqa: E402
from core import review  # noqa: E402
from core.files import replacing  # noqa: E402
from core.schema import Schema  # noqa: E402
from core.store import LabelStore, read_snapshot  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
SECTION = "## Does cleaning pay?"
ANNOTATOR = "simulated"
BUDGETS = (0.01, 0.02, 0.05)
ORDERS = ("queue", "cleanlab")  # the two queues compared by default
# Optional third arm: the Review-page queue with every entry costing 1 image whatever its scope, as every
# cleanlab entry does (one look, one decision): how much the cost accounting decides the comparison.
EXTRA_ORDERS = ("queue_per_decision",)
ORDER_NAMES = {"queue": "Review page", "cleanlab": "cleanlab per image", "queue_per_decision": "Review page, 1 per entry"}
# test_resnet (timm's 0.4 M-parameter ResNet): on this shared 2-core machine resnet10t trained at 4-8 images/s,
# which would put one seed of the default loop (about 8 full trainings) at many hours; test_resnet trains at ~50.
DEFAULT = {"persons": 480, "holdout": 160, "noise": 0.2, "image_size": (384, 512), "model": "test_resnet",
           "img_size": (96, 128), "epochs": 6, "folds": 3, "batch_size": 32}
QUICK = {"persons": 120, "holdout": 40, "noise": 0.2, "image_size": (96, 128), "model": "test_resnet",
         "img_size": (64, 80), "epochs": 4, "folds": 3, "batch_size": 32}


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


def review_queue_entries(store: LabelStore, run_id: int, *, person_cost: bool = True) -> list[Entry]:
    """The Review page's queue of score run ``run_id``: flagged unreviewed units in queue order (the
    page's default filters), then the other unreviewed units. A person unit costs the person's images
    (``person_cost=False``: every unit costs 1, i.e. the budget counts decisions)."""
    units = review.queue(store, run_id)
    status_table = review.statuses(store, store.run(run_id)["created_at"])
    flagged = review.filter_queue(units, status_table, flagged_only=True, status="unreviewed")
    rest = review.filter_queue(units, status_table, flagged_only=False, status="unreviewed")
    rows = pd.concat([flagged, rest[~rest["key"].isin(set(flagged["key"]))]], ignore_index=True)
    sizes = store.current_labels(derived=False)["person"].value_counts().to_dict()
    schema, entries = store.schema, []
    for row in rows.itertuples(index=False):
        # The unit's scope from the schema: review.queue leaves ``scope`` empty for a binned target
        # (age_group -> age), whose unit is still a person.
        target = review.target_of(schema, row.attribute, row.path, row.person)
        person = schema.scope(row.stored) == "person" and target == row.person
        cost = int(sizes.get(target, 1)) if person and person_cost else 1
        entries.append(Entry(row.key, cost, ((str(target), str(row.stored)),)))
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


# ---- the loop -------------------------------------------------------------------------------------------------
def _setup(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs' numbers comparable: the configuration without the queues, budgets and extras."""
    return {k: v for k, v in config.items() if k not in ("orders", "budgets", "repeat_noisy")}


def merge(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One results document from several of the same setup (e.g. seeds run as separate processes):
    seeds side by side, the union of their queues and budgets."""
    first = documents[0]
    for other in documents[1:]:
        if _setup(other["config"]) != _setup(first["config"]):
            raise ValueError("results of different setups cannot be merged")
    config = dict(first["config"])
    config["orders"] = list(dict.fromkeys(o for d in documents for o in d["config"].get("orders", ORDERS)))
    config["budgets"] = sorted({b for d in documents for b in d["config"]["budgets"]})
    seeds = {s: r for d in documents for s, r in d["seeds"].items()}
    commands = list(dict.fromkeys(c for d in documents for c in d.get("commands", [])))
    return {**first, "config": config, "seeds": seeds, "commands": commands,
            "total_s": sum(d.get("total_s", 0) for d in documents)}


class Results:
    """The results document, saved (atomically) after every step so a killed run keeps what it did."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = path
        self.data: dict[str, Any] = {"config": config, "seeds": {}}
        if path.exists():  # resume: keep finished steps of the same setup (queues and budgets may be added)
            old = json.loads(path.read_text())
            if _setup(old.get("config", {})) == _setup(config):
                self.data = old
                self.data["config"].update(orders=config.get("orders", list(ORDERS)), budgets=config["budgets"],
                                           repeat_noisy=config.get("repeat_noisy", False))

    def seed(self, seed: int) -> dict[str, Any]:
        record = self.data["seeds"].setdefault(str(seed), {"times": {}, "arms": {}})
        for order in self.data["config"].get("orders", ORDERS):
            record["arms"].setdefault(order, {})
        return record

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


def run_seed(seed: int, cfg: dict[str, Any], work: Path, results: Results, log: Callable[[str], None]) -> None:
    """The whole loop for one seed; finished steps (in ``results``) are not repeated."""
    from core.demo import generate
    from core.ingest import ingest
    from train.loop import fit
    from train.score import score

    record = results.seed(seed)
    base = work / f"seed{seed}"
    base.mkdir(parents=True, exist_ok=True)
    cache_dir, runs = work / "cache", base / "runs"
    train_opts = {"model": cfg["model"], "img_size": tuple(cfg["img_size"]), "epochs": cfg["epochs"], "seed": seed,
                  "threads": cfg["threads"], "batch_size": cfg["batch_size"], "cache_dir": str(cache_dir),
                  "out": str(runs)}
    data, held = base / "data", base / "holdout"
    main_db = base / "noisy.db"

    if "generate" not in record["times"]:
        def make() -> None:
            generate(data, persons=cfg["persons"], noise=cfg["noise"], seed=seed, eval_images=0,
                     image_size=tuple(cfg["image_size"]))
            generate(held, persons=cfg["holdout"], noise=0.0, seed=seed + 10_000, eval_images=0,
                     image_size=tuple(cfg["image_size"]))
            for path in base.glob("*.db*"):
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
    fits: dict[str, dict[str, Any]] = record.setdefault("fits", {})  # by snapshot hash: same labels, same model

    def train_eval(db: Path, snapshot: Any, step: str, training_seed: int = seed) -> dict[str, Any]:
        key = snapshot.hash if training_seed == seed else f"{snapshot.hash}:seed{training_seed}"
        if key in fits:
            log(f"seed {seed} {step}: same labels and seed as an earlier fit, its result reused")
            return {**fits[key], "reused": True}
        started = time.monotonic()
        result = fit(db=str(db), snapshot=str(snapshot.path), echo=False, **{**train_opts, "seed": training_seed})
        if result["status"] != "done":  # fit turns SIGTERM/SIGINT into a "cancelled" run: stop here too
            raise RuntimeError(f"seed {seed} {step}: training run {result['run_id']} ended {result['status']}")
        train_s = time.monotonic() - started
        metrics = evaluate(Path(result["run_dir"]) / "last.safetensors", holdout, cache_dir, cfg["threads"])
        metrics.update(train_s=round(train_s, 1), eval_s=round(time.monotonic() - started - train_s, 1),
                       run_dir=result["run_dir"])
        fits[key] = metrics
        results.save()
        log(f"seed {seed} {step}: macro F1 {metrics['macro_f1']:.4f} (train {train_s:.0f} s)")
        return metrics

    if "noisy" not in record:
        record["noisy"] = timed(record, "noisy_fit", lambda: train_eval(main_db, noisy_snapshot, "noisy"))
        results.save()

    if "score_run" not in record:
        result = timed(record, "score", lambda: score(db=str(main_db), folds=cfg["folds"], echo=False,
                                                      snapshot=str(noisy_snapshot.path), **train_opts))
        if result["status"] != "done":
            raise RuntimeError(f"score run ended {result['status']}")
        record["score_run"], record["score_dir"] = result["run_id"], result["run_dir"]
        results.save()
        log(f"seed {seed} score: run {result['run_id']} in {record['times']['score']:.0f} s")

    orders = cfg.get("orders", list(ORDERS))
    snapshots: dict[str, dict[str, Any]] = record.setdefault("snapshots", {})
    for order in orders:
        snapshots.setdefault(order, {})
    truth_db = base / "truth.db"
    if "ceiling_snapshot" not in record:
        def build_ceiling() -> None:
            copy_store(main_db, truth_db)
            with LabelStore(truth_db) as store:
                record["ceiling_corrections"] = correct_everything(store, truth)
                record["ceiling_errors_left"] = label_errors(store, truth)
                snap = store.snapshot()
                record["ceiling_snapshot"] = {"hash": snap.hash, "path": str(snap.path)}
        timed(record, "ceiling_labels", build_ceiling)
        results.save()
    for order in orders:
        if len(snapshots[order]) == len(cfg["budgets"]):
            continue
        def simulate(order: str = order) -> None:
            db = copy_store(main_db, base / f"review-{order}.db")
            with LabelStore(db) as store:
                if order == "cleanlab":
                    entries = cleanlab_entries(store, record["score_dir"], noisy_snapshot.path)
                else:
                    entries = review_queue_entries(store, record["score_run"], person_cost=order == "queue")
                reviewer = Reviewer(store, entries, truth, score_run=record["score_run"])
                for budget in sorted(cfg["budgets"]):
                    images = int(budget * record["n_images"])
                    started = time.monotonic()
                    reviewer.review_until(images)
                    snap = store.snapshot()
                    left = label_errors(store, truth)
                    actions = pd.DataFrame(reviewer.log)
                    snapshots[order][str(budget)] = {
                        "hash": snap.hash, "path": str(snap.path), "budget_images": images,
                        "spent_images": reviewer.spent, "entries": reviewer.position,
                        "corrections": int((actions["action"] == "corrected").sum()) if len(actions) else 0,
                        "confirmed": int((actions["action"] == "confirmed").sum()) if len(actions) else 0,
                        "failed": int((~actions["ok"]).sum()) if len(actions) else 0,
                        "errors_left": left, "errors_fixed": before["errors"] - left["errors"],
                        "review_s": round(time.monotonic() - started, 2)}
                    log(f"seed {seed} {order} {budget:.0%}: {reviewer.spent} images, "
                        f"{snapshots[order][str(budget)]['corrections']} corrections, "
                        f"{before['errors'] - left['errors']}/{before['errors']} errors fixed")
        timed(record, f"review_{order}", simulate)
        results.save()

    class Snap:  # what train_eval needs of a snapshot
        def __init__(self, info: dict[str, Any]):
            self.hash, self.path = info["hash"], info["path"]

    if "ceiling" not in record:
        record["ceiling"] = timed(record, "ceiling_fit",
                                  lambda: train_eval(truth_db, Snap(record["ceiling_snapshot"]), "ceiling"))
        results.save()
    for budget in sorted(cfg["budgets"], reverse=True):  # the target budget (largest) first
        for order in orders:
            info = snapshots[order][str(budget)]
            db = base / f"review-{order}.db"
            arm = record["arms"][order].setdefault(str(budget), {})
            if "macro_f1" in arm:
                continue
            started = time.monotonic()
            metrics = train_eval(db, Snap(info), f"{order} {budget:.0%}")
            arm.update({k: v for k, v in info.items() if k not in ("hash", "path")}, **metrics,
                       retrain_s=round(time.monotonic() - started, 1),
                       gap_recovered=gap_recovered(record["noisy"]["macro_f1"], metrics["macro_f1"],
                                                   record["ceiling"]["macro_f1"]))
            results.save()
    if cfg.get("repeat_noisy") and "noisy_repeat" not in record:  # run-to-run spread at fixed labels
        record["noisy_repeat"] = timed(record, "noisy_repeat_fit", lambda: train_eval(
            main_db, noisy_snapshot, "noisy, training seed + 1000", training_seed=seed + 1000))
        results.save()


# ---- the report -----------------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def _spread(values: list[float], spec: str = ".3f") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = float(np.mean(values))
    if len(values) == 1:
        return format(mean, spec)
    return f"{format(mean, spec)} ({', '.join(format(v, spec) for v in values)})"


def _arm_rows(done: dict[str, Any], order: str, budget: float) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(seed record, arm record) of every finished seed that trained this arm."""
    rows = [(r, r["arms"].get(order, {}).get(str(budget))) for r in done.values()]
    return [(r, a) for r, a in rows if a and "macro_f1" in a]


def _steps_s(done: dict[str, Any]) -> float:
    """Wall seconds of every step of these seeds: generation, fits, scoring, reviews and retrains."""
    return sum(sum(r["times"].values()) + sum(a.get("retrain_s", 0) for arm in r["arms"].values()
                                              for a in arm.values()) for r in done.values())


def report(data: dict[str, Any]) -> str:
    """Markdown: setup, the per-budget table (means over seeds, per-seed values in brackets), the
    verdict on the targets computed from the numbers, and wall times."""
    cfg, seeds = data["config"], data["seeds"]
    done = {s: r for s, r in seeds.items() if "noisy" in r and "ceiling" in r}
    if not done:
        return "(no finished seed yet)"
    injected = "; ".join(f"seed {s}: {r['errors_injected']['errors']} ({r['errors_injected']['gender']} people's "
                         f"gender, {r['errors_injected']['age_group']} people's age group, "
                         f"{r['errors_injected']['mask']} mask images; {r['errors_injected']['images']} images with "
                         "a wrong 18-class label)" for s, r in done.items())
    first = next(iter(done.values()))
    per_person = first["n_images"] / cfg["persons"]
    lines = [
        " and ".join(f"`{c}`" for c in data.get("commands") or ["bench/cleaning_loop.py"]) +
        f" ({data.get('machine', 'this machine')}; steps took {_steps_s(done) / 60:.0f} min of wall time in all).",
        "",
        f"Demo: {cfg['persons']} people ({first['n_images']:,} training images), noise {cfg['noise']:.0%} of people "
        f"(gender flips, incorrect/normal swaps, wrong age group). Held out: {cfg['holdout']} other people "
        f"({first['n_holdout_images']:,} images, a separate demo of the same generator) scored against their true "
        f"labels. Every training: `{cfg['model']}` from scratch, {cfg['img_size'][0]}x{cfg['img_size'][1]} px, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, training seed = demo seed, `fit`'s 80/20 person split, the "
        f"`last` checkpoint; scoring `train.score` with {cfg['folds']} folds of the same. Seeds (demo and "
        f"training): {', '.join(done)}; a cell is the mean over seeds with the per-seed values in brackets. "
        f"Injected label errors (one per wrong image mask, per wrong person gender or age group): {injected}.",
        "",
        "Budget accounting: images looked at. The Review page's queue costs 1 per image unit (mask) and "
        f"the person's images ({per_person:.0f} in this demo) per person unit (gender, age group: the page shows the "
        "whole strip); flagged units first, as the page's default filter, then the rest. cleanlab's per-image order ("
        "`find_label_issues` by self-confidence, then `get_label_quality_scores`, on the 18-class product of the "
        "same out-of-fold probabilities) costs 1 per image, and the reviewer fixes every wrong label the image "
        "carries (a gender or age fix applies to the whole person). Budgets are cumulative (2 % continues 1 %). "
        "Corrections go through `core.review.set_label` / `verdict` as annotator \"simulated\"."
        + (" \"Review page, 1 per entry\" is the same queue with every entry costing 1 image, person units too, as "
           "every cleanlab entry costs 1 (one look, one decision per entry): how much the accounting decides."
           if "queue_per_decision" in cfg.get("orders", ()) else ""),
        "",
        "| budget | queue | seeds | images reviewed | errors fixed | noisy F1 | cleaned F1 | ceiling F1 | gap recovered "
        "| 18-class acc noisy / cleaned / ceiling (gap recovered) | cleaned acc mask / gender / age | retrain s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pooled: dict[tuple[str, float], float | None] = {}
    for budget in sorted(cfg["budgets"]):
        for order in cfg.get("orders", ORDERS):
            arms = _arm_rows(done, order, budget)
            if not arms:
                continue
            fixed = "; ".join(f"{a['errors_fixed']}/{r['errors_injected']['errors']}" for r, a in arms)
            gaps = [a["gap_recovered"] for _, a in arms]
            noisy = float(np.mean([r["noisy"]["macro_f1"] for r, _ in arms]))
            ceiling = float(np.mean([r["ceiling"]["macro_f1"] for r, _ in arms]))
            cleaned = float(np.mean([a["macro_f1"] for _, a in arms]))
            pooled[(order, budget)] = gap_recovered(noisy, cleaned, ceiling)
            gap_text = _fmt(pooled[(order, budget)], ".0%") + \
                (f" ({', '.join(_fmt(g, '.0%') for g in gaps)})" if len(arms) > 1 else "")
            accs = " / ".join(_fmt(float(np.mean([a[f"acc_{h}"] for _, a in arms])))
                              for h in ("mask", "gender", "age_group"))
            acc = [float(np.mean(v)) for v in ([r["noisy"]["acc_class"] for r, _ in arms], [a["acc_class"] for _, a in arms],
                                               [r["ceiling"]["acc_class"] for r, _ in arms])]
            acc_text = " / ".join(f"{v:.3f}" for v in acc) + f" ({_fmt(gap_recovered(*acc), '.0%')})"
            retrain = "; ".join("same labels: reused" if a.get("reused") else f"{a['retrain_s']:.0f}" for _, a in arms)
            seed_names = ", ".join(s for s, r in done.items() if any(r is x for x, _ in arms))
            lines.append(f"| {budget:.0%} | {ORDER_NAMES.get(order, order)} | {seed_names} | {_spread([a['spent_images'] for _, a in arms], '.0f')} | {fixed} "
                         f"| {_spread([r['noisy']['macro_f1'] for r, _ in arms])} "
                         f"| {_spread([a['macro_f1'] for _, a in arms])} "
                         f"| {_spread([r['ceiling']['macro_f1'] for r, _ in arms])} | {gap_text} | {acc_text} | {accs} "
                         f"| {retrain} |")
    lines.append("")
    lines.append("Held-out accuracy per head, mask / gender / age group: " + "; ".join(
        f"seed {s}: noisy {r['noisy']['acc_mask']:.3f} / {r['noisy']['acc_gender']:.3f} / "
        f"{r['noisy']['acc_age_group']:.3f}, ceiling {r['ceiling']['acc_mask']:.3f} / "
        f"{r['ceiling']['acc_gender']:.3f} / {r['ceiling']['acc_age_group']:.3f}" for s, r in done.items()) + ".")
    repeats = [(s, r) for s, r in done.items() if "noisy_repeat" in r]
    if repeats:
        lines.append("")
        lines.append("Run-to-run spread at fixed labels (the noisy labels trained again with training seed + 1000, "
                     "nothing else changed), macro F1 / 18-class accuracy: " + "; ".join(
                         f"seed {s}: {r['noisy']['macro_f1']:.3f} vs {r['noisy_repeat']['macro_f1']:.3f} / "
                         f"{r['noisy']['acc_class']:.3f} vs {r['noisy_repeat']['acc_class']:.3f}" for s, r in repeats)
                     + "; noisy->ceiling gaps for comparison: " + "; ".join(
                         f"seed {s}: {r['ceiling']['macro_f1'] - r['noisy']['macro_f1']:+.3f} / "
                         f"{r['ceiling']['acc_class'] - r['noisy']['acc_class']:+.3f}" for s, r in done.items()) + ".")
    top = max(cfg["budgets"])
    if ("queue", top) in pooled:
        reached = pooled[("queue", top)]
        verdict = "not measurable (the ceiling is not above the noisy model)" if reached is None else \
            ("met" if reached >= 0.8 else "missed") + f" ({reached:.0%} of the gap, mean over seeds)"
        lines.append("")
        lines.append(f"Target 1, recover >= 80 % of the noisy->ceiling gap with a {top:.0%} budget: {verdict}.")
        wins = []
        for budget in sorted(cfg["budgets"]):
            ours, theirs = _arm_rows(done, "queue", budget), _arm_rows(done, "cleanlab", budget)
            if ours and theirs:
                # compared as printed: a difference below 0.0005 is a tie, not "ahead"
                a = round(float(np.mean([x["macro_f1"] for _, x in ours])), 3)
                b = round(float(np.mean([x["macro_f1"] for _, x in theirs])), 3)
                fa = sum(x["errors_fixed"] for _, x in ours)
                fb = sum(x["errors_fixed"] for _, x in theirs)
                wins.append(f"{budget:.0%}: F1 {a:.3f} vs {b:.3f} ({'ahead' if a > b else 'behind' if a < b else 'tie'}),"
                            f" errors fixed {fa} vs {fb}")
        lines.append("Target 2, beat the cleanlab-ordered queue at equal budget (queue vs cleanlab, summed over "
                     "seeds for errors): " + "; ".join(wins) + ".")
        if repeats:  # how far apart two trainings on the same labels land: F1 differences below it are noise
            spread = max(abs(r["noisy"]["macro_f1"] - r["noisy_repeat"]["macro_f1"]) for _, r in repeats)
            gap = float(np.mean([r["ceiling"]["macro_f1"] - r["noisy"]["macro_f1"] for r in done.values()]))
            lines.append(f"Training noise: two trainings on the same noisy labels differ by up to {spread:.3f} macro "
                         f"F1; the noisy->ceiling gap is {gap:+.3f} (mean). F1 differences smaller than "
                         f"{spread:.3f} between arms are not distinguishable from training noise with "
                         f"{len(done)} seed(s)" + ("; the gap itself is within it, so the fraction recovered is "
                                                   "dominated by that noise." if gap <= spread else "."))
    lines.append("")
    names = ["generate", "noisy_fit", "score", *(f"review_{o}" for o in cfg.get("orders", ORDERS)), "ceiling_labels",
             "ceiling_fit", "noisy_repeat_fit"]
    lines.append("Wall time per step, seconds (generate = both demos + ingest; a fit = training + held-out "
                 "prediction; review = all three budgets; cleaned retrains in the table): " + "; ".join(
                     f"seed {s}: " + ", ".join(f"{n} {r['times'][n]:.0f}" for n in names if n in r["times"])
                     for s, r in done.items()) + ".")
    return "\n".join(lines)


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the "## Does cleaning pay?" section of BENCHMARKS.md; other sections untouched."""
    sections.write_section(SECTION.removeprefix("## "), text, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run: " + json.dumps(QUICK))
    parser.add_argument("--persons", type=int)
    parser.add_argument("--holdout", type=int, help="held-out people (a separate demo)")
    parser.add_argument("--noise", type=float, help="fraction of people with a wrong label")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), help="generated image size")
    parser.add_argument("--model")
    parser.add_argument("--img-size", type=int, nargs=2, metavar=("W", "H"), help="training input size")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--folds", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=[*ORDERS, *EXTRA_ORDERS],
                        help="queues to compare (queue_per_decision: the Review page's queue, every entry 1 image)")
    parser.add_argument("--repeat-noisy", action="store_true",
                        help="after the queues, train the noisy labels again with training seed + 1000: the "
                             "run-to-run spread at fixed labels")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared, loaded machine a second thread made training 4x slower)")
    parser.add_argument("--work", type=Path, help="working folder (default /tmp/cleaning-loop[-quick])")
    parser.add_argument("--out", type=Path, help="results JSON (default <work>/results.json); resumed if present")
    parser.add_argument("--report", type=Path, nargs="+",
                        help="print the table of existing results JSON file(s) (seeds merged) and exit")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)

    if args.report:
        text = report(merge([json.loads(path.read_text()) for path in args.report]))
        print(text)
        if args.write:
            write_section(text)
        return 0
    cfg = dict(QUICK if args.quick else DEFAULT)
    for key in ("persons", "holdout", "noise", "image_size", "model", "img_size", "epochs", "folds", "batch_size"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg.update(budgets=sorted(args.budgets), threads=args.threads, seeds=list(args.seeds), orders=list(args.orders),
               repeat_noisy=args.repeat_noisy)
    cfg["image_size"], cfg["img_size"] = list(cfg["image_size"]), list(cfg["img_size"])
    work = args.work or Path("/tmp/cleaning-loop" + ("-quick" if args.quick else ""))
    work.mkdir(parents=True, exist_ok=True)
    results = Results(args.out or work / "results.json", {k: v for k, v in cfg.items() if k != "seeds"})
    results.data["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start"
    command = "PYTHONPATH=. .venv/bin/python bench/cleaning_loop.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results.data["commands"] = list(dict.fromkeys([*results.data.get("commands", []), command.strip()]))
    started, earlier = time.monotonic(), float(results.data.get("total_s", 0))  # a resumed run adds its time

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.0f} s] {message}", flush=True)

    for seed in args.seeds:
        run_seed(seed, cfg, work, results, log)
        results.data["total_s"] = round(earlier + time.monotonic() - started, 1)
        results.save()
        print(report(results.data), flush=True)
    if args.write:
        write_section(report(results.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
