"""Trainer: reproducible timm training on a label snapshot, self-describing checkpoints, prediction.

    from train import fit, load_model
    result = fit(db="labels.db", epochs=5)
    model, meta = load_model(result["best_checkpoint"])

The names below load on first use (module ``__getattr__``), so ``import train.config`` or ``train.jobs``
(what the dashboard imports) does not import torch or timm.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"CheckpointError": "train.checkpoint", "load_model": "train.checkpoint", "TrainConfig": "train.config",
         "fit": "train.loop"}
__all__ = ["CheckpointError", "TrainConfig", "fit", "load_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'train' has no attribute {name!r}")
