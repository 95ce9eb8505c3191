"""The Patterns page through AppTest: patterns listed with evidence, hostile metadata as text, per-unit ticks,
Apply as one bulk step (the units leave the Review queue), a conflict named, Undo as one logged revert."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import pattern_actions, review
from tests.pattern_data import HOSTILE, pattern_store

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
PAGE = "app_pages/patterns.py"


def open_page(annotator: str = "tester") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["annotator"] = annotator
    return at.switch_page(PAGE).run()


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [t.value for t in at.text] + [c.value for c in at.caption])


def test_empty_store_and_no_score_run(db: Path) -> None:
    at = open_page()
    assert not at.exception and any("store is empty" in i.value for i in at.info)


def test_patterns_page_apply_conflict_and_undo(db: Path) -> None:
    store, run_id = pattern_store(db)
    at = open_page()
    assert not at.exception, [e.value for e in at.exception]
    body = texts(at)
    assert "survive a 5 % false discovery rate" in body
    # the hostile annotator name is shown literally (escaped markdown), never as an image or bold text
    _, found = pattern_actions.scan(store, run_id)
    hostile = next(i for i, p in enumerate(found) if HOSTILE in p.summary)
    at.selectbox(key="patterns_pick").set_value(hostile).run()
    assert not at.exception
    summary = next(m.value for m in at.markdown if "onerror" in m.value)
    assert "\\<img" in summary and "\\*\\*ann\\*\\*" in summary
    assert len(at.get("plotly_chart")) == 1
    pattern = found[hostile]
    units = at.radio
    assert len(units) >= 5
    # tick fix on the page, keep on one unit; a conflicting change lands meanwhile on another
    at.button(key="patterns_all_fix").click().run()
    keep_unit, conflict_unit = pattern.units[0], pattern.units[1]
    units = list(at.radio)
    units[0].set_value("keep")
    at.run()
    row = pattern.suspected[pattern.suspected["unit"] == conflict_unit].iloc[0]
    store.correct(row["target"], row["attribute"], row["proposed"], expected=row["current"], annotator="someone")
    at.button(key="patterns_apply").click().run()
    assert not at.exception
    shown = [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success]
    assert any("refused" in s and conflict_unit.replace("_", "\\_") in s for s in shown), shown
    bulks = store.bulks()
    bulk = bulks.iloc[0]
    on_page = min(len(pattern.units), 12)
    assert bulk["n_kept"] == 1 and bulk["n_refused"] == 1 and bulk["n_corrected"] >= on_page - 2
    status = review.statuses(store)
    decided = dict(zip(status["target"], status["status"]))
    assert decided[keep_unit] == "reviewed"
    assert decided[pattern.units[2]] == "corrected"
    history = store.history()
    assert set(history[history["bulk"] == bulk["id"]]["reason"].str[:9]) == {"pattern: "}
    # undo the bulk from the page: one logged revert
    at.button(key=f"pat_undo_{int(bulk['id'])}").click().run()
    assert not at.exception
    bulks = store.bulks()
    assert bulks.iloc[0]["kind"] == "revert" and int(bulks.iloc[0]["reverts"]) == int(bulk["id"])
    assert store.verify_current() == []
    status = review.statuses(store)
    assert keep_unit not in set(status["target"])


def test_apply_needs_an_annotator(db: Path) -> None:
    pattern_store(db)
    at = open_page(annotator="")
    assert not at.exception
    assert at.button(key="patterns_apply").disabled
