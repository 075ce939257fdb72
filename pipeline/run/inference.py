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

Scene normalisation (`--norm scene`, DESIGN.md invariant 3): `scene_norm_pass` runs the
scene's sample of tiles (pipeline/run/norm_sample.py) through the generator once, pooled
layer by layer (ugatit.networks.ResnetGenerator.pooled_forward): the sample is cut into
the run's own forwards (`micro_batch` tiles, the last padded with zero tiles that never
enter the statistics), forwarded by the run's threads in its precision, and every norm
layer's statistics are combined over the whole sample (each tile's core: the part of
the scene it alone covers, pipeline/run/norm_sample.py) before any forward goes on. Each
forward then ran exactly the ops, on the same tensors, that `forward_fixed_shape` runs
for those tiles with the finished statistics, so the pass's outputs ARE those tiles'
outputs (the same bytes; tested) and the run does not forward them again: the pass
costs only its pooling. The job then carries the statistics (`InferenceJob.norm_stats`)
and the tiles already done (`InferenceJob.done`), which `run_batch` skips; the blend
takes their outputs from the pass (pipeline/run/scheduling.py). With --compile the pass
runs the same generator eager (a compiled graph cannot stop at every norm layer): its
tiles differ from the compiled forwards by float32 rounding (~1e-5), and the bytes still
depend neither on blocks, batches, workers nor scheduler (the pass is a function of the
scene). Statistics are float32 tensors pooled in float64; in bf16/fp16 they are those of
the reduced-precision activations, as the tiles see them.

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
import os
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
from pipeline.run.norm_sample import core_region
from pipeline.run.tiling import TileGrid, read_tiles
from ugatit import CheckpointError, ModelConfig, NormStats, load_checkpoint, set_tf32

__all__ = [
    "CUDA_MICRO_BATCH", "InferenceJob", "TileOutput", "band_mean", "device_band_mean",
    "NormPassResult", "forward_fixed_shape", "forward_lock", "get_generator", "padded_input",
    "prepare_generator", "run_batch", "scene_norm_pass", "scene_norm_stats",
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
    #: tiles whose outputs the statistics pass already made (`scene_norm_pass`): skipped
    done: frozenset[int] = field(default=frozenset(), compare=False)


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


def run_batch(job: InferenceJob, tiles: Sequence[int], *, reader: Any = None,
              runner: Generator | None = None) -> list[TileOutput | None]:
    """Read, scale and translate the given tiles; None for a tile with no valid pixel
    and for the tiles of `job.done` (the statistics pass made them: the caller has them).

    Runs in a Dask task: any thread of the local scheduler or any distributed worker.
    `reader`: a rasterio dataset look-alike to read instead of opening job.input_path
    (`translate`'s ArrayReader over the input chunks); `runner`: the prepared generator
    instead of get_runner(job)'s (a module given to `translate`): one body for both APIs.
    """
    pin_threads(job.device, job.precision)
    size = job.grid.tile
    inputs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    keep: list[int] = []
    results: list[TileOutput | None] = [None] * len(tiles)
    todo = [k for k, index in enumerate(tiles) if index not in job.done]
    origins = [job.grid.origin(tiles[k]) for k in todo]
    with contextlib.ExitStack() as stack:
        if reader is None:
            stack.enter_context(gdal_env())
            reader = stack.enter_context(rasterio.open(job.input_path))
        reads = read_tiles(reader, job.bands, origins, size, nodata=job.nodata)
        for k, (data, valid, inside) in zip(todo, reads, strict=True):
            if inside:
                inputs.append(to_model_input(data, valid, job.scaling))
                masks.append(valid)
                keep.append(k)
    if not inputs:
        return results
    gen = runner if runner is not None else get_runner(job)
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


def get_runner(job: InferenceJob, scene_norm: bool | None = None) -> Generator:
    """The generator prepared for `job`'s execution options, once per process
    (`scene_norm`: for forwards with a scene's statistics; default: whether the job has
    them)."""
    with _load_lock:  # one load (and one compilation) even if two threads ask at once
        return _cached_runner(
            job.model_path, job.model_sha256, job.device, job.channels_last, job.compile,
            (job.micro_batch, len(job.bands), job.grid.tile), job.precision,
            job.norm_stats is not None if scene_norm is None else scene_norm,
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
            o, hm = _chunk_outputs(y, h, k, heatmap=heatmap, mean_bands=mean_bands)
            outs.append(o)
            if hm is not None:
                heats.append(hm)
        out = torch.cat(outs).cpu().contiguous()
        heat = torch.cat(heats).cpu().contiguous() if heatmap else None
    if mean_bands and dev.type == "mps":  # MPS has no float64: the same mean on the host
        out = band_mean(out)
    return out, heat


def _chunk_outputs(y: torch.Tensor, h: torch.Tensor, k: int, *, heatmap: bool,
                   mean_bands: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `k` (real) tiles' outputs of one forward, as `forward_fixed_shape` keeps
    them, on the device: float32 output (its band mean with `mean_bands`, except on MPS:
    the host takes it), heatmap upsampled to the tile (or None). One function for the
    statistics pass and the tiles' forwards: the same ops, the same bytes."""
    size = y.shape[-1]
    y = y[:k].float()
    out = band_mean(y) if mean_bands and y.device.type != "mps" else y
    heat = None
    if heatmap:
        heat = torch.nn.functional.interpolate(h[:k].float(), size=(size, size),
                                               mode="bilinear", align_corners=False)
    return out, heat


def padded_input(x: torch.Tensor, micro: int, *, pin: bool) -> torch.Tensor:
    """`x` [N, ...] copied into one buffer of whole forwards (N rounded up to a multiple of
    `micro`), the padding zero; page-locked when `pin` (CUDA), so every chunk's copy to
    the device can be non-blocking, the padded last one included. Made outside inference
    mode, so every chunk is a view of a normal tensor on every call."""
    n = x.shape[0]
    buf = padded_buffer(n, tuple(x.shape[1:]), micro, pin=pin, dtype=x.dtype)
    buf[:n].copy_(x)
    return buf


def padded_buffer(n: int, item: tuple[int, ...], micro: int, *, pin: bool,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A zero buffer of whole forwards for `n` items of shape `item` (`padded_input`'s,
    for a caller that fills it item by item, e.g. the statistics pass as it reads)."""
    rows = -(-n // micro) * micro
    return torch.zeros((rows, *item), dtype=dtype, pin_memory=pin)


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


@dataclass(frozen=True)
class NormPassResult:
    """What the statistics pass gives the run: the scene's statistics (CPU tensors) and
    the outputs of the sampled tiles that have a valid pixel, by tile number (the run
    does not forward them again)."""

    stats: NormStats
    outputs: dict[int, TileOutput]


def pass_workers(device: str) -> int:
    """Forwards computing at once in the pass when the caller does not say (a task on a
    cluster): one per core of this process on CPU, as the run's tasks; 2 on a GPU (one
    stream: the second hides the first's Python time)."""
    if device.startswith("cuda"):
        return 2
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def scene_norm_pass(job: InferenceJob, tiles: Sequence[int], workers: int | None = None,
                    *, reader: Any = None, runner: Any = None,
                    weights: Sequence[float] | None = None) -> NormPassResult:
    """The scene's normalisation statistics pooled over `tiles` (the sample of
    pipeline/run/norm_sample.py), and those tiles' outputs (module docstring).

    Runs where the batch tasks run (this process, or a task on a cluster), pinned and
    prepared like them: the same runner (channels-last copy; with --compile its eager
    module), the same fixed-shape forwards of `job.micro_batch` tiles from one padded
    buffer, the same precision (autocast) and the same output steps
    (`_chunk_outputs`), `workers` forwards at once (default `pass_workers`). Tiles are
    read and scaled exactly as `run_batch` reads them, invalid pixels included (filled
    with -1), for the fall back of a scene with no fully valid tile; a tile with no
    valid pixel at all enters the statistics but gives no output (as in `run_batch`).
    Memory: every forward's activations at one norm layer at a time (the sample's
    largest: 4 x ngf x tile^2 bytes per tile, the first and last layers), plus
    `workers` forwards' working memory; not one forward of the whole sample.
    `reader`: an open raster-like source instead of `job.input_path` (`translate`'s
    array reader); `runner`: a prepared generator instead of the cached one;
    `weights`: per tile, how many tiles it stands for (NormSample.weights; 1 each).
    """
    pin_threads(job.device, job.precision)
    if runner is None:
        runner = get_runner(job, scene_norm=True)
    gen = getattr(runner, "_orig_mod", runner)  # torch.compile's wrapper: its module
    dev = torch.device(job.device)
    origins = [job.grid.origin(index) for index in tiles]
    micro, n, cuda = job.micro_batch, len(tiles), dev.type == "cuda"
    mean_bands = job.output_bands == 1 and job.channels is None  # as run_batch
    # the model inputs go straight into one padded buffer, as padded_input makes it for
    # run_batch (zero padding): one copy of the sample's inputs, not three (the raw
    # reads, the stacked inputs, the buffer: ~2.4 MiB a 3-band tile, more than a narrow
    # model's parked activations)
    tile = job.grid.tile
    buf = padded_buffer(n, (len(job.bands), tile, tile), micro, pin=cuda)
    masks: list[tuple[np.ndarray, bool]] = []

    def fill(source: Any) -> None:
        for i, (data, valid, inside) in enumerate(
                read_tiles(source, job.bands, origins, tile, nodata=job.nodata)):
            buf[i].copy_(torch.from_numpy(to_model_input(data, valid, job.scaling)))
            masks.append((valid, inside))

    if reader is not None:
        fill(reader)
    else:
        with gdal_env(), rasterio.open(job.input_path) as ds:
            fill(ds)

    def context() -> contextlib.ExitStack:
        # entered in each of the pass's threads: torch's CPU thread count is OpenMP's,
        # which is per thread for threads other than the main one (a pool thread started
        # by a Dask task did not see the task's pinning: translate's pass then ran on 2
        # threads each, with other float bits than the one-thread forwards, now and then)
        pin_threads(job.device, job.precision)
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(_autocast(dev, job.precision))
        return stack

    def finish(i: int, triple: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        y, _, h = triple
        out, heat = _chunk_outputs(y, h, min(micro, n - i * micro), heatmap=job.heatmap,
                                   mean_bands=mean_bands)
        return out.cpu(), None if heat is None else heat.cpu()

    try:
        with forward_lock(dev), torch.inference_mode():
            chunks, real = [], []
            for i in range(0, n, micro):
                chunk = buf[i : i + micro].to(dev, non_blocking=cuda)
                if job.channels_last:
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
                chunks.append(chunk)
                real.append(min(micro, n - i))
            cores = [core_region(job.grid, t) for t in tiles]
            regions = [cores[i : i + micro] for i in range(0, n, micro)]
            w = list(weights) if weights is not None else [1.0] * n
            stats, done = gen.pooled_forward(chunks, real, regions=regions,
                                             weights=[w[i : i + micro] for i in range(0, n, micro)],
                                             context=context,
                                             finish=finish,
                                             workers=workers or pass_workers(job.device))
    except torch.OutOfMemoryError:
        raise PipelineError(
            f"out of memory on {job.device} pooling the normalisation statistics of "
            f"{n} tiles of {job.grid.tile} px",
            path=job.model_path,
            hint="lower --norm-sample or --micro-batch",
        ) from None
    out = torch.cat([o for o, _ in done])
    if mean_bands and dev.type == "mps":  # as forward_fixed_shape: the host's mean
        out = band_mean(out)
    if job.channels is not None and tuple(job.channels) != tuple(range(out.shape[1])):
        out = out[:, list(job.channels)]  # the polarisations asked for, as run_batch
    heat = torch.cat([h for _, h in done]) if job.heatmap else None
    outputs = {}
    for j, (index, (valid, inside)) in enumerate(zip(tiles, masks, strict=True)):
        if inside:
            outputs[index] = TileOutput(
                index=index, out=out[j].numpy().copy(),  # its own: freed when blended
                heat=None if heat is None else np.ascontiguousarray(heat[j, 0].numpy()),
                valid=valid)
    return NormPassResult(stats.to("cpu"), outputs)


def scene_norm_stats(job: InferenceJob, tiles: Sequence[int]) -> NormStats:
    """The statistics of `scene_norm_pass` alone."""
    return scene_norm_pass(job, tiles).stats
