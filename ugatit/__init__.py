"""U-GAT-IT for eo2sar: networks, checkpoint I/O (seed format and our own).

This package knows nothing of rasters or Dask. Its contract with :mod:`pipeline` is the
generator's input/output: float tensors in [-1, 1], N x 3 x H x W.
"""

from ugatit.checkpoint import (
    Checkpoint,
    export_generator,
    file_sha256,
    init_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from ugatit.config import ModelConfig
from ugatit.device import resolve_device, set_tf32
from ugatit.errors import CheckpointError, TrainingError, UgatitError
from ugatit.networks import Discriminator, ResnetGenerator

# TrainConfig only: `ugatit.train` must stay the module (ugatit.train.train(cfg)).
from ugatit.train import TrainConfig

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Discriminator",
    "ModelConfig",
    "ResnetGenerator",
    "UgatitError",
    "export_generator",
    "file_sha256",
    "init_checkpoint",
    "load_checkpoint",
    "read_meta",
    "resolve_device",
    "save_checkpoint",
    "set_tf32",
    "TrainConfig",
    "TrainingError",
]
