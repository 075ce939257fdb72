"""The Dask task: a batch of tiles read, scaled and run through the generator.

Where the tasks run (local threads, a cluster) is pipeline/run/scheduling.py.

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
shapes (an H200 gave up to 1.5e-6 differences between batch 8 and 16). So every forward
has the SAME shape, `micro_batch` tiles (--micro-batch; 1 on CPU, CUDA_MICRO_BATCH on a
GPU), the last one of a task padded with zero tiles, and cuDNN runs in deterministic
mode: a tile's output then depends neither on --batch-size nor on its companions or
position (checked on an H200 by scripts/gpu_determinism.py). On CUDA the inputs of a task
go through pinned memory with non-blocking copies, every forward of the task is queued
before the results come back in one copy, and the heatmap is upsampled on the device.

Scene normalisation (`--norm scene`, DESIGN.md invariant 3): `scene_norm_stats` runs the
scene's sample of tiles (pipeline/run/norm_sample.py) through the generator ONCE, in one
float32 forward with autocast off, pooling every normalisation statistic
(ugatit.networks.ResnetGenerator.collect_stats); the job then carries those small tensors
(`InferenceJob.norm_stats`) and every forward of every task uses them. They are computed
before any batch task exists, with the same thread pinning and deterministic settings, so
the same-bytes guarantees below hold with them too.

Execution options (docs/performance.md has their speed and deviation from fp32):
`precision` bf16/fp16 run the forward under autocast (weights stay float32; the
instance/layer norms see reduced-precision activations), tf32 allows TF32 convolutions
on CUDA; `channels_last` converts a copy of the generator and the inputs to NHWC;
`compile` wraps the generator in torch.compile, compiled once per process for the fixed
forward shape, with a silent fall back to eager where it cannot compile (no C++
compiler, an unsupported backend). For fixed values of these, the same-bytes guarantees
above hold.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
import torch

from pipeline.config import CUDA_MICRO_BATCH
from pipeline.errors import ModelError, PipelineError
from pipeline.inputs.radiometry import Scaling, to_model_input
from pipeline.run.mosaic import gdal_env  # bounds GDAL's block cache in workers too
from pipeline.run.tiling import TileGrid, read_tiles
from ugatit import CheckpointError, ModelConfig, NormStats, load_checkpoint, set_tf32

__all__ = [
    "CUDA_MICRO_BATCH", "InferenceJob", "TileOutput", "band_mean", "device_band_mean",
    "forward_fixed_shape", "forward_lock", "get_generator", "padded_input",
    "prepare_generator", "run_batch", "scene_norm_stats",
]

log = logging.getLogger("pipeline")

CPU_TORCH_THREADS = 1  # see module docstring: fixed for bit-identical outputs
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: torch.compile's backend for --compile; tests substitute a counting one (no C++ needed)
COMPILE_BACKEND: Any = "inductor"
#: gen(x) or gen(x, stats) -> (out, cam_logit, heatmap)
Generator = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


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
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    micro_batch: int = 1
    #: the generator channels written, in order (a VV/VH model's chosen polarisations);
    #: None: a 3-channel model's mean (output_bands 1) or all channels
    channels: tuple[int, ...] | None = None
    #: the scene's normalisation statistics (CPU tensors, a few KiB); None = per tile.
    #: Not compared: a job's identity is its settings (and tensors have no truth value).
    norm_stats: NormStats | None = field(default=None, compare=False)


@dataclass
class TileOutput:
    """Generator output of one tile: out [C, T, T] in [-1, 1], heat [T, T] or None, and
    the input's validity [T, T] as the task read it (`valid`; the pixels past the scene
    edge are padding): the client builds each output block's mask from its tiles'
    masks instead of reading every band of the block again (~19 ms per block)."""

    index: int
    out: np.ndarray
    heat: np.ndarray | None
    valid: np.ndarray | None = None


_load_lock = threading.RLock()  # get_runner -> get_generator


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


def pin_threads(device: str, precision: str = "fp32") -> None:
    """Per-process torch settings for the same bytes: 1 intra-op thread on CPU; on CUDA
    deterministic cuDNN and TF32 only for precision tf32 (see the module docstring)."""
    if device.startswith("cuda"):
        # float32 parity: cuDNN convolutions default to TF32 on Ampere and newer. On an
        # H200 (ngf 64, Landsat 8 scene) TF32 moved outputs by up to 2e-3 (unit scale)
        # from the CPU result and ran 95 tiles/s; with TF32 off the difference is 3e-6
        # (float32 rounding) at 25-35 tiles/s. Reduced precision is opt-in.
        set_tf32(precision == "tf32")
        torch.backends.cudnn.deterministic = True  # same algorithm for the same shape
        torch.backends.cudnn.benchmark = False
    elif torch.get_num_threads() != CPU_TORCH_THREADS:
        torch.set_num_threads(CPU_TORCH_THREADS)


def run_batch(job: InferenceJob, tiles: Sequence[int]) -> list[TileOutput | None]:
    """Read, scale and translate the given tiles; None for a tile with no valid pixel.

    Runs in a Dask task: any thread of the local scheduler or any distributed worker.
    """
    pin_threads(job.device, job.precision)
    gen = get_runner(job)
    size = job.grid.tile
    inputs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    keep: list[int] = []
    results: list[TileOutput | None] = [None] * len(tiles)
    origins = [job.grid.origin(index) for index in tiles]
    with gdal_env(), rasterio.open(job.input_path) as ds:
        reads = read_tiles(ds, job.bands, origins, size, nodata=job.nodata)
        for k, (data, valid, inside) in enumerate(reads):
            if inside:
                inputs.append(to_model_input(data, valid, job.scaling))
                masks.append(valid)
                keep.append(k)
    if not inputs:
        return results
    x = torch.from_numpy(np.stack(inputs))
    try:
        out, heat = forward_fixed_shape(
            gen, x, torch.device(job.device), job.micro_batch, job.heatmap,
            precision=job.precision, channels_last=job.channels_last, stats=job.norm_stats,
            mean_bands=job.output_bands == 1 and job.channels is None,
        )
    except torch.OutOfMemoryError:
        raise PipelineError(
            f"out of memory on {job.device} with {job.micro_batch} tiles of {size} px "
            "per forward",
            path=job.model_path,
            hint="lower --micro-batch (or --tile-size)",
        ) from None
    out_np = out.numpy()  # [N, output_bands, T, T]: forward_fixed_shape took the band mean
    if job.channels is not None and tuple(job.channels) != tuple(range(out_np.shape[1])):
        out_np = out_np[:, list(job.channels)]  # the polarisations asked for
    heat_np = None if heat is None else heat.numpy()[:, 0]
    for j, k in enumerate(keep):
        results[k] = TileOutput(
            index=tiles[k],
            out=np.ascontiguousarray(out_np[j]),
            heat=None if heat_np is None else np.ascontiguousarray(heat_np[j]),
            valid=masks[j],
        )
    return results


def get_runner(job: InferenceJob) -> Generator:
    """The generator prepared for `job`'s execution options, once per process."""
    with _load_lock:  # one load (and one compilation) even if two threads ask at once
        return _cached_runner(
            job.model_path, job.model_sha256, job.device, job.channels_last, job.compile,
            (job.micro_batch, len(job.bands), job.grid.tile), job.precision,
            job.norm_stats is not None,
        )


@functools.lru_cache(maxsize=4)
def _cached_runner(path: str, sha256: str, device: str, channels_last: bool, compile: bool,
                   shape: tuple[int, int, int], precision: str, scene_norm: bool = False
                   ) -> Generator:
    gen, _ = get_generator(path, sha256, device)
    return prepare_generator(gen, torch.device(device), shape, precision=precision,
                             channels_last=channels_last, compile=compile,
                             scene_norm=scene_norm)


def prepare_generator(gen: torch.nn.Module, dev: torch.device, shape: tuple[int, int, int], *,
                      precision: str = "fp32", channels_last: bool = False,
                      compile: bool = False, scene_norm: bool = False) -> Generator:
    """`gen` made ready for forwards of `shape` = (micro-batch, channels, tile): a
    channels-last copy and/or a compiled wrapper (the benchmarks time the same object).
    `scene_norm`: the forwards will get a scene's NormStats (compiled for that call)."""
    if channels_last:  # .to(memory_format) converts in place: keep the cached one intact
        gen = copy.deepcopy(gen).to(memory_format=torch.channels_last)
    if not compile:
        return gen
    return _compiled_or_eager(gen, shape, dev, precision, channels_last, scene_norm)


def _compiled_or_eager(gen: torch.nn.Module, shape: tuple[int, int, int], dev: torch.device,
                       precision: str, channels_last: bool, scene_norm: bool = False
                       ) -> Generator:
    """torch.compile(gen), compiled now by one forward of the fixed shape; `gen` itself
    when that fails (compilation needs a working backend: a C++ compiler on CPU, Triton
    on CUDA), so `--compile` never makes a run fail that eager would finish. With
    `scene_norm` the warm-up forward passes statistics (of the zero input: any values
    do, they are tensor inputs of the graph), so the scene's own do not recompile it."""
    micro, channels, tile = shape
    log.info("compiling the generator for forwards of %d x %d x %d x %d on %s (once per "
             "process; a minute or more on a CPU)", micro, channels, tile, tile, dev)
    compiled = torch.compile(gen, dynamic=False, backend=COMPILE_BACKEND)
    # The warm-up is a real call: a host tensor through `forward_fixed_shape`, statistics
    # made as `scene_norm_stats` makes them. Dynamo guards on how its inputs were made
    # (inference tensors or not: the dispatch key set); a warm-up input made any other
    # way let the first real forward compile a second time, outside this try (issue 16).
    x = torch.zeros((micro, channels, tile, tile))
    try:
        stats = None
        if scene_norm:
            with torch.inference_mode():
                stats = gen.collect_stats(x.to(dev)).to("cpu")
        forward_fixed_shape(compiled, x, dev, micro, False, precision=precision,
                            channels_last=channels_last, stats=stats)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
        log.info("torch.compile unavailable on %s (%s: %s); running eager", dev,
                 type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return gen
    return compiled


def _autocast(dev: torch.device, precision: str) -> torch.autocast:
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)


def forward_fixed_shape(
    gen: Generator,
    x: torch.Tensor,
    dev: torch.device,
    micro: int,
    heatmap: bool,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    stats: NormStats | None = None,
    mean_bands: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `x` [N, C, T, T] through `gen` in forwards of exactly `micro` tiles, each
    normalised with the scene's `stats` when given (else by its own statistics).

    The last chunk is padded with zero tiles (per-sample statistics, or the scene's fixed
    ones, keep samples independent, so padding cannot change real tiles). Returns
    float32 outputs [N, 3, T, T] ([N, 1, T, T] with `mean_bands`: the band mean, see
    `band_mean`) and the heatmaps upsampled to [N, 1, T, T] (or None), on the CPU.

    On CUDA the input goes into ONE pinned buffer already padded to whole forwards
    (`padded_input`: a `torch.cat` with new zeros would be pageable memory, and a
    non-blocking copy from pageable memory synchronises), every forward is queued before
    one copy brings the results back, and the forwards of a process take turns on the GPU
    (`forward_lock`), so two tasks per GPU overlap their reads with each other's forwards.
    Every call passes its inputs the same way (views of a buffer made outside inference
    mode; statistics copied inside it), so a compiled `gen` sees inputs of one kind and
    compiles once (`_compiled_or_eager`).
    """
    size = x.shape[-1]
    n = x.shape[0]
    cuda = dev.type == "cuda"
    buf = padded_input(x, micro, pin=cuda)
    outs, heats = [], []
    with forward_lock(dev), torch.inference_mode(), _autocast(dev, precision):
        on_dev = None if stats is None else stats.to(dev, copy=True)
        for i in range(0, n, micro):
            k = min(micro, n - i)
            chunk = buf[i : i + micro].to(dev, non_blocking=cuda)
            if channels_last:
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            y, _, h = gen(chunk) if on_dev is None else gen(chunk, on_dev)
            y = y[:k].float()
            outs.append(band_mean(y) if mean_bands and dev.type != "mps" else y)
            if heatmap:
                heats.append(torch.nn.functional.interpolate(
                    h[:k].float(), size=(size, size), mode="bilinear", align_corners=False
                ))
        out = torch.cat(outs).cpu().contiguous()
        heat = torch.cat(heats).cpu().contiguous() if heatmap else None
    if mean_bands and dev.type == "mps":  # MPS has no float64: the same mean on the host
        out = band_mean(out)
    return out, heat


def padded_input(x: torch.Tensor, micro: int, *, pin: bool) -> torch.Tensor:
    """`x` [N, ...] copied into one buffer of whole forwards (N rounded up to a multiple of
    `micro`), the padding zero; page-locked when `pin` (CUDA), so every chunk's copy to
    the device can be non-blocking, the padded last one included. Made outside inference
    mode, so every chunk is a view of a normal tensor on every call."""
    n = x.shape[0]
    rows = -(-n // micro) * micro
    buf = torch.empty((rows, *x.shape[1:]), dtype=x.dtype, pin_memory=pin)
    buf[:n].copy_(x)
    buf[n:].zero_()
    return buf


def band_mean(y: torch.Tensor) -> torch.Tensor:
    """The mean of the bands of y [N, C, T, T] -> [N, 1, T, T] float32, on y's device.

    On a GPU: float64 ((y0 + y1) + y2) / C (`device_band_mean`), the exact operations
    (same order, same rounding) of numpy's `y.mean(axis=1, dtype=np.float64)` cast to
    float32, which the host did before, so the output bytes do not change; it costs the
    host nothing and brings back a third of the bytes. On the CPU numpy itself (0.33 ms
    a tile against 2.0 ms for torch's float64 ops on one intra-op thread, measured)."""
    if y.device.type == "cpu":
        mean = y.numpy().mean(axis=1, keepdims=True, dtype=np.float64)
        return torch.from_numpy(mean.astype(np.float32))
    return device_band_mean(y)


def device_band_mean(y: torch.Tensor) -> torch.Tensor:
    """`band_mean` in torch operations: IEEE float64 add and divide round the same on any
    device with float64 (CPU, CUDA; not MPS), so this gives numpy's bytes."""
    acc = y[:, 0:1].double()
    for c in range(1, y.shape[1]):
        acc = acc + y[:, c : c + 1].double()
    return (acc / float(y.shape[1])).float()


_FORWARD_LOCKS: dict[int, threading.Lock] = {}
_FORWARD_LOCKS_GUARD = threading.Lock()


def forward_lock(dev: torch.device) -> contextlib.AbstractContextManager[Any]:
    """On CUDA, the lock that the forwards of this process on `dev` take turns with;
    on CPU no lock (every task forwards on its own core at the same time).

    A GPU worker runs two batch tasks (pipeline/run/cluster.py: each asks for half a GPU):
    while one task's forwards run, the other reads and scales its tiles; the lock keeps
    their forwards (and device memory) one task at a time, which is what one GPU
    resource per task did before, without also serialising the reads."""
    if dev.type != "cuda":
        return contextlib.nullcontext()
    index = dev.index if dev.index is not None else 0
    with _FORWARD_LOCKS_GUARD:
        return _FORWARD_LOCKS.setdefault(index, threading.Lock())


def scene_norm_stats(job: InferenceJob, tiles: Sequence[int]) -> NormStats:
    """The scene's normalisation statistics, pooled over `tiles` (the sample of
    pipeline/run/norm_sample.py) in ONE float32 forward on the job's device; CPU tensors.

    Runs where the batch tasks run (this process, or a task on a cluster), pinned like
    them, so it is deterministic: the same process-wide settings, so --precision tf32
    lets its convolutions use TF32 as the tiles' do (switching TF32 off here would flip
    it under another scene's tasks running at the same time); bf16/fp16 autocast is off.
    Tiles are read and scaled exactly as `run_batch` does, invalid pixels included
    (filled with -1), for the fall back of a scene with no fully valid tile. Memory: the
    activations of len(tiles) tiles at once.
    """
    pin_threads(job.device, job.precision)
    gen, _ = get_generator(job.model_path, job.model_sha256, job.device)
    origins = [job.grid.origin(index) for index in tiles]
    with gdal_env(), rasterio.open(job.input_path) as ds:
        inputs = [to_model_input(data, valid, job.scaling) for data, valid, _ in
                  read_tiles(ds, job.bands, origins, job.grid.tile, nodata=job.nodata)]
    x = torch.from_numpy(np.stack(inputs)).to(job.device)
    try:
        with torch.inference_mode():
            stats = gen.collect_stats(x)
    except torch.OutOfMemoryError:
        raise PipelineError(
            f"out of memory on {job.device} pooling the normalisation statistics of "
            f"{len(tiles)} tiles of {job.grid.tile} px in one forward",
            path=job.model_path,
            hint="lower --norm-sample",
        ) from None
    return stats.to("cpu")
