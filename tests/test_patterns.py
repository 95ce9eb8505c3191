"""core.patterns on small synthetic tables (a planted run, slice and heap are found; shuffled data gives none),
bulk steps through the store (apply, undo, conflicts, history, export), ingest metadata, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import pattern_actions
from core import patterns as P
from core.schema import COMPETITION, generic_schema
from core.store import LabelStore

ROOT = Path(__file__).resolve().parents[1]
GENDER = generic_schema({"gender": ["female", "male"]})


def flat_table(n: int = 600, seed: int = 0, run: tuple[int, int] | None = None, site_flip: str | None = None,
               flip_rate: float = 0.6, noise: float = 0.04):
    """A CSV-like dataset (one image per row, no people): true gender, a model that mostly sees it (``noise``
    random mistakes), a ``site`` column; optionally gender flips over a stretch of rows or within one site."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(["female", "male"], n)
    site = rng.choice(["north", "south", "east", "west", "<b>**x**</b>"], n)
    given = truth.copy()
    flipped = np.zeros(n, dtype=bool)
    if run is not None:
        flipped[run[0]:run[1]] = rng.random(run[1] - run[0]) < flip_rate
    if site_flip is not None:
        flipped |= (site == site_flip) & (rng.random(n) < flip_rate)
    given[flipped] = np.where(truth[flipped] == "male", "female", "male")
    probs = np.where((truth == "male")[:, None], [0.1, 0.9], [0.9, 0.1]).astype(float)
    wrong = rng.random(n) < noise
    probs[wrong] = probs[wrong][:, ::-1]
    labels = pd.DataFrame({"path": [f"img/{i:05d}.png" for i in range(n)], "person": None, "gender": given,
                           "order": np.arange(n)})
    return labels, {"gender": probs}, pd.DataFrame({"site": site}), flipped


def test_benjamini_hochberg():
    q = P.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert np.allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.5])  # sorted p * 4 / rank, then the running minimum
    assert P.benjamini_hochberg([]).size == 0


def test_scan_finds_the_window():
    x = np.zeros(400, dtype=int)
    x[np.random.default_rng(1).choice(400, 12, replace=False)] = 1
    x[150:190] = 1
    llr, start, end = P.refine_window(x, *P.scan_max(x)[1:])
    assert (start, end) == (150, 190) and llr > 0
    assert P.scan_p_value(x, llr, permutations=39, window=(start, end)) < 1e-6


def test_planted_run_found_and_suspects_are_the_flips():
    labels, probs, meta, flipped = flat_table(run=(200, 260))
    found = P.find_patterns(labels, probs, GENDER, meta=meta)
    runs = [p for p in found if p.kind == "run"]
    assert len(runs) == 1, [p.summary for p in found]
    run = runs[0]
    suspects = set(run.suspected["target"])
    planted = set(labels["path"][flipped])
    assert len(suspects & planted) >= 0.9 * len(planted)
    assert len(suspects - planted) <= 3
    row = run.suspected.iloc[0]
    assert row["proposed"] != row["current"] and row["attribute"] == "gender"
    assert run.q_value <= P.ALPHA and "upload order" in run.summary
    assert not [p for p in found if p.kind == "slice"]


def test_planted_slice_found_with_hostile_value_kept_as_text():
    labels, probs, meta, flipped = flat_table(site_flip="<b>**x**</b>", flip_rate=0.3)
    found = P.find_patterns(labels, probs, GENDER, meta=meta)
    slices = [p for p in found if p.kind == "slice"]
    assert len(slices) == 1 and slices[0].evidence["value"] == "<b>**x**</b>"
    assert "<b>**x**</b>" in slices[0].summary
    assert set(slices[0].suspected["target"]) <= set(labels["path"][flipped]) | set(labels["path"][
        (probs["gender"].argmax(1) == 1) != (labels["gender"] == "male")])


def test_shuffled_data_has_no_pattern():
    """Random model mistakes in shuffled order and metadata: the false discovery rate is 5 %, so over ten null
    datasets at most one may show a finding (the expected number is at most 0.5)."""
    hits = []
    for seed in range(10):
        labels, probs, meta, _ = flat_table(seed=seed, noise=0.08)
        found = P.find_patterns(labels, probs, GENDER, meta=meta, seed=seed, permutations=49)
        hits += [p.summary for p in found]
    assert len(hits) <= 1, hits


def _people(n=600, seed=0, heap=None, top=True):
    """Person table with ages (one image per person) and an age_group model that sees the true group."""
    rng = np.random.default_rng(seed)
    ages = rng.integers(18, 60, n)
    if top:
        ages[rng.random(n) < 0.08] = 60
    given = ages.copy()
    if heap:
        value, low, high, share = heap
        moved = (ages >= low) & (ages <= high) & (ages != value) & (rng.random(n) < share)
        given[moved] = value
    codes = COMPETITION.binned[0].codes(ages)
    probs = np.full((n, 3), 0.1)
    probs[np.arange(n), codes] = 0.8
    labels = pd.DataFrame({"path": [f"p{i}/a.jpg" for i in range(n)], "person": [f"p{i}" for i in range(n)],
                           "mask": "wear", "gender": "male", "age": given, "order": np.arange(n)})
    return labels, {"age_group": probs}, ages


def test_heap_with_deficit_is_rounding_and_suspects_who_moved():
    labels, probs, ages = _people(heap=(30, 27, 29, 0.8))
    found = P.find_patterns(labels, probs, COMPETITION)
    heaps = [p for p in found if p.kind == "heaping"]
    assert len(heaps) == 1 and heaps[0].evidence["value"] == 30
    suspects = heaps[0].suspected
    truly = set(labels["person"][(labels["age"] == 30) & (ages < 30)])
    assert len(suspects) > 0 and set(suspects["unit"]) <= truly | set(labels["person"][labels["age"] == 30])
    assert len(set(suspects["unit"]) & truly) >= 0.8 * len(suspects)
    assert (suspects["proposed"] < 30).all()
    tops = [p for p in found if p.kind == "top_coding"]
    assert len(tops) == 1 and tops[0].evidence["value"] == 60 and tops[0].suspected.empty


def test_top_coding_alone_suspects_no_one():
    labels, probs, _ = _people(seed=3)
    found = P.find_patterns(labels, probs, COMPETITION)
    assert [p.kind for p in found] == ["top_coding"] and found[0].units == []


def test_heaps_inside_one_group_suspect_no_one():
    labels, probs, ages = _people(n=900, seed=4, heap=(40, 38, 42, 0.7), top=False)
    labels2, _, _ = _people(n=900, seed=4, heap=(50, 48, 52, 0.7), top=False)
    labels["age"] = np.where(labels2["age"] == 50, 50, labels["age"])
    found = P.find_patterns(labels, probs, COMPETITION)
    values = sorted(p.evidence["value"] for p in found if p.kind == "heaping")
    assert values == [40, 50], [p.summary for p in found]
    assert all(p.units == [] for p in found)


def test_person_scope_units_and_swapped_batch():
    """Competition-like: 7 photos a person; a batch of consecutive people with incorrect/not_wear swapped is one
    run whose units are people, each proposing the two image corrections."""
    rng = np.random.default_rng(5)
    rows, probs = [], []
    for i in range(200):
        for stem, mask in [("mask1", "wear")] * 5 + [("incorrect_mask", "incorrect"), ("normal", "not_wear")]:
            given = mask
            if 80 <= i < 100 and mask != "wear":
                given = "not_wear" if mask == "incorrect" else "incorrect"
            rows.append((f"train/{i:04d}/{stem}{len(rows)}.jpg", f"{i:04d}", given, "male", 40))
            p = np.full(3, 0.05)
            p[["wear", "incorrect", "not_wear"].index(mask)] = 0.9
            probs.append(p if rng.random() > 0.03 else p[::-1])
    labels = pd.DataFrame(rows, columns=["path", "person", "mask", "gender", "age"])
    found = P.find_patterns(labels, {"mask": np.array(probs)}, COMPETITION)
    runs = [p for p in found if p.kind == "run"]
    assert len(runs) == 1
    assert set(runs[0].units) == {f"{i:04d}" for i in range(80, 100)}
    one = runs[0].suspected[runs[0].suspected["unit"] == "0085"]
    assert sorted(one["proposed"]) == ["incorrect", "not_wear"]
    assert json.loads(json.dumps(runs[0].to_dict()))["suspected"][0]["corrections"]


# ---- the store: bulk steps ------------------------------------------------------------------------------------
def _pattern_for(store: LabelStore, persons: list[str]) -> P.Pattern:
    labels = store.current_labels()
    rows = []
    for person in persons:
        current = labels[labels["person"] == person]["gender"].iat[0]
        rows.append((person, person, "gender", current, "male" if current == "female" else "female", 0.9))
    return P.Pattern("slice", "gender", "Slice annotator = x: gender flips", {}, 0.001,
                     pd.DataFrame(rows, columns=P.SUSPECT_COLUMNS), "slice:gender:annotator=x")


def test_bulk_apply_and_undo_round_trip(make_store, tmp_path):
    from core.export import export

    store = make_store(n_persons=6)
    persons = sorted(store.current_labels()["person"].unique())
    before = store.current_labels()
    pattern = _pattern_for(store, persons[:3])
    result = pattern_actions.apply_pattern(store, pattern, {persons[0]: "fix", persons[1]: "fix", persons[2]: "keep"},
                                           annotator="ana")
    assert result.n_corrected == 2 and result.n_kept == 1 and not result.refused
    log = store.history()
    mine = log[log["bulk"] == result.bulk_id]
    assert len(mine) == 2 and set(mine["source"]) == {"pattern"} and set(mine["annotator"]) == {"ana"}
    assert all(r.startswith("pattern: ") for r in mine["reason"])
    assert store.bulks().iloc[0]["n_corrected"] == 2
    out = tmp_path / "clean.csv"
    export(store, out)
    table = pd.read_csv(out)
    flipped = table[table["person"] == persons[0]]
    assert (flipped["corrected"] == 1).all()
    assert pattern_actions.decided_units(store, pattern) == set(persons[:3])
    # the units decided leave the Review queue's unreviewed set
    status = store_status(store)
    assert status[(persons[0], "gender")] == "corrected" and status[(persons[2], "gender")] == "reviewed"

    undo = pattern_actions.undo(store, result.bulk_id, annotator="bo")
    assert undo.n_corrected == 2 and undo.n_kept == 1 and not undo.refused
    after = store.current_labels()
    pd.testing.assert_frame_equal(after.drop(columns=["corrected"]), before.drop(columns=["corrected"]))
    reverts = store.history(source="revert")
    assert len(reverts) == 2 and set(reverts["bulk"]) == {undo.bulk_id}
    assert store.verify_current() == []
    assert pattern_actions.decided_units(store, pattern) == set()
    status = store_status(store)
    assert (persons[2], "gender") not in status
    with pytest.raises(Exception, match="already undone"):
        pattern_actions.undo(store, result.bulk_id, annotator="bo")
    export(store, out)
    assert (pd.read_csv(out)["corrected"] == 0).all()


def store_status(store):
    from core import review

    table = review.statuses(store)
    return dict(zip(zip(table["target"], table["attribute"]), table["status"]))


def test_bulk_with_a_conflict_applies_the_rest_and_names_it(make_store):
    store = make_store(n_persons=6)
    persons = sorted(store.current_labels()["person"].unique())
    pattern = _pattern_for(store, persons[:3])
    shown = pattern.suspected.iloc[1]
    store.correct(shown["target"], "gender", shown["proposed"], expected=shown["current"], annotator="someone")
    result = pattern_actions.apply_pattern(store, pattern, {p: "fix" for p in persons[:3]}, annotator="ana")
    assert result.n_corrected == 2
    assert [r["target"] for r in result.refused] == [persons[1]] and "conflict" in result.refused[0]["reason"]
    assert persons[1] in pattern_actions.outcome_text(result)
    assert store.verify_current() == []


def test_undo_refuses_a_unit_changed_since_and_reverts_the_rest(make_store):
    store = make_store(n_persons=6)
    persons = sorted(store.current_labels()["person"].unique())
    pattern = _pattern_for(store, persons[:2])
    result = pattern_actions.apply_pattern(store, pattern, {p: "fix" for p in persons[:2]}, annotator="ana")
    later = store.label_of(persons[0], "gender")
    store.correct(persons[0], "gender", "male" if later == "female" else "female", expected=later, annotator="cy")
    undo = pattern_actions.undo(store, result.bulk_id, annotator="ana")
    assert undo.n_corrected == 1 and [r["target"] for r in undo.refused] == [persons[0]]


# ---- ingest keeps metadata ------------------------------------------------------------------------------------------
def test_csv_metadata_columns_kept_and_not_labels(tmp_path):
    from core.ingest import ingest
    from tests.fixtures import write_image

    root = tmp_path / "csv"
    rows = []
    for i in range(6):
        write_image(root / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "label": "cat" if i % 2 else "dog", "site": "=HYPERLINK(x)",
                     "annotator": f"<script>{i}</script>"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    with LabelStore(tmp_path / "s.db") as store:
        ingest(root, store)
        assert store.schema.names == ["label"]
        meta = store.item_meta().sort_values("path")
        assert list(meta["annotator"])[:2] == ["<script>0</script>", "<script>1</script>"]
        assert set(meta["site"]) == {"=HYPERLINK(x)"}


def test_folder_subfolder_is_metadata(tmp_path):
    from core.ingest import ingest
    from tests.fixtures import write_image

    root = tmp_path / "folder"
    write_image(root / "cat" / "a.png")
    write_image(root / "cat" / "batch2" / "b.png")
    write_image(root / "dog" / "c.png")
    with LabelStore(tmp_path / "s.db") as store:
        ingest(root, store, fmt="folder")
        meta = store.item_meta().set_index("path")
        assert meta.loc["cat/batch2/b.png", "folder"] == "batch2"
        assert pd.isna(meta.loc["cat/a.png", "folder"])


def test_cli_patterns_json_on_a_store_without_scores_is_one_line(make_store):
    store = make_store(n_persons=4)
    done = subprocess.run([sys.executable, "-m", "core", "patterns", "--db", str(store.path), "--json"],
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1 and "score run" in done.stderr


def test_cli_patterns_json(make_store):
    from core.synthetic import add_score_run

    store = make_store(n_persons=8)
    add_score_run(store)
    done = subprocess.run([sys.executable, "-m", "core", "patterns", "--db", str(store.path), "--json"],
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)


def test_pattern_arm_counts_every_unit_shown(tmp_path):
    """The cleaning-loop bench's pattern arm: a pattern costs the units displayed (not 1), writes through one bulk
    step per pattern, and the queue after it skips units a pattern decided."""
    from bench.cleaning_loop import Truth
    from bench.pattern_arm import PatternEntry, PatternReviewer, pattern_entries
    from tests.pattern_data import pattern_store

    store, run_id, (images, people) = pattern_store(tmp_path / "s.db", with_truth=True)
    record = {"score_run": run_id}
    entries = pattern_entries(store, record, seed=0)
    patterns = [e for e in entries if isinstance(e, PatternEntry)]
    assert patterns and all(e.cost == len(e.pattern.units) for e in patterns)
    first = patterns[0]
    reviewer = PatternReviewer(store, entries, Truth(images, people), score_run=run_id)
    budget = first.cost + 3
    counts = reviewer.review_until(budget)
    assert reviewer.spent <= budget and reviewer.spent >= first.cost
    bulks = store.bulks()
    assert len(bulks) >= 1 and bulks.iloc[-1]["pattern"] == first.name
    assert counts["corrected"] >= 0.8 * first.cost  # the planted pattern's suspects are mostly real errors
    assert record["patterns"][0]["key"] == first.name


def test_a_learned_slice_is_found_and_rescoring_exposes_it():
    """One annotator (80 % of rows) calls a look-alike group male; a model trained on those labels agrees with it,
    so the annotator's slice looks clean and the others look wrong. ``learned_slices`` names the annotator;
    probabilities from a model that never saw the slice (here: one that sees the truth) expose its errors."""
    rng = np.random.default_rng(7)
    n = 1000
    truth = rng.choice(["female", "male"], n)
    lookalike = (truth == "female") & (rng.random(n) < 0.15)
    annotator = np.where(rng.random(n) < 0.8, "dee", rng.choice(["ana", "bo"], n))
    given = truth.copy()
    given[lookalike & (annotator == "dee")] = "male"
    learned = np.where(((truth == "male") | lookalike)[:, None], [0.15, 0.85], [0.85, 0.15])  # learned the habit
    blind = np.where((truth == "male")[:, None], [0.1, 0.9], [0.9, 0.1])  # never trained on the slice
    labels = pd.DataFrame({"path": [f"i{i}.png" for i in range(n)], "person": None, "gender": given,
                           "order": rng.permutation(n)})
    meta = pd.DataFrame({"annotator": annotator})
    found = P.learned_slices(labels, {"gender": learned}, GENDER, meta)
    assert [(r["column"], r["value"]) for r in found][:1] == [("annotator", "dee")]
    plain = P.find_patterns(labels, {"gender": learned}, GENDER, meta=meta)
    assert not any(p.evidence.get("value") == "dee" for p in plain)  # the out-of-fold model cannot see it
    again = P.find_patterns(labels, {"gender": learned}, GENDER, meta=meta, rescored={"annotator=dee": {"gender": blind}})
    dee = [p for p in again if p.kind == "slice" and p.evidence.get("value") == "dee"]
    assert len(dee) == 1
    wrong = set(labels["path"][lookalike & (annotator == "dee")])
    assert len(set(dee[0].suspected["target"]) & wrong) >= 0.9 * len(wrong)


def test_slice_rescoring_trains_without_the_slice(tmp_path):
    """train.slices on a tiny real demo: the slice's rows get probabilities from a model trained on the rest."""
    pytest.importorskip("torch")
    from core.demo import generate
    from core.ingest import ingest
    from train.score import score
    from train.slices import rescan, slice_probs

    generate(tmp_path / "demo", persons=16, image_size=(32, 40), eval_images=0, noise=0.3, profile="systematic")
    db = tmp_path / "labels.db"
    with LabelStore(db) as store:
        ingest(tmp_path / "demo", store)
    result = score(db=str(db), folds=2, echo=False, model="test_resnet", img_size=(32, 40), epochs=1, batch_size=16,
                   threads=1, out=str(tmp_path / "runs"))
    with LabelStore(db) as store:
        labels, _, meta = pattern_actions.load_inputs(store, result["run_id"])
        value = meta["annotator"].value_counts().index[-1]  # the smallest slice: the rest is enough to train on
        probs = slice_probs(store, result["run_id"], [("annotator", value)])
        inside = (meta["annotator"] == value).to_numpy()
        got = probs[f"annotator={value}"]["gender"]
        assert np.isfinite(got[inside]).all() and np.isnan(got[~inside]).all()
        assert np.allclose(got[inside].sum(1), 1, atol=1e-4)
        learned, found = rescan(store, result["run_id"])
        assert isinstance(learned, list) and isinstance(found, list)


def test_a_swapped_pair_is_proposed_back_as_a_swap():
    """The model calls an exchanged incorrect photo 'wear' (its third guess): the proposal is the swap back."""
    frame = pd.DataFrame([("p1", "p1/normal.jpg", "mask", "not_wear", "wear", 0.8),
                          ("p1", "p1/incorrect_mask.jpg", "mask", "incorrect", "not_wear", 0.9),
                          ("p2", "p2/mask1.jpg", "mask", "wear", "incorrect", 0.7)], columns=P.SUSPECT_COLUMNS)
    pattern = P._swap_proposals(P.Pattern("run", "mask", "", {}, 0.0, frame, "k"), COMPETITION)
    assert list(pattern.suspected["proposed"]) == ["incorrect", "not_wear", "incorrect"]


def test_photos_of_unnamed_people_sitting_together_are_not_a_run():
    """Rows are images of people the CSV does not name (7 adjacent photos each); a mis-gendered person makes 7
    adjacent events. Block permutations keep that clustering in the null: no run; a planted run still is one."""
    hits = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x = np.repeat(rng.random(480) < 0.04, 7).astype(int) | (rng.random(3360) < 0.01)
        llr, start, end = P.refine_window(x, *P.scan_max(x)[1:])
        hits += P.scan_p_value(x, llr, 49, seed, window=(start, end)) < 0.01
        x[900:960] |= rng.random(60) < 0.7
        llr, start, end = P.refine_window(x, *P.scan_max(x)[1:])
        assert abs(start - 900) <= 10 and abs(end - 960) <= 10
        assert P.scan_p_value(x, llr, 49, seed, window=(start, end)) < 1e-4
    assert hits == 0
