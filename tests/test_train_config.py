"""train.config: the torch-free settings the dashboard uses, and their one command-line form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.__main__ import build_parser
from train.config import (
    NOT_FOR_SCORE,
    SCORE_DEFAULTS,
    TrainConfig,
    from_args,
    image_size,
    options_argv,
    score_config,
    to_argv,
)

ROOT = Path(__file__).resolve().parents[1]

# Renders every page of the dashboard (a store with a score run and a finished training run) in a fresh
# interpreter, then reports which heavy modules got imported.
PAGES_SCRIPT = r"""
import json, sys
from pathlib import Path
from streamlit.testing.v1 import AppTest
from core.synthetic import add_score_run, synthetic_store

store = synthetic_store(Path(sys.argv[1]), 700, eval_images=10)
add_score_run(store)
run_id = store.create_run("train", {"model": "test_resnet", "img_size": [64, 80], "epochs": 1}, status="done")
store.record_epoch(run_id, 1, {"train_loss": 1.0, "val_loss": 1.0, "macro_f1": 0.5})
store.close()
errors = {}
for page in ["distributions", "review", "browse", "history", "health", "train"]:
    at = AppTest.from_file(sys.argv[2], default_timeout=120)
    at.session_state["annotator"] = "tester"
    at = at.switch_page(f"app_pages/{page}.py").run()
    errors[page] = [str(e.value) for e in at.exception]
print(json.dumps({"errors": errors, "loaded": [m for m in ("torch", "timm") if m in sys.modules]}))
"""


def test_every_page_renders_without_importing_torch_or_timm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LABELS_DB": str(tmp_path / "labels.db"), "LABELS_AUTO_DEMO": "0"}
    done = subprocess.run([sys.executable, "-c", PAGES_SCRIPT, str(tmp_path / "labels.db"), str(ROOT / "app" /
                           "Home.py")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == {page: [] for page in report["errors"]}
    assert report["loaded"] == []


def test_img_size_takes_one_value_for_a_square_or_two_for_w_h() -> None:
    parser = build_parser()
    assert parser.parse_args(["fit", "--img-size", "224"]).img_size == (224, 224)
    assert parser.parse_args(["fit", "--img-size", "192", "256"]).img_size == (192, 256)
    assert parser.parse_args(["score", "--img-size", "96"]).img_size == (96, 96)
    assert from_args(parser.parse_args(["fit"]), "fit").img_size == (64, 80)  # unset: the command's default
    assert image_size([32]) == (32, 32) and image_size(48) == (48, 48) and TrainConfig(img_size=[40]).img_size == (40, 40)
    with pytest.raises(SystemExit):
        parser.parse_args(["fit", "--img-size", "1", "2", "3"])
    with pytest.raises(ValueError, match="one value"):
        image_size((1, 2, 3))


def test_pretrained_is_its_own_flag_and_abbreviations_are_refused(capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    args = parser.parse_args(["fit", "--model", "efficientnet_b0", "--pretrained"])
    assert args.pretrained is True and args.pretrained_file is None
    assert parser.parse_args(["fit"]).pretrained is False
    with pytest.raises(SystemExit):
        parser.parse_args(["fit", "--pretrain"])
    assert "unrecognized arguments: --pretrain" in capsys.readouterr().err


def test_a_config_survives_the_command_line_for_fit_and_score() -> None:
    parser = build_parser()
    config = TrainConfig(model="resnet18d", img_size=(224, 192), pretrained=True, augment=False, age_threshold=58,
                         keep_mb=12.5, lr=1e-5)
    assert from_args(parser.parse_args(["fit", *to_argv(config, "fit")]), "fit") == config
    scoring = score_config(pretrained=True)
    argv = to_argv(scoring, "score")
    assert not any(f"--{name.replace('_', '-')}" in argv for name in NOT_FOR_SCORE)
    assert from_args(parser.parse_args(["score", *argv]), "score") == scoring
    assert from_args(parser.parse_args(["score"]), "score") == score_config()
    assert {k: getattr(score_config(), k) for k in SCORE_DEFAULTS} == SCORE_DEFAULTS
    assert options_argv({"run": [4, 5], "out": "s.csv", "tta": None, "json": True}) == \
        ["--run", "4", "--run", "5", "--out", "s.csv", "--json"]


def test_train_config_and_jobs_import_without_torch() -> None:
    code = ("import sys, train, train.config, train.jobs, train.compare, train.disk, train.cache, train.checkpoint\n"
            "print([m for m in ('torch', 'timm') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    from train import TrainConfig as Lazy
    from train.loop import TrainConfig as FromLoop

    assert Lazy is FromLoop is TrainConfig  # the old import paths keep working


def test_jobs_start_refuses_command_line_strings(tmp_path: Path) -> None:
    from core.store import LabelStore
    from train import jobs

    with LabelStore(tmp_path / "labels.db") as store, pytest.raises(TypeError, match="not command-line strings"):
        jobs.start(store, "predict", options=["--run", "1"])
    with LabelStore(tmp_path / "labels.db") as store:
        assert len(store.runs()) == 0
