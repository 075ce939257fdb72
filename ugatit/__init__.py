"""U-GAT-IT for eo2sar: networks, checkpoint I/O (seed format and our own).

This package knows nothing of rasters or Dask. Its contract with :mod:`pipeline` is the
generator's input/output: float tensors in [-1, 1], N x 3 x H x W.
"""

from ugatit.checkpoint import (
    Checkpoint,
    export_generator,
    init_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from ugatit.config import ModelConfig
from ugatit.device import check_device, parse_device, resolve_device, set_tf32
from ugatit.errors import CheckpointError, DeviceError, TrainingError, UgatitError
from ugatit.io import atomic_path, atomic_write_bytes, atomic_write_text, sha256_file
from ugatit.networks import Discriminator, NormStats, ResnetGenerator

# TrainConfig only: `ugatit.train` must stay the module (ugatit.train.train(cfg)).
from ugatit.train import TrainConfig

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DeviceError",
    "Discriminator",
    "ModelConfig",
    "NormStats",
    "ResnetGenerator",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_device",
    "UgatitError",
    "export_generator",
    "init_checkpoint",
    "parse_device",
    "load_checkpoint",
    "read_meta",
    "resolve_device",
    "save_checkpoint",
    "sha256_file",
    "set_tf32",
    "TrainConfig",
    "TrainingError",
]
