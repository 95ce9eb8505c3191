"""The learning queue and "more like this" (core.learning) on synthetic embeddings, and a score run's
embeddings files (core.embeddings): written by the score run, read without torch, refused when missing or
stale with a plain message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import embeddings, learning
from core.embeddings import EmbeddingsUnavailable


def _units(n: int, *, attribute: str = "gender", given: list[str] | None = None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    given = given or list(rng.choice(["male", "female"], n))
    targets = [f"p{i:04d}" for i in range(n)]
    return pd.DataFrame({"key": [f"{t}|{attribute}" for t in targets], "unit": [f"{t}|{attribute}" for t in targets],
                         "target": targets, "scope": "person", "attribute": attribute, "stored": attribute,
                         "item_id": np.arange(n), "path": [f"{t}/a.jpg" for t in targets], "person": targets,
                         "given": given, "suggested": "x", "value": given, "score": rng.random(n) * 0.5,
                         "is_issue": 0, "position": np.arange(n)})


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_more_like_this_returns_the_planted_neighbours_with_the_same_given_label():
    rng = np.random.default_rng(1)
    n, d = 600, 32
    vectors = rng.normal(size=(n, d))
    units = _units(n, given=["male"] * (n // 2) + ["female"] * (n - n // 2))
    centre = rng.normal(size=d) * 3
    planted = [10, 50, 120, 200, 290]  # all "male"
    vectors[planted] = centre + rng.normal(scale=0.2, size=(len(planted), d))
    decoys = [400, 450]  # just as close, but "female": another given label, never proposed
    vectors[decoys] = centre + rng.normal(scale=0.1, size=(len(decoys), d))
    index = learning.UnitIndex(units, _unit(vectors))
    found = index.similar([units["key"][10]], k=4)
    assert set(found["target"]) == {units["target"][i] for i in planted[1:]}
    assert (found["given"] == "male").all() and list(found["similarity"]) == sorted(found["similarity"], reverse=True)
    # from a set of anchors: their mean, anchors left out; exclude drops decided units
    found = index.similar([units["key"][10], units["key"][50]], k=3, exclude={units["key"][120]})
    assert set(found["target"]) == {units["target"][i] for i in (200, 290)} | (set(found["target"]) - {
        units["target"][i] for i in (200, 290)}) and {units["target"][i] for i in (200, 290)} <= set(found["target"])
    assert units["target"][120] not in set(found["target"]) and units["target"][10] not in set(found["target"])
    # an exact search: the same top-k as brute force over the same block
    block = np.flatnonzero(units["given"] == "male")
    q = _unit(vectors[[7]])[0]
    sims = _unit(vectors[block]) @ q
    brute = [units["key"][block[i]] for i in np.argsort(-sims) if block[i] != 7][:10]
    assert list(index.similar([units["key"][7]], k=10)["key"]) == brute


def _pattern_data(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """400 "male" units; 40 of them (a tight cluster) are wrong; the static score does not see them."""
    rng = np.random.default_rng(seed)
    n, d = 400, 16
    units = _units(n, given=["male"] * n, seed=seed)
    vectors = rng.normal(size=(n, d))
    wrong = rng.choice(n, 40, replace=False)
    vectors[wrong] = rng.normal(size=d) * 4 + rng.normal(scale=0.5, size=(40, d))
    truth = np.zeros(n, int)
    truth[wrong] = 1
    return units, _unit(vectors), truth


def test_the_learned_queue_ranks_up_units_like_the_confirmed_errors_and_says_why():
    units, vectors, truth = _pattern_data()
    first = list(range(30))  # the static order's first 30 decisions
    decided = pd.DataFrame({"unit": units["unit"][first], "error": truth[first]})
    assert decided["error"].sum() >= learning.MIN_EACH
    queue = learning.learned_queue(units, vectors, decided, every=10)
    assert queue.active and queue.n_decisions == 30 and "30 decision" in queue.note
    top = queue.order.head(20)
    remaining_wrong = set(units["unit"][truth == 1]) - set(decided["unit"])
    assert len(set(top["unit"]) & remaining_wrong) >= 15  # static order: about 20 x 10 % = 2
    why = top["why"][top["unit"].isin(remaining_wrong)]
    assert why.str.startswith("ranked up: looks like").any()
    assert not set(queue.order["unit"]) & set(decided["unit"])  # decided units are not in the queue
    # only whole blocks of ``every`` decisions are used: 39 decisions train on 30
    more = pd.DataFrame({"unit": units["unit"][:39], "error": truth[:39]})
    assert learning.learned_queue(units, vectors, more, every=10).n_decisions == 30
    # the fit of one epoch, kept by the caller between its decisions (the Review page does), gives the same order
    used = learning.used_decisions(more, every=10)
    assert len(used) == 30
    kept = learning.learn(units, vectors, used)
    fresh = learning.learned_queue(units, vectors, more, every=10)
    reused = learning.learned_queue(units, vectors, more, every=10, learned=kept)
    pd.testing.assert_frame_equal(fresh.order, reused.order)
    assert fresh.note == reused.note


def test_no_unit_is_ranked_by_a_model_trained_on_its_own_decision():
    units, vectors, truth = _pattern_data(seed=3)
    rows = np.arange(0, 400, 4)  # 100 decided units
    decided = pd.DataFrame({"unit": units["unit"][rows], "error": truth[rows]})
    base = learning.learn(units, vectors, decided)
    target = units["target"].to_numpy()
    for i in rows:  # the model that scored a decided unit never saw its target
        assert base.fold[i] >= 0 and target[i] not in base.trained_on[int(base.fold[i])]
    assert all(f == -1 for f in base.fold[np.setdiff1d(np.arange(400), rows)])
    # flipping one decision changes every score but that unit's own
    for i in rows[:12]:
        flipped = decided.copy()
        flipped.loc[flipped["unit"] == units["unit"][i], "error"] ^= 1
        other = learning.learn(units, vectors, flipped)
        assert other.score[i] == pytest.approx(base.score[i], abs=1e-12)
        assert np.abs(other.score - base.score).max() > 1e-6  # the flip did reach the other models


def test_too_few_decisions_keep_the_static_order():
    units, vectors, truth = _pattern_data()
    decided = pd.DataFrame({"unit": units["unit"][:10], "error": 0})
    queue = learning.learned_queue(units, vectors, decided)
    assert not queue.active and list(queue.order["unit"]) == list(units["unit"][10:])
    assert "static" in queue.note


# ---- the score run's files -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from tests.fixtures import demo_db
    from train.score import score

    os.environ.setdefault("TQDM_DISABLE", "1")
    db = demo_db(tmp_path_factory.mktemp("emb"), persons=12, noise=0.2, image_size=(32, 40))
    result = score(db=str(db), folds=2, echo=False, model="test_resnet", img_size=(32, 40), epochs=1,
                   batch_size=16, threads=1)
    return db, result


def test_the_score_run_saves_out_of_fold_float16_embeddings(scored):
    from core.store import LabelStore

    db, result = scored
    run_dir = Path(result["run_dir"])
    with LabelStore(db) as store:
        emb = embeddings.load_run(store, result["run_id"])
        units = learning.unit_table(store, result["run_id"])
    assert emb.vectors.dtype == np.float16 and emb.vectors.shape == (result["n_items"], 96)
    assert np.isfinite(emb.vectors).all() and np.abs(emb.vectors).sum(1).min() > 0
    meta = json.loads((run_dir / "embeddings.json").read_text())["oof"]
    assert meta["model"] == "test_resnet" and "Procrustes" in meta["aligned"]
    vectors = embeddings.unit_vectors(emb, units)
    assert vectors.shape == (len(units), 96) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    # a person unit is the mean of its photos
    person = units[units["scope"] == "person"].iloc[0]
    rows = np.flatnonzero(emb.items["person"] == person["target"])
    mean = emb.normalised()[rows].mean(0)
    assert np.allclose(vectors[person.name], mean / np.linalg.norm(mean), atol=1e-5)


def test_embeddings_load_without_torch(scored):
    _, result = scored
    code = ("import sys; from core import embeddings, learning; e = embeddings.load(sys.argv[1]); "
            "print(e.vectors.shape); assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code, result["run_dir"]], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 0, done.stderr


def test_a_missing_or_stale_embeddings_file_gives_a_plain_message(scored, tmp_path: Path):
    _, result = scored
    copy = tmp_path / "run"
    shutil.copytree(result["run_dir"], copy)
    embeddings.load(copy)  # intact
    items = pd.read_csv(copy / "items.csv")
    items.iloc[:3].to_csv(copy / "items.csv", index=False)  # another run's item list
    with pytest.raises(EmbeddingsUnavailable, match="stale or foreign file; rescore"):
        embeddings.load(copy)
    items.assign(path=items["path"][::-1].to_numpy()).to_csv(copy / "items.csv", index=False)  # same size, other images
    with pytest.raises(EmbeddingsUnavailable, match="made for other images"):
        embeddings.load(copy)
    (copy / "embeddings.npy").unlink()
    with pytest.raises(EmbeddingsUnavailable, match="embeddings.npy is missing.*rescore"):
        embeddings.load(copy)
    (copy / "embeddings.npy").write_bytes(b"not an array")
    with pytest.raises(EmbeddingsUnavailable, match="cannot be read"):
        embeddings.load(copy)
    with pytest.raises(EmbeddingsUnavailable, match="no pretrained backbone features"):
        embeddings.load(result["run_dir"], "pretrained")


# ---- the pages (AppTest) ---------------------------------------------------------------------------------------
APP = str(Path(__file__).resolve().parent.parent / "app" / "Home.py")


def _page(db: Path, page: str, monkeypatch: pytest.MonkeyPatch, state: dict | None = None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LABELS_DB", str(db))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["annotator"] = "tester"
    for key, value in (state or {}).items():
        at.session_state[key] = value
    return at.switch_page(page).run()


def test_map_selection_opens_exactly_the_selected_units_in_browse(scored, monkeypatch: pytest.MonkeyPatch):
    from app import map_views
    from core import maps, review
    from core.store import LabelStore

    db, result = scored
    with LabelStore(db) as store:
        emb = embeddings.load_run(store, result["run_id"])
        units = learning.unit_table(store, result["run_id"])
        points = maps.point_table(emb.items, units, "gender", review.status_lookup(review.statuses(store)))
        xy = maps.project(emb.normalised())
        fig, traces = map_views.figure(points, xy, maps.sample(points))
        # a selection event as Streamlit reports it: curve (trace) and point index within it
        last = len(traces) - 1
        picked = [(0, 0), (0, len(traces[0]) - 1), (last, 0), (0, len(traces[0]) - 1), (last + 1, 0), (0, 10**6)]
        event = {"points": [{"curve_number": c, "point_index": i, "x": 0.0, "y": 0.0} for c, i in picked]}
        ids = maps.selected_items(event, traces)
        # in order, no repeat; a legend-only trace or an index out of range selects nothing
        assert ids == [int(traces[0][0]), int(traces[0][-1]), int(traces[last][0])] and len(set(ids)) == 3
        assert sum(len(t) for t in traces) == len(points)  # every image drawn once
        for c, i in picked[:3]:  # the trace's item id is the point's customdata: the figure drew what it says
            assert int(fig.data[c].customdata[i]) == int(traces[c][i])
        rows, total = store.select_items(item_ids=ids, limit=None)
        assert total == 3 and sorted(rows["item_id"]) == sorted(ids)
    at = _page(db, "app_pages/browse.py", monkeypatch, {map_views.BROWSE_ITEMS: ids})
    assert not at.exception, [e.value for e in at.exception]
    assert any("Map selection: 3 image(s)" in i.value for i in at.info)
    assert any(c.value.startswith("3 image(s)") for c in at.caption)
    at = _page(db, "app_pages/map.py", monkeypatch)
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert any("Nothing selected" in c.value for c in at.caption)


def test_more_like_this_page_decides_the_ticked_units_together(scored, monkeypatch: pytest.MonkeyPatch):
    from core.store import LabelStore

    db, result = scored
    with LabelStore(db) as store:
        units = learning.unit_table(store, result["run_id"])
    anchor = units[units["attribute"] == "mask"].iloc[0]
    at = _page(db, "app_pages/similar.py", monkeypatch, {"similar_anchors": [anchor["key"]]})
    assert not at.exception, [e.value for e in at.exception]
    at.slider(key="similar_k").set_value(6).run()
    boxes = [b for b in at.checkbox if b.key.startswith("similar_pick_")]
    assert len(boxes) == 6
    boxes[0].uncheck().run()  # decide the other five
    value = at.selectbox(key="similar_value").value
    assert value != anchor["given"]
    at.button(key="similar_set").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with LabelStore(db) as store:
        log = store.history()
        bulk = log[log["reason"] == "more like this (bulk)"]
        assert len(bulk) == 5 and (bulk["annotator"] == "tester").all()
        assert {str(store.label_of(t, "mask")) for t in bulk["target"]} == {value}
        assert boxes[0].key.removeprefix("similar_pick_").split("|")[0] not in set(bulk["target"])
    assert any(s.value.startswith("5 unit\\(s\\) set to") for s in at.success), [s.value for s in at.success]


def test_map_text_from_data_is_escaped():
    from app import map_views
    from core import maps

    points = pd.DataFrame({"item_id": [1, 2], "path": ["<a href='x'>p</a>.jpg", "b.jpg"], "person": "p",
                           "given": ["<img src=x>", "f"], "mark": ["-", "flagged"]})
    fig, _ = map_views.figure(points, np.zeros((2, 2), np.float32), maps.sample(points))
    texts = [str(t.name) for t in fig.data] + [str(h) for t in fig.data if t.hovertext is not None for h in t.hovertext]
    assert not any("<a" in t or "<img" in t for t in texts) and any("&lt;img src=x&gt;" in t for t in texts)


def test_pages_without_embeddings_say_so_in_a_line(scored, monkeypatch: pytest.MonkeyPatch):
    _, result = scored
    db = result  # noqa: F841 - the fixture's run folder is restored below
    db_path, _ = scored
    path = Path(result["run_dir"]) / "embeddings.npy"
    hidden = path.with_name("hidden.npy")
    path.rename(hidden)
    try:
        for page in ("app_pages/map.py", "app_pages/similar.py"):
            at = _page(db_path, page, monkeypatch)
            assert not at.exception, [e.value for e in at.exception]
            assert any("No embeddings for this view" in i.value and "rescore" in i.value for i in at.info), page
        at = _page(db_path, "app_pages/review.py", monkeypatch)
        at.toggle(key="review_learning").set_value(True).run()
        assert not at.exception and any("No embeddings" in i.value for i in at.info)
    finally:
        hidden.rename(path)


def test_the_review_page_learning_queue_says_why_and_focuses_the_learned_head(scored, monkeypatch):
    from core import review
    from core.store import LabelStore

    db, result = scored
    with LabelStore(db) as store:
        units = learning.unit_table(store, result["run_id"])
        done = learning.decisions(store, result["run_id"])
        todo = units[~units["unit"].isin(set(done["unit"]))].head(12)
        for i, row in enumerate(todo.itertuples(index=False)):  # 12 decisions: 6 corrections, 6 "label is correct"
            shown = store.label_of(row.target, row.stored)
            if i % 2:
                review.verdict(store, row.target, row.stored, shown=shown, annotator="t", kind="correct")
            else:
                other = next(c for c in store.schema.target_classes(row.attribute) if c != row.given)
                value = review.suggestion_value(store.schema, row.attribute, other, shown)
                if value is None:  # an age group: the reviewer gives an age inside it (none is invented)
                    low, high = review.group_range(store.schema, row.attribute, other)
                    value = low if low is not None else high
                assert review.set_label(store, row.target, row.stored, value, shown=shown, annotator="t").ok
        emb = embeddings.load_run(store, result["run_id"])
        expected = learning.learned_queue(units, embeddings.unit_vectors(emb, units),
                                          learning.decisions(store, result["run_id"]))
    assert expected.active
    at = _page(db, "app_pages/review.py", monkeypatch)
    at.toggle(key="review_learning").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Order learned from your first" in m.value for m in at.markdown)
    why = [df.value for df in at.dataframe if "why" in df.value.columns]
    assert why and why[0]["why"].str.startswith(("ranked up", "ranked down")).all()
    head = expected.order.iloc[0]
    assert at.session_state["review_focus"] == head["key"]  # the page shows the learned order's first unit
    at.toggle(key="review_learning").set_value(False).run()  # off: the plain ranking, nothing left behind
    assert not at.exception and not any("Order learned" in m.value for m in at.markdown)


def test_unit_vectors_are_the_mean_of_each_units_rows():
    """The vectorised ``unit_vectors`` equals the definition through ``unit_rows``: a person unit = its photos'
    (unit-length) mean, an image unit = its own row, a unit with no row = zeros; unit length after."""
    rng = np.random.default_rng(5)
    n = 700
    items = pd.DataFrame({"item_id": np.arange(n) + 10, "path": [f"x{i}.jpg" for i in range(n)],
                          "person": [None if i % 50 == 0 else f"p{i // 7}" for i in range(n)], "fold": 0})
    emb = embeddings.Embeddings(Path("."), "oof", items, rng.normal(size=(n, 16)).astype(np.float16), {})
    units = pd.DataFrame({"scope": ["person"] * 40 + ["image"] * 40 + ["person", "image"],
                          "target": [f"p{i}" for i in range(40)] + [f"x{i}.jpg" for i in range(40)] + ["nobody", "gone"],
                          "item_id": list(range(10, 50)) + list(range(10, 50)) + [60, 10_001]})
    x = emb.normalised()
    expected = np.stack([x[r].mean(0) if len(r) else np.zeros(16, np.float32) for r in embeddings.unit_rows(emb, units)])
    expected /= np.where(np.linalg.norm(expected, axis=1, keepdims=True) > 0,
                         np.linalg.norm(expected, axis=1, keepdims=True), 1.0)
    got = embeddings.unit_vectors(emb, units)
    assert got.dtype == np.float32 and got.shape == (82, 16)
    assert np.allclose(got, expected, atol=1e-6)
    assert not got[-1].any() and got[-2].any()  # 'nobody' falls back to its own item row; 'gone' has none
    assert np.allclose(np.linalg.norm(got[:-1], axis=1), 1.0, atol=1e-5)


def test_map_pca_fitted_on_a_sample_projects_every_row_on_the_same_axes():
    """Beyond ``fit_max`` rows the PCA axes come from a sample: with a clear 2-D structure they are the axes of
    all rows (every row projected), and below it nothing is sampled."""
    from core import maps

    rng = np.random.default_rng(4)
    n, d = 6000, 48
    signal = rng.normal(size=(n, 2)) * [6.0, 3.0]
    basis = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    x = (signal @ basis + rng.normal(size=(n, d)) * 0.3).astype(np.float32)
    full = maps.pca(x, fit_max=10 ** 9)
    sampled = maps.pca(x, fit_max=1000)
    assert sampled.shape == (n, 2) and sampled.dtype == np.float32
    for axis in range(2):
        assert abs(np.corrcoef(full[:, axis], sampled[:, axis])[0, 1]) > 0.999
    assert sampled.var(0).sum() >= 0.99 * full.var(0).sum()
    assert np.array_equal(maps.pca(x[:800], fit_max=1000), maps.pca(x[:800], fit_max=10 ** 9))
