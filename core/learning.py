"""A review queue that learns from the reviewer's decisions, and "more like this" (pure numpy / pandas /
scikit-learn; no torch).

Every decision is evidence: a correction says "labels like this one are wrong", a "label is correct"
says the opposite. ``learn`` turns the decisions made so far into a ranking of every unit:

* per unit, features from the decisions: how its embedding sits among decided units with the **same
  attribute and the same given label** (share of errors among its ``K`` nearest decided neighbours,
  nearest error vs nearest confirmed-correct similarity), how often the **same given value** (age 60,
  "male") and the same attribute turned out wrong, next to the static queue's own evidence (its score,
  flag and position);
* a small logistic regression on those features, trained on the decided units (error = 1, correct = 0);
* **cross-fitted**: decided units are split by target (image or person) into ``FOLDS`` groups; a decided
  unit is scored by the model of the other groups only, with its features computed without its own
  target's decisions; undecided units are scored by the model of all decisions (none is theirs). So no
  unit is ever ranked by a model that saw its own decision.

``learned_queue(units, vectors, decisions(store, run_id))`` reads the decisions from the store (``core.review.statuses``:
a correction = error, "label is correct" = correct; skips are no evidence) exactly as the Review page and
the cleaning-loop bench both do, and returns the unreviewed units in learned order with a plain reason for
each unit that moved ("ranked up: looks like 3 errors you confirmed"). The queue re-ranks after every
``EVERY`` decisions (``epoch``), not on every click, so the order under the reviewer's eyes is stable.

``UnitIndex`` answers "more like this": the nearest units with the same attribute and given label (a person
= its photos' mean), exact (one matrix product per query within the label's block).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

EVERY = 10  # decisions between two re-rankings
FOLDS = 5  # cross-fitting groups of decided targets
K = 7  # decided neighbours a unit is compared with
MIN_EACH = 2  # errors and confirmed-correct labels needed before the learned model replaces the static order


# ---- the units, their vectors and the decisions ----------------------------------------------------------------
def unit_table(store: Any, run_id: int) -> pd.DataFrame:
    """The score run's review units (``core.review.queue`` columns) with ``scope`` from the schema, ``position``
    (the static queue's: flagged first, then the rest, in queue order) and ``value``: the given stored value
    as scored (an age for ``age_group``), from the run's snapshot."""
    from core import review
    from core.store import read_snapshot

    schema = store.schema
    units = review.queue_units(store, run_id).copy()
    units["scope"] = [schema.scope(s) for s in units["stored"]]
    flagged = units["is_issue"].astype(bool).to_numpy()
    units = pd.concat([units[flagged], units[~flagged]], ignore_index=True)
    units["position"] = np.arange(len(units))
    value = units["given"].astype(str).to_numpy(dtype=object)
    run = store.run(run_id)
    snapshot = (run.get("config") or {}).get("snapshot")
    raw = [a for a in units["stored"].unique() if a not in set(units["attribute"])]  # binned: age_group -> age
    if raw and snapshot:
        try:
            labels, _ = read_snapshot(snapshot)
        except Exception:  # noqa: BLE001 - a missing snapshot only loses the value evidence, never the queue
            labels = None
        if labels is not None:
            for attribute in raw:
                rows = (units["stored"] == attribute).to_numpy()
                key = "person" if schema.scope(attribute) == "person" else "path"
                lookup = labels.drop_duplicates(key).set_index(key)[attribute].astype(str)
                found = units.loc[rows, "target"].astype(str).map(lookup)
                value[rows] = np.where(found.isna(), value[rows], found.to_numpy(dtype=object))
    units["value"] = value
    sizes = store.current_labels(derived=False)["person"].value_counts()
    person = (units["scope"] == "person").to_numpy()
    units["n_images"] = 1
    units.loc[person, "n_images"] = units.loc[person, "target"].astype(str).map(sizes).fillna(1).astype(int).to_numpy()
    return units


def decisions(store: Any, run_id: int) -> pd.DataFrame:
    """The decisions on units since score run ``run_id`` was made, oldest first: ``unit`` (``target|stored``) and
    ``error`` (1 = corrected, 0 = "label is correct"); skipped units are no evidence. The status is
    ``core.review.statuses``' (what the Review page shows); the order is that of each unit's newest action."""
    from core import review

    since = store.run(run_id)["created_at"]
    table = review.statuses(store, since)
    table = table[table["status"].isin(("corrected", "reviewed"))]
    units = (table["target"].astype(str) + "|" + table["attribute"].astype(str)).to_numpy()
    when: dict[str, tuple[str, int]] = {}
    for frame in (store.history(), store.reviews()):
        if len(frame):
            frame = frame[frame["created_at"] >= since]
            for t, a, c, i in zip(frame["target"], frame["attribute"], frame["created_at"], frame["id"]):
                key = f"{t}|{a}"
                when[key] = max(when.get(key, ("", 0)), (str(c), int(i)))
    out = pd.DataFrame({"unit": units, "error": (table["status"] == "corrected").astype(int).to_numpy()})
    out["_when"] = [when.get(u, ("", 0)) for u in units]
    return out.sort_values("_when", kind="stable").drop(columns="_when").reset_index(drop=True)


def _fold_of(targets: pd.Series, folds: int) -> np.ndarray:
    """Cross-fitting group of each target: a stable hash, independent of labels and of decision order."""
    return np.array([int(hashlib.md5(str(t).encode()).hexdigest()[:8], 16) % folds for t in targets], dtype=np.int64)


# ---- features and the model ---------------------------------------------------------------------------------
FEATURES = ("static_score", "flagged", "static_position", "neighbour_errors", "nearest_error_vs_correct",
            "value_error_rate", "attribute_error_rate")


@dataclass
class _Arrays:
    """The units' columns ``learn`` needs, as numpy arrays and integer codes (built once per call)."""

    target: np.ndarray  # int codes
    attribute: np.ndarray  # int codes
    value: np.ndarray  # int codes of (attribute, given value)
    group: np.ndarray  # int codes of (attribute, given label)
    static: np.ndarray  # (n, 3): logit of the score, flagged, -log(1 + position)

    @classmethod
    def of(cls, units: pd.DataFrame) -> _Arrays:
        attribute = units["attribute"].astype(str).to_numpy(dtype=object)
        score = np.clip(units["score"].to_numpy(dtype=float), 1e-4, 1 - 1e-4)
        static = np.stack([np.log(score / (1 - score)), units["is_issue"].to_numpy(dtype=float),
                           -np.log1p(units["position"].to_numpy(dtype=float))], 1)
        return cls(pd.factorize(units["target"].astype(str).to_numpy(dtype=object))[0],
                   pd.factorize(attribute)[0],
                   pd.factorize(attribute + "\x00" + units["value"].astype(str).to_numpy(dtype=object))[0],
                   pd.factorize(attribute + "\x00" + units["given"].astype(str).to_numpy(dtype=object))[0], static)


def _rate(keys: np.ndarray, target: np.ndarray, query: np.ndarray, train: np.ndarray, label: np.ndarray,
          prior: float, weight: float) -> np.ndarray:
    """Smoothed error rate among decided units with the query's key, its own target's decisions left out."""
    size = int(keys.max()) + 1 if len(keys) else 1
    err = np.bincount(keys[train], weights=label.astype(float), minlength=size)
    cnt = np.bincount(keys[train], minlength=size).astype(float)
    e, c = err[keys[query]], cnt[keys[query]]
    pair = target.astype(np.int64) * size + keys  # (target, key): the query's own decisions to take out
    pairs, inverse = np.unique(pair[train], return_inverse=True)
    own_e = np.bincount(inverse, weights=label.astype(float), minlength=len(pairs))
    own_c = np.bincount(inverse, minlength=len(pairs)).astype(float)
    at = np.clip(np.searchsorted(pairs, pair[query]), 0, max(0, len(pairs) - 1))
    hit = (pairs[at] == pair[query]) if len(pairs) else np.zeros(len(query), bool)
    e[hit] -= own_e[at[hit]]
    c[hit] -= own_c[at[hit]]
    return (e + weight * prior) / (c + weight)


def _features(arrays: _Arrays, vectors: np.ndarray, query: np.ndarray, train: np.ndarray,
              label: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows (len(query), len(FEATURES)) of units ``query`` from decided units ``train`` (labels ``label``),
    never using a decision on the query unit's own target. Also the number of errors and of confirmed-correct
    labels among each query unit's ``k`` nearest decided neighbours (for the reason text)."""
    n_q = len(query)
    out = np.zeros((n_q, len(FEATURES)))
    out[:, :3] = arrays.static[query]
    nb_err, nb_ok = np.zeros(n_q, int), np.zeros(n_q, int)
    prior = (label.sum() + 1.0) / (len(label) + 2.0)
    target = arrays.target
    out[:, 5] = _rate(arrays.value, target, query, train, label, prior, 2.0)
    out[:, 6] = _rate(arrays.attribute, target, query, train, label, prior, 4.0)
    # neighbours within the same (attribute, given label)
    t_groups = pd.Series(np.arange(len(train))).groupby(arrays.group[train]).indices
    q_groups = pd.Series(np.arange(n_q)).groupby(arrays.group[query]).indices
    for g, q_idx in q_groups.items():
        out[q_idx, 3] = prior
        out[q_idx, 4] = 0.0
        t_idx = t_groups.get(g)
        if t_idx is None or len(t_idx) == 0:
            continue
        sims = vectors[query[q_idx]] @ vectors[train[t_idx]].T  # (q, t) cosine similarities
        same = target[query[q_idx]][:, None] == target[train[t_idx]][None, :]
        sims = np.where(same, -np.inf, sims)
        lab = label[t_idx]
        kk = min(k, len(t_idx))
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < len(t_idx) else np.tile(np.arange(len(t_idx)),
                                                                                              (len(q_idx), 1))
        top_sims = np.take_along_axis(sims, top, 1)
        valid = np.isfinite(top_sims)
        w = np.where(valid, np.clip(top_sims, 0.0, None) + 1e-3, 0.0)
        top_lab = lab[top]
        total = w.sum(1)
        out[q_idx, 3] = ((w * top_lab).sum(1) + prior) / (total + 1.0)  # shrunk to the prior when neighbours are few
        nb_err[q_idx] = (valid & (top_lab == 1)).sum(1)
        nb_ok[q_idx] = (valid & (top_lab == 0)).sum(1)
        best_err = np.where(lab[None, :] == 1, sims, -np.inf).max(1)
        best_ok = np.where(lab[None, :] == 0, sims, -np.inf).max(1)
        out[q_idx, 4] = np.where(np.isfinite(best_err), best_err, -1.0) - np.where(np.isfinite(best_ok), best_ok, -1.0)
    return out, nb_err, nb_ok


def _logistic(x: np.ndarray, y: np.ndarray, penalty: float = 1.0, iterations: int = 30) -> np.ndarray:
    """Weights (d + 1, intercept last) of an L2-penalised logistic regression with balanced class weights (the
    same objective as scikit-learn's ``LogisticRegression(C=1, class_weight="balanced")``), by Newton steps."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    sample = np.where(y == 1, n / (2.0 * max(1, (y == 1).sum())), n / (2.0 * max(1, (y == 0).sum())))
    ridge = np.full(d + 1, penalty)
    ridge[-1] = 0.0
    w = np.zeros(d + 1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -30, 30)))
        grad = design.T @ (sample * (p - y)) + ridge * w
        hess = (design * (sample * p * (1 - p))[:, None]).T @ design + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _fit_predict(x_train: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """P(error) of the query rows and each feature's contribution (coef x standardised value); None when the
    training set lacks ``MIN_EACH`` of either class."""
    if (y == 1).sum() < MIN_EACH or (y == 0).sum() < MIN_EACH:
        return None
    mean, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    w = _logistic((x_train - mean) / sd, y.astype(float))
    z = (x_query - mean) / sd
    return 1.0 / (1.0 + np.exp(-np.clip(z @ w[:-1] + w[-1], -30, 30))), z * w[:-1]


@dataclass
class Learned:
    """``learn``'s result for every unit (rows aligned with the units): ``score`` = learned P(error) (NaN where
    no model could be fitted: the static order stands), ``fold`` (-1 = undecided: the all-decisions model),
    neighbour error / correct counts, the dominant contribution, and which decided targets trained each
    fold's model (``trained_on[f]``; ``trained_on[-1]`` = all)."""

    score: np.ndarray
    fold: np.ndarray
    neighbour_errors: np.ndarray
    neighbour_correct: np.ndarray
    driver: np.ndarray
    trained_on: dict[int, set[str]] = field(default_factory=dict)
    n_decisions: int = 0
    n_errors: int = 0


def learn(units: pd.DataFrame, vectors: np.ndarray, decided: pd.DataFrame, *, folds: int = FOLDS,
          k: int = K) -> Learned:
    """Cross-fitted learned P(error) of every unit from the ``decided`` units (``unit``, ``error``).

    ``units``: ``unit_table``'s columns (``unit``, ``target``, ``attribute``, ``given``, ``value``, ``score``,
    ``is_issue``, ``position``); ``vectors``: (len(units), d) unit-length rows (``unit_vectors``).
    """
    n = len(units)
    out = Learned(np.full(n, np.nan), np.full(n, -1, dtype=np.int64), np.zeros(n, int), np.zeros(n, int),
                  np.array([""] * n, dtype=object))
    keys = pd.Index(np.asarray(units["unit"].to_numpy(dtype=object), dtype=object))
    decided = decided.drop_duplicates("unit", keep="last")
    found = keys.get_indexer(np.asarray(decided["unit"].to_numpy(dtype=object), dtype=object)) if keys.is_unique else \
        np.array([keys.get_loc(u) if u in keys else -1 for u in decided["unit"]], dtype=np.int64)
    decided, rows = decided[found >= 0], found[found >= 0].astype(np.int64)
    labels = decided["error"].to_numpy(dtype=np.int64)
    out.n_decisions, out.n_errors = len(rows), int(labels.sum())
    if len(rows) == 0:
        return out
    target = np.asarray(units["target"].to_numpy(dtype=object), dtype=object).astype(str)
    arrays = _Arrays.of(units)
    fold = _fold_of(pd.Series(target[rows]), folds)
    undecided = np.setdiff1d(np.arange(n), rows)
    plans = [(f, rows[fold != f], labels[fold != f], rows[fold == f]) for f in range(folds) if (fold == f).any()]
    plans.append((-1, rows, labels, undecided))
    for f, train, y, query in plans:
        out.trained_on[f] = set(target[train])
        if len(query) == 0:
            continue
        out.fold[query] = f
        x_train, _, _ = _features(arrays, vectors, train, train, y, k)  # leave-own-target-out features
        x_query, nb_err, nb_ok = _features(arrays, vectors, query, train, y, k)
        out.neighbour_errors[query], out.neighbour_correct[query] = nb_err, nb_ok
        fitted = _fit_predict(x_train, y, x_query)
        if fitted is None:
            continue
        prob, contrib = fitted
        out.score[query] = prob
        learned = contrib[:, 3:]  # the features that come from decisions (not the static queue's own)
        strongest = np.abs(learned).argmax(1)
        sign = np.sign(learned[np.arange(len(query)), strongest])
        out.driver[query] = [f"{FEATURES[3 + s]}{'+' if g > 0 else '-'}" for s, g in zip(strongest, sign)]
    return out


# ---- the learning queue ------------------------------------------------------------------------------------
class _Counts:
    """Errors / decisions per attribute and per (attribute, given value) among the decisions a model used."""

    def __init__(self, decided: pd.DataFrame, units: pd.DataFrame):
        merged = decided.merge(units[["unit", "attribute", "value"]].drop_duplicates("unit"), on="unit", how="left")
        merged["value"] = merged["value"].astype(str)
        self.attribute = merged.groupby("attribute")["error"].agg(["sum", "count"]).to_dict("index")
        self.value = merged.groupby(["attribute", "value"])["error"].agg(["sum", "count"]).to_dict("index")


def reason(row: Any, learned: Learned, i: int, counts: _Counts) -> str:
    """Plain words for why unit ``i`` moved (``row``: its ``learned_queue`` order row): the strongest
    decision-based evidence pointing the way it moved, else the size of the unit."""
    up = row.moved > 0
    value = counts.value.get((row.attribute, str(row.value)), {"sum": 0, "count": 0})
    attribute = counts.attribute.get(row.attribute, {"sum": 0, "count": 0})
    driver = learned.driver[i]
    name = driver[:-1] if driver.endswith("+" if up else "-") else ""
    if name in ("neighbour_errors", "nearest_error_vs_correct"):
        if up and learned.neighbour_errors[i]:
            return f"looks like {learned.neighbour_errors[i]} error(s) you confirmed (same {row.attribute}, given {row.given})"
        if not up and learned.neighbour_correct[i]:
            return f"looks like {learned.neighbour_correct[i]} label(s) you confirmed correct (same given {row.given})"
    if name == "value_error_rate" and value["count"]:
        return (f"given {row.attribute} {row.value} was wrong in {int(value['sum'])} of {int(value['count'])} "
                "decision(s)")
    if name == "attribute_error_rate" and attribute["count"]:
        return f"{row.attribute} labels were wrong in {int(attribute['sum'])} of {int(attribute['count'])} decision(s)"
    if up and getattr(row, "n_images", 1) > 1:
        return (f"a person's label: about {row.learned:.0%} likely wrong, and a fix corrects all {int(row.n_images)} "
                "photos at once")
    return f"about {row.learned:.0%} likely wrong, judged from your decisions"


@dataclass
class LearnedQueue:
    """The unreviewed units in learned order (``units`` columns plus ``learned`` = P(error), ``moved`` =
    places gained against the static order of the same units, ``why`` = plain reason for a unit that moved),
    the decisions it was trained on, and whether a model was used (``active``) or the static order stands."""

    order: pd.DataFrame
    n_decisions: int
    n_errors: int
    epoch: int
    active: bool
    note: str


def used_decisions(decided: pd.DataFrame, every: int = EVERY) -> pd.DataFrame:
    """The decisions a learned order is trained on: the first ``every * (len(decided) // every)`` (decision order)."""
    return decided.iloc[:len(decided) // max(1, every) * max(1, every)]


def learned_queue(units: pd.DataFrame, vectors: np.ndarray, decided: pd.DataFrame, *, every: int = EVERY,
                  folds: int = FOLDS, k: int = K, weigh_images: bool = True, explain: int = 200,
                  learned: Learned | None = None) -> LearnedQueue:
    """The remaining (undecided) units re-ranked from the decisions, using only the first
    ``every * (len(decided) // every)`` of them (``used_decisions``; ``decided`` in decision order): the order
    changes once per ``every`` decisions. Units decided but skipped are left out by the caller (``decisions``
    omits them). The order is by ``expected_fixed`` = P(error) x the unit's images (``weigh_images``); ``why`` is
    written for the first ``explain`` units of the new order that moved (the ones a reviewer meets next).
    ``learned``: ``learn(units, vectors, used_decisions(decided, every), folds=folds, k=k)`` when the caller
    keeps it between the decisions of one epoch (the fit is the slow part; it changes only once an epoch)."""
    epoch = len(decided) // max(1, every)
    used = used_decisions(decided, every)
    done = set(decided["unit"])
    remaining = ~pd.Index(np.asarray(units["unit"].to_numpy(dtype=object), dtype=object)).isin(list(done))
    if learned is None:
        learned = learn(units, vectors, used, folds=folds, k=k)
    order = units[remaining].copy()
    order["learned"] = learned.score[remaining]
    # what a decision is worth: the expected number of wrong image labels it fixes (a person's label is on all of
    # their photos), so a likely-wrong person outranks an equally likely-wrong single image
    size = order["n_images"].to_numpy(dtype=float) if weigh_images and "n_images" in order else np.ones(len(order))
    order["expected_fixed"] = order["learned"].to_numpy() * size
    order["static_rank"] = np.arange(len(order))
    order["unit_row"] = np.flatnonzero(remaining)
    active = bool(np.isfinite(order["learned"]).any())
    if active:
        order = order.sort_values(["expected_fixed", "static_rank"], ascending=[False, True], kind="stable")
    order["rank"] = np.arange(len(order))
    order["moved"] = order["static_rank"] - order["rank"]
    threshold = max(5, len(order) // 50)
    whys = np.full(len(order), "", dtype=object)
    if active:
        counts = _Counts(used, units)
        moved = np.flatnonzero(np.abs(order["moved"].to_numpy()[:explain]) >= threshold)
        for j, row in zip(moved, order.iloc[moved].itertuples(index=False)):
            whys[j] = ("ranked up: " if row.moved > 0 else "ranked down: ") + reason(row, learned, int(row.unit_row), counts)
    order["why"] = whys
    order = order.drop(columns="unit_row")
    every = max(1, every)
    more = every - len(decided) % every
    if active:
        note = (f"Order learned from your first {learned.n_decisions} decision(s) ({learned.n_errors} error(s) "
                f"confirmed); it re-ranks after {more} more.")
    elif not len(decided):
        note = f"No decisions yet: the static queue's order; it learns after every {every} decisions."
    elif learned.n_decisions == 0:
        note = f"{len(decided)} decision(s) so far: the static queue's order until the first {every}."
    else:
        note = (f"{learned.n_decisions} decision(s) used ({learned.n_errors} error(s)): the order learns once at "
                f"least {MIN_EACH} errors and {MIN_EACH} correct labels are confirmed; until then it is the static "
                "queue's.")
    return LearnedQueue(order.reset_index(drop=True), learned.n_decisions, learned.n_errors, epoch, active, note)


# ---- more like this --------------------------------------------------------------------------------------------
class UnitIndex:
    """Exact nearest units by cosine similarity, searched only among units with the same attribute and given
    label: one contiguous float32 block per (attribute, given), one matrix product and an ``argpartition`` per
    query (O(block x d); 200 k images x 96 dims is a few milliseconds)."""

    def __init__(self, units: pd.DataFrame, vectors: np.ndarray):
        self.units = units.reset_index(drop=True)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        key = self.units["attribute"].astype(str) + "\x00" + self.units["given"].astype(str)
        self.blocks = {g: np.asarray(ix, dtype=np.int64) for g, ix in pd.Series(np.arange(len(key))).groupby(
            key.to_numpy()).indices.items()}
        self.block_vectors = {g: self.vectors[ix] for g, ix in self.blocks.items()}
        self.position = pd.Series(np.arange(len(self.units)), index=self.units["key"].to_numpy())

    def similar(self, keys: list[str], k: int = 24, *, exclude: set[str] | None = None) -> pd.DataFrame:
        """The ``k`` units most like the units ``keys`` (their mean vector), with the same attribute and given label
        as the first of them, most similar first (``similarity`` column), the anchors and ``exclude`` (unit keys)
        left out."""
        anchors = [int(self.position[k_]) for k_ in keys if k_ in self.position.index]
        if not anchors:
            return self.units.iloc[:0].assign(similarity=[])
        first = self.units.iloc[anchors[0]]
        block = f"{first['attribute']}\x00{first['given']}"
        anchors = [a for a in anchors if f"{self.units.at[a, 'attribute']}\x00{self.units.at[a, 'given']}" == block]
        query = self.vectors[anchors].mean(0)
        norm = float(np.linalg.norm(query))
        query = query / norm if norm > 0 else query
        ix, mat = self.blocks[block], self.block_vectors[block]
        sims = mat @ query
        drop = set(anchors)
        if exclude:
            drop |= {int(self.position[e]) for e in exclude if e in self.position.index}
        keep = ~np.isin(ix, list(drop))
        ix, sims = ix[keep], sims[keep]
        kk = min(k, len(ix))
        if kk == 0:
            return self.units.iloc[:0].assign(similarity=[])
        top = np.argpartition(-sims, kk - 1)[:kk] if kk < len(ix) else np.arange(len(ix))
        top = top[np.argsort(-sims[top], kind="stable")]
        return self.units.iloc[ix[top]].assign(similarity=sims[top]).reset_index(drop=True)


# ---- deciding several units at once ----------------------------------------------------------------------------
def decide_many(store: Any, units: list[dict[str, Any]], action: str, *, value: Any = None, annotator: str,
                score_run: int | None = None, source: str = "review") -> Any:
    """One decision on each unit (``target``, ``stored``, ``scored`` = the scored attribute): ``action`` "set"
    (to the scored class ``value``; a bin names no exact stored value, so those units are refused) or "correct"
    (label is correct). Each goes through ``core.review`` with the value shown now (a unit changed meanwhile
    is refused, not overwritten). Returns one ``review.Outcome`` summing them up."""
    from core import review

    done, skipped, failed = 0, 0, []
    schema = store.schema
    for unit in units:
        target, stored, scored = str(unit["target"]), str(unit["stored"]), str(unit.get("scored") or unit["stored"])
        try:
            shown = store.label_of(target, stored)
        except Exception as error:  # noqa: BLE001 - a unit that left the store is reported, not raised
            failed.append(f"{target}: {error}")
            continue
        if action == "set":
            new = review.suggestion_value(schema, scored, value, shown)
            if new is None:  # a group (age_group) names no exact value: never invent one
                failed.append(f"{target}: {scored} {value} names no exact {stored}; type it on the Review page")
                continue
            if str(new) == str(shown):
                skipped += 1
                continue
            outcome = review.set_label(store, target, stored, new, shown=shown, annotator=annotator, source=source,
                                       reason="more like this (bulk)")
        elif action == "correct":
            outcome = review.verdict(store, target, stored, shown=shown, annotator=annotator, kind="correct",
                                     score_run=score_run)
        else:
            raise ValueError(f"unknown bulk action {action!r}")
        if outcome.ok:
            done += 1
        else:
            failed.append(outcome.message)
    verb = f"set to {value}" if action == "set" else "marked correct"
    text = f"{done} unit(s) {verb}" + (f"; {skipped} already had that label" if skipped else "")
    if failed:
        return review.Outcome(False, f"{text}; {len(failed)} refused, first: {failed[0]}")
    return review.Outcome(True, text + ".")
