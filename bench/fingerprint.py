"""Behaviour fingerprint of the code: a fixed-seed fit, a score run and the review queue on a tiny demo, as hashes.

    PYTHONPATH=. .venv/bin/python -m bench.fingerprint /tmp/fp-new                  # writes /tmp/fp-new/fingerprint.json
    PYTHONPATH=. .venv/bin/python -m bench.fingerprint --compare /tmp/fp-old /tmp/fp-new

Run it on two checkouts (before and after a refactor, or a merge) and compare: a refactor that changes no
behaviour gives equal fingerprints. Recorded: the fit's checkpoint tensors (``best`` and ``last``: weights, optimizer
and RNG state, without Python's global ``random`` state, which nothing seeds) and its metrics without timings, the
score run's rows and verdict details (``store.scores``), and the cleaning-loop bench's queue arm after five units were
reviewed (``bench.cleaning_loop.review_queue_entries``, i.e. ``core.review.queue_units``). Writes nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

TIMINGS = ("seconds", "images_per_s")


def _tensors_hash(path: Path) -> str:
    from safetensors.numpy import load_file

    tensors, digest = load_file(str(path)), hashlib.sha256()
    for key in sorted(k for k in tensors if k != "rng.python"):
        digest.update(key.encode())
        digest.update(tensors[key].tobytes())
    return digest.hexdigest()


def _untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMINGS}
    return value


def fingerprint(out: Path) -> dict[str, Any]:
    """Generate the demo in ``out``, fit, score and walk the queue; returns the fingerprint (also written)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from bench.cleaning_loop import review_queue_entries
    from bench.common import demo_store
    from core import review
    from core.store import LabelStore
    from train.loop import fit
    from train.score import score

    db = demo_store(out, persons=24, noise=0.2, seed=3, image_size=(32, 40), fresh=True, quiet=True)
    with LabelStore(db) as store:
        snapshot = str(store.snapshot().path)
    options = dict(model="test_resnet", img_size=(32, 40), epochs=2, batch_size=16, threads=1, seed=7, echo=False,
                   cache_dir=str(out / "cache"), out=str(out / "runs"), snapshot=snapshot)
    fitted = fit(db=str(db), **options)
    result: dict[str, Any] = {"fit_status": fitted["status"], "fit_metrics": _untimed(fitted["metrics"])}
    for name in ("best", "last"):
        result[f"{name}_tensors"] = _tensors_hash(Path(fitted["run_dir"]) / f"{name}.safetensors")
    scored = score(db=str(db), folds=2, **options)
    with LabelStore(db) as store:
        result["epochs"] = [_untimed(r) for r in store.epochs(fitted["run_id"]).to_dict("records")]
        rows = store.scores(scored["run_id"]).sort_values(["item_id", "attribute"])
        result["score_status"], result["flagged"] = scored["status"], scored["flagged"]
        result["scores"] = hashlib.sha256(rows.drop(columns=["detail"]).to_csv(index=False).encode()).hexdigest()
        result["details"] = hashlib.sha256("\n".join(rows["detail"]).encode()).hexdigest()
        for entry in review_queue_entries(store, scored["run_id"], person_cost=False)[:5]:
            target, attribute = entry.decisions[0]
            review.verdict(store, target, attribute, shown=store.label_of(target, attribute), annotator="fingerprint")
        entries = review_queue_entries(store, scored["run_id"])
        result["queue"] = [[e.name, e.cost, e.shown, [list(d) for d in e.decisions]] for e in entries]
    (out / "fingerprint.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The fingerprint's parts that differ (empty: same behaviour)."""
    return [key for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, nargs="?", help="working folder; the fingerprint goes to OUT/fingerprint.json")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="compare two OUT folders' fingerprints")
    args = parser.parse_args(argv)
    if args.compare:
        a, b = (json.loads((folder / "fingerprint.json").read_text()) for folder in args.compare)
        differ = compare(a, b)
        print("same behaviour: every part equal" if not differ else "differ: " + ", ".join(differ))
        return 1 if differ else 0
    if args.out is None:
        parser.error("name OUT (or --compare A B)")
    result = fingerprint(args.out)
    print(json.dumps({k: v for k, v in result.items() if k not in ("queue", "epochs")}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
