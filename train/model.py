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
from typing import Any

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

    def __init__(self, model_name: str, heads: Sequence[Head], *, drop_rate: float = 0.0,
                 pretrained: str | None = None, allow_hub: bool = False):
        super().__init__()
        check_model_name(model_name, allow_hub=allow_hub)
        self.model_name = model_name
        self.heads = list(heads)
        # pretrained: the local file of timm's weights for this model (``fetch_pretrained``), loaded by timm itself
        # (its key filters; the classifier is new since its size differs) without any network access here
        self.net = timm.create_model(model_name, pretrained=bool(pretrained),
                                     pretrained_cfg_overlay={"file": str(pretrained)} if pretrained else None,
                                     num_classes=sum(len(h.classes) for h in heads), drop_rate=drop_rate)

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


class PretrainedUnavailable(ValueError):
    """timm's pretrained weights for a model cannot be had (offline, or none exist); the message is one line."""


def pretrained_info(model_name: str) -> dict:
    """What timm's registry says of ``model_name``'s pretrained weights, without network or building the model:
    ``{"model", "img_size": [W, H], "mean", "std", "source" (hub id or URL, None if no weights)}``."""
    from timm.models import get_pretrained_cfg, is_model

    cfg = get_pretrained_cfg(model_name)
    if cfg is None and not is_model(model_name):
        raise ValueError(f"timm knows no model named {model_name!r}")
    size = (cfg.input_size if cfg else None) or (3, 224, 224)
    return {"model": model_name, "img_size": [int(size[2]), int(size[1])],
            "mean": list(cfg.mean) if cfg else list(IMAGENET_MEAN), "std": list(cfg.std) if cfg else list(IMAGENET_STD),
            "source": (cfg.hf_hub_id or cfg.url or cfg.file or None) if cfg else None}


def fetch_pretrained(model_name: str) -> str:
    """The local file of timm's pretrained weights for ``model_name``: found in the Hugging Face cache (no network),
    else downloaded into it. The product's only network access, and only for --pretrained: ``fit``/``score`` call
    it before a run row is written. Raises ``PretrainedUnavailable`` (one line, naming --pretrained-file) when the
    weights are not cached and the hub cannot be reached (no network, or ``HF_HUB_OFFLINE=1``)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise PretrainedUnavailable(f"timm has no pretrained weights for {model_name!r}; train from scratch "
                                    "(without --pretrained) or start from local weights with --pretrained-file PATH")
    if cfg.file:
        return str(cfg.file)
    try:
        if cfg.hf_hub_id:
            return _hub_file(cfg.hf_hub_id, cfg.hf_hub_filename)
        from timm.models._hub import download_cached_file

        return download_cached_file(cfg.url)  # type: ignore[arg-type]  # weights only at a URL: timm's own cache (torch hub's folder)
    except Exception as error:  # no network, hub unreachable, offline mode: one line, not a traceback
        if not _offline_error(error):
            raise
        raise PretrainedUnavailable(
            f"cannot fetch timm's pretrained weights for {model_name} ({cfg.hf_hub_id or cfg.url}): offline or the "
            f"hub is unreachable ({type(error).__name__}). Fetch them once where there is a network, or start from "
            "local weights with --pretrained-file PATH (.safetensors or state-dict .pth) instead of --pretrained"
        ) from None


def _hub_file(hub_id: str, filename: str | None) -> str:
    """The weights file of a timm hub repository, as timm looks for it (safetensors first): the cached copy if
    there is one, else a download."""
    import logging
    import socket
    import urllib.parse

    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, _, revision = hub_id.partition("@")
    candidates = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for name in candidates:
        cached = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(cached, str):
            return cached
    if constants.HF_HUB_OFFLINE:
        raise LocalEntryNotFoundError(f"{hub_id} is not in the cache and HF_HUB_OFFLINE is set")
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    if host and not any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        try:  # without DNS the hub client would retry for half a minute, logging each try
            socket.getaddrinfo(host, 443)
        except OSError as error:
            raise ConnectionError(f"cannot resolve {host}: {error}") from None
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would bury the one line that says what happened
    try:
        for index, name in enumerate(candidates):
            try:
                return hf_hub_download(repo, name, revision=revision or None)
            except LocalEntryNotFoundError:
                raise
            except EntryNotFoundError:
                if index == len(candidates) - 1:
                    raise
    finally:
        hub_log.setLevel(level)
    raise AssertionError("unreachable")


def _offline_error(error: BaseException) -> bool:
    """True for the errors of a machine without network (or in HF_HUB_OFFLINE mode)."""
    import urllib.error

    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(error, LocalEntryNotFoundError | OfflineModeIsEnabled | urllib.error.URLError
                  | ConnectionError | TimeoutError):
        return True
    names = {type(e).__name__ for e in (error, error.__cause__, error.__context__) if e is not None}
    return bool(names & {"ConnectError", "ConnectTimeout", "ConnectionError", "ProxyError", "ReadTimeout"})


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
    state: Any  # a state dict, or what torch.load found (checked below)
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
