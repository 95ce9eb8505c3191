"""Errors that repeat: runs in upload order, metadata slices and heaping, as pure functions (pandas in and out).

A label error made by one upload, one annotator or one intake habit repeats, and a model trained on the
labels learns it, so a per-item score cannot see it. The pattern is visible in the labels themselves,
their order and their metadata. ``find_patterns`` scans a dataset for three families and returns one
``Pattern`` per finding:

* ``run`` -- a stretch of the upload order (ingest order: ids, CSV rows, file and folder order) where one
  target's disagreement between given and model-suggested labels (a *confident* one: the suggestion's
  probability at least the average the model gives that class on the rows labelled with it, confident
  learning's per-class threshold; a unit the model is merely unsure of is no event), or one specific confusion
  (``incorrect -> not_wear``, ``female -> male``), is far above the rest. The stretch is found by a
  scan statistic (Kulldorff's Bernoulli likelihood ratio maximised over every start and a geometric
  ladder of lengths, then refined to exact ends), not a fixed window; its p-value comes from
  permutations of the same sequence (shuffled upload order), with a Gumbel tail beyond them.
* ``slice`` -- one value of a metadata column (CSV extra columns such as annotator, site, batch, source;
  the sub-folder of a folder dataset; the demo's annotator and upload batch) whose confusion of given vs
  suggested labels is above the rest of the data (Fisher's exact test, one-sided).
* ``heaping`` / ``top_coding`` -- an integer attribute (age) holding one value far more often than its
  neighbours (a one-sided binomial test of the value against the mean of its busier side, v-3..v-1 or v+1..v+3). With deficits next
  to it (values emptied into it) it is rounding (``heaping``): the suspected people are those at the heap
  whose photos the model places in the group the rounding left, as many as the deficit says were moved,
  most likely first. At the end of the range with no deficit it is ``top_coding`` (every value >= v
  recorded as v): a property of the data, reported, suspecting no one.

Every test run, of every family, goes into one Benjamini-Hochberg procedure (``ALPHA`` false discovery
rate); only findings that survive it are returned, each with its ``p_value`` and ``q_value``. Findings
that describe the same units (a run of ``incorrect -> not_wear`` and one of ``not_wear -> incorrect``
over the same ids: a swapped batch) are merged into one pattern.

A *unit* is what a reviewer decides: a person for a person-scope attribute, an image for an image-scope
one, except that image-scope errors of a dataset with people (the competition's mask) are grouped per
person (the person's strip shows the swapped pair at once). Each suspected unit carries its proposed
corrections (``suspected``: one row per correction: ``unit``, ``target``, ``attribute`` (stored),
``current``, ``proposed``, ``confidence`` = the model's probability of the proposal).

Rescoring without the pattern (``rescore_slices``): a slice the model may have learned is re-judged by
probabilities from models that never trained on it (folds grouped by the slice, e.g.
``train.slices.slice_probs``); ``find_patterns(..., rescored=)`` then uses those probabilities for the
slice's own units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from core.schema import Schema

ALPHA = 0.05  # false discovery rate over every test run
PERMUTATIONS = 99  # shuffles of a sequence for a run's null distribution
MIN_EVENTS = 3  # a confusion seen fewer times in all is not scanned
MIN_UNITS = 5  # a run or slice finding holds at least this many events: fewer is the Review queue's business
MIN_SLICE = 5  # units a slice value (and the rest) must have
MAX_SLICE_VALUES = 60  # a column with more distinct values is an identifier, not a slice
HEAP_RADIUS = 3  # values next to a heap that rounding may have emptied (v-3 .. v+3)
FLANK = 6  # values beyond the radius that give the smooth expectation


@dataclass
class Pattern:
    """One finding. ``suspected`` is empty for a property of the data that is not an error."""

    kind: str  # run | slice | heaping | top_coding
    attribute: str  # the scored target (mask, gender, age_group) or the integer attribute (age)
    summary: str
    evidence: dict[str, Any]
    p_value: float
    suspected: pd.DataFrame
    key: str
    q_value: float = math.nan
    chart: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> list[str]:
        """The suspected units (person keys or image paths), most confident first."""
        if self.suspected.empty:
            return []
        return list(dict.fromkeys(self.suspected["unit"].astype(str)))

    def to_dict(self, chart: bool = False) -> dict[str, Any]:
        """JSON-ready: kind, attribute, summary, evidence, p/q values, suspected units with their corrections."""
        units = []
        for unit, rows in self.suspected.groupby("unit", sort=False) if len(self.suspected) else []:
            units.append({"unit": str(unit), "corrections": [
                {"target": str(r.target), "attribute": str(r.attribute), "current": _plain(r.current),
                 "proposed": _plain(r.proposed), "confidence": round(float(r.confidence), 4)}
                for r in rows.itertuples(index=False)]})
        out = {"key": self.key, "kind": self.kind, "attribute": self.attribute, "summary": self.summary,
               "evidence": _jsonable(self.evidence), "p_value": float(self.p_value), "q_value": float(self.q_value),
               "n_suspected": len(units), "suspected": units}
        if chart:
            out["chart"] = _jsonable(self.chart)
        return out


SUSPECT_COLUMNS = ["unit", "target", "attribute", "current", "proposed", "confidence"]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- statistics ------------------------------------------------------------------------------------------------
def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), same order as given."""
    p = np.asarray(p_values, dtype=float)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log(np.where(y > 0, y, 1.0)), 0.0)


def _bernoulli_llr(k: np.ndarray, length: np.ndarray | int, total_k: int, total_n: int) -> np.ndarray:
    """Kulldorff's Bernoulli log-likelihood ratio of windows (``k`` events in ``length`` units) against a
    constant rate; 0 where the window's rate is not above the outside's."""
    k = np.asarray(k, dtype=float)
    length = np.asarray(length, dtype=float)
    out_k, out_n = total_k - k, total_n - length
    inside = np.where(length > 0, k / np.maximum(length, 1), 0.0)
    outside = np.where(out_n > 0, out_k / np.maximum(out_n, 1), 0.0)
    ll = (_xlogy(k, inside) + _xlogy(length - k, 1 - inside) + _xlogy(out_k, outside)
          + _xlogy(out_n - out_k, 1 - outside))
    p0 = total_k / total_n
    null = _xlogy(np.array(float(total_k)), np.array(p0)) + _xlogy(np.array(float(total_n - total_k)), np.array(1 - p0))
    return np.where(inside > outside, ll - null, 0.0)


def _lengths(n: int) -> np.ndarray:
    top = max(2, n // 2)
    return np.unique(np.round(np.geomspace(2, top, num=min(48, top))).astype(int))


def scan_max(x: np.ndarray, lengths: np.ndarray | None = None, min_events: int = MIN_UNITS) -> tuple[float, int, int]:
    """The window of a 0/1 sequence with the highest Bernoulli likelihood ratio over every start and a
    geometric ladder of lengths (2 .. n/2), among windows holding ``min_events`` events or more:
    (llr, start, end exclusive)."""
    x = np.asarray(x, dtype=np.int64)
    n, total = len(x), int(x.sum())
    if n < 4 or total == 0 or total == n:
        return 0.0, 0, 0
    cs = np.concatenate([[0], np.cumsum(x)])
    sizes = (_lengths(n) if lengths is None else np.asarray(lengths))[:, None]
    starts = np.arange(n)[None, :]
    ends = starts + sizes
    k = cs[np.minimum(ends, n)] - cs[starts]
    valid = (ends <= n) & (k >= min_events)
    llr = np.where(valid, _bernoulli_llr(k, np.broadcast_to(sizes, k.shape), total, n), 0.0)
    i, j = np.unravel_index(int(np.argmax(llr)), llr.shape)
    if llr[i, j] <= 0:
        return 0.0, 0, 0
    return float(llr[i, j]), int(j), int(j + sizes[i, 0])


def refine_window(x: np.ndarray, start: int, end: int, min_events: int = MIN_UNITS) -> tuple[float, int, int]:
    """Exact ends near a ladder window: every start and end within a quarter of its length (and the
    window's own first and last event)."""
    x = np.asarray(x, dtype=np.int64)
    n, total = len(x), int(x.sum())
    cs = np.concatenate([[0], np.cumsum(x)])
    slack = max(2, (end - start) // 4)
    starts = np.arange(max(0, start - slack), min(n, start + slack) + 1)
    ends = np.arange(max(0, end - slack), min(n, end + slack) + 1)
    s, e = np.meshgrid(starts, ends, indexing="ij")
    k = cs[np.clip(e, 0, n)] - cs[s]
    ok = (e - s >= 2) & (k >= min_events)
    llr = np.where(ok, _bernoulli_llr(k, e - s, total, n), -1.0)
    i, j = np.unravel_index(int(np.argmax(llr)), llr.shape)
    s0, e0 = int(starts[i]), int(ends[j])
    events = np.flatnonzero(x[s0:e0])
    if len(events):  # trim to the first and last event: same likelihood ratio or higher
        s0, e0 = s0 + int(events[0]), s0 + int(events[-1]) + 1
    return float(_bernoulli_llr(cs[e0] - cs[s0], e0 - s0, total, n)), s0, e0


def cluster_length(x: np.ndarray) -> int:
    """The length-weighted mean length of the sequence's maximal stretches of consecutive events (1 for independent
    rare events; about a person's image count when rows are images of unnamed people, whose photos sit together
    and share their errors)."""
    x = np.asarray(x, dtype=np.int64)
    if x.sum() == 0:
        return 1
    edges = np.diff(np.concatenate([[0], x, [0]]))
    lengths = (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).astype(float)
    # Weighted by length: the stretch a random event sits in (single stray events do not hide the clusters).
    return max(1, int(round(float((lengths ** 2).sum() / lengths.sum()))))


def block_permutation(x: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` with its blocks of ``block`` consecutive values (from a random offset) in random order: a shuffled
    upload order that keeps the local clustering a single source leaves (one person's adjacent photos)."""
    if block <= 1:
        return rng.permutation(x)
    offset = int(rng.integers(0, block))
    pieces = [x[:offset]] + [x[i:i + block] for i in range(offset, len(x), block)]
    pieces = [p for p in pieces if len(p)]
    return np.concatenate([pieces[i] for i in rng.permutation(len(pieces))])


def scan_p_value(x: np.ndarray, observed: float, permutations: int = PERMUTATIONS, seed: int = 0,
                 window: tuple[int, int] | None = None, strata: np.ndarray | None = None) -> float:
    """P(max llr >= observed) under a shuffled order: block permutations (blocks as long as the clusters of
    the sequence *outside* the found ``window``, so photos of one unnamed person sitting together are not
    mistaken for a run, while the run itself does not count as background clustering), with a Gumbel tail
    fitted to them beyond the largest one (small p-values, as SaTScan's Gumbel approximation)."""
    if observed <= 0:
        return 1.0
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.int64)
    lengths = _lengths(len(x))
    block = cluster_length(np.concatenate([x[:window[0]], x[window[1]:]]) if window else x)
    groups = [np.flatnonzero(strata == g) for g in pd.unique(strata)] if strata is not None else []

    def shuffled() -> np.ndarray:
        if len(groups) <= 1:
            return block_permutation(x, block, rng)
        out = x.copy()  # within each stratum (the given label): an order sorted by label is not a run
        for idx in groups:
            out[idx] = block_permutation(x[idx], block, rng)
        return out

    null = np.array([scan_max(shuffled(), lengths)[0] for _ in range(permutations)])
    exceed = int((null >= observed).sum())
    empirical = (1 + exceed) / (1 + permutations)
    sd = float(null.std(ddof=1)) if len(null) > 1 else 0.0
    if sd <= 0:
        return empirical
    beta = sd * math.sqrt(6) / math.pi
    mu = float(null.mean()) - 0.5772156649 * beta
    gumbel = -math.expm1(-math.exp(-(observed - mu) / beta))
    return float(gumbel if exceed == 0 else max(empirical, gumbel) if exceed < 5 else empirical)


def _fisher_greater(a: int, b: int, c: int, d: int) -> float:
    from scipy.stats import fisher_exact

    return float(fisher_exact([[a, b], [c, d]], alternative="greater")[1])


def _binom_greater(k: int, n: int, p: float = 0.5) -> float:
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, p)) if n > 0 else 1.0


def _normal_less(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


# ---- units -------------------------------------------------------------------------------------------------------
@dataclass
class Units:
    """One target's review units: events E[u, a, b] (some image or the person given a, suggested b with at least
    confident learning's per-class threshold of probability when b != a),
    eligibility G[u, a] (given a somewhere), upload order, and the image rows behind each unit."""

    target: str
    stored: str
    scope: str
    classes: tuple[str, ...]
    keys: np.ndarray  # (U,) unit names
    order: np.ndarray  # (U,) upload position
    events: np.ndarray  # (U, k, k) bool
    eligible: np.ndarray  # (U, k) bool
    unit_of_row: np.ndarray  # (n,) unit index of each image row
    given: np.ndarray  # (n,) given code per row
    suggested: np.ndarray  # (n,) suggested code per row (person scope: the person's)
    confidence: np.ndarray  # (n,) probability of the suggestion
    probs: np.ndarray  # (n, k) per row (person scope: the person's combined)
    first_row: np.ndarray  # (U,) a representative row per unit

    def any_disagreement(self, pair: tuple[int, int] | None) -> np.ndarray:
        """(U,) bool: units with a row whose suggestion differs from its label (``pair``: given a, suggested b),
        confident or not: whom a pattern, once found on confident events, suspects."""
        rows = self.given != self.suggested
        if pair is not None:
            rows &= (self.given == pair[0]) & (self.suggested == pair[1])
        return np.bincount(self.unit_of_row[rows], minlength=len(self.keys)) > 0

    @cached_property
    def disagree(self) -> np.ndarray:
        """(U,) bool: the unit holds an event off the diagonal, a confident disagreement (``build_units``; computed once)."""
        off = self.events.copy()
        idx = np.arange(len(self.classes))
        off[:, idx, idx] = False
        return np.asarray(off.any(axis=(1, 2)))


def unit_groups(labels: pd.DataFrame) -> np.ndarray:
    """The group of each row: its person, or its path for a row without one."""
    person = labels["person"] if "person" in labels else pd.Series([None] * len(labels), index=labels.index)
    person = person.where(person.notna() & (person.astype(str) != ""), None)
    return np.where(person.isna(), labels["path"].astype(str).to_numpy(), person.astype(str).to_numpy())


def build_units(labels: pd.DataFrame, probs: np.ndarray, schema: Schema, target: str) -> Units:
    """The review units of ``target`` from image rows (``labels``: path, person, order, stored attributes) and
    their (n, k) probabilities (out-of-fold, or from models that never saw the row)."""
    stored = schema.target_source(target)
    scope = schema.scope(stored)
    classes = schema.target_classes(target)
    k = len(classes)
    given = schema.codes(labels)[target].astype(np.int64)
    probs = np.asarray(probs, dtype=float)
    groups = unit_groups(labels)
    order = labels["order"].to_numpy() if "order" in labels else np.arange(len(labels))
    grouped = scope == "person" or pd.Series(groups).duplicated().any()
    keys_by = groups if grouped else labels["path"].astype(str).to_numpy()
    codes, keys = pd.factorize(keys_by, sort=False)
    n_units = len(keys)
    if scope == "person":  # the person's combined opinion: mean of its images' probabilities
        sums = np.zeros((n_units, k))
        np.add.at(sums, codes, probs)
        counts = np.bincount(codes, minlength=n_units)[:, None]
        unit_probs = sums / np.maximum(counts, 1)
        row_probs = unit_probs[codes]
    else:
        row_probs = probs
    suggested = row_probs.argmax(axis=1)
    confidence = row_probs[np.arange(len(row_probs)), suggested]
    # A disagreement is an event only when it is confident, as confident learning counts one: the suggestion's
    # probability at least the class's threshold (its mean probability over the rows labelled with it). A slice of
    # units the model is merely unsure of (ages next to a group boundary) then holds no more events than the rest.
    # Once a run or slice is found this way, it suspects every disagreement inside it (``any_disagreement``).
    threshold = np.array([row_probs[given == j, j].mean() if (given == j).any() else 0.0 for j in range(k)])
    counted = (given == suggested) | (confidence >= threshold[suggested])
    events = np.zeros((n_units, k, k), dtype=bool)
    events[codes[counted], given[counted], suggested[counted]] = True
    eligible = np.zeros((n_units, k), dtype=bool)
    eligible[codes, given] = True
    unit_order = np.full(n_units, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(unit_order, codes, order.astype(np.int64))
    first = np.zeros(n_units, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    return Units(target, stored, scope, classes, np.asarray(keys, dtype=object), unit_order, events, eligible, codes,
                 given, suggested, confidence, row_probs, first)


def _proposed_value(schema: Schema, target: str, code: int, current: Any) -> Any:
    """The stored value a correction to class ``code`` of ``target`` writes (a bin: the nearest value inside it)."""
    for binned in schema.binned:
        if binned.name == target:
            low = binned.edges[code - 1] if code > 0 else None
            high = binned.edges[code] - 1 if code < len(binned.edges) else None
            value = int(current)
            if low is not None:
                value = max(value, low)
            if high is not None:
                value = min(value, high)
            return value
    return schema.target_classes(target)[code]


def _suspects(units: Units, labels: pd.DataFrame, schema: Schema, chosen: np.ndarray,
              pairs: Iterable[tuple[int, int]] | None) -> pd.DataFrame:
    """Correction rows for units ``chosen`` (indices): every row of theirs given a and suggested b for a pair
    in ``pairs`` (None: any disagreement), proposing b; one row per person for person scope."""
    rows = np.flatnonzero(np.isin(units.unit_of_row, chosen))
    g, s = units.given[rows], units.suggested[rows]
    keep = g != s
    if pairs is not None:
        wanted = set(pairs)
        keep &= np.array([(int(a), int(b)) in wanted for a, b in zip(g, s)], dtype=bool)
    rows = rows[keep]
    out = []
    seen: set[str] = set()
    for r in rows:
        unit = str(units.keys[units.unit_of_row[r]])
        target = unit if units.scope == "person" else str(labels["path"].iat[r])
        if target in seen:
            continue
        seen.add(target)
        current = labels[units.stored].iat[r]
        out.append((unit, target, units.stored, _plain(current),
                    _proposed_value(schema, units.target, int(units.suggested[r]), current), float(units.confidence[r])))
    frame = pd.DataFrame(out, columns=SUSPECT_COLUMNS)
    if len(frame):  # most confident units first, a unit's corrections together
        best = frame.groupby("unit")["confidence"].transform("max")
        frame = frame.assign(_b=best).sort_values(["_b", "unit"], ascending=[False, True], kind="stable")
        frame = frame.drop(columns="_b").reset_index(drop=True)
    return frame


def _pair_name(units: Units, pair: tuple[int, int] | None) -> str:
    if pair is None:
        return f"{units.target} disagreement (any)"
    return f"{units.target} {units.classes[pair[0]]} -> {units.classes[pair[1]]}"


def _confusions(units: Units) -> list[tuple[int, int] | None]:
    """The sequences worth scanning: any disagreement, and each ordered confusion seen MIN_EVENTS times."""
    k = len(units.classes)
    out: list[tuple[int, int] | None] = [None]
    for a in range(k):
        for b in range(k):
            if a != b and int(units.events[:, a, b].sum()) >= MIN_EVENTS:
                out.append((a, b))
    return out if len(out) > 1 or int(units.disagree.sum()) >= MIN_EVENTS else []


def _indicator(units: Units, pair: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(eligible unit indices in upload order, 0/1 event per eligible unit)."""
    eligible = np.arange(len(units.keys)) if pair is None else np.flatnonzero(units.eligible[:, pair[0]])
    eligible = eligible[np.argsort(units.order[eligible], kind="stable")]
    x = (units.disagree if pair is None else units.events[:, pair[0], pair[1]])[eligible]
    return eligible, x.astype(np.int64)


# ---- candidate findings (before the false-discovery control) ----------------------------------------------------
@dataclass
class Candidate:
    family: str
    p_value: float
    build: Any  # () -> Pattern
    group: tuple  # findings with one group key are merged


def run_candidates(units: Units, labels: pd.DataFrame, schema: Schema, *, seed: int = 0,
                   permutations: int = PERMUTATIONS) -> list[Candidate]:
    """One scan per confusion sequence of ``units`` in upload order."""
    out: list[Candidate] = []
    for pair in _confusions(units):
        eligible, x = _indicator(units, pair)
        if len(x) < 10 or x.sum() < MIN_UNITS or x.sum() == len(x):
            continue
        llr, start, end = scan_max(x)
        if llr <= 0:
            continue
        llr, start, end = refine_window(x, start, end)
        # "Any disagreement" mixes labels whose disagreement rates differ: shuffle it within each unit's given
        # label, so an upload order sorted by label (a folder per class) is not read as a run.
        strata = units.given[units.first_row[eligible]] if pair is None else None
        p = scan_p_value(x, llr, permutations, seed=seed + len(out), window=(start, end), strata=strata)
        inside = int(x[start:end].sum())
        rate_in, rate_out = inside / (end - start), (int(x.sum()) - inside) / max(1, len(x) - (end - start))

        def build(pair=pair, eligible=eligible, x=x, start=start, end=end, inside=inside, rate_in=rate_in,
                  rate_out=rate_out, llr=llr, p=p) -> Pattern:
            window = eligible[start:end]
            chosen = window[units.any_disagreement(pair)[window]]
            suspected = _suspects(units, labels, schema, chosen, None if pair is None else [pair])
            first, last = units.keys[eligible[start]], units.keys[eligible[end - 1]]
            name = _pair_name(units, pair)
            summary = (f"Run in upload order: {name} on {inside} of {end - start} {_unit_word(units)} from "
                       f"{first} to {last} ({rate_in:.0%}), against {rate_out:.1%} elsewhere")
            evidence = {"confusion": name, "start_unit": str(first), "end_unit": str(last),
                        "window_units": end - start, "events_inside": inside, "rate_inside": round(rate_in, 4),
                        "rate_outside": round(rate_out, 4), "eligible_units": len(x), "llr": round(llr, 3)}
            chart = {"type": "run", "events": x.tolist(), "window": [start, end],
                     "units": [str(u) for u in units.keys[eligible]]}
            return Pattern("run", units.target, summary, evidence, p, suspected,
                           f"run:{units.target}:{name}:{first}..{last}", chart=chart)

        out.append(Candidate("run", p, build, ("run", units.target, int(units.order[eligible[start]]),
                                               int(units.order[eligible[end - 1]]) + 1)))
    return out


def _unit_word(units: Units) -> str:
    return "people" if len(units.keys) < len(units.given) else "images"


def slice_values(meta: pd.DataFrame, units: Units) -> dict[str, np.ndarray]:
    """Metadata per unit: column -> (U,) text values (a unit's first image's; missing = '')."""
    out = {}
    for column in meta.columns:
        values = meta[column].astype("string").fillna("").to_numpy(dtype=object)[units.first_row]
        distinct = pd.unique(values)
        if 2 <= len(distinct) <= MAX_SLICE_VALUES:
            out[str(column)] = values
    return out


def slices(meta: pd.DataFrame, units: Units) -> Iterator[tuple[str, Any, np.ndarray]]:
    """(column, value, (U,) bool units inside) of every slice with at least ``MIN_SLICE`` units inside and out."""
    for column, values in slice_values(meta, units).items():
        for value in pd.unique(values):
            inside = values == value
            if inside.sum() >= MIN_SLICE and (~inside).sum() >= MIN_SLICE:
                yield column, value, inside


def slice_candidates(units: Units, labels: pd.DataFrame, schema: Schema, meta: pd.DataFrame) -> list[Candidate]:
    """Per metadata column, value and confusion: the slice's rate against the rest (Fisher, one-sided)."""
    out: list[Candidate] = []
    confusions = _confusions(units)
    for column, value, inside_units in slices(meta, units):
        for pair in confusions:
            if pair is None:
                elig = np.ones(len(units.keys), dtype=bool)
                x = units.disagree
            else:
                elig = units.eligible[:, pair[0]]
                x = units.events[:, pair[0], pair[1]]
            a = int((x & elig & inside_units).sum())
            n_in = int((elig & inside_units).sum())
            c = int((x & elig & ~inside_units).sum())
            n_out = int((elig & ~inside_units).sum())
            if a < MIN_UNITS or n_in < MIN_SLICE or n_out < MIN_SLICE:
                continue
            p = _fisher_greater(a, n_in - a, c, n_out - c)
            rate_in, rate_out = a / n_in, c / n_out

            def build(pair=pair, column=column, value=value, inside_units=inside_units, a=a, n_in=n_in, c=c,
                      n_out=n_out, rate_in=rate_in, rate_out=rate_out, p=p, x=x, elig=elig) -> Pattern:
                chosen = np.flatnonzero(units.any_disagreement(pair) & elig & inside_units)
                suspected = _suspects(units, labels, schema, chosen, None if pair is None else [pair])
                name = _pair_name(units, pair)
                summary = (f"Slice {column} = {value}: {name} on {a} of {n_in} {_unit_word(units)} "
                           f"({rate_in:.0%}), against {rate_out:.1%} ({c} of {n_out}) in the rest")
                evidence = {"column": column, "value": str(value), "confusion": name, "events_inside": a,
                            "units_inside": n_in, "events_outside": c, "units_outside": n_out,
                            "rate_inside": round(rate_in, 4), "rate_outside": round(rate_out, 4)}
                chart = {"type": "slice", "classes": list(units.classes),
                         "inside": _confusion_matrix(units, inside_units), "outside": _confusion_matrix(units, ~inside_units)}
                return Pattern("slice", units.target, summary, evidence, p, suspected,
                               f"slice:{units.target}:{column}={value}:{name}", chart=chart)

            out.append(Candidate("slice", p, build, ("slice", units.target, column, str(value))))
    return out


def _confusion_matrix(units: Units, mask: np.ndarray) -> list[list[int]]:
    return units.events[mask].sum(axis=0).astype(int).tolist()


def learned_slices(labels: pd.DataFrame, probs: Mapping[str, np.ndarray], schema: Schema, meta: pd.DataFrame,
                   alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Slices the model may have learned: a metadata value whose disagreement with the model is significantly
    *below* the rest's (Fisher, one-sided, Benjamini-Hochberg over these tests). A model trained mostly on one
    annotator's habit agrees with that annotator and disagrees with everyone else, so the slice holding the
    habit looks clean and the rest looks wrong; only a model that never trained on the slice can judge it
    (``find_patterns(..., rescored=...)`` with ``train.slices.slice_probs``). Rows: column, value, target,
    units, rate inside and outside, p and q values."""
    from scipy.stats import fisher_exact

    labels = labels.reset_index(drop=True)
    meta = meta.reset_index(drop=True)
    rows: list[dict[str, Any]] = []
    for target in schema.targets:
        if target not in probs:
            continue
        units = build_units(labels, probs[target], schema, target)
        x = units.disagree
        for column, value, inside in slices(meta, units):
            n_in, n_out = int(inside.sum()), int((~inside).sum())
            a, c = int((x & inside).sum()), int((x & ~inside).sum())
            if c < MIN_UNITS:
                continue
            p = float(fisher_exact([[a, n_in - a], [c, n_out - c]], alternative="less")[1])
            rows.append({"column": column, "value": str(value), "target": target, "units": n_in,
                         "rate_inside": round(a / n_in, 4), "rate_outside": round(c / n_out, 4), "p_value": p})
    if not rows:
        return []
    q = benjamini_hochberg([r["p_value"] for r in rows])
    out = [{**r, "q_value": float(v)} for r, v in zip(rows, q) if v <= alpha]
    return sorted(out, key=lambda r: r["p_value"])


# ---- heaping ------------------------------------------------------------------------------------------------------
def heap_candidates(labels: pd.DataFrame, schema: Schema, probs: Mapping[str, np.ndarray]) -> list[Candidate]:
    """Heaps of every integer attribute (one value per unit: person, or image without persons)."""
    out: list[Candidate] = []
    for attribute in schema.attributes:
        if attribute.kind != "integer":
            continue
        groups = unit_groups(labels) if attribute.scope == "person" else labels["path"].astype(str).to_numpy()
        first = ~pd.Series(groups).duplicated().to_numpy()
        values = pd.to_numeric(labels[attribute.name], errors="coerce").to_numpy()[first]
        keys = groups[first]
        ok = ~np.isnan(values)
        values, keys = values[ok].astype(int), keys[ok]
        if len(values) < 20:
            continue
        out += _heaps(attribute.name, values, keys, labels, groups, schema, probs)
    return out


def _expected(counts: pd.Series, v: int, radius: int = HEAP_RADIUS, flank: int = FLANK,
              skip: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected counts over v-radius .. v+radius from a straight line through the flanks beyond the radius
    (within the observed range), other heaps left out: (values, expected, covariance of the expectation)."""
    low, high = int(counts.index.min()), int(counts.index.max())
    window = np.arange(max(low, v - radius), min(high, v + radius) + 1)
    xs = [u for u in range(v - radius - flank, v + radius + flank + 1)
          if low <= u <= high and abs(u - v) > radius and u not in set(skip)]
    ys = [float(counts.get(u, 0)) for u in xs]
    if len(xs) >= 3:
        design = np.stack([np.ones(len(xs)), np.asarray(xs, dtype=float)], 1)
        coef, *_ = np.linalg.lstsq(design, np.asarray(ys), rcond=None)
        expected = coef[0] + coef[1] * window
        # Uncertainty of the line's prediction (Poisson-scale residuals): the covariance of each value's
        # prediction, so a deficit is judged against how well the flanks pin the expectation down.
        residual = float(np.sum((np.asarray(ys) - design @ coef) ** 2)) / max(1, len(xs) - 2)
        scale = max(residual, float(np.mean(ys)), 1.0)
        target = np.stack([np.ones(len(window)), window.astype(float)], 1)
        covariance = target @ np.linalg.inv(design.T @ design) @ target.T * scale
    else:
        level = float(np.mean(ys)) if xs else float(counts.mean())
        expected = np.full(len(window), level)
        covariance = np.full((len(window), len(window)), max(level, 1.0) / max(1, len(xs)))
    return window, np.maximum(expected, 0.5), covariance


def _heaps(name: str, values: np.ndarray, keys: np.ndarray, labels: pd.DataFrame, groups: np.ndarray,
           schema: Schema, probs: Mapping[str, np.ndarray]) -> list[Candidate]:
    counts = pd.Series(values).value_counts().sort_index()
    full = counts.reindex(range(int(counts.index.min()), int(counts.index.max()) + 1), fill_value=0)
    low, high = int(full.index.min()), int(full.index.max())
    tests = []
    for v in full.index:
        c = int(full[v])
        if c < 5:
            continue
        # Against the busier side: the mean of v-3..v-1 or of v+1..v+3, whichever is larger (a step in the
        # distribution is not a heap: the value must stand above both sides).
        sides = [[int(full[u]) for u in range(v - HEAP_RADIUS, v) if u >= low],
                 [int(full[u]) for u in range(v + 1, v + HEAP_RADIUS + 1) if u <= high]]
        sides = [s for s in sides if s]
        if not sides:
            continue
        side = max(sides, key=lambda s: sum(s) / len(s))
        n = int(round(sum(side) / len(side)))
        tests.append((int(v), c, n, _binom_greater(c, c + sum(side), 1 / (len(side) + 1))))
    heaps = {v for v, c, n, p in tests if p < ALPHA}
    out = []
    for v, c, n, p in tests:
        def build(v=v, c=c, n=n, p=p) -> Pattern:
            return _heap_pattern(name, v, c, n, p, full, heaps - {v}, values, keys, labels, groups, schema, probs)
        out.append(Candidate("heap", p, build, ("heap", name, v)))
    return out


def _heap_pattern(name: str, v: int, c: int, n: int, p: float, full: pd.Series, other_heaps: set[int],
                  values: np.ndarray, keys: np.ndarray, labels: pd.DataFrame, groups: np.ndarray, schema: Schema,
                  probs: Mapping[str, np.ndarray]) -> Pattern:
    low, high = int(full.index.min()), int(full.index.max())
    window, expected, covariance = _expected(full, v, skip=other_heaps)
    observed = np.array([int(full.get(u, 0)) for u in window])
    at = int(np.flatnonzero(window == v)[0])
    excess = float(observed[at] - expected[at])
    sides = {}
    for side, mask in (("below", window < v), ("above", window > v)):
        if mask.any():  # one-sided z test of observed below expected: Poisson counts + the line's uncertainty
            deficit = float((expected[mask] - observed[mask]).sum())
            variance = float(expected[mask].sum()) + float(covariance[np.ix_(mask, mask)].sum())
            sides[side] = {"values": window[mask].tolist(), "observed": int(observed[mask].sum()),
                           "expected": round(float(expected[mask].sum()), 1), "deficit": round(deficit, 1),
                           "p_value": _normal_less(-deficit / math.sqrt(max(variance, 1e-9)))}
    rounding = {s: d for s, d in sides.items() if d["p_value"] < ALPHA and d["deficit"] > 0}
    evidence = {"value": v, "count": c, "neighbour_mean": n, "expected": round(float(expected[at]), 1),
                "excess": round(excess, 1), "sides": sides, "range": [low, high]}
    chart = {"type": "heap", "values": full.index.astype(int).tolist(), "counts": full.to_numpy().astype(int).tolist(),
             "window": window.tolist(), "expected": np.round(expected, 2).tolist(), "heap": v}
    empty = pd.DataFrame(columns=SUSPECT_COLUMNS)
    edge = v == high or v == low
    if not rounding:
        if edge:
            where = "top" if v == high else "bottom"
            summary = (f"{name} {v} holds {c} units ({c / max(n, 1):.1f}x the mean of its neighbours) and nothing lies "
                       f"{'above' if v == high else 'below'} it, with no deficit next to it: {where}-coding "
                       f"(every {name} {'>=' if v == high else '<='} {v} recorded as {v}), a property of the data; "
                       f"suspects no one")
            return Pattern("top_coding", name, summary, evidence, p, empty, f"top_coding:{name}={v}", chart=chart)
        summary = (f"{name} {v} holds {c} units, {c / max(n, 1):.1f}x the mean of its busier side, with no deficit next "
                   f"to it: a heap, but no rounding is evident; suspects no one")
        return Pattern("heaping", name, summary, evidence, p, empty, f"heaping:{name}={v}", chart=chart)
    # Rounding: who moved? Only a move across a group edge is visible to the model (and matters to the task).
    binned = next((b for b in schema.binned if b.source == name and b.name in probs), None)
    suspected = empty
    told = ""
    moved = 0
    if binned is not None:
        at_group = int(binned.codes([v])[0])
        rows = []
        for side, info in rounding.items():
            side_values = [u for u in info["values"] if int(binned.codes([u])[0]) != at_group]
            if not side_values:
                continue
            left_group = int(binned.codes([side_values[0]])[0])
            count = int(round(min(max(excess, 0.0), info["deficit"])))
            deficits = {u: float(expected[window == u][0] - observed[window == u][0]) for u in side_values}
            to_value = max(deficits, key=lambda u: deficits[u])
            people = keys[values == v]
            rows.append((side, left_group, count, to_value, people))
        suspected, moved = _heap_suspects(name, v, rows, labels, groups, schema, binned, probs)
        told = f"; {moved} suspected, those the model most places in the group the rounding left"
    if not moved:
        told = ("; the values it took lie in the same group, so no task label changed and no one is suspected"
                if binned is not None else "; no model group to tell who moved, so no one is suspected")
    sides_text = " and ".join(f"{s} ({', '.join(str(u) for u in d['values'])}: {d['observed']} units where "
                              f"{d['expected']:.0f} were expected)" for s, d in rounding.items())
    summary = (f"Heaping of {name} at {v}: {c} units where {expected[at]:.0f} were expected, with a deficit "
               f"{sides_text}: rounding{told}")
    return Pattern("heaping", name, summary, evidence, p, suspected, f"heaping:{name}={v}", chart=chart)


def _heap_suspects(name: str, v: int, sides: list, labels: pd.DataFrame, groups: np.ndarray, schema: Schema,
                   binned: Any, probs: Mapping[str, np.ndarray]) -> tuple[pd.DataFrame, int]:
    p = np.asarray(probs[binned.name], dtype=float)
    frame = pd.DataFrame(p, columns=range(p.shape[1]))
    frame["unit"] = groups
    per_unit = frame.groupby("unit", sort=False).mean()
    rows = []
    for _side, left_group, count, to_value, people in sides:
        if count <= 0 or not len(people):
            continue
        chance = per_unit.reindex(people)[left_group].fillna(0.0)
        ranked = chance.sort_values(ascending=False, kind="stable").head(count)
        for person, confidence in ranked.items():
            rows.append((str(person), str(person), name, int(v), int(to_value), float(confidence)))
    frame = pd.DataFrame(rows, columns=SUSPECT_COLUMNS).drop_duplicates("unit")
    return frame.reset_index(drop=True), len(frame)


# ---- the scan -------------------------------------------------------------------------------------------------------
def find_patterns(labels: pd.DataFrame, probs: Mapping[str, np.ndarray], schema: Schema, *,
                  meta: pd.DataFrame | None = None, alpha: float = ALPHA, seed: int = 0,
                  permutations: int = PERMUTATIONS, rescored: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                  tests: list[dict[str, Any]] | None = None) -> list[Pattern]:
    """Every pattern in a labelled dataset that survives the false discovery rate ``alpha`` over all tests run.

    ``labels``: one row per labelled image: ``path``, ``person`` (None for none), ``order`` (upload order;
    the row order without it) and the stored attributes (current labels). ``probs``: target -> (n, k)
    probabilities aligned with the rows (out-of-fold). ``meta``: metadata columns aligned with the rows.
    ``rescored``: slice key ``column=value`` -> {target: (n, k)} probabilities of models that never trained on
    that slice (used for the slice's own rows in its slice tests). ``tests``, when a list, receives one row per
    test run (family, group, p-value). Returns patterns most significant first.
    """
    labels = labels.reset_index(drop=True)
    meta = meta.reset_index(drop=True) if meta is not None else pd.DataFrame(index=labels.index)
    candidates: list[Candidate] = []
    for target in schema.targets:
        if target not in probs:
            continue
        units = build_units(labels, probs[target], schema, target)
        candidates += run_candidates(units, labels, schema, seed=seed, permutations=permutations)
        if len(meta.columns):
            candidates += slice_candidates(units, labels, schema, meta)
            for key, alt in (rescored or {}).items():
                column, _, value = key.partition("=")
                if target not in alt or column not in meta.columns:
                    continue
                inside = (meta[column].astype("string").fillna("") == value).to_numpy()
                mixed = np.where(inside[:, None], alt[target], probs[target])
                alt_units = build_units(labels, mixed, schema, target)
                found = [c for c in slice_candidates(alt_units, labels, schema, meta[[column]])
                         if c.group[2:] == (column, value)]
                for c in found:
                    c.group = (*c.group, "rescored")
                candidates += found
    candidates += heap_candidates(labels, schema, probs)
    if not candidates:
        return []
    q = benjamini_hochberg([c.p_value for c in candidates])
    if tests is not None:
        tests += [{"family": c.family, "group": "|".join(map(str, c.group)), "p_value": c.p_value, "q_value": float(qv)}
                  for c, qv in zip(candidates, q)]
    significant: list[tuple[tuple, Pattern]] = []
    for c, qv in zip(candidates, q):
        if qv <= alpha:
            pattern = c.build()
            pattern.q_value = float(qv)
            significant.append((c.group, pattern))
    return [_swap_proposals(p, schema) for p in _merge(significant)]


def _swap_proposals(pattern: Pattern, schema: Schema) -> Pattern:
    """Where a unit's photos of a swap pair (the competition's incorrect / not_wear: one photo each) look
    exchanged -- one photo given b is suggested a -- the proposal for its photo given a is b (the swap), not the
    model's third guess: an exchanged pair is fixed by exchanging it back."""
    frame = pattern.suspected
    if frame.empty:
        return pattern
    frame = frame.copy()
    for attribute in frame["attribute"].unique():
        try:
            pair = schema.attribute(str(attribute)).swap_pair
        except Exception:  # an integer attribute or a binned target: no pair
            pair = None
        if not pair:
            continue
        a, b = pair
        for _unit, rows in frame[frame["attribute"] == attribute].groupby("unit", sort=False):
            for x, y in ((a, b), (b, a)):
                if ((rows["current"] == y) & (rows["proposed"] == x)).any():
                    fix = rows.index[(rows["current"] == x) & (rows["proposed"] != y)]
                    frame.loc[fix, "proposed"] = y
    pattern.suspected = frame
    return pattern


def _merge(found: list[tuple[tuple, Pattern]]) -> list[Pattern]:
    """One pattern per group of findings about the same units: runs of one target whose windows overlap by
    more than half, slices of one target and column value; the most significant leads, suspects are united."""
    merged: list[list[tuple[tuple, Pattern]]] = []
    for group, pattern in sorted(found, key=lambda gp: gp[1].p_value):
        home = None
        for bucket in merged:
            lead_group, lead = bucket[0]
            if lead.kind != pattern.kind or lead.attribute != pattern.attribute:
                continue
            if pattern.kind == "run" and _overlap(lead_group[2:4], group[2:4]) > 0.5:
                home = bucket
            elif pattern.kind == "slice" and lead_group[2:4] == group[2:4]:
                home = bucket
            if home is not None:
                break
        if home is None:
            merged.append([(group, pattern)])
        else:
            home.append((group, pattern))
    out = []
    for bucket in merged:
        lead = bucket[0][1]
        if len(bucket) > 1:
            others = [p for _, p in bucket[1:]]
            names = [str(p.evidence["confusion"]) for p in [lead, *others] if p.evidence.get("confusion")]
            specific = [p for p in [lead, *others] if "(any)" not in str(p.evidence.get("confusion", ""))]
            # A specific confusion's suspects say more than "any disagreement" over a wider window: keep theirs.
            frames = [p.suspected for p in (specific or [lead, *others]) if len(p.suspected)]
            suspected = pd.concat(frames, ignore_index=True).drop_duplicates(["unit", "target", "attribute"]) \
                if frames else lead.suspected
            lead.suspected = suspected.reset_index(drop=True)
            lead.evidence = {**lead.evidence, "confusions": list(dict.fromkeys(names)),
                             "merged": [p.summary for p in others]}
            lead.summary += f" (with {len(others)} related finding{'s' if len(others) > 1 else ''}: " \
                            + "; ".join(dict.fromkeys(names[1:])) + ")" if names[1:] else ""
        out.append(lead)
    return _explain_away(out)


def _explain_away(found: list[Pattern]) -> list[Pattern]:
    """One error seen by two families (a swapped upload is a run and a batch slice; an annotator's flips also make
    the batches they labelled stand out) is one pattern: in order of significance, a finding whose suspects
    (unit and attribute) are mostly (half or more) those of a stronger one is folded into it: its summary goes to
    ``evidence["also_seen_as"]`` and its other suspects join the stronger one's. Otherwise it keeps only the
    suspects no stronger finding holds."""
    kept: list[Pattern] = []
    owner: dict[tuple[str, str], Pattern] = {}
    for pattern in sorted(found, key=lambda p: p.p_value):
        if pattern.suspected.empty:
            kept.append(pattern)
            continue
        keys = list(zip(pattern.suspected["unit"].astype(str), pattern.suspected["attribute"].astype(str)))
        covered = [k for k in dict.fromkeys(keys) if k in owner]
        if len(covered) * 2 >= len(set(keys)):
            counts: dict[int, int] = {}
            for k in covered:
                counts[id(owner[k])] = counts.get(id(owner[k]), 0) + 1
            strongest = next(owner[k] for k in covered if id(owner[k]) == max(counts, key=lambda k: counts[k]))
            strongest.evidence.setdefault("also_seen_as", []).append(pattern.summary)
            extra = pattern.suspected[[k not in owner for k in keys]]
            if len(extra):
                strongest.suspected = pd.concat([strongest.suspected, extra], ignore_index=True)
                for k in zip(extra["unit"].astype(str), extra["attribute"].astype(str)):
                    owner[k] = strongest
                # the summary counts its own suspects; say where the others come from
                added = extra["unit"].astype(str).nunique()
                strongest.summary += f" (also seen as: {pattern.summary}; {added} more suspected from it)"
            continue
        if covered:
            pattern.suspected = pattern.suspected[[k not in owner for k in keys]].reset_index(drop=True)
            pattern.evidence["explained_elsewhere"] = len(covered)
        for k in zip(pattern.suspected["unit"].astype(str), pattern.suspected["attribute"].astype(str)):
            owner[k] = pattern
        kept.append(pattern)
    return kept


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    (s1, e1), (s2, e2) = a, b
    inter = max(0, min(e1, e2) - max(s1, s2))
    return inter / max(1, min(e1 - s1, e2 - s2))


def suspected_share(patterns: Sequence[Pattern], labels: pd.DataFrame) -> float:
    """Share of the dataset's units (people, or images without people) that any pattern suspects."""
    groups = unit_groups(labels)
    units = {u for p in patterns for u in p.units}
    return len(units) / max(1, len(pd.unique(groups)))
