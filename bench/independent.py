"""Person verdicts on grouped sets from a second, independently written generator and three other models.

``bench/person_regimes.py`` draws every regime from one family (Gaussian features, a logistic regression, or
probabilities drawn directly). A method chosen on that family can fit its quirks, so this bench varies where the
data comes from, not only its parameters. Written down before the first run (the list below and the models), and
not used to choose anything:

* features: class means at random in 6 dimensions (drawn per seed; ordered classes on a random line), each person
  a shared offset, and a fraction ``lean`` of people moved a Beta(2, 3) share of the way to a look-alike class's
  mean (binary: the other class; ordered: a neighbour; unordered: one other class, fixed per class); each image
  adds heavy-tailed noise (Student t, 3 degrees of freedom), so a few photos of a person are far off;
* whole people flipped (binary to the other class, ordered to a neighbour);
* three models, none of them the other benches' logistic regression, 5 person-grouped folds: k nearest
  neighbours (25, uniform: probabilities in steps of 1/25 with many exact zeros, a coarse and clipped
  calibration), Gaussian naive Bayes (over-confident), a random forest (100 trees: under-confident near the
  boundary).

The regimes follow the issue's independent sets' descriptions (binary 62/38 with 5 and 8 % flipped, 92/8 with 4 %,
60/40 with 1-12 photos a person and 6 %, three ordered classes 45/45/10 with neighbour flips, binary without
look-alikes). Per cell: person-level F1 and average precision of ``group_scores`` and the three baselines of
``bench/calibration.py`` (same ``evaluate``), mean over seeds, and the paired 95 % interval of ours − the best
baseline.

    PYTHONPATH=. .venv/bin/python -m bench.independent [--seeds 5] [--only design|held-out] [--models M ...] [--write]
    PYTHONPATH=. .venv/bin/python -m bench.independent --fold-attack [...]   # each fold its own temperature and offsets
"""

from __future__ import annotations

import argparse
import hashlib
import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from bench import common
from bench.calibration import OURS, against_best, interval_text, judged, short
from bench.person_regimes import Regime

DIMENSIONS = 6


@dataclass(frozen=True)
class Independent:
    name: str
    balance: tuple[float, ...]
    flip: float
    sizes: tuple[int, int] = (7, 7)
    lean: float = 0.10
    ordered: bool = False
    person_sd: float = 0.6
    separation: float = 2.5
    people: int = 800


REGIMES = [
    Independent("binary 62/38, 7 a person, 5 % flipped", (0.62, 0.38), 0.05),
    Independent("binary 62/38, 7 a person, 8 % flipped", (0.62, 0.38), 0.08),
    Independent("binary 92/8, 7 a person, 4 % flipped", (0.92, 0.08), 0.04),
    Independent("binary 60/40, 1-12 a person, 6 % flipped", (0.60, 0.40), 0.06, sizes=(1, 12)),
    Independent("3 ordered classes 45/45/10, neighbour flips 6 %", (0.45, 0.45, 0.10), 0.06, ordered=True),
    Independent("binary, no look-alikes, 5 % flipped", (0.5, 0.5), 0.05, lean=0.0),
]
MODELS = ["k nearest neighbours", "naive Bayes", "random forest"]
# Written down after the first run of MODELS showed losses and before the method was changed for them; run once
# after the change: models the change was not designed on.
HELD_OUT_MODELS = ["neural network", "gradient boosting", "logistic regression"]
# A held-out check of the zero reading alone (k nearest neighbours were its design case): a single tree's leaves give
# 18-34 % exact zeros here. Run on its own (``--models "decision tree"``), not part of the default table.
EXTRA_MODELS = ["decision tree"]


def generate(regime: Independent, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features (n, d), true class per person (g,), given label per person (g,), groups (n,)) of one set."""
    rng = np.random.default_rng(10_000 + seed)
    k = len(regime.balance)
    if regime.ordered:
        direction = rng.normal(size=DIMENSIONS)
        direction /= np.linalg.norm(direction)
        means = np.arange(k)[:, None] * regime.separation * direction[None, :]
    else:
        means = rng.normal(size=(k, DIMENSIONS))
        means *= regime.separation / np.linalg.norm(means[0] - means[1])  # the first pair at the set distance
    true = rng.choice(k, size=regime.people, p=np.asarray(regime.balance) / sum(regime.balance))
    if regime.ordered:
        step = np.where(true == 0, 1, np.where(true == k - 1, -1, rng.choice([-1, 1], size=regime.people)))
        alike = true + step
    else:
        partner = np.array([rng.choice([c for c in range(k) if c != j]) for j in range(k)])
        alike = partner[true]
    share = np.where(rng.random(regime.people) < regime.lean, rng.beta(2, 3, regime.people), 0.0)
    centre = means[true] * (1 - share[:, None]) + means[alike] * share[:, None]
    centre += rng.normal(0, regime.person_sd, (regime.people, DIMENSIONS))
    sizes = rng.integers(regime.sizes[0], regime.sizes[1] + 1, regime.people)
    groups = np.repeat(np.arange(regime.people), sizes)
    features = centre[groups] + rng.standard_t(3, (len(groups), DIMENSIONS))
    given = true.copy()
    for p in np.flatnonzero(rng.random(regime.people) < regime.flip):
        if regime.ordered:
            given[p] = true[p] + (1 if true[p] == 0 else -1 if true[p] == k - 1 else rng.choice([-1, 1]))
        else:
            given[p] = rng.choice([c for c in range(k) if c != true[p]])
    return features, true, given, groups


def out_of_fold(model: str, features: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier

    estimator = {"k nearest neighbours": KNeighborsClassifier(25), "naive Bayes": GaussianNB(),
                 "random forest": RandomForestClassifier(100, min_samples_leaf=3, random_state=seed, n_jobs=1),
                 "neural network": MLPClassifier((32,), max_iter=300, random_state=seed),
                 "gradient boosting": HistGradientBoostingClassifier(max_iter=100, random_state=seed),
                 "logistic regression": LogisticRegression(max_iter=1000),
                 "decision tree": DecisionTreeClassifier(min_samples_leaf=10, random_state=seed)}[model]
    return cross_val_predict(estimator, features, labels, groups=groups, cv=splitter(seed), method="predict_proba")


def splitter(seed: int):
    from sklearn.model_selection import GroupKFold

    return GroupKFold(n_splits=5, shuffle=True, random_state=seed)


def fold_of(labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """(n,) the fold each image was predicted in by ``out_of_fold`` (the verdict is told, as the score job tells it)."""
    folds = np.zeros(len(labels), dtype=int)
    for fold, (_, held_out) in enumerate(splitter(seed).split(labels, labels, groups)):
        folds[held_out] = fold
    return folds


def make(regime: Independent, model: str, seed: int, fold_attack: bool = False) -> Regime:
    """One grouped set; ``fold_attack``: each fold's probabilities at its own temperature (from 0.5, 0.75, 1, 1.5, 2)
    and with its own per-class log offsets (normal, sd 0.5), as fold models trained apart can differ."""
    features, true, given, groups = generate(regime, seed)
    labels = given[groups]
    probs, folds = out_of_fold(model, features, labels, groups, seed), fold_of(labels, groups, seed)
    if fold_attack:
        key = hashlib.sha1(repr((regime.name, model, seed, "folds")).encode()).digest()
        rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
        temperature, offset = rng.choice([0.5, 0.75, 1.0, 1.5, 2.0], 5), rng.normal(0, 0.5, (5, probs.shape[1]))
        logits = np.log(np.clip(probs, 1e-300, 1.0)) / temperature[folds][:, None] + offset[folds]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    return Regime(labels, probs, groups, given != true, folds)


def run(seeds: int, models: list[tuple[str, bool]], fold_attack: bool = False) -> tuple[str, list[str], int]:
    head = ("| regime | model | F1 ours | F1 best baseline | F1 ours − best [95 % paired] | AP ours | AP best baseline "
            "| AP ours − best [95 % paired] |" + (" F1 / AP ours, folds not given |" if fold_attack else ""))
    lines, misses, total = [head, "|" + "---|" * (9 if fold_attack else 8)], [], 0
    for regime in REGIMES:
        for model, held_out in models:
            sets = [make(regime, model, seed, fold_attack) for seed in range(seeds)]
            values = judged(sets)
            cells, met = [], True
            for m in range(2):
                best, diff, ok = against_best(values, m)
                met &= ok
                cells.append(f"{values[OURS][:, m].mean():.3f} | {values[best][:, m].mean():.3f} "
                             f"({short(best)}) | {diff.mean():+.3f} "
                             f"{interval_text(diff)}{'' if ok else ' **miss**'}")
            total += 1
            if not met:
                misses.append(f"{regime.name} / {model}")
            if fold_attack:  # the same sets with the folds withheld: what evening them is worth
                blind = judged(replace(data, folds=None) for data in sets)[OURS].mean(axis=0)
                cells.append(f"{blind[0]:.3f} / {blind[1]:.3f}")
            lines.append(f"| {regime.name} | {model}{' **(held out)**' if held_out else ''} | {' | '.join(cells)} |")
            print(lines[-1], flush=True)
    return "\n".join(lines), misses, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    common.add_write_flag(parser, "Person level on an independent generator")
    parser.add_argument("--only", choices=["design", "held-out", "all"], default="all")
    parser.add_argument("--models", nargs="+", choices=MODELS + HELD_OUT_MODELS + EXTRA_MODELS,
                        help="these models only (as held out), instead of --only")
    parser.add_argument("--fold-attack", action="store_true",
                        help="each fold at its own temperature and offsets; --write writes its own section")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="May not flag all label issues")
    warnings.filterwarnings("ignore", category=UserWarning)  # the neural network's convergence notes
    threadpool_limits(1)
    started = time.perf_counter()
    models = [(m, False) for m in MODELS if args.only != "held-out"]
    models += [(m, True) for m in HELD_OUT_MODELS if args.only != "design"]
    if args.models:
        models = [(m, m not in MODELS) for m in args.models]
    table, misses, total = run(args.seeds, models, args.fold_attack)
    summary = f"{total - len(misses)} of {total} cells met" + (f"; misses: {'; '.join(misses)}" if misses else "")
    print(summary)
    seconds = time.perf_counter() - started
    if args.write and args.fold_attack:
        common.write_section(FOLD_SECTION, f"""\
`PYTHONPATH=. .venv/bin/python -m bench.independent --fold-attack --seeds {args.seeds}{model_flag(args.models)}`
({seconds:.0f} s on this machine). The sets of "Person level on an independent generator", each of the five folds'
probabilities then given its own temperature (0.5 to 2) and its own per-class log offsets (normal, sd 0.5), as fold
models trained apart can differ; ours is told the folds (as the score job tells it), the baselines read the
probabilities as they are. Written down before its first run, after the fold evening was built on
`bench/calibration_attack.py`'s fold transform (temperatures only, another generator): a held-out check. The last
column is ours on the same sets with the folds withheld.

{table}

{summary}.
""")
    elif args.write:
        common.write_section("Person level on an independent generator", f"""\
`PYTHONPATH=. .venv/bin/python -m bench.independent --seeds {args.seeds}{model_flag(args.models)}` ({seconds:.0f} s on
this machine). A second generator written separately from `bench/person_regimes.py` (random class means, heavy-tailed
image noise, a continuous lean) and six models the other benches do not use (k nearest neighbours, naive Bayes, a
random forest; held out: a neural network, gradient boosting, logistic regression); the regimes were written down
before the first run and chose nothing (see the module docstring). Ours is told each image's fold, as the score job
tells it. Met = ours ≥ the best baseline − 0.005 in mean F1 and AP; an interval entirely below 0 is a measured loss.

{table}

{summary}.
""")


FOLD_SECTION = "Person level on an independent generator, folds trained apart"


def model_flag(models: list[str] | None) -> str:
    return "" if not models else " --models " + " ".join(f'"{m}"' for m in models)


if __name__ == "__main__":
    main()
