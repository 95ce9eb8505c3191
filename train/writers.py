"""Optional experiment writers, off by default: TensorBoard event files and MLflow tracking.

    check(config)                                    # at start, before anything is trained or written
    writers = open_writers(config, run_dir, tags={"run_id": "7", "kind": "train"}, log=log)   # rank 0 only
    writers.scalars(epoch, metrics)                  # losses, per-head accuracy, macro F1, lr, images/s
    writers.close("done")                            # or "failed" / "cancelled"

* ``--tensorboard DIR``: event files under ``DIR/<run folder name>/`` (``tensorboardX``, pinned in
  requirements.txt), so ``tensorboard --logdir DIR`` shows every run side by side: one scalar per metric
  and epoch, the config as text and as hyperparameters (the HParams tab).
* ``--mlflow URI``: one MLflow run per journal run at the tracking URI (``file:./mlruns``, a plain
  folder, or a server's ``http://...``), in experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``train``):
  the config as params, the scalars as metrics with step = epoch, the journal's run id as a tag; a
  resumed run continues its MLflow run. Needs ``pip install mlflow-skinny`` (about 100 MB with its
  dependencies, so not in requirements.txt). A file store is allowed explicitly (MLflow 3 asks for a
  database unless ``MLFLOW_ALLOW_FILE_STORE`` is set; naming a folder is that choice).

A writer that fails mid-run (a full disk, an unreachable server) is dropped with a warning in the run's
log; training goes on, the journal in the label store being the record.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.files import replacing

TENSORBOARD_PACKAGE = "tensorboardX==2.6.5"  # what requirements.txt pins
MLFLOW_PACKAGE = "mlflow-skinny"  # tested with 3.17.2 (or the full "mlflow")
MLFLOW_RUN_FILE = "mlflow_run.json"  # in the run folder: which MLflow run a resumed run continues
NOT_SCALARS = {"epoch", "fold", "n_train", "n_held_out"}  # counters and sizes, not metrics


class WriterUnavailable(ValueError):
    """An experiment writer was asked for but its package is not installed."""


def _require(module: str, option: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise WriterUnavailable(f"{option} needs the Python package {package.split('=')[0]!r}, which is not "
                                f"installed ({error}): pip install {package}") from None


def check(config: Any) -> None:
    """Raise ``WriterUnavailable`` (naming the pip package) when ``config`` asks for a writer whose package
    is missing. ``config``: a TrainConfig or its dict."""
    get = config.get if isinstance(config, Mapping) else lambda key: getattr(config, key, None)
    if get("tensorboard"):
        _require("tensorboardX", "--tensorboard", TENSORBOARD_PACKAGE)
    if get("mlflow"):
        _require("mlflow", "--mlflow", MLFLOW_PACKAGE)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of an epoch's (or fold's) metrics, without counters: what the writers log."""
    return {k: float(v) for k, v in metrics.items() if k not in NOT_SCALARS and isinstance(v, int | float)
            and not isinstance(v, bool) and math.isfinite(v)}


def flat_params(config: Mapping[str, Any]) -> dict[str, str | float | int | bool]:
    """Config values as writer parameters: numbers and booleans kept, None as "none", the rest as text."""
    out: dict[str, str | float | int | bool] = {}
    for key, value in config.items():
        if value is None:
            out[key] = "none"
        elif isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = "x".join(map(str, value)) if key == "img_size" else json.dumps(value)
        else:
            out[key] = str(value)
    return out


class TensorBoardWriter:
    name = "tensorboard"

    def __init__(self, folder: Path, config: Mapping[str, Any]):
        tensorboardx = _require("tensorboardX", "--tensorboard", TENSORBOARD_PACKAGE)
        self.folder = folder
        self.params = flat_params(config)
        self.writer = tensorboardx.SummaryWriter(logdir=str(folder), flush_secs=30)
        self.writer.add_text("config", "    " + json.dumps(dict(config), indent=1, default=str).replace("\n", "\n    "),
                             0)
        self.hparams_written = False

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.hparams_written:  # the HParams tab: this run's config against the metrics it reports
            from tensorboardX.summary import hparams
            experiment, start, _ = hparams(self.params, {name: None for name in values})
            self.writer.file_writer.add_summary(experiment)
            self.writer.file_writer.add_summary(start)
            self.hparams_written = True
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        if status == "done" and self.hparams_written:
            from tensorboardX.summary import hparams
            _, _, end = hparams(self.params, {})
            self.writer.file_writer.add_summary(end)
        self.writer.close()


class MLflowWriter:
    name = "mlflow"
    STATUS = {"done": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}

    def __init__(self, uri: str, config: Mapping[str, Any], run_dir: Path, tags: Mapping[str, str]):
        if "://" not in uri and not uri.startswith("file:"):  # a folder: an absolute file-store URI
            uri = Path(uri).resolve().as_uri()
        if uri.startswith("file:"):  # naming a folder chooses MLflow's file store (MLflow 3 wants the opt-in)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        _require("mlflow", "--mlflow", MLFLOW_PACKAGE)
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self.Metric, self.uri = Metric, uri
        self.client = MlflowClient(tracking_uri=uri)
        marker = run_dir / MLFLOW_RUN_FILE
        previous = json.loads(marker.read_text()) if marker.exists() else {}
        if previous.get("uri") == uri:  # a resumed run continues its MLflow run
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "train"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(name)
            except Exception:  # created by another process meanwhile
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        run = self.client.create_run(experiment_id, run_name=run_dir.name, tags=dict(tags))
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat_params(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        with replacing(marker) as tmp:
            tmp.write_text(json.dumps({"uri": uri, "run_id": self.run_id}))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        moment = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.Metric(k, v, moment, step) for k, v in values.items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, self.STATUS.get(status, "FAILED"))


class Writers:
    """The writers a run asked for (possibly none); every call is safe to make without any."""

    def __init__(self, writers: list[Any], log: logging.Logger | None = None):
        self.writers, self.log = writers, log

    def _each(self, call: str, *args: Any) -> None:
        for writer in list(self.writers):
            try:
                getattr(writer, call)(*args)
            except Exception as error:  # optional extras never stop a run; the journal has the numbers
                self.writers.remove(writer)
                if self.log is not None:
                    self.log.warning(f"{writer.name} writer failed ({type(error).__name__}: {error}); "
                                     "continuing without it")

    def scalars(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = scalar_metrics(metrics)
        if values:
            self._each("scalars", step, values)

    def close(self, status: str) -> None:
        self._each("close", status)
        self.writers = []

    def describe(self) -> str:
        return ", ".join(f"tensorboard {w.folder}" if w.name == "tensorboard" else f"mlflow {w.uri} run {w.run_id}"
                         for w in self.writers)


def open_writers(config: Mapping[str, Any], run_dir: str | os.PathLike[str], *, tags: Mapping[str, str],
                 log: logging.Logger | None = None) -> Writers:
    """The writers ``config`` asks for (``tensorboard``, ``mlflow``), opened for the run in ``run_dir``."""
    run_dir = Path(run_dir)
    writers: list[Any] = []
    try:
        if config.get("tensorboard"):
            writers.append(TensorBoardWriter(Path(config["tensorboard"]).resolve() / run_dir.name, config))
        if config.get("mlflow"):
            writers.append(MLflowWriter(str(config["mlflow"]), config, run_dir, tags))
    except BaseException:
        Writers(writers).close("failed")
        raise
    opened = Writers(writers, log)
    if writers and log is not None:
        log.info(f"experiment writers: {opened.describe()}")
    return opened
