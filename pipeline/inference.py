"""The Dask task: a batch of tiles read, scaled and run through the generator.

Where the tasks run (local threads, a cluster) is pipeline/scheduling.py.

The model never travels in the task graph (DESIGN.md invariant 5): a task carries the
checkpoint PATH and its sha256, and `get_generator` loads it once per process (and per
device) and keeps it (`functools.lru_cache`, keyed by path, hash and device, so a
changed file under the same path is reloaded). A task also carries the input path and
the tile origins and reads its own tiles, so nothing scene-sized is ever shipped.

Determinism (measured with torch 2.13 CPU, ugatit light generator, ngf 4 and 64):
  * a tile computed in a batch of 4 differs from the same tile computed alone by up to
    ~1e-6 (oneDNN picks other kernels / blockings for other batch sizes);
  * the same tile computed with 1 or 2 intra-op threads differs by up to ~1e-6.
Those last-bit differences would make the output bytes depend on --batch-size and on
the scheduler. So on CPU every tile is forwarded ALONE (N = 1) with torch's intra-op
threads pinned to 1 in every process; parallelism comes from Dask running several
tasks at once (threads in-process, or worker processes), one core each. On 2 cores this
is also no slower: the original code measured 2.2 tiles/s at batch 1 against 1.4 at
batch 8. `batch_size` therefore only sets the task granularity on CPU.

On CUDA, throughput needs batches, and cuDNN picks other algorithms for other batch
shapes (an H200 gave up to 1.5e-6 differences between batch 8 and 16). So every GPU
forward has the SAME shape, CUDA_MICRO_BATCH tiles, the last one of a task padded with
zero tiles, and cuDNN runs in deterministic mode: a tile's output then depends neither on
--batch-size nor on its companions or position (checked on an H200 by
scripts/gpu_determinism.py). --batch-size still sets how many tiles a task reads.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import torch

from pipeline.errors import ModelError, PipelineError
from pipeline.mosaic import gdal_env  # bounds GDAL's block cache in workers too
from pipeline.radiometry import Scaling, to_model_input
from pipeline.tiling import TileGrid, read_tile
from ugatit import CheckpointError, ModelConfig, load_checkpoint, set_tf32

CPU_TORCH_THREADS = 1  # see module docstring: fixed for bit-identical outputs
# One forward shape on GPUs, for the same bytes (module docstring). Equal to the default
# --batch-size, so the default path never pads; larger batches run as several forwards.
CUDA_MICRO_BATCH = 4


@dataclass(frozen=True)
class InferenceJob:
    """Everything a batch task needs besides its tile numbers; small and picklable."""

    input_path: str
    bands: tuple[int, ...]
    nodata: float | None
    scaling: Scaling
    grid: TileGrid
    output_bands: int
    heatmap: bool
    model_path: str
    model_sha256: str
    device: str
    tf32: bool = False


@dataclass
class TileOutput:
    """Generator output of one tile: out [C, T, T] in [-1, 1], heat [T, T] or None."""

    index: int
    out: np.ndarray
    heat: np.ndarray | None


_load_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached_generator(path: str, sha256: str, device: str) -> tuple[torch.nn.Module, ModelConfig]:
    ckpt = load_checkpoint(path, device=device, networks=("genA2B",))
    return ckpt.genA2B, ckpt.config


def get_generator(path: str, sha256: str, device: str) -> tuple[torch.nn.Module, ModelConfig]:
    """The eval-mode A->B generator, loaded once per (path, sha256, device) per process."""
    with _load_lock:  # two threads asking at once must not load twice
        try:
            return _cached_generator(path, sha256, device)
        except CheckpointError as exc:
            raise ModelError(
                str(exc), path=path, hint="pass an eo2sar/U-GAT-IT checkpoint with --model"
            ) from None


def pin_threads(device: str, tf32: bool = False) -> None:
    """Per-process torch settings for the same bytes: 1 intra-op thread on CPU; on CUDA
    deterministic cuDNN and TF32 only when asked (see the module docstring)."""
    if device.startswith("cuda"):
        # float32 parity: cuDNN convolutions default to TF32 on Ampere and newer. On an
        # H200 (ngf 64, Landsat 8 scene) TF32 moved outputs by up to 2e-3 (unit scale)
        # from the CPU result and ran 95 tiles/s; with TF32 off the difference is 3e-6
        # (float32 rounding) at 25-35 tiles/s. Reduced precision is opt-in (tf32: true).
        set_tf32(tf32)
        torch.backends.cudnn.deterministic = True  # same algorithm for the same shape
        torch.backends.cudnn.benchmark = False
    elif torch.get_num_threads() != CPU_TORCH_THREADS:
        torch.set_num_threads(CPU_TORCH_THREADS)


def run_batch(job: InferenceJob, tiles: Sequence[int]) -> list[TileOutput | None]:
    """Read, scale and translate the given tiles; None for a tile with no valid pixel.

    Runs in a Dask task: any thread of the local scheduler or any distributed worker.
    """
    pin_threads(job.device, job.tf32)
    gen, _ = get_generator(job.model_path, job.model_sha256, job.device)
    size = job.grid.tile
    inputs: list[np.ndarray] = []
    keep: list[int] = []
    results: list[TileOutput | None] = [None] * len(tiles)
    with gdal_env(), rasterio.open(job.input_path) as ds:
        for k, index in enumerate(tiles):
            row, col = job.grid.origin(index)
            data, valid, inside = read_tile(ds, job.bands, row, col, size, nodata=job.nodata)
            if inside == 0:
                continue
            inputs.append(to_model_input(data, valid, job.scaling))
            keep.append(k)
    if not inputs:
        return results
    x = torch.from_numpy(np.stack(inputs))
    dev = torch.device(job.device)
    try:
        out, heat = _forward(gen, x, dev, job.heatmap, size)
    except torch.OutOfMemoryError:
        raise PipelineError(
            f"out of memory on {job.device} with {x.shape[0]} tiles of {size} px",
            path=job.model_path,
            hint="lower --batch-size (or --tile-size)",
        ) from None
    out_np = out.numpy()
    if job.output_bands == 1:
        out_np = out_np.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    heat_np = None if heat is None else heat.numpy()[:, 0]
    for j, k in enumerate(keep):
        results[k] = TileOutput(
            index=tiles[k],
            out=np.ascontiguousarray(out_np[j]),
            heat=None if heat_np is None else np.ascontiguousarray(heat_np[j]),
        )
    return results


def forward_fixed_shape(
    gen: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    dev: torch.device,
    micro: int,
    heatmap: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `x` [N, C, T, T] through `gen` in forwards of exactly `micro` tiles.

    The last chunk is padded with zero tiles (instance norm keeps samples independent,
    so padding cannot change real tiles), and only the real rows come back, on the CPU.
    """
    outs, heats = [], []
    for i in range(0, x.shape[0], micro):
        chunk = x[i : i + micro]
        k = chunk.shape[0]
        if k < micro:
            chunk = torch.cat([chunk, chunk.new_zeros((micro - k, *chunk.shape[1:]))])
        y, _, h = gen(chunk.to(dev))
        outs.append(y[:k].float().cpu())
        if heatmap:
            heats.append(h[:k].float().cpu())
    return torch.cat(outs), (torch.cat(heats) if heatmap else None)


def _forward(
    gen: torch.nn.Module, x: torch.Tensor, dev: torch.device, heatmap: bool, size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generator outputs [N, 3, T, T] and heatmaps upsampled to [N, 1, T, T] (or None)."""
    with torch.inference_mode():
        if dev.type == "cpu":
            parts = [gen(x[i : i + 1]) for i in range(x.shape[0])]
            out = torch.cat([p[0] for p in parts])
            heat = torch.cat([p[2] for p in parts]) if heatmap else None
        else:
            out, heat = forward_fixed_shape(gen, x, dev, CUDA_MICRO_BATCH, heatmap)
        if heat is not None:
            heat = torch.nn.functional.interpolate(
                heat, size=(size, size), mode="bilinear", align_corners=False
            )
    return out, heat
