"""The one device policy: which device strings exist, and whether this machine has one.

The pipeline (config validation, the up-front check before any heavy work), app.py and
`load_checkpoint` all ask here, so a device string means the same thing everywhere:
`cpu`, `cuda`, `cuda:N` or `mps` (case and spaces ignored). `parse_device` checks the
syntax only (no GPU needed: a config may name a device of another machine, e.g. for a
`--scheduler` cluster); `check_device` also checks this machine has it. Both raise
`DeviceError` with a message and a hint a user can act on.

Also the float32 policy on GPUs: CUDA runs in true float32 unless the user opts in to
TF32 (`set_tf32`).
"""

from __future__ import annotations

import re

import torch

from ugatit.errors import DeviceError

_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
DEVICE_HINT = "use cpu, cuda or cuda:N (N = GPU index, as torch counts them), or mps"


def parse_device(device: str | torch.device) -> str:
    """The normalised device string (`cpu`, `cuda`, `cuda:N`, `mps`), syntax checked."""
    text = str(device).strip().lower()
    if not _DEVICE_RE.match(text):
        raise DeviceError(f"unknown device {str(device)!r}", hint=DEVICE_HINT)
    return text


def check_device(device: str | torch.device) -> str:
    """`parse_device`, then refuse a device this machine does not have; returns it."""
    text = parse_device(device)
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {text} asked for, but CUDA is not available on this machine "
                f"(torch {torch.__version__})",
                hint="use --device cpu, or install a CUDA build of torch on a GPU machine",
            )
        count = torch.cuda.device_count()
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= count:
            raise DeviceError(
                f"device {text} asked for, but only {count} CUDA device(s) exist",
                hint=f"use cuda:0 .. cuda:{count - 1}",
            )
    elif text == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device mps asked for, but MPS is not available on this machine",
                          hint="use --device cpu")
    return text


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch.device for `device`, after `check_device`."""
    return torch.device(check_device(device))


def set_tf32(allowed: bool) -> None:
    """Allow or forbid TF32 in cuDNN convolutions and cuBLAS matmuls (process-wide).

    cuDNN allows TF32 by default on Ampere and newer. Measured on an H200 with the
    published architecture (ngf 64, random weights): TF32 moves generator outputs by up to
    2.7e-3 from the CPU float32 result, against 5.9e-6 with TF32 off
    (benchmarks/results/gpu_check_h200.json). The default path claims float32 parity, so
    callers turn it off unless the user asks for speed.
    """
    torch.backends.cudnn.allow_tf32 = allowed
    torch.backends.cuda.matmul.allow_tf32 = allowed
