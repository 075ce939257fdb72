"""Device selection and the float32 policy on GPUs.

Kept apart from checkpoint I/O because the pipeline and app.py need the same two rules:
a device string is checked before any heavy work, and CUDA runs in true float32 unless
the user opts in to TF32.
"""

from __future__ import annotations

import torch

from ugatit.errors import CheckpointError


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse a device string and check it exists here, with a message a user can act on."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"bad device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CheckpointError(f"device {device!r} asked for, but CUDA is not available on "
                                  f"this machine (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CheckpointError(f"device {device!r} asked for, but only "
                                  f"{torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type not in ("cpu", "mps"):
        raise CheckpointError(f"unsupported device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return dev


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
