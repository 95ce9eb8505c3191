import json
import multiprocessing
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.__main__ import main as core_main
from core.export import cleaned_table, export, read_table
from core.store import SCHEMA_VERSION, ConflictError, LabelStore, StoreError, read_snapshot
from core.synthetic import competition_frames, ingest_frames

PERSON = "000001_female_Asian_22"
IMAGE = f"train/images/{PERSON}/normal.jpg"


def test_ingest_registers_people_images_and_eval(make_store):
    store = make_store(n_persons=6)
    labels = store.current_labels()
    assert len(labels) == 42
    assert labels["person"].nunique() == 6
    assert (store.items()["split"] == "eval").sum() == 2
    assert labels["corrected"].sum() == 0


def test_original_labels_are_immutable(make_store):
    store = make_store()
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        store.conn.execute("UPDATE original SET gender = 'male'")
    store.correct(PERSON, "gender", "male", expected="female", annotator="ana")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("UPDATE corrections SET new_value = 'female'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM corrections")


def test_person_correction_fans_out_to_all_images_and_is_logged_once(make_store):
    store = make_store()
    correction = store.correct(PERSON, "gender", "male", expected="female", annotator="ana", reason="beard")
    labels = store.current_labels().set_index("path")
    person_rows = labels[labels["person"] == PERSON]
    assert len(person_rows) == 7 and set(person_rows["gender"]) == {"male"}
    assert person_rows["corrected"].all()
    assert set(store.current_labels(original=True).query("person == @PERSON")["gender"]) == {"female"}
    log = store.history()
    assert len(log) == 1 and log.iloc[0]["id"] == correction
    assert log.iloc[0][["target_kind", "old_value", "new_value", "annotator", "reason"]].tolist() == [
        "person", "female", "male", "ana", "beard"]
    assert store.verify_current() == []


def test_image_correction_changes_one_image_and_class(make_store):
    store = make_store()
    store.correct(IMAGE, "mask", "incorrect", expected="not_wear", annotator="ana")
    labels = store.current_labels().set_index("path")
    assert labels.loc[IMAGE, "mask"] == "incorrect"
    assert labels.loc[IMAGE, "class"] == 1 * 6 + 1 * 3 + 0
    assert labels["corrected"].sum() == 1


def test_person_attribute_can_be_targeted_through_one_of_its_images(make_store):
    store = make_store()
    store.correct(IMAGE, "age", 61, expected=22, annotator="ana")
    assert set(store.current_labels().query("person == @PERSON")["age_group"]) == {2}
    assert store.history().iloc[0]["target"] == PERSON


def test_undo_is_a_logged_revert_and_restores_the_value(make_store):
    store = make_store()
    first = store.correct(PERSON, "gender", "male", expected="female", annotator="ana")
    revert = store.revert(first, annotator="bob")
    assert store.label_of(PERSON, "gender") == "female"
    log = store.history().set_index("id")
    assert log.loc[revert, "reverts"] == first and log.loc[first, "reverted_by"] == revert
    with pytest.raises(StoreError, match="already reverted"):
        store.revert(first, annotator="bob")
    assert store.verify_current() == []


def test_revert_refused_when_value_changed_since(make_store):
    store = make_store()
    first = store.correct(IMAGE, "mask", "incorrect", expected="not_wear", annotator="ana")
    store.correct(IMAGE, "mask", "wear", expected="incorrect", annotator="bob")
    with pytest.raises(ConflictError):
        store.revert(first, annotator="ana")
    assert store.label_of(IMAGE, "mask") == "wear"


def test_conflicting_correction_is_refused_and_writes_nothing(make_store):
    store = make_store()
    store.correct(PERSON, "gender", "male", expected="female", annotator="ana")
    with pytest.raises(ConflictError, match="someone changed it"):
        store.correct(PERSON, "gender", "male", expected="female", annotator="bob")
    with pytest.raises(ConflictError):
        store.correct(IMAGE, "age", 40, expected=35, annotator="bob")
    assert store.n_corrections() == 1


@pytest.mark.parametrize(("target", "attribute", "value", "message"), [
    ("nobody", "gender", "male", "unknown person"),
    ("train/images/x.jpg", "mask", "wear", "unknown labelled image"),
    (PERSON, "gender", "robot", "not one of"),
    (PERSON, "colour", "red", "unknown attribute"),
    (PERSON, "gender", "female", "already"),
])
def test_bad_corrections_name_the_problem(make_store, target, attribute, value, message):
    store = make_store()
    with pytest.raises(Exception, match=message):
        store.correct(target, attribute, value, expected=None, annotator="ana")
    assert store.n_corrections() == 0


def test_annotator_is_required(make_store):
    store = make_store()
    with pytest.raises(StoreError, match="annotator"):
        store.correct(PERSON, "gender", "male", expected="female", annotator=" ")


def test_reviews_are_stored(make_store):
    store = make_store()
    store.mark_reviewed(PERSON, "gender", annotator="ana")
    store.mark_reviewed(IMAGE, "mask", annotator="ana", verdict="skip")
    reviews = store.reviews()
    assert set(zip(reviews["target"], reviews["verdict"])) == {(PERSON, "correct"), (IMAGE, "skip")}


def test_import_applies_all_rows_in_one_transaction(make_store):
    store = make_store()
    frame = pd.DataFrame({
        "target": ["000002", f"{PERSON}/normal", f"{PERSON}/incorrect_mask"],
        "attribute": ["gender", "mask", "mask"],
        "value": ["female", "incorrect", "not_wear"],
        "reason": ["forum list", "swap", "swap"],
    })
    plan = store.import_corrections(frame, dry_run=True)
    assert len(plan) == 3 and store.n_corrections() == 0
    store.import_corrections(frame)
    assert store.n_corrections() == 3
    assert store.label_of("000002_male_Asian_35", "gender") == "female"
    assert store.label_of(IMAGE, "mask") == "incorrect"
    assert set(store.history()["source"]) == {"import"}


def test_import_with_a_bad_row_names_the_line_and_applies_nothing(make_store):
    store = make_store()
    frame = pd.DataFrame({"target": ["000002", "999999", "000003"], "attribute": ["gender", "gender", "age"],
                          "value": ["female", "male", "-4"]})
    with pytest.raises(StoreError) as error:
        store.import_corrections(frame, file="fixes.csv")
    assert "fixes.csv, line 3: unknown person '999999'" in str(error.value)
    assert "fixes.csv, line 4: age: -4 is below the minimum" in str(error.value)
    assert store.n_corrections() == 0


def test_import_refuses_an_ambiguous_id_and_missing_columns(make_store, tmp_path):
    store = make_store()
    persons, items = competition_frames(1)
    persons.loc[0, "person"] = "000001_male_Asian_50"
    items["person"] = items["person"].replace(PERSON, "000001_male_Asian_50")
    items["path"] = items["path"].str.replace(PERSON, "000001_male_Asian_50")
    items = items[items["split"] == "train"]
    store.ingest(root=tmp_path, schema=store.schema, dataset_format="competition", persons=persons, items=items,
                 problems=[])
    with pytest.raises(StoreError, match="names 2 people"):
        store.import_corrections(pd.DataFrame({"target": ["000001"], "attribute": ["gender"], "value": ["male"]}))
    with pytest.raises(StoreError, match="missing column"):
        store.import_corrections(pd.DataFrame({"person": ["x"]}))


def test_import_expected_column_detects_conflicts(make_store):
    store = make_store()
    frame = pd.DataFrame({"target": [PERSON], "attribute": ["gender"], "value": ["male"], "expected": ["male"]})
    with pytest.raises(StoreError, match="line 2"):
        store.import_corrections(frame)


def test_snapshot_hash_tracks_labels(make_store):
    store = make_store()
    first = store.snapshot()
    assert store.snapshot().hash == first.hash
    correction = store.correct(PERSON, "gender", "male", expected="female", annotator="ana")
    second = store.snapshot()
    assert second.hash != first.hash and second.n_corrections == 1
    store.revert(correction, annotator="ana")
    assert store.snapshot().hash == first.hash
    labels, meta = read_snapshot(second.path)
    assert meta["hash"] == second.hash and len(labels) == 42
    assert set(labels.query("person == @PERSON")["gender"]) == {"male"}
    assert "class" in labels.columns and "age_group" in labels.columns


def test_edited_snapshot_is_refused(make_store):
    store = make_store()
    snapshot = store.snapshot()
    snapshot.path.write_text(snapshot.path.read_text().replace("female", "male", 1))
    with pytest.raises(StoreError, match="does not match its hash"):
        read_snapshot(snapshot.path)


def test_export_class_equals_formula_on_every_row(make_store, tmp_path):
    store = make_store()
    store.correct(PERSON, "age", 60, expected=22, annotator="ana")
    out = tmp_path / "cleaned.csv"
    snapshot = export(store, out)
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "person", "mask", "gender", "age", "age_group", "class", "corrected"]
    mask = table["mask"].map({"wear": 0, "incorrect": 1, "not_wear": 2})
    gender = table["gender"].map({"male": 0, "female": 1})
    age_group = np.where(table["age"] < 30, 0, np.where(table["age"] < 60, 1, 2))
    assert (table["age_group"] == np.array(["<30", "30-59", ">=60"])[age_group]).all()  # named as the UI says
    assert (table["class"] == mask * 6 + gender * 3 + age_group).all()
    assert table["corrected"].sum() == 7
    assert snapshot.hash in (tmp_path / "cleaned.csv.snapshot.json").read_text()
    export(store, tmp_path / "cleaned.parquet")
    assert pd.read_parquet(tmp_path / "cleaned.parquet").equals(cleaned_table(store))


def test_reingest_is_idempotent_and_keeps_corrections(make_store, tmp_path):
    store = make_store()
    store.correct(PERSON, "gender", "male", expected="female", annotator="ana")
    persons, items = competition_frames(6)
    report = store.ingest(root=tmp_path, schema=store.schema, dataset_format="competition", persons=persons,
                          items=items, problems=[])
    assert report.n_new == 0 and report.n_problems == 0
    assert store.label_of(PERSON, "gender") == "male"
    assert len(store.current_labels()) == 42


def test_changed_source_label_is_reported_not_overwritten(make_store, tmp_path):
    store = make_store()
    persons, items = competition_frames(6)
    items.loc[items["person"] == PERSON, "age"] = 50
    report = store.ingest(root=tmp_path, schema=store.schema, dataset_format="competition", persons=persons,
                          items=items, problems=[])
    assert report.n_problems == 7
    assert store.label_of(PERSON, "age") == 22


def test_a_second_dataset_root_is_refused(make_store, tmp_path):
    store = make_store()
    persons, items = competition_frames(1)
    with pytest.raises(StoreError, match="already holds"):
        store.ingest(root=tmp_path / "other", schema=store.schema, dataset_format="competition", persons=persons,
                     items=items, problems=[])


def test_reopening_keeps_data_and_newer_versions_are_refused(make_store, tmp_path):
    store = make_store()
    path = store.path
    store.correct(PERSON, "gender", "male", expected="female", annotator="ana")
    store.close()
    reopened = LabelStore(path)
    assert reopened.label_of(PERSON, "gender") == "male"
    reopened.conn.execute("PRAGMA user_version=99")
    reopened.close()
    with pytest.raises(StoreError, match="newer than this code"):
        LabelStore(path)


def test_empty_store_says_how_to_fill_it(tmp_path):
    store = LabelStore(tmp_path / "empty.db")
    assert store.is_empty
    with pytest.raises(StoreError, match="python -m core ingest"):
        store.current_labels()


def test_journal_rows_round_trip(make_store):
    store = make_store()
    run_id = store.create_run("train", {"lr": 0.001, "model": "resnet10t"}, seed=3)
    store.update_progress(run_id, epoch=1, step=5, total=10, eta_s=12.5)
    store.record_epoch(run_id, 1, {"val_macro_f1": 0.5})
    store.update_run(run_id, status="done", metrics={"val_macro_f1": 0.5})
    run = store.run(run_id)
    assert run["config"]["lr"] == 0.001 and run["seed"] == 3 and run["progress"]["step"] == 5
    assert store.epochs(run_id)["val_macro_f1"].tolist() == [0.5]
    assert store.runs().iloc[0]["status"] == "done"
    with pytest.raises(StoreError, match="unknown run field"):
        store.update_run(run_id, colour="red")


def test_job_lock_is_exclusive(make_store):
    store = make_store()
    assert store.acquire_lock("job", run_id=1, pid=10) is None
    assert store.acquire_lock("job", run_id=2, pid=11)["run_id"] == 1
    store.release_lock("job", run_id=2)
    assert store.lock_holder("job")["run_id"] == 1
    store.release_lock("job", run_id=1)
    assert store.lock_holder("job") is None


def _write_corrections(args: tuple[str, int, int]) -> tuple[int, int]:
    path, worker, n_persons = args
    store = LabelStore(path)
    accepted = conflicts = 0
    for index in range(n_persons):
        image = f"train/images/{index + 1:06d}_{['female', 'male'][index % 2]}_Asian_" \
                f"{[22, 35, 60, 29, 30, 59, 45, 18][index % 8]}/mask{worker + 1}.jpg"
        store.correct(image, "mask", "incorrect", expected="wear", annotator=f"w{worker}")  # own image: no collision
        accepted += 1
        try:  # every worker races for the same person-scope label
            store.correct(f"{index + 1:06d}_{['female', 'male'][index % 2]}_Asian_{[22, 35, 60, 29, 30, 59, 45, 18][index % 8]}",
                          "age", 40 + worker, expected=[22, 35, 60, 29, 30, 59, 45, 18][index % 8],
                          annotator=f"w{worker}")
            accepted += 1
        except ConflictError:
            conflicts += 1
    store.close()
    return accepted, conflicts


def test_concurrent_writers_lose_nothing(make_store):
    store = make_store(n_persons=8)
    workers = 4
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.map(_write_corrections, [(str(store.path), w, 8) for w in range(workers)])
    accepted = sum(a for a, _ in results)
    conflicts = sum(c for _, c in results)
    assert accepted == store.n_corrections()
    assert conflicts == 8 * (workers - 1)  # exactly one winner per person
    assert (store.current_labels()["mask"] == "incorrect").sum() == 8 * (1 + workers)  # 1 original + 4 corrected
    assert store.verify_current() == []
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_read_table_errors_name_the_file(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("target,attribute,value\nJos\xe9,gender,male\n".encode("latin-1"))
    with pytest.raises(StoreError, match=r"latin1.csv, line 2: not UTF-8"):
        read_table(bad)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefftarget,attribute,value\nx,gender,male\n".encode())
    assert list(read_table(bom).columns) == ["target", "attribute", "value"]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(StoreError, match="empty"):
        read_table(tmp_path / "empty.csv")
    with pytest.raises(StoreError, match="no such file"):
        read_table(tmp_path / "missing.csv")


def test_cli_correct_history_revert_import_export(make_store, tmp_path, capsys):
    store = make_store()
    db = str(store.path)
    assert core_main(["correct", PERSON, "gender", "male", "--annotator", "ana", "--db", db]) == 0
    assert core_main(["correct", PERSON, "gender", "male", "--expected", "female", "--annotator", "b", "--db", db]) == 2
    assert "someone changed it" in capsys.readouterr().err
    assert core_main(["revert", "1", "--annotator", "ana", "--db", db]) == 0
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("target,attribute,value,reason\n000002,gender,female,forum\n")
    assert core_main(["import", str(fixes), "--dry-run", "--db", db]) == 0
    assert store.n_corrections() == 2
    assert core_main(["import", str(fixes), "--db", db]) == 0
    assert store.n_corrections() == 3
    fixes.write_text("target,attribute,value\nnobody,gender,female\n")
    assert core_main(["import", str(fixes), "--db", db]) == 2
    assert "line 2: unknown person" in capsys.readouterr().err
    assert core_main(["export", "--out", str(tmp_path / "out.csv"), "--db", db]) == 0
    assert core_main(["history", "--db", db]) == 0
    assert core_main(["status", "--db", db]) == 0
    assert Path(tmp_path / "out.csv").exists()


def _changed_by_attribute(store):
    """Per attribute, labelled images whose current value differs from the original (from full tables)."""
    current = store.current_labels(derived=False).set_index("item_id")
    original = store.current_labels(original=True, derived=False).set_index("item_id").loc[current.index]
    return {name: int((current[name].astype(str) != original[name].astype(str)).sum()) for name in store.schema.names}


def test_dashboard_aggregates_equal_full_queries_after_corrections_reverts_and_a_reingest(make_store, tmp_path):
    store = make_store(n_persons=8)
    groupings = [["mask", "gender", "age"], ["gender", "age"], ["mask"], ["age"], ["mask", "gender"]]

    def check():
        for columns in groupings:
            for original in (False, True):
                pd.testing.assert_frame_equal(store.label_counts(columns, original=original),
                                              store.count_by(columns, original=original), check_dtype=False)
        assert store.changed_counts() == _changed_by_attribute(store)
        per_person = store.persons()["n_images"].value_counts().sort_index()
        assert store.person_image_counts()["images"].tolist() == per_person.index.tolist()
        assert store.person_image_counts()["persons"].tolist() == per_person.tolist()
        items = store.items()
        assert (store.count_items(), store.count_items("eval")) == (len(items), int((items["split"] == "eval").sum()))

    check()
    # Saved with the ingest: a first visit reads them instead of grouping the label table.
    saved = {r[0] for r in store.conn.execute("SELECT name FROM ingest_aggregates WHERE ingest_id = ?",
                                              (store.last_ingest_id(),))}
    assert {"count_by:mask,gender,age", "count_by:gender,age", "person_image_counts", "count_items"} <= saved
    gender = store.correct(PERSON, "gender", "male", expected="female", annotator="ana")
    store.correct("000002_male_Asian_35", "age", 61, expected=35, annotator="ana")  # crosses an age-group edge
    store.correct(IMAGE, "mask", "incorrect", expected="not_wear", annotator="ben")
    store.correct(f"train/images/{PERSON}/mask1.jpg", "mask", "not_wear", expected="wear", annotator="ben")
    store.revert(gender, annotator="ana")  # touched but back to the original
    store.correct("000003_female_Asian_60", "gender", "male", expected="female", annotator="ana")
    check()
    assert store.changed_counts() == {"mask": 2, "gender": 7, "age": 7}
    assert store.correction_counts().set_index("attribute").to_dict("index") == {
        "age": {"corrections": 1, "reverts": 0}, "gender": {"corrections": 2, "reverts": 1},
        "mask": {"corrections": 2, "reverts": 0}}
    ingest_frames(store, tmp_path, n_persons=10)  # a re-ingest adds two people; corrections stay
    check()
    assert store.conn.execute("SELECT count(DISTINCT ingest_id) FROM ingest_aggregates").fetchone()[0] == 1


def test_a_version_1_store_migrates_and_builds_its_derived_tables_on_first_use(make_store):
    from core import review, stats
    from core.synthetic import add_score_run

    store = make_store(n_persons=8)
    run_id = add_score_run(store, flag_every=3)
    store.correct(PERSON, "gender", "male", expected="female", annotator="ana")
    store.mark_reviewed(IMAGE, "mask", annotator="ana")
    expected_queue = review.queue_units(store, run_id)
    expected_classes = stats.class_counts(store)
    path = store.path
    store.close()
    # What version 1 wrote: the same tables without the derived ones, user_version 1.
    with sqlite3.connect(path) as conn:
        for table in ("review_units", "review_runs", "ingest_aggregates"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DROP INDEX corrections_reverts")
        conn.execute("DROP INDEX runs_repeat_group")  # and what version 3 added
        conn.execute("ALTER TABLE runs DROP COLUMN repeat_group")
        for index in ("reviews_label", "corrections_label"):  # and what version 6 added
            conn.execute(f"DROP INDEX {index}")
        for table, column in (("reviews", "value"), ("reviews", "tab"), ("corrections", "tab"),
                              ("corrections", "score_run")):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        for index in ("corrections_bulk", "reviews_bulk"):  # and what version 4 added
            conn.execute(f"DROP INDEX {index}")
        for table, column in (("items", "meta"), ("corrections", "bulk"), ("reviews", "bulk")):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("DROP TABLE bulks")
        for table in ("answer_keys", "evaluations", "experiment_runs"):  # and what version 5 added
            conn.execute(f"DROP TABLE {table}")
        conn.execute("ALTER TABLE runs DROP COLUMN labels")
        conn.execute("ALTER TABLE runs DROP COLUMN answer_key")
        conn.execute("PRAGMA user_version=1")
    migrated = LabelStore(path)
    try:
        assert migrated.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert {"repeat_group", "labels", "answer_key"} <= set(migrated.runs().columns)
        tables = {r[0] for r in migrated.conn.execute("SELECT name FROM sqlite_master")}
        assert {"review_units", "review_runs", "ingest_aggregates", "corrections_reverts"} <= tables
        assert migrated.conn.execute("SELECT count(*) FROM review_units").fetchone()[0] == 0  # built lazily
        pd.testing.assert_frame_equal(review.queue_units(migrated, run_id), expected_queue)
        assert migrated.review_summary(run_id)["n_units"] == len(expected_queue)
        pd.testing.assert_frame_equal(stats.class_counts(migrated), expected_classes)
        assert migrated.label_of(PERSON, "gender") == "male" and len(migrated.reviews()) == 1
    finally:
        migrated.close()


def test_review_units_rank_once_per_run_and_name_class_codes(make_store):
    store = make_store(n_persons=4)
    labels = store.current_labels()
    rows = []
    for target, given, suggested in (("mask", "wear", "1"), ("gender", "0", "male"), ("age_group", "0", "2")):
        for index, item_id in enumerate(labels["item_id"]):
            rows.append({"item_id": item_id, "attribute": target, "given": given, "suggested": suggested,
                         "score": round((index % 5) / 10, 1), "is_issue": index % 5 == 4, "detail": "{}"})
    rows += [{"item_id": item_id, "attribute": "age", "given": "30", "suggested": "31", "score": 0.99, "is_issue": 1,
              "detail": "{}"} for item_id in labels["item_id"]]  # not a target: left out of the queue
    run_id = store.create_run("score", {}, status="running")
    store.save_scores(run_id, pd.DataFrame(rows))
    units, total = store.review_units(run_id)
    assert total == len(units) == 28 + 4 + 4  # mask per image, gender and age_group per person
    assert set(units["attribute"]) == {"mask", "gender", "age_group"}
    classes = store.schema.target_classes
    assert set(units["given"]) == {"wear", classes("gender")[0], classes("age_group")[0]}
    assert set(units["suggested"]) == {classes("mask")[1], "male", classes("age_group")[2]}
    assert units["score"].is_monotonic_decreasing
    ties = units[units["score"] == units["score"].max()]
    assert list(ties["scope"]) == sorted(ties["scope"])  # ties: images first, then people
    people = units[units["scope"] == "person"]
    assert (people["target"] == people["person"]).all() and people["key"].is_unique
    assert (people.loc[people["attribute"] == "age_group", "stored"] == "age").all()
    summary = store.review_summary(run_id)
    assert summary["n_units"] == 36 and summary["n_flagged"] == int(units["is_issue"].sum())
    assert summary["classes"]["gender"] == sorted({classes("gender")[0], "male"})
    assert summary["max_score"] == units["score"].max()
    assert store.review_unit_position(run_id, units["key"].iloc[5]) == 5
    assert store.review_unit_position(run_id, units["key"].iloc[5], flagged_only=True) == (
        None if not units["is_issue"].iloc[5] else int(units["is_issue"].iloc[:5].sum()))
    store.save_scores(run_id, pd.DataFrame(rows[:28]))  # replaced: the queue follows
    assert store.review_units(run_id, limit=0)[1] == 28


def test_review_units_follow_the_rank_core_scoring_gave(make_store):
    """The store pages the queue core.scoring ranked (``detail["rank"]``); it does not re-rank by score."""
    store = make_store(n_persons=2)
    labels = store.current_labels()
    items = list(labels["item_id"])
    rows = [{"item_id": item_id, "attribute": "mask", "given": "wear", "suggested": "wear", "score": 0.1 * (i % 7),
             "is_issue": False, "detail": json.dumps({"rank": len(items) - 1 - i})} for i, item_id in enumerate(items)]
    run_id = store.create_run("score", {}, status="running")
    store.save_scores(run_id, pd.DataFrame(rows))
    units, _ = store.review_units(run_id)
    assert list(units["item_id"]) == items[::-1]  # by rank, although the scores say otherwise


def test_the_runs_column_list_is_the_runs_table(tmp_path: Path) -> None:
    from core.store.journal import RUN_COLUMNS

    with LabelStore(tmp_path / "labels.db") as store:
        table = [row[1] for row in store.conn.execute("PRAGMA table_info(runs)")]
        assert tuple(table) == RUN_COLUMNS
        assert list(store.runs().columns) == list(RUN_COLUMNS)
