"""Run settings without torch: ``TrainConfig``, the scorer's defaults, and their command-line form.

The dashboard imports this module (and ``train.jobs``) to fill its form and start jobs, so nothing here
may import torch or timm. The flag format lives only here: ``add_options`` builds ``python -m train
fit|score`` options from the dataclass fields, ``from_args`` reads them back, and ``to_argv`` /
``options_argv`` write a config (and named options such as ``folds``) as the arguments a job gets.

    from train.config import TrainConfig, to_argv
    to_argv(TrainConfig(model="resnet18d", img_size=(224, 224), pretrained=True), "fit")
    # ['--model', 'resnet18d', '--img-size', '224', '224', ..., '--pretrained', ...]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from core.store import LabelStore

DEFAULT_IMG_SIZE = (64, 80)  # W H; --pretrained without --img-size takes the model's own input size instead


@dataclass
class TrainConfig:
    """Every option of a training run; the CLI builds its flags (and --help defaults) from these fields."""

    # Defaults are sized for the demo on 2 CPU cores (~1.5 min, held-out mask/gender/age group 0.999/0.999/0.945,
    # BENCHMARKS.md "Trainer"): timm's 0.4 M-parameter test_resnet at 64x80 out-learns resnet10t at 96x128 there at a
    # fifth of the cost. On real photos and a GPU pick a real backbone, --pretrained and its size (e.g. 224).
    model: str = field(default="test_resnet", metadata={"help": "timm model name"})
    img_size: tuple[int, int] = field(default=DEFAULT_IMG_SIZE, metadata={
        "help": "input size in pixels: W H, or one value for a square (default: 64 80; with --pretrained the "
                "model's own input size)"})
    epochs: int = field(default=12, metadata={"help": "passes over the training people"})
    batch_size: int = field(default=32, metadata={"help": "images per step, summed over all ranks"})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate (warm-up, then cosine decay)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_epochs: float = field(default=0.5, metadata={"help": "linear warm-up length in epochs"})
    heads: str = field(default="multi", metadata={"help": "multi: one head per target; single: one 18-class head",
                                                  "choices": ["multi", "single"]})
    loss: str = field(default="ce", metadata={"help": "ce, smooth (label smoothing) or focal",
                                              "choices": ["ce", "smooth", "focal"]})
    label_smoothing: float = field(default=0.1, metadata={"help": "smoothing for --loss smooth"})
    focal_gamma: float = field(default=2.0, metadata={"help": "focusing parameter for --loss focal"})
    balanced: bool = field(default=False, metadata={"help": "sample classes equally often (with replacement)"})
    age_threshold: int | None = field(default=None, metadata={"help": "train with the old-age bin at this age "
                                                                       "(e.g. 58); validation keeps the schema's "
                                                                       "(default: the schema's bins)"})
    augment: bool = field(default=True, metadata={"help": "flip, small affine warp and colour jitter"})
    drop_rate: float = field(default=0.0, metadata={"help": "dropout before the classifier"})
    pretrained: bool = field(default=False, metadata={
        "help": "start from timm's pretrained weights for --model, downloaded once into the Hugging Face cache "
                "(the only network access, and only when asked; offline, use --pretrained-file)"})
    pretrained_file: str | None = field(default=None, metadata={"help": "local weights (.safetensors or "
                                                                         "state-dict .pth) to start from (default: "
                                                                         "none, from scratch)"})
    val_folds: int = field(default=5, metadata={"help": "person-grouped folds; one of them validates"})
    val_fold: int = field(default=0, metadata={"help": "which fold validates"})
    seed: int = field(default=0, metadata={"help": "seed for folds, init, sampling and augmentation"})
    threads: int = field(default=2, metadata={"help": "CPU threads (shared by the ranks of a CPU torchrun)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA if present), cpu or cuda",
                                                  "choices": ["auto", "cpu", "cuda"]})
    keep_top: int = field(default=1, metadata={"help": "epoch checkpoints kept, best by val macro F1"})
    keep_mb: float | None = field(default=None, metadata={"help": "disk budget of this run's checkpoints "
                                                                    "in MB (default: none)"})
    keep_mb_all: float | None = field(default=None, metadata={"help": "disk budget of all runs in --out, MB "
                                                                        "(default: none)"})
    snapshot: str | None = field(default=None, metadata={"help": "label snapshot file (default: take one now)"})
    labels: str | None = field(default=None, metadata={
        "help": "which labels to train on: original (as ingested: the ingest snapshot), current (a snapshot of the "
                "corrected labels, taken now) or a snapshot file or hash prefix (default: --snapshot, else current)"})
    answer_key: str | None = field(default=None, metadata={
        "help": "answer key file (python -m train experiment writes them): its people validate, every epoch is "
                "measured against its labels, the rest train (default: a person-grouped fold of the run's own "
                "labels)"})
    out: str | None = field(default=None, metadata={"help": "folder of run folders (default: runs/ beside the db)"})
    cache_dir: str | None = field(default=None, metadata={"help": "image cache (default: <db>.d/cache)"})
    cache_mb: float | None = field(default=None, metadata={"help": "image cache budget in MB: writing a new cache "
                                                                     "deletes the least recently used ones no job "
                                                                     "holds beyond it (default: $LABELS_CACHE_MB, "
                                                                     "else 2048)"})
    tensorboard: str | None = field(default=None, metadata={"help": "also write TensorBoard event files, one "
                                                                     "subfolder per run under this folder (default: "
                                                                     "off)"})
    mlflow: str | None = field(default=None, metadata={"help": "also log params and per-epoch metrics to this MLflow "
                                                                "tracking URI or folder, e.g. file:./mlruns (needs "
                                                                "pip install mlflow-skinny; default: off)"})

    def __post_init__(self) -> None:
        self.img_size = image_size(self.img_size)  # JSON gives lists back; one value means a square

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


DEFAULT_FOLDS = 3
# Score defaults, differing from fit's: k models must train in minutes on 2 shared CPU cores. timm's tiny ResNet
# (0.37 M parameters, 0.02 GMACs at 64x80) for 10 epochs of batch 32 learns the demo's cues (held-out mask 0.99,
# gender 0.97 against the true labels) at a tenth of resnet10t's cost at 96x128 (BENCHMARKS.md, "Label issues").
# One thread: on a machine shared with other jobs, OpenMP's 2-thread barriers stall (2x slower, measured).
SCORE_DEFAULTS: dict[str, Any] = {"model": "test_resnet", "img_size": (64, 80), "epochs": 10, "batch_size": 32,
                                  "threads": 1}
# fit options that mean nothing when scoring (one fold validates, checkpoint retention) or would change the classes
# scored (training bins differ from the schema's): left out of the score CLI, refused by ``score``.
NOT_FOR_SCORE = ("val_folds", "val_fold", "keep_top", "keep_mb", "keep_mb_all", "age_threshold", "labels",
                 "answer_key")
COMMANDS = ("fit", "score")  # the commands whose options are TrainConfig fields


def image_size(value: int | Sequence[int]) -> tuple[int, int]:
    """(W, H) from one value (a square, as timm's train.py) or two (W H); raises ValueError otherwise."""
    values = [value] if isinstance(value, int | float | str) else list(value)
    if len(values) not in (1, 2):
        raise ValueError(f"an image size is one value (a square) or two (W H), not {len(values)}")
    width, height = (int(v) for v in values * (3 - len(values)))
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}x{height}: both sides must be positive")
    return width, height


def defaults(command: str = "fit") -> dict[str, Any]:
    """Field name -> default of ``command`` (``score`` has its own small, fast model settings)."""
    values = {spec.name: spec.default if spec.default is not MISSING else spec.default_factory()  # type: ignore[operator]
              for spec in fields(TrainConfig)}
    if command == "score":
        values = {k: v for k, v in {**values, **SCORE_DEFAULTS}.items() if k not in NOT_FOR_SCORE}
    return values


def score_config(**overrides: Any) -> TrainConfig:
    """The scorer's own settings (``SCORE_DEFAULTS``), with ``overrides``."""
    return TrainConfig.from_dict({**SCORE_DEFAULTS, **overrides})


# ---- the command-line form: the one place that knows the flags -------------------------------------------------
_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float, "str | None": str}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _ImageSize(argparse.Action):
    """``--img-size 224`` (a square) or ``--img-size 192 256`` (W H)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            setattr(namespace, self.dest, image_size(values))
        except ValueError as error:
            parser.error(f"argument {option_string}: {error}")


def add_options(parser: argparse.ArgumentParser, command: str = "fit") -> None:
    """One option per TrainConfig field that ``command`` takes, with the field's help text and the command's
    default. ``--img-size`` defaults to None (the caller resolves it: the model's size with --pretrained)."""
    if command not in COMMANDS:
        raise ValueError(f"no TrainConfig options for {command!r}")
    values = defaults(command)
    for spec in fields(TrainConfig):
        if spec.name not in values:
            continue
        default, text = values[spec.name], spec.metadata.get("help", "")
        if spec.type == "bool":
            parser.add_argument(flag(spec.name), action=argparse.BooleanOptionalAction, default=default,
                                help=f"{text} (default: {'on' if default else 'off'})")
        elif spec.name == "img_size":
            if command == "score":
                text = text.replace("64 80", " ".join(map(str, default)))
            parser.add_argument(flag(spec.name), type=int, nargs="+", metavar="PIXELS", action=_ImageSize,
                                default=None, help=text)
        else:
            shown = "" if "default" in text else f" (default: {default})"  # some texts say their default in words
            parser.add_argument(flag(spec.name), type=_TYPES[str(spec.type)], default=default,
                                choices=spec.metadata.get("choices"), help=text + shown)


def from_args(args: argparse.Namespace, command: str = "fit") -> TrainConfig:
    """The TrainConfig that parsed ``command`` options describe; an unset ``--img-size`` is the command's default
    (callers that know the model's own size, for --pretrained, set ``args.img_size`` first)."""
    values = {name: getattr(args, name) for name in defaults(command) if hasattr(args, name)}
    if values.get("img_size") is None:
        values["img_size"] = defaults(command)["img_size"]
    return TrainConfig.from_dict(values)


def to_argv(config: TrainConfig, command: str = "fit") -> list[str]:
    """``config`` as ``python -m train <command>`` options: every field the command takes, None left out (it is
    every such field's default), so the run gets exactly this config whatever the command's defaults."""
    argv: list[str] = []
    for name in defaults(command):
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag(name) if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, tuple | list):
            argv += [flag(name), *(str(v) for v in value)]
        else:
            argv += [flag(name), str(value)]
    return argv


def options_argv(options: Mapping[str, Any]) -> list[str]:
    """Named options (``{"folds": 3}``, predict's ``{"run": [4, 5], "out": "sub.csv"}``) as arguments: a list
    repeats its flag, True is the bare flag, False and None are left out."""
    argv: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag(name))
        elif isinstance(value, list | tuple):
            for item in value:
                argv += [flag(name), str(item)]
        else:
            argv += [flag(name), str(value)]
    return argv


# ---- the Train form's default image size, from the dataset's typical image -----------------------------
def suggest_img_size(width: float, height: float, longest: int = 80, multiple: int = 8) -> tuple[int, int]:
    """A training image size (width, height) for a dataset whose typical image is ``width`` x ``height`` px.

    Keeps the aspect ratio, shrinks the longest side to ``longest`` (CPU-sized; never enlarges a
    smaller image) and rounds each side to a multiple of ``multiple`` (at least ``multiple``):
    384 x 512 photos -> 64 x 80, 32 x 32 digits -> 32 x 32.
    """
    if not (width > 0 and height > 0):
        return longest * 4 // 5 // multiple * multiple, longest
    scale = min(1.0, longest / max(width, height))
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (width, height))  # type: ignore[return-value]


def typical_image_size(store: LabelStore) -> tuple[int, int] | None:
    """Median (width, height) of the labelled images, None when the store holds none with a size."""
    items = store.items(split="train")
    sizes = items[["width", "height"]].apply(pd.to_numeric, errors="coerce").dropna() if len(items) else items
    if len(sizes) == 0:
        return None
    return int(sizes["width"].median()), int(sizes["height"].median())


def suggested_img_size(store: LabelStore, longest: int = 80) -> tuple[int, int]:
    """The Train form's default image size for this store's dataset (``suggest_img_size`` of the
    typical image); 64 x 80 when no image size is known."""
    typical = typical_image_size(store)
    return suggest_img_size(*typical, longest=longest) if typical else DEFAULT_IMG_SIZE
