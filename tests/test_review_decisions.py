"""Review decisions belong to the label (carry over between score runs), conflicts between reviewers, per-tab
undo, ordinal groups (Accept never invents an age; near-edge labels marked and ranked below clear errors) and
the Review page's unit view from one store query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import ordinal, review
from core.schema import COMPETITION
from core.store import LabelStore
from core.synthetic import add_score_run
from core.unit_view import decision_text, unit_view
from tests.fixtures import demo_db


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_db(tmp_path_factory.mktemp("decisions"), persons=8)


@pytest.fixture
def store(source: Path, tmp_path: Path) -> LabelStore:
    path = tmp_path / "labels.db"
    path.write_bytes(source.read_bytes())
    with LabelStore(path) as opened:
        yield opened


def person_unit(store: LabelStore, run_id: int, attribute: str = "gender") -> dict:
    units = review.queue_units(store, run_id)
    return units[(units["attribute"] == attribute) & (units["is_issue"] == 1)].iloc[0].to_dict()


def status_of(store: LabelStore, target: str, attribute: str) -> str | None:
    table = review.statuses(store)
    hit = table[(table["target"] == target) & (table["attribute"] == attribute)]
    return None if hit.empty else hit["status"].iloc[0]


def test_label_is_correct_survives_a_rescore_while_the_label_is_unchanged(store: LabelStore) -> None:
    first = add_score_run(store)
    unit = person_unit(store, first)
    shown = store.label_of(unit["target"], "gender")
    assert review.verdict(store, unit["target"], "gender", shown=shown, annotator="ana", score_run=first).ok
    second = add_score_run(store, seed=1)  # a rescore
    table = review.statuses(store)
    row = table[(table["target"] == unit["target"]) & (table["attribute"] == "gender")].iloc[0]
    assert (row["status"], row["annotator"], row["score_run"]) == ("reviewed", "ana", first)
    reviewed, _ = review.queue_progress(store, second, table)
    assert reviewed == 1  # progress under the new run counts it
    rows, _ = review.queue_page(store, second, table, status="unreviewed", units=None, flagged_only=True)
    assert unit["key"] not in set(rows["key"])
    decision = store.decisions(units=[f"{unit['target']}|gender"]).iloc[0].to_dict()
    assert decision_text(decision).startswith(f"label is correct: ana, under score run #{first}")
    # The label changes: the verdict judged another value, so it no longer stands; back to that value: it does.
    other = "male" if shown == "female" else "female"
    fix = store.correct(unit["target"], "gender", other, expected=shown, annotator="ben")
    assert status_of(store, unit["target"], "gender") == "corrected"
    store.revert(fix, annotator="ben")
    assert status_of(store, unit["target"], "gender") == "reviewed"


def test_skip_carries_over_and_a_verdict_from_before_values_stands_until_a_correction(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = person_unit(store, run_id)
    shown = store.label_of(unit["target"], "gender")
    review.verdict(store, unit["target"], "gender", shown=shown, annotator="ana", kind="skip", score_run=run_id)
    add_score_run(store, seed=2)
    assert status_of(store, unit["target"], "gender") == "skipped"
    store.conn.execute("UPDATE reviews SET value = NULL")  # as a store before version 6 wrote it
    assert status_of(store, unit["target"], "gender") == "skipped"
    store.correct(unit["target"], "gender", "male" if shown == "female" else "female", expected=shown, annotator="b")
    assert status_of(store, unit["target"], "gender") == "corrected"


def test_a_decision_made_meanwhile_by_another_reviewer_is_a_conflict(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = person_unit(store, run_id)
    shown = store.label_of(unit["target"], "gender")
    seen = store.newest_review(unit["target"], "gender")  # what both pages drew
    assert review.verdict(store, unit["target"], "gender", shown=shown, annotator="ana", seen_review=seen).ok
    late = review.verdict(store, unit["target"], "gender", shown=shown, annotator="ben", seen_review=seen)
    assert late.conflict and "ana marked it correct meanwhile" in late.message
    other = "male" if shown == "female" else "female"
    fix = review.set_label(store, unit["target"], "gender", other, shown=shown, annotator="ben", seen_review=seen)
    assert fix.conflict and store.n_corrections() == 0
    again = review.set_label(store, unit["target"], "gender", other, shown=shown, annotator="ben",
                             seen_review=store.newest_review(unit["target"], "gender"))
    assert again.ok  # drawn again, the reviewer may overrule
    stale = review.verdict(store, unit["target"], "gender", shown=shown, annotator="cy")
    assert stale.conflict and "is now" in stale.message  # confirming a value that is gone


def test_undo_takes_back_only_this_tabs_actions(store: LabelStore) -> None:
    run_id = add_score_run(store)
    units = review.queue_units(store, run_id)
    first, second = units[units["scope"] == "image"].iloc[:2].to_dict("records")
    for unit, tab in ((first, "aaaaaaaa"), (second, "bbbbbbbb")):
        shown = store.label_of(unit["target"], "mask")
        assert review.verdict(store, unit["target"], "mask", shown=shown, annotator="ana", tab=tab).ok
    fix_shown = store.label_of(second["target"], "mask")
    fixed = review.set_label(store, second["target"], "mask", "wear" if fix_shown != "wear" else "incorrect",
                             shown=fix_shown, annotator="ana", tab="bbbbbbbb")
    assert review.undo_last(store, "ana", "bbbbbbbb").ok  # the correction of tab b, reverted by tab b
    revert = store.history(limit=1).iloc[0]
    assert (revert["reverts"], revert["tab"], revert["annotator"]) == (fixed.record_id, "bbbbbbbb", "ana")
    assert review.last_action(store, "ana", "aaaaaaaa")["target"] == first["target"]
    assert review.undo_last(store, "ana", "aaaaaaaa").ok
    assert status_of(store, first["target"], "mask") is None and status_of(store, second["target"], "mask")
    nothing = review.undo_last(store, "ana", "aaaaaaaa")
    assert not nothing.ok and "in this tab" in nothing.message
    assert review.undo_last(store, "ben", "bbbbbbbb").message.startswith("Nothing to undo")  # not ben's


def test_accepting_an_age_group_never_invents_an_age(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = person_unit(store, run_id, "age_group")
    age = store.label_of(unit["target"], "age")
    assert review.suggestion_value(store.schema, "age_group", unit["suggested"], age) is None
    low, high = review.group_range(store.schema, "age_group", unit["suggested"])
    for value in (None, "", float("nan"), (low - 1) if low is not None else high + 1):
        outcome = review.accept_binned(store, unit["target"], "age_group", unit["suggested"], value, shown=age,
                                       annotator="ana")
        assert not outcome.ok and store.n_corrections() == 0
    given = low if low is not None else high
    assert review.accept_binned(store, unit["target"], "age_group", unit["suggested"], given, shown=age,
                                annotator="ana").ok
    assert store.label_of(unit["target"], "age") == given


def test_near_edge_ages_are_marked_and_ranked_below_clear_errors() -> None:
    binned = COMPETITION.binned[0]  # edges 30, 60
    assert ordinal.edge_distance(59, binned, ">=60") == 1
    assert ordinal.edge_distance(60, binned, "30-59") == 1
    assert ordinal.edge_distance(18, binned, "30-59") == 12 and ordinal.edge_distance(45, binned, "30-59") == 0
    assert ordinal.edge_note(59, binned, ">=60") == "59: 1 year from the edge (>=60 starts at 60)"
    assert ordinal.edge_note(28, binned, "30-59") == "28: 2 years from the edge (30-59 starts at 30)"
    assert ordinal.edge_note(18, binned, "30-59") is None
    # Ranked by core.scoring: the near-edge unit first (highest score); the step moves it below clear errors.
    queue = pd.DataFrame({
        "kind": ["person", "person", "image", "person"], "attribute": ["age_group", "age_group", "mask", "gender"],
        "target": ["p1", "p2", 0, "p3"], "rows": [(0,), (1,), (2,), (3,)], "given": [1, 0, 0, 0],
        "suggested": [2, 1, 1, 1], "score": [0.99, 0.9, 0.8, 0.1], "is_issue": [True, True, True, False],
        "disagreement": np.nan, "detail": [{}, {}, {}, {}]})
    values = pd.DataFrame({"age": [59, 18, 40, 33]})
    ranked = ordinal.edge_step(COMPETITION, queue, values)
    assert ranked["target"].tolist() == ["p2", 0, "p1", "p3"]
    assert ranked["is_issue"].tolist() == [True, True, True, False]  # verdicts untouched
    assert ranked["detail"].tolist()[2] == {"edge_distance": 1}


def test_a_units_view_comes_from_one_store_query(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = person_unit(store, run_id)
    unit["status"] = "unreviewed"
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        view = unit_view(store, run_id, unit)
    finally:
        store.conn.set_trace_callback(None)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1, statements
    _, n_photos = store.select_items(person=unit["target"], limit=0)
    assert len(view.photos) == n_photos and view.photos["opinion"].str.startswith("model ").all()
    assert view.shown == store.label_of(unit["target"], "gender") and view.review_id == 0
    assert view.reason.startswith("model says") and view.title == f"Person {unit['target']}: gender"
    image = review.queue_units(store, run_id)
    image = image[image["scope"] == "image"].iloc[0].to_dict()
    shown = unit_view(store, run_id, image)
    assert shown.photos["highlight"].iloc[0] and shown.photos["path"].iloc[0] == image["path"]
    assert shown.title == f"Image {image['path']}: mask"


def test_person_search_by_id_prefix(store: LabelStore) -> None:
    person = store.persons()["person"].iloc[0]
    rows, total = store.select_items(person_prefix=person[:6], limit=None)
    assert total >= 1 and set(rows["person"]) == {person}
    assert store.select_items(person_prefix="zz", limit=0)[1] == 0
    path = rows["path"].iloc[2]
    assert store.select_items(person_prefix=person[:6], path_before=path, limit=0)[1] == 2


def test_undo_on_browse_returns_to_the_image_taken_back(store: LabelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LABELS_DB", str(store.path))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "Home.py"), default_timeout=60)
    at.session_state["annotator"] = "tester"
    at.switch_page("app_pages/browse.py").run()
    at.button(key="browse_open_3").click().run()
    assert at.session_state["browse_pos"] == 3
    item = store.select_items(split="train", limit=None)[0].iloc[3]
    choice = at.selectbox(key=f"browse_act_mask_{item['item_id']}")
    choice.set_value(next(v for v in choice.options if v != item["mask"])).run()
    at.button(key="browse_act_set_mask").click().run()
    assert store.n_corrections() == 1
    at.button(key="browse_act_next").click().run()
    at.button(key="browse_act_next").click().run()
    assert at.session_state["browse_pos"] == 5
    at.button(key="browse_act_undo").click().run()
    assert not at.exception
    assert at.session_state["browse_pos"] == 3  # back on the image taken back
    assert store.label_of(item["path"], "mask") == item["mask"]
    at.text_input(key="browse_person").set_value(str(item["person"])[:6]).run()  # an id prefix finds the person
    assert not at.warning and at.session_state["browse_pos"] == 0
