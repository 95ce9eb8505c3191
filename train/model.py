"""Models: any timm backbone by name with one classification head per target, and the losses.

The backbone is ``timm.create_model(name, num_classes=sum of head sizes)``: timm's own classifier
produces every head's logits side by side and ``forward`` splits them into a dict, so a timm
checkpoint maps onto ``net.*`` unchanged apart from the classifier (skipped when shapes differ).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from core.schema import Schema

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Head:
    """One output of the model: a target name and its class names (logit k is class k)."""

    name: str
    classes: tuple[str, ...]


def heads_for(schema: Schema, mode: str = "multi") -> list[Head]:
    """Heads for a schema: ``multi`` = one per target (competition: mask 3, gender 2, age_group 3;
    a generic dataset: one per label column); ``single`` = one head over the combined classes (18)."""
    if mode == "single":
        if not schema.class_attributes:
            raise ValueError(f"schema {schema.name} has no combined class; use --heads multi")
        return [Head("class", tuple(schema.class_names()))]
    if mode != "multi":
        raise ValueError(f"heads must be 'multi' or 'single', not {mode!r}")
    return [Head(name, tuple(schema.target_classes(name))) for name in schema.targets]


# timm treats these name prefixes as sources: ``hf-hub:``/``hf_hub:`` download a config (and weights) from the
# model hub, ``local-dir:`` reads a folder's config.json. ``timm.create_model`` contacts them even with
# ``pretrained=False``, so such a name from a checkpoint, a saved config or a text box must never reach it.
SOURCE_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


class ModelNameRefused(ValueError):
    """A model name that is not a timm registry architecture (or a hub/local source without a pretrained request)."""


def check_model_name(name: object, *, allow_hub: bool = False) -> str:
    """The one gate every model name passes before ``timm.create_model``; returns the name.

    A plain timm registry name (``resnet18d``, ``resnet18d.a1_in1k``) is accepted. ``hf-hub:owner/name`` and
    ``local-dir:/path`` are accepted only with ``allow_hub=True``, i.e. a name the user typed together with an
    explicit pretrained-weights request; names read from checkpoints, configs or pages pass ``allow_hub=False``.
    Raises ``ModelNameRefused`` (a ``ValueError``) with one line saying why.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelNameRefused(f"model name must be a non-empty text, not {name!r}")
    if name.lower().startswith(SOURCE_PREFIXES):
        if allow_hub:
            return name
        raise ModelNameRefused(f"model {name!r} names a download or a local folder, not a timm architecture; "
                               "such names are used only with an explicit pretrained-weights request")
    if len(name) > 200 or not timm.is_model(name):
        raise ModelNameRefused(f"unknown model {name[:200]!r}: not in timm's model registry (see timm.list_models())")
    return name


class HeadsModel(nn.Module):
    """timm backbone ``net`` whose classifier emits all heads; forward returns {head: logits (b, k)}.

    ``allow_hub``: see ``check_model_name``; only an explicit pretrained request may pass True.
    """

    def __init__(self, model_name: str, heads: Sequence[Head], *, drop_rate: float = 0.0, allow_hub: bool = False):
        super().__init__()
        check_model_name(model_name, allow_hub=allow_hub)
        self.model_name = model_name
        self.heads = list(heads)
        self.net = timm.create_model(model_name, pretrained=False, num_classes=sum(len(h.classes) for h in heads),
                                     drop_rate=drop_rate)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: float (b, 3, h, w), normalised -> {head name: logits float (b, n_classes)}."""
        logits = self.net(images)
        parts = torch.split(logits, [len(h.classes) for h in self.heads], dim=1)
        return {h.name: part for h, part in zip(self.heads, parts)}

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel normalisation the backbone expects (timm's default config; ImageNet if none)."""
        cfg = getattr(self.net, "pretrained_cfg", None) or {}
        return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a timm, DDP or labelfix state dict as ``net`` names them (drop module./model./net.)."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "model.", "net."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def read_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file (.safetensors, or a state-dict .pth/.pt read with ``weights_only``).

    Raises ``WeightsFileError`` (a ``ValueError``) with one line naming the file
    for a missing file, a pickle holding code or objects, a damaged file, or one without any tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: no such weights file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save zip archive or a raw pickle
            state = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled code
            for key in ("state_dict", "model", "model_state_dict"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
        else:
            raise WeightsFileError(f"{path}: not a weights file (expected .safetensors or a torch.save state dict)")
    except WeightsFileError:
        raise
    except Exception as error:  # UnpicklingError (code or objects refused), SafetensorError, zip errors
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise WeightsFileError(f"{path}: not a loadable weights file ({first}); only tensors are read, never "
                               "pickled objects") from None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{path}: holds no tensors (expected a state dict of weights)")
    return state


class WeightsFileError(ValueError):
    """A ``--pretrained-file`` that is not a loadable weights file; the message names the file."""


def check_model_options(config: object) -> None:
    """What a run checks before it writes anything: the model name (``check_model_name``; the hub only when the
    config explicitly asks for pretrained weights) and the ``pretrained_file``, if any (``read_weights_file``)."""
    check_model_name(getattr(config, "model", None), allow_hub=getattr(config, "pretrained", False) is True)
    if getattr(config, "pretrained_file", None):
        read_weights_file(config.pretrained_file)  # type: ignore[attr-defined]


def load_pretrained(model: HeadsModel, path: str | os.PathLike[str]) -> list[str]:
    """Load local backbone weights (.safetensors, or a state dict .pth/.pt loaded with weights_only).

    Tensors whose shape differs (the classifier, usually) are skipped; returns the notes printed.
    """
    state = read_weights_file(path)
    path = Path(path)
    state = _strip_prefixes({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
    own = model.net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    notes = [f"pretrained: skipped {k} (shape {tuple(v.shape)} here {tuple(own[k].shape)})"
             for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in usable]
    unused = [k for k in state if k not in own]
    model.net.load_state_dict(usable, strict=False)
    notes.append(f"pretrained: loaded {len(usable)} of {len(own)} tensors from {path.name}"
                 + (f"; {len(missing)} left at their initial values" if missing else "")
                 + (f"; {len(unused)} in the file unused" if unused else ""))
    for note in notes:
        print(note)
    return notes


def make_loss(kind: str = "ce", smoothing: float = 0.1, gamma: float = 2.0):
    """Loss function (logits (b, k), targets (b,) int64) -> scalar mean loss.

    ``ce`` cross-entropy, ``smooth`` cross-entropy with label smoothing ``smoothing``, ``focal``
    focal loss with focusing parameter ``gamma`` (down-weights easy examples).
    """
    if kind == "ce":
        return lambda logits, target: F.cross_entropy(logits.float(), target)
    if kind == "smooth":
        return lambda logits, target: F.cross_entropy(logits.float(), target, label_smoothing=smoothing)
    if kind == "focal":
        def focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(logits.float(), target, reduction="none")
            return ((1 - torch.exp(-ce)) ** gamma * ce).mean()
        return focal
    raise ValueError(f"loss must be ce, smooth or focal, not {kind!r}")
