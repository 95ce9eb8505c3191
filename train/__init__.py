"""Trainer: reproducible timm training on a label snapshot, self-describing checkpoints, prediction.

    from train import fit, load_model
    result = fit(db="labels.db", epochs=5)
    model, meta = load_model(result["best_checkpoint"])
"""

from train.checkpoint import CheckpointError, load_model
from train.loop import TrainConfig, fit

__all__ = ["CheckpointError", "TrainConfig", "fit", "load_model"]
