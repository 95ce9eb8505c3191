"""Dashboard pages through Streamlit's AppTest: every page on an empty store, a demo store and after
corrections; relabeling through the review page (store, history, undo, conflicts); chart clicks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app import charts, ui, views
from core import review, stats
from core.demo import generate
from core.ingest import ingest
from core.store import LabelStore
from core.synthetic import add_score_run
from tests.fixtures import build_folder_dataset
from train import config as train_config

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
PAGES = ["app_pages/distributions.py", "app_pages/review.py", "app_pages/browse.py", "app_pages/history.py", "app_pages/health.py",
         "app_pages/similar.py", "app_pages/map.py"]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real demo (12 people, 48×64 images), generated once for the whole session."""
    root = tmp_path_factory.mktemp("demo") / "demo"
    generate(root, persons=12, image_size=(48, 64))
    return root


@pytest.fixture
def store(db: Path, demo_root: Path) -> LabelStore:
    store = LabelStore(db)
    ingest(demo_root, store)
    yield store
    store.close()


def open_page(page: str, annotator: str = "tester", query: dict[str, str] | None = None) -> AppTest:
    """Run the app (Home.py with navigation) on ``page``, as a signed-in annotator."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["annotator"] = annotator
    at.query_params.update(query or {})
    return at.switch_page(page).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def shortcuts(at: AppTest) -> str:
    """The Review page's shortcut caption."""
    return next(c.value for c in at.caption if "shortcuts" in c.value)


def first_unit(store: LabelStore, run_id: int, **filters: object) -> dict:
    """The unit the review page focuses first with its default filters (flagged, unreviewed)."""
    rows = review.queue_units(store, run_id, review.statuses(store, store.run(run_id)["created_at"]),
                              flagged_only=True, status="unreviewed", **filters)
    return rows.iloc[0].to_dict()


def test_every_page_on_an_empty_store(db: Path) -> None:
    for page in PAGES:
        at = open_page(page)
        assert_clean(at)
        assert any("store is empty" in i.value for i in at.info), page


def test_first_start_generates_and_ingests_the_demo(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELS_AUTO_DEMO", "1")
    monkeypatch.setenv("LABELS_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("LABELS_DEMO_PERSONS", "3")
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert_clean(at)
    assert any("First start" in i.value for i in at.info)
    with LabelStore(db) as store:
        assert not store.is_empty
        assert store.count_by(["gender"])["images"].sum() == 21  # 3 people × 7 images
    assert (tmp_path / "demo" / "train" / "train.csv").is_file()


def test_every_page_on_the_demo_store(store: LabelStore) -> None:
    for page in PAGES:
        at = open_page(page)
        assert_clean(at)
    distributions = open_page("app_pages/distributions.py")
    assert len(distributions.get("plotly_chart")) >= 7  # classes, 3 targets, age, heatmap, people, corrections
    review_page = open_page("app_pages/review.py")
    assert any("python -m train score" in i.value for i in review_page.info)  # no score run yet
    assert review_page.image  # the browser below still shows images


def test_every_page_after_corrections(store: LabelStore) -> None:
    labels = store.current_labels()
    person = labels["person"].iloc[0]
    first = store.correct(person, "gender", "male" if labels["gender"].iloc[0] == "female" else "female",
                          expected=labels["gender"].iloc[0], annotator="ana", reason="beard")
    store.correct(labels["path"].iloc[3], "mask", "incorrect" if labels["mask"].iloc[3] != "incorrect" else "wear",
                  expected=labels["mask"].iloc[3], annotator="ben")
    store.revert(first, annotator="ana")
    store.mark_reviewed(labels["path"].iloc[5], "mask", annotator="ben")
    store.save_data_issues(labels[["item_id"]].head(3).assign(kind="dark", detail="mean 12", score=0.9), ["dark"])
    add_score_run(store)
    for page in PAGES:
        assert_clean(open_page(page))
    health = open_page("app_pages/health.py")
    assert health.image  # thumbnails of the flagged images


def test_every_page_on_a_generic_dataset(db: Path, tmp_path: Path) -> None:
    build_folder_dataset(tmp_path / "folders")  # one attribute "label", every image its own person
    with LabelStore(db) as store:
        ingest(tmp_path / "folders", store)
        run_id = add_score_run(store, flag_every=2)
        unit = first_unit(store, run_id)
    for page in PAGES:
        assert_clean(open_page(page))
    at = open_page("app_pages/review.py")
    at.button(key="review_act_accept").click().run()
    assert_clean(at)
    with LabelStore(db) as store:
        assert store.label_of(unit["target"], "label") == unit["suggested"]


def test_review_correction_is_stored_logged_and_undone(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = first_unit(store, run_id)
    assert unit["attribute"] == "age_group"  # an age group: Accept asks for the age, never invents one
    before = store.label_of(unit["target"], unit["stored"])
    low, high = review.group_range(store.schema, "age_group", unit["suggested"])

    at = open_page("app_pages/review.py")
    assert_clean(at)
    assert at.button(key="review_act_accept").proto.shortcut.upper() == "A"
    at.button(key="review_act_accept").click().run()  # no age typed: nothing written, the page says why
    assert_clean(at)
    assert store.n_corrections() == 0 and str(store.label_of(unit["target"], "age")) == str(before)
    assert any("never invents" in w.value for w in at.warning), [w.value for w in at.warning]
    outside = (low - 1) if low is not None else high + 1
    at.number_input(key=f"review_act_value_{unit['target']}").set_value(outside).run()
    at.button(key="review_act_accept").click().run()  # an age outside the suggested group is not "accept"
    assert store.n_corrections() == 0
    expected = (low if low is not None else 0) + 1  # an age the reviewer gives, inside the group
    at = open_page("app_pages/review.py")
    at.number_input(key=f"review_act_value_{unit['target']}").set_value(expected).run()
    at.button(key="review_act_accept").click().run()
    assert_clean(at)
    assert str(store.label_of(unit["target"], unit["stored"])) == str(expected)
    entry = store.history(limit=1).iloc[0]
    assert (entry["target"], entry["attribute"], entry["annotator"], entry["source"]) == (
        unit["target"], unit["stored"], "tester", "review")
    assert entry["old_value"] == str(before)

    at.button(key="review_act_undo").click().run()
    assert_clean(at)
    assert str(store.label_of(unit["target"], unit["stored"])) == str(before)
    assert store.history(limit=1).iloc[0]["reverts"] == entry["id"]


def test_queue_units_are_images_or_people_by_scope(store: LabelStore) -> None:
    run_id = add_score_run(store)
    units = review.queue_units(store, run_id)
    people = store.persons()
    for attribute, scope in (("mask", "image"), ("gender", "person"), ("age_group", "person")):
        mine = units[units["attribute"] == attribute]
        assert set(mine["scope"]) == {scope}, attribute
        expected = len(store.current_labels()) if scope == "image" else len(people)
        assert len(mine) == expected and mine["target"].is_unique
        if scope == "person":
            assert set(mine["target"]) == set(people["person"])
            assert (mine["unit"] == mine["target"] + "|" + mine["stored"]).all()


def filtered(units: pd.DataFrame, status_table: pd.DataFrame, *, attribute: str | None = None,
             given: str | None = None, suggested: str | None = None, min_score: float | None = None,
             flagged_only: bool = False, status: str | None = None, issue_items: set[int] | None = None) -> pd.DataFrame:
    """The test's own oracle of a filtered queue, in pandas on the whole queue (the product has one queue:
    the store's, paged in SQL)."""
    keep = np.ones(len(units), dtype=bool)
    for column, value in (("attribute", attribute), ("given", given), ("suggested", suggested)):
        if value:
            keep &= (units[column] == value).to_numpy(dtype=bool, na_value=False)
    if min_score is not None:
        keep &= (units["score"] >= min_score).to_numpy()
    if flagged_only:
        keep &= (units["is_issue"] == 1).to_numpy()
    if issue_items is not None:
        keep &= units["item_id"].isin(issue_items).to_numpy()
    rows = units[keep].copy()
    rows["status"] = rows["unit"].map(review.status_lookup(status_table)).fillna("unreviewed")
    return (rows[rows["status"] == status] if status else rows).reset_index(drop=True)


def test_queue_pages_read_from_the_store_equal_the_filtered_queue(store: LabelStore) -> None:
    run_id = add_score_run(store, flag_every=2)
    units = review.queue_units(store, run_id)
    flagged = units[units["is_issue"] == 1]
    people = flagged[flagged["scope"] == "person"]
    images = flagged[flagged["scope"] == "image"]
    person = people["target"].iloc[0]
    gender = store.label_of(person, "gender")
    first = store.correct(person, "gender", "male" if gender == "female" else "female", expected=gender,
                          annotator="ana")
    store.revert(first, annotator="ana")  # reverted: unreviewed again
    for row in images.iloc[1:4].itertuples():
        store.mark_reviewed(row.target, row.stored, annotator="ana")
    store.mark_reviewed(images["target"].iloc[4], "mask", annotator="ana", verdict="skip")
    store.mark_reviewed(images["target"].iloc[5], "mask", annotator="ana", verdict="skip")
    store.mark_reviewed(images["target"].iloc[5], "mask", annotator="ana", verdict="reopen")
    shown = store.label_of(images["target"].iloc[6], "mask")
    store.correct(images["target"].iloc[6], "mask", "wear" if shown != "wear" else "not_wear", expected=shown,
                  annotator="ana")
    store.correct(people["target"].iloc[1], "age", 61, expected=None, annotator="ben")
    store.save_data_issues(units[["item_id"]].iloc[::9].assign(kind="dark", detail="", score=0.5), ["dark"])
    status_table = review.statuses(store, store.run(run_id)["created_at"])
    assert set(status_table["status"]) == {"reviewed", "skipped", "corrected"}
    issues = store.data_issues()
    flagged_units = filtered(units, status_table, flagged_only=True)
    done = flagged_units["status"].isin(("reviewed", "corrected")).sum()
    assert review.queue_progress(store, run_id, status_table) == (done, len(flagged_units)) and done > 0
    combos = [{"status": status, "flagged_only": flagged_only} for status in (None, *review.STATUSES)
              for flagged_only in (False, True)]
    combos += [{"status": "unreviewed", "flagged_only": True, "attribute": attribute, "min_score": 0.7}
               for attribute in ("mask", "gender", "age_group")]
    combos += [{"given": "female"}, {"suggested": "wear", "attribute": "mask"}, {"issue_kind": "dark"},
               {"issue_kind": "any", "status": "unreviewed"}, {"min_score": 0.0, "status": "corrected"}]
    for combo in combos:
        kind = combo.get("issue_kind")
        issue_items = None if kind is None else set(issues["item_id"] if kind == "any" else
                                                    issues.loc[issues["kind"] == kind, "item_id"])
        expected = filtered(units, status_table, issue_items=issue_items,
                            **{k: v for k, v in combo.items() if k != "issue_kind"})
        whole = review.queue_units(store, run_id, status_table, **combo)
        pd.testing.assert_frame_equal(whole.reset_index(drop=True), expected, check_dtype=False, obj=str(combo))
        for offset, limit in ((0, None), (0, 5), (7, 24)):
            rows, total = review.queue_page(store, run_id, status_table, offset=offset, limit=limit, **combo)
            assert total == len(expected), combo
            want = expected.iloc[offset:None if limit is None else offset + limit].reset_index(drop=True)
            pd.testing.assert_frame_equal(rows.reset_index(drop=True), want, check_dtype=False, obj=str(combo))
        for position in sorted({0, len(expected) // 2, len(expected) - 1}):
            if len(expected):
                assert review.queue_position(store, run_id, status_table, expected["key"].iloc[position],
                                             **combo) == position, combo
        missing = units[~units["key"].isin(expected["key"])]
        if len(missing):
            assert review.queue_position(store, run_id, status_table, missing["key"].iloc[0], **combo) is None


def test_review_page_buttons_page_through_the_queue(store: LabelStore) -> None:
    add_score_run(store, flag_every=2)
    at = open_page("app_pages/review.py")
    assert_clean(at)
    assert "showing 1–24" in at.caption[0].value
    at.button(key="review_page_next").click().run()
    assert "showing 25–48" in at.caption[0].value
    at.button(key="review_act_next").click().run()
    assert at.session_state["review_pos"] == 25
    at.button(key="review_page_back").click().run()
    assert "showing 1–24" in at.caption[0].value and at.session_state["review_pos"] == 0


def test_person_scope_accept_changes_all_the_persons_images(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = first_unit(store, run_id, attribute="gender")
    at = open_page("app_pages/review.py")
    at.selectbox(key="review_attribute").set_value("gender").run()
    at.button(key="review_act_accept").click().run()
    assert_clean(at)
    images, total = store.select_items(person=unit["target"], limit=None)
    assert total == 7 and set(images["gender"]) == {unit["suggested"]}


def test_accepting_an_age_group_writes_only_the_age_the_reviewer_gives(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = first_unit(store, run_id, attribute="age_group")
    before = store.label_of(unit["target"], "age")
    at = open_page("app_pages/review.py")
    at.selectbox(key="review_attribute").set_value("age_group").run()
    field = at.number_input(key=f"review_act_value_{unit['target']}")
    assert field.value is None  # no model estimate in this run: nothing prefilled, nothing invented
    at.button(key="review_act_accept").click().run()
    assert_clean(at)
    assert store.n_corrections() == 0 and store.label_of(unit["target"], "age") == before
    low, high = review.group_range(store.schema, "age_group", unit["suggested"])
    given = low + 3 if low is not None else high - 3
    at.number_input(key=f"review_act_value_{unit['target']}").set_value(given).run()
    at.button(key="review_act_accept").click().run()
    images, _ = store.select_items(person=unit["target"], limit=None)
    assert set(images["age"]) == {given}  # exactly the age typed, on every image of the person
    assert store.history(limit=1).iloc[0]["target_kind"] == "person"


def test_conflicting_correction_is_shown_not_written(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = first_unit(store, run_id, attribute="mask")
    at = open_page("app_pages/review.py")
    at.selectbox(key="review_attribute").set_value("mask").run()
    shown = store.label_of(unit["target"], "mask")
    meanwhile = next(v for v in store.schema.attribute("mask").classes if v not in (shown, unit["suggested"]))
    store.correct(unit["target"], "mask", meanwhile, expected=shown, annotator="someone else")

    at.button(key="review_act_accept").click().run()
    assert_clean(at)
    assert any("Conflict" in e.value for e in at.error)
    assert store.label_of(unit["target"], "mask") == meanwhile
    assert store.history(limit=1).iloc[0]["annotator"] == "someone else"


def test_label_is_correct_and_skip_leave_the_queue_and_count(store: LabelStore) -> None:
    run_id = add_score_run(store)
    first = first_unit(store, run_id)
    at = open_page("app_pages/review.py")
    progress_before = at.get("progress")[0].proto.text
    at.button(key="review_act_keep").click().run()
    assert_clean(at)
    reviews = store.reviews()
    assert (reviews.iloc[0]["target"], reviews.iloc[0]["verdict"]) == (first["target"], "correct")
    assert at.get("progress")[0].proto.text != progress_before
    assert first_unit(store, run_id)["key"] != first["key"]  # left the unreviewed queue
    at.button(key="review_act_skip").click().run()
    assert store.reviews().iloc[0]["verdict"] == "skip"
    at.button(key="review_act_undo").click().run()  # undo withdraws the skip
    assert store.reviews().iloc[0]["verdict"] == "reopen"


def test_relabel_in_browse_without_a_score_run(store: LabelStore) -> None:
    at = open_page("app_pages/browse.py")
    at.selectbox(key="browse_split").set_value("train").run()
    item, _ = store.select_items(split="train", limit=1)
    path, mask = item["path"].iloc[0], item["mask"].iloc[0]
    new = next(v for v in store.schema.attribute("mask").classes if v != mask)
    key = f"browse_act_mask_{int(item['item_id'].iloc[0])}"
    at.selectbox(key=key).set_value(new).run()
    at.button(key="browse_act_set_mask").click().run()
    assert_clean(at)
    assert store.label_of(path, "mask") == new
    assert store.history(limit=1).iloc[0]["source"] == "browse"


def test_actions_need_an_annotator(store: LabelStore) -> None:
    at = open_page("app_pages/browse.py", annotator="")
    at.selectbox(key="browse_split").set_value("train").run()
    assert at.button(key="browse_act_set_mask").disabled
    home = AppTest.from_file(APP, default_timeout=60).run()  # the sidebar of the app's first page
    assert any("Type your name" in c.value for c in home.sidebar.caption)
    home.sidebar.text_input(key="annotator").input("ana").run()
    assert home.query_params["annotator"] == "ana"  # kept in the URL: a refresh keeps the name


def test_every_chart_bar_opens_exactly_its_images(store: LabelStore) -> None:
    classes = stats.class_counts(store)
    figure, filters = charts.original_vs_current(classes, "name", "classes")
    for trace, column in ((0, "current"), (1, "original")):
        for index, count in enumerate(classes[column]):
            event = {"selection": {"points": [{"curve_number": trace, "point_index": index}]}}
            chosen = charts.selected_filter(event, filters)
            assert store.select_items(**chosen, limit=0)[1] == count
    cells = stats.heatmap(store, "gender", "age_group")
    for chosen, images in zip(cells["filter"], cells["images"]):
        assert store.select_items(**chosen, limit=0)[1] == images
    ages = stats.integer_histogram(store, "age")
    for chosen, images in zip(ages["filter"], ages["images"]):
        assert store.select_items(**json.loads(json.dumps(chosen)), limit=0)[1] == images


def test_browse_shows_the_chart_selection(store: LabelStore) -> None:
    chosen = stats.class_counts(store)["filter"].iloc[0]
    at = open_page("app_pages/browse.py", query={"filter": json.dumps(chosen)})
    assert_clean(at)
    total = store.select_items(**chosen, limit=0)[1]
    assert any(c.value.startswith(f"{total:,} image(s)") for c in at.caption)
    assert any("Chart selection" in i.value for i in at.info)


def test_eval_images_show_the_newest_prediction(store: LabelStore, tmp_path: Path) -> None:
    schema = store.schema
    eval_items, n_eval = store.select_items(split="eval", limit=None)
    out = tmp_path / "submission.csv"
    probs = {"ImageID": [p.rsplit("/", 1)[-1] for p in eval_items["path"]]}
    for target in schema.class_attributes:
        classes = schema.target_classes(target)
        for k, name in enumerate(classes):
            probs[f"{target}={name}"] = [0.9 if k == len(classes) - 1 else 0.1 / (len(classes) - 1)] * n_eval
    for k in range(schema.n_classes):
        probs[f"p{k}"] = [0.9 if k == schema.n_classes - 1 else 0.1 / (schema.n_classes - 1)] * n_eval
    pd.DataFrame(probs).to_csv(out.with_suffix(".probs.csv"), index=False)
    store.create_run("predict", {"out": str(out)}, status="done")

    at = open_page("app_pages/browse.py")
    at.selectbox(key="browse_split").set_value("eval").run()
    assert_clean(at)
    shown = at.dataframe[-1].value
    assert list(shown["predicted"]) == ["not_wear", "female", ">=60", f"17 ({schema.class_names()[17]})"]


def test_history_revert_and_export(store: LabelStore) -> None:
    labels = store.current_labels()
    path, mask = labels["path"].iloc[0], labels["mask"].iloc[0]
    new = next(v for v in store.schema.attribute("mask").classes if v != mask)
    correction = store.correct(path, "mask", new, expected=mask, annotator="ana", reason="**bold** <b>x</b>")
    at = open_page("app_pages/history.py")
    assert at.number_input(key="history_revert_id").value == correction
    at.button(key="history_revert").click().run()
    assert_clean(at)
    assert store.label_of(path, "mask") == mask
    at.button(key="history_export").click().run()
    assert_clean(at)
    assert at.get("download_button")
    assert any(t.value == f"snapshot {store.snapshot().hash}" for t in at.text)


def test_import_corrections_dry_run_then_apply(store: LabelStore) -> None:
    labels = store.current_labels()
    person, gender = labels["person"].iloc[0], labels["gender"].iloc[0]
    new = "male" if gender == "female" else "female"
    at = open_page("app_pages/history.py")
    at.file_uploader(key="history_upload").upload("fixes.csv", f"target,attribute,value,reason\n{person},gender,{new},forum\n"
                                                  .encode(), "text/csv").run()
    assert_clean(at)
    assert store.label_of(person, "gender") == gender  # the dry run changed nothing
    assert at.dataframe[-1].value["new_value"].tolist() == [new]
    at.button(key="history_apply").click().run()
    assert_clean(at)
    assert store.label_of(person, "gender") == new
    assert store.history(limit=1).iloc[0]["source"] == "import"

    bad = open_page("app_pages/history.py")
    bad.file_uploader(key="history_upload").upload("bad.csv", b"target,attribute,value\nnobody,gender,male\n",
                                                   "text/csv").run()
    assert_clean(bad)
    assert any("line 2" in e.value for e in bad.error)


def test_user_text_is_escaped() -> None:
    # a word joiner (U+2060) after the scheme keeps GFM from autolinking the bare URL
    assert ui.plain("**x** [a](http://e) <b>") == r"\*\*x\*\* \[a\]\(http\u2060\:\/\/e\) \<b\>".replace(
        r"\/", "/").replace(r"\u2060", "\u2060")
    sources = "\n".join(p.read_text() for p in Path(APP).parent.rglob("*.py") if p.name not in ("session.py", "ui.py"))
    assert "unsafe_allow_html" not in sources and ".html(" not in sources
    # session.py's two: the Review page's own CSS and its scroll-to-top script; ui.py's one: the photo row's
    # spacing (our text, no data)
    assert (Path(APP).parent / "session.py").read_text().count(".html(") == 2
    assert (Path(APP).parent / "ui.py").read_text().count(".html(") == 1


def test_score_details_as_core_scoring_stores_them() -> None:
    classes = ("wear", "incorrect", "not_wear")
    assert review.probabilities('{"probabilities": [0.7, 0.2, 0.1]}', classes) == {
        "wear": 0.7, "incorrect": 0.2, "not_wear": 0.1}
    assert review.probabilities({"probabilities": {"male": 0.4, "female": 0.6}}) == {"male": 0.4, "female": 0.6}
    assert review.probabilities("not json") == {}
    assert review.swap_pair('{"log_ratio": 3.1, "pair": [1, 2], "n_first": 1}', classes=classes) == (
        "incorrect", "not_wear")
    assert review.swap_pair('{"log_ratio": 3.1, "rank": 4}', "not_wear", "incorrect") == ("not_wear", "incorrect")
    assert review.swap_pair('{"probabilities": [0.5, 0.5]}', "wear", "incorrect", classes) is None
    assert review.evidence('{"rank": 3, "probabilities": {"a": 1}, "n_against": 6, "n_images": 7}') == {
        "n_against": 6, "n_images": 7}


# ---- generic datasets: what the pages derive from the schema and the data ------------------------------
@pytest.fixture
def digits(db: Path, tmp_path: Path) -> Path:
    """A folder-per-class dataset of ten classes (``0`` .. ``9``), 32×32 images, every image its own person,
    ingested with a score run that flags every unit."""
    from tests.fixtures import write_image

    for digit in range(10):
        for n in range(2):
            write_image(tmp_path / "digits" / str(digit) / f"{n}.png", size=(32, 32))
    with LabelStore(db) as store:
        ingest(tmp_path / "digits", store)
        add_score_run(store, flag_every=1)
    return db


def test_review_shortcuts_and_set_buttons_follow_the_classes(digits: Path) -> None:
    at = open_page("app_pages/review.py")
    assert_clean(at)
    assert "1-9, 0 set class" in shortcuts(at) and "1-3" not in shortcuts(at)
    tenth = at.button(key="review_act_set_10")
    assert tenth.label == "9" and tenth.proto.shortcut == "0"  # the tenth class, not a second "1"
    assert at.button(key="review_act_set_1").proto.shortcut == "1"


def test_no_person_panel_where_every_image_is_its_own_person(digits: Path) -> None:
    at = open_page("app_pages/browse.py")
    assert_clean(at)
    assert not [e for e in at.expander if "person" in e.label]
    assert not [s for s in at.subheader if s.value.startswith("Person")]
    review_page = open_page("app_pages/review.py")
    assert not [e for e in review_page.expander if "person" in e.label]
    with LabelStore(digits) as store:
        assert not stats.has_groups(store)


def test_the_competition_demo_has_person_panels(store: LabelStore) -> None:
    add_score_run(store)
    assert stats.has_groups(store)
    at = open_page("app_pages/browse.py")
    assert [e for e in at.expander if e.label == "All images of this person"]


def test_training_size_and_thumbnails_come_from_the_data(digits: Path) -> None:
    with LabelStore(digits) as store:
        assert train_config.typical_image_size(store) == (32, 32)
        assert train_config.suggested_img_size(store) == (32, 32)  # not the photo default 64×80
        item = store.items().iloc[0]
        big = ui.thumb(store, item["path"], item["hash"], 384)
    from PIL import Image

    with Image.open(big) as image:  # enlarged by a whole factor, nearest neighbour: sharp, not 32 px
        assert image.size == (384, 384) and image.format == "PNG"
    assert train_config.suggest_img_size(384, 512) == (64, 80)


def test_review_caption_on_the_competition_schema(store: LabelStore) -> None:
    add_score_run(store)
    at = open_page("app_pages/review.py")
    at.selectbox(key="review_attribute").set_value("mask").run()
    assert "1-3 set class" in shortcuts(at)  # mask has 3 classes
    at.selectbox(key="review_attribute").set_value("gender").run()
    assert "1-2 set class" in shortcuts(at)
    options = at.selectbox(key="review_attribute").options
    integer = [name for name in options if name.startswith("age") and name != "age_group"]
    if integer:  # an integer attribute: typed, no class keys
        at.selectbox(key="review_attribute").set_value(integer[0]).run()
        assert "set class" not in shortcuts(at)


# ---- one flagged count, plain reasons, undo lands on the undone unit, journal wording -------------------
def test_one_flagged_count_everywhere(store: LabelStore) -> None:
    from app import journal_views as jv

    run_id = add_score_run(store)
    flagged = review.flagged_counts(store, run_id)
    assert sum(flagged.values()) == store.review_summary(run_id)["n_flagged"]  # the Review page's number
    changes = jv.flag_changes(review.queue_units(store, run_id), None)  # the Rescore message's number
    assert changes["flagged"] == sum(flagged.values())
    store.update_run(run_id, metrics={"flagged_units": flagged})  # what train.score records for the Runs table
    assert jv.runs_overview(store.runs())["flagged"].iloc[0] == sum(flagged.values())


def test_reasons_are_words_first() -> None:
    opinions = [("male", 0.9), ("male", 0.96), ("female", 0.6), ("male", 0.93)]
    assert review.reason("gender", "female", "male", {}, opinions) == \
        "model says male on 3 of 4 photos, mean 0.93; labelled female"
    text = review.reason("mask", "wear", "incorrect", {"probabilities": {"wear": 0.1, "incorrect": 0.87}})
    assert text.startswith("model says incorrect (0.87); labelled wear (0.10).")
    assert review.photo_opinion({"image_probabilities": {"a": 0.2, "b": 0.8}}) == ("b", 0.8)
    assert review.photo_opinion({"probabilities": [0.7, 0.3]}, ("x", "y")) == ("x", 0.7)


def test_undo_returns_to_the_undone_unit(store: LabelStore) -> None:
    run_id = add_score_run(store)
    first = first_unit(store, run_id)
    at = open_page("app_pages/review.py")
    at.button(key="review_act_keep").click().run()  # "label is correct" (an age group's Accept asks for the age)
    assert at.session_state["review_focus"] != first["key"]  # moved on
    at.button(key="review_act_undo").click().run()
    assert_clean(at)
    assert at.session_state["review_focus"] == first["key"]
    assert any(ui.plain(first["target"]) in m.value for m in at.markdown)


def test_person_unit_shows_every_photo_with_the_models_opinion(store: LabelStore) -> None:
    run_id = add_score_run(store)
    unit = first_unit(store, run_id, attribute="gender")
    at = open_page("app_pages/review.py")
    at.selectbox(key="review_attribute").set_value("gender").run()
    assert_clean(at)
    _, n_photos = store.select_items(person=unit["target"], limit=0)
    assert sum("model " in c.value for c in at.caption) == n_photos
    assert any(m.value.startswith("**Why:** model says") for m in at.markdown)


def test_history_puts_the_change_first_and_marks_reverts(store: LabelStore) -> None:
    labels = store.current_labels()
    path, mask = labels["path"].iloc[0], labels["mask"].iloc[0]
    new = next(v for v in store.schema.attribute("mask").classes if v != mask)
    first = store.correct(path, "mask", new, expected=mask, annotator="ana")
    store.revert(first, annotator="ana")
    table = views.history_table(store.history()).data
    assert list(table.columns[:5]) == ["id", "attribute", "old_value", "new_value", "entry"]
    assert table["entry"].tolist() == [f"revert of #{first}", f"reverted by #{first + 1}"]


def test_prediction_runs_name_their_model_and_source() -> None:
    from app import journal_views as jv

    config = {"checkpoints": [{"checkpoint": "/r/runs/0003-20261130-120000/best.safetensors", "model": "test_resnet"}],
              "out": "/r/runs/0003-20261130-120000/submission.csv"}
    assert jv.predict_source(config) == "test_resnet of run #3"
    _, text = jv.progress_view({"kind": "predict", "id": 4, "status": "done", "config": config})
    assert text == "predict run #4 done with test_resnet of run #3 · wrote submission.csv"


def test_the_train_form_suggests_the_datasets_image_size(digits: Path) -> None:
    at = open_page("app_pages/train.py")
    assert_clean(at)
    assert (at.session_state["train_width"], at.session_state["train_height"]) == (32, 32)
