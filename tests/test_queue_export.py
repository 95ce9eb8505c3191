"""``python -m core queue``: the score run's ranked review queue as CSV, the Review page's units, order and flags."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.__main__ import main
from core.demo import generate
from core.ingest import ingest
from core.queue_export import QUEUE_CSV_COLUMNS, queue_table
from core.store import LabelStore

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo of 30 people (30 % of them mislabelled) scored by ``core.scoring`` through the score job's own
    ``score_rows``, on probabilities drawn around the true labels (no training: the verdicts are real)."""
    from train.oof import score_rows  # the score job's path from probabilities to stored verdicts

    base = tmp_path_factory.mktemp("queue")
    root, db = base / "demo", base / "labels.db"
    generate(root, persons=30, noise=0.3, seed=3, image_size=(48, 64))
    with LabelStore(db) as store:
        ingest(root, store)
        schema = store.schema
        labels = schema.add_derived(store.current_labels(derived=False))
        truth = pd.read_csv(root / "truth.csv")
        true = labels[["path"]].merge(truth, on="path", how="left")
        true = true.rename(columns={"true_mask": "mask", "true_gender": "gender", "true_age": "age"})
        assert true["mask"].notna().all()
        true_codes = schema.codes(true)
        rng = np.random.default_rng(0)
        probs = {}
        for target in schema.targets:
            k = len(schema.target_classes(target))
            logits = 2.0 * np.eye(k)[true_codes[target]] + rng.normal(0, 1.0, (len(labels), k))
            probs[target] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        run_id = store.create_run("score", {"folds": 2, "model": "drawn"}, status="running")
        store.save_scores(run_id, score_rows(schema, labels, probs))
        store.update_run(run_id, status="done")
    return db


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"given": str, "suggested": str}, keep_default_na=False)


def open_review(db: Path, monkeypatch: pytest.MonkeyPatch, **filters: object) -> AppTest:
    monkeypatch.setenv("LABELS_DB", str(db))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state["annotator"] = "tester"
    for key, value in filters.items():
        at.session_state[key] = value
    return at.switch_page("app_pages/review.py").run()


def gallery_captions(at: AppTest, columns: int = 6) -> list[str]:
    """The queue gallery's captions in queue order ("attribute: given → suggested · score 0.93"), markdown escapes
    removed. The gallery is a grid of ``columns`` columns filled row by row; AppTest lists column by column."""
    drawn = [c.value.replace("\\", "") for c in at.caption if "· score" in c.value]
    n = len(drawn)
    positions = [p for column in range(columns) for p in range(column, n, columns)]
    ordered = [""] * n
    for caption, position in zip(drawn, positions):
        ordered[position] = caption
    return ordered


def test_queue_csv_is_the_review_pages_queue(scored: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "queue.csv"
    assert main(["queue", "--db", str(scored), "--out", str(out)]) == 0
    table = read_csv(out)
    assert list(table.columns) == QUEUE_CSV_COLUMNS
    assert set(table["flagged"]) <= {True, False} and table["flagged"].any() and not table["flagged"].all()
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert table["flagged"].tolist() == sorted(table["flagged"], reverse=True)  # flagged first, as Review ranks
    with LabelStore(scored) as store:
        summary = store.review_summary(store.current_score_run())
    assert len(table) == summary["n_units"] and int(table["flagged"].sum()) == summary["n_flagged"]

    # The page with its default filters (flagged, unreviewed): the CSV's flagged rows, in the CSV's order.
    at = open_review(scored, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    flagged = table[table["flagged"]].reset_index(drop=True)
    assert f"{len(flagged):,} unit(s)" in at.caption[0].value.replace("\\", "")
    expected = [f"{r.attribute}: {r.given} → {r.suggested} · score {r.score:.2f}" for r in flagged.itertuples()]
    assert gallery_captions(at) == expected[:24]
    for position in (0, 1, 5, min(len(flagged), 24) - 1):  # each unit the page opens is the CSV's unit there
        at.button(key=f"review_gallery_open_{position}").click().run()
        assert at.session_state["review_focus"] == f"{flagged['unit'][position]}|{flagged['attribute'][position]}"

    # Every unit, flagged or not, and every status: the whole CSV, page by page.
    at = open_review(scored, monkeypatch, review_flagged=False, review_status="all")
    assert f"{len(table):,} unit(s)" in at.caption[0].value.replace("\\", "")
    everything = [f"{r.attribute}: {r.given} → {r.suggested} · score {r.score:.2f}" for r in table.itertuples()]
    drawn = gallery_captions(at)
    for _ in range(2):
        at.button(key="review_page_next").click().run()
        drawn += gallery_captions(at)
    assert drawn == everything[:len(drawn)] and len(drawn) == min(72, len(everything))


def test_queue_of_one_attribute_and_status_after_a_verdict(scored: Path, tmp_path: Path) -> None:
    out = tmp_path / "gender.csv"
    assert main(["queue", "--db", str(scored), "--attribute", "gender", "--out", str(out)]) == 0
    table = read_csv(out)
    with LabelStore(scored) as store:
        everything = queue_table(store)
    gender = everything[everything["attribute"] == "gender"].reset_index(drop=True)
    assert table["unit"].tolist() == gender["unit"].tolist() and set(table["attribute"]) == {"gender"}
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert (table["status"] == "unreviewed").all()
    assert re.fullmatch(r"\d{6}_(male|female)_\w+_\d+", table["unit"][0])  # a person key: what `core correct` takes


def test_csv_cells_are_formula_safe(tmp_path: Path) -> None:
    """A class or person name starting with '=' is written as text, as every CSV the product writes."""
    root = tmp_path / "data"
    for name in ("=cmd", "plain"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            from tests.fixtures import write_image
            write_image(root / name / f"{i}.png", seed=i + (10 if name == "plain" else 0))
    db = tmp_path / "labels.db"
    from core.synthetic import add_score_run
    with LabelStore(db) as store:
        ingest(root, store, fmt="folder")
        add_score_run(store, flag_every=1)
    out = tmp_path / "q.csv"
    assert main(["queue", "--db", str(db), "--out", str(out)]) == 0
    text = out.read_text()
    assert "'=cmd" in text and "\n=cmd" not in text and ",=cmd" not in text


@pytest.mark.parametrize(("extra", "needle"), [
    (["--run", "999"], "run #999"), (["--attribute", "colour"], "'colour'"), (["--run", "0"], "run #0")])
def test_bad_run_or_attribute_is_one_line_exit_2(scored: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 extra: list[str], needle: str) -> None:
    out = tmp_path / "q.csv"
    assert main(["queue", "--db", str(scored), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in err and not out.exists()


def test_no_store_or_no_score_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["queue", "--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "q.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "missing.db").exists()
    root = tmp_path / "data"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        from tests.fixtures import write_image
        write_image(root / name / "0.png", seed=len(name))
    with LabelStore(tmp_path / "labels.db") as store:
        ingest(root, store, fmt="folder")
    assert main(["queue", "--db", str(tmp_path / "labels.db"), "--out", str(tmp_path / "q.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished score run" in err
