"""xarray in, xarray out: `translate`, the scene pipeline for a (time,) band, y, x DataArray.

For notebook users whose scenes are arrays (stackstac, odc-stac, rioxarray), never files.
`translate` returns a LAZY DataArray: building it reads no pixel and runs no model
(it hashes the checkpoint and reads its metadata, as planning a run does); the graph is:

    per time step   one STATISTICS task: the global scaling (radiometry.compute_scaling
                    on a decimated read of the array) and, --norm scene, the sample of
                    tiles (norm_sample.choose_sample) pooled layer by layer
                    (inference.scene_norm_pass), with those tiles' outputs, which the
                    tile tasks use instead of forwarding them again: what `plan_scene` +
                    `with_norm_stats` compute from a file, from the same pixels
    per output chunk one TILE task: the tiles of the pipeline's global grid
                    (tiling.TileGrid) whose top-left pixel lies in this chunk, read
                    through the task's own slice of the input (tiling.read_tiles, reflect
                    padding and validity as for a file), scaled and translated (as
                    inference.run_batch), cut into one piece per chunk they overlap (a
                    tile reaches only the chunks right of and below its origin)
    per output chunk one CHUNK task: the pieces that reach it weighted by the smooth
                    window (tiling.weight_window) into float64 sums in ascending global
                    tile number (mosaic.BlockAccumulator), masked by the tiles' validity,
                    encoded (mosaic.encode): `_write_block` of `pipeline run`.

So every tile is computed once and an output chunk blends across chunk edges as
`pipeline run` blends across its write blocks; its bytes are those of `pipeline run` for
the same pixels and options, whatever the chunking and scheduler (the same arguments as
pipeline/run/mosaic.py and inference.py: the tile grid and the accumulation order are
global; each tile is forwarded alone on CPU, in fixed-shape micro-batches on CUDA).

Memory: what outlives a tile task is the parts of its tiles inside the chunks right of
and below it, each freed when that chunk is blended; no input chunk is a shared task
(each tile task reads its own region), so Dask holds about a row of crossing parts, not
rows of input chunks and whole shared tiles (the previous graph: +0.5 GiB at 16384 px;
docs/xarray.md "Memory" for the numbers and what still grows).

The statistics task reads the array through its own small graph (computed inside the
task, synchronously: bounded by a chunk at a time): sharing the input's chunks with the
tile tasks would keep every chunk in memory until the statistics were done. That reads
the decimated sample, and the sample's tiles, a second time, as `pipeline run` reads the
file twice.

The model never travels in the graph when given as a path (or a loaded
`ugatit.Checkpoint`, whose file is used): every task carries the path and its sha256, and
each worker process loads it once (inference.get_generator / get_runner). A bare
generator module travels as one graph key, so once per worker.

Reads "as from a file" (`ArrayReader`): an array has no GDAL masks; validity is the
array's nodata (attrs `_FillValue` / `nodata`, rioxarray's `rio.nodata`) per band, as
GDAL's nodata mask, "any band valid"; NaN; and the zero-fill rule of non-uint8 data.
Decimated reads pick pixels as GDAL's nearest-neighbour decimation does
(`gdal_nearest_index`). A file with internal overviews may give GDAL's decimated read
from an overview instead: `pipeline run` then computes its scaling from other pixels,
unless the scene fits `stats_size` (1024 px by default; then the read is full resolution).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from pipeline.config import PipelineConfig, load_config, resolve_for_model
from pipeline.errors import ConfigError, InputError, ModelError, PipelineError
from pipeline.inputs.bandnames import common_name, match_bands, model_band_names
from pipeline.inputs.radiometry import REFLECTANCE_RANGE, Scaling, band_reflectance
from pipeline.run import inference
from pipeline.run.checks import model_sha256
from pipeline.run.inference import InferenceJob, TileOutput
from pipeline.run.model_io import output_channels, output_db_ranges, reflectance_range
from pipeline.run.mosaic import BlockAccumulator, encode, output_dtype_nodata
from pipeline.run.norm_sample import NormSample
from pipeline.run.plan import model_contract, norm_sample, output_count, scene_scaling
from pipeline.run.tiling import TileGrid, weight_window

__all__ = ["ArrayReader", "TRANSLATE_OPTIONS", "gdal_nearest_index", "translate"]

INSTALL_HINT = "pip install 'eo2sar[xarray]'"
#: PipelineConfig settings that mean something for an array in memory (the rest are about
#: files, directories and schedulers: the caller's Dask scheduler runs the graph)
TRANSLATE_OPTIONS = (
    "device", "precision", "tile_size", "overlap", "norm", "norm_sample", "output_scale",
    "output_bands", "db_range", "percentiles", "scale", "fixed_min", "fixed_max", "nodata",
    "stats_size", "micro_batch", "channels_last", "compile", "reflectance_scale",
    "polarisations",
)
#: Output chunk side when the input is not a Dask array (pipeline run's --block-size)
DEFAULT_CHUNK = 1024


def _xarray() -> Any:
    try:
        import xarray
    except ImportError:
        raise PipelineError("xarray is not installed (the optional extra of eo2sar)",
                            path="translate", hint=INSTALL_HINT) from None
    return xarray


# ---------------------------------------------------------------------------------------
# Reading an array as the pipeline reads a raster


def gdal_nearest_index(size: int, out: int) -> np.ndarray:
    """The source pixels GDAL's nearest-neighbour decimation of `size` px to `out` px
    reads: floor((i + 0.5) * size / out) (checked against rasterio reads of files without
    overviews, tests/pipeline/run/test_arrays.py)."""
    inc = size / out
    idx = np.floor((np.arange(out) + 0.5) * inc).astype(np.int64)
    return np.clip(idx, 0, size - 1)


class ArrayReader:
    """A rasterio dataset look-alike over an array [C, h, w] that holds the rows
    `row0..` and columns `col0..` of a `height` x `width` scene: what radiometry.read_masked,
    compute_scaling, norm_sample.choose_sample and tiling.read_tiles read. Band numbers
    are 1-based into the array. Numpy arrays are sliced; Dask arrays computed on read,
    synchronously (the statistics task's own reads), the last read kept (read_masked reads
    the data and then the masks of the same window)."""

    def __init__(self, array: Any, *, nodata: float | None, height: int, width: int,
                 row0: int = 0, col0: int = 0, scales: Sequence[float] | None = None,
                 offsets: Sequence[float] | None = None,
                 descriptions: Sequence[str | None] | None = None) -> None:
        self.array = array
        self.count = int(array.shape[0])
        self.height, self.width = int(height), int(width)
        self.row0, self.col0 = int(row0), int(col0)
        self.nodata = nodata
        self.dtypes = (str(array.dtype),) * self.count
        # GDAL's band Scale/Offset and descriptions (radiometry.band_reflectance, band
        # names): what rioxarray read from the file (attrs scale_factor / add_offset)
        self.scales = tuple(scales) if scales is not None else (1.0,) * self.count
        self.offsets = tuple(offsets) if offsets is not None else (0.0,) * self.count
        self.descriptions = tuple(descriptions) if descriptions is not None else \
            (None,) * self.count
        flags = [MaskFlags.nodata] if nodata is not None else [MaskFlags.all_valid]
        self.mask_flag_enums = tuple(list(flags) for _ in range(self.count))
        self._last: tuple[Any, np.ndarray] | None = None

    def _get(self, indexes: Sequence[int], window: Window | None,
             out_shape: tuple[int, ...] | None) -> np.ndarray:
        key = (tuple(indexes), None if window is None else tuple(window.flatten()),
               None if out_shape is None else tuple(out_shape[-2:]))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        arr = self.array[[i - 1 for i in indexes]]
        if window is None:
            window = Window(0, 0, self.width, self.height)
        r0, c0 = int(window.row_off) - self.row0, int(window.col_off) - self.col0
        h, w = int(window.height), int(window.width)
        if r0 < 0 or c0 < 0 or r0 + h > arr.shape[1] or c0 + w > arr.shape[2]:
            raise ValueError(f"window {window} is outside the rows/columns held")
        arr = arr[:, r0:r0 + h, c0:c0 + w]
        if out_shape is not None and tuple(out_shape[-2:]) != (h, w):
            rows = gdal_nearest_index(h, int(out_shape[-2]))
            cols = gdal_nearest_index(w, int(out_shape[-1]))
            arr = arr[:, rows, :][:, :, cols]
        if hasattr(arr, "compute"):
            arr = arr.compute(scheduler="sync")
        data = np.asarray(arr)
        self._last = (key, data)
        return data

    def read(self, indexes: Sequence[int], window: Window | None = None,
             out_shape: tuple[int, ...] | None = None, resampling: Any = None) -> np.ndarray:
        return self._get(indexes, window, out_shape)

    def read_masks(self, indexes: Sequence[int], window: Window | None = None,
                   out_shape: tuple[int, ...] | None = None, resampling: Any = None
                   ) -> np.ndarray:
        """GDAL's per-band nodata masks: 0 where the band equals nodata (NaN: is NaN)."""
        data = self._get(indexes, window, out_shape)
        if self.nodata is None:
            return np.full(data.shape, 255, dtype=np.uint8)
        bad = np.isnan(data) if math.isnan(self.nodata) else data == self.nodata
        return np.where(bad, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# The tasks


class _Opaque:
    """Holds a value Dask must not look into (a Dask array read by the statistics task
    with its own graph; a generator module)."""

    def __init__(self, value: Any) -> None:
        self.value = value


@dataclass(frozen=True)
class _Scene:
    """The static facts of one translate call that every task needs (small, picklable)."""

    job: InferenceJob  # scaling / norm_stats are filled in by the statistics task
    config: PipelineConfig
    label: str
    scales: tuple[float, ...] | None = None  # per band picked, from the array's attrs
    offsets: tuple[float, ...] | None = None
    descriptions: tuple[str | None, ...] | None = None
    #: the model's reflectance range (scale "reflectance") and, for a model with
    #: polarisations, each output band's dB range: what plan_scene reads from the contract
    reflectance_range: tuple[float, float] = REFLECTANCE_RANGE
    db_ranges: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class SceneStats:
    """What the statistics task computed for one time step."""

    scaling: Scaling
    sample: NormSample | None
    norm_stats: Any  # ugatit.NormStats or None
    #: the outputs of the sampled tiles, which the statistics pass computed with those
    #: statistics (the bytes a later forward gives): the tile tasks use them instead of
    #: forwarding those tiles again, as `pipeline run` does (inference.scene_norm_pass)
    outputs: Mapping[int, TileOutput] = dataclasses.field(default_factory=dict)


_module_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _module_runner(gen: Any, device: str, shape: tuple[int, int, int], precision: str,
                   channels_last: bool, compile: bool, scene_norm: bool) -> Any:
    import copy

    import torch

    dev = torch.device(device)
    if next(gen.parameters()).device != dev:
        gen = copy.deepcopy(gen).to(dev)  # the caller's module stays where it is
    gen.eval()
    return gen, inference.prepare_generator(
        gen, dev, shape, precision=precision, channels_last=channels_last, compile=compile,
        scene_norm=scene_norm)


def _generators(job: InferenceJob, module: _Opaque | None) -> tuple[Any, Any]:
    """(plain generator for collect_stats, prepared runner for the forwards), once per
    process: from the checkpoint path (inference's caches) or the module given."""
    if module is None:
        gen, _ = inference.get_generator(job.model_path, job.model_sha256, job.device)
        return gen, inference.get_runner(job)
    with _module_lock:
        return _module_runner(module.value, job.device,
                              (job.micro_batch, len(job.bands), job.grid.tile), job.precision,
                              job.channels_last, job.compile, job.norm_stats is not None)


def _scene_stats(scene: _Scene, source: _Opaque, module: _Opaque | None) -> SceneStats:
    """Scaling and --norm scene statistics of one time step, as `plan_scene` and
    `with_norm_stats` compute them from a file (the same functions, the same pixels)."""
    job, config = scene.job, scene.config
    reader = ArrayReader(source.value, nodata=job.nodata, height=job.grid.height,
                         width=job.grid.width, scales=scene.scales, offsets=scene.offsets,
                         descriptions=scene.descriptions)
    path = Path(scene.label)
    scaling = scene_scaling(reader, job.bands, config, path, scene.reflectance_range, "data")
    sample = None
    if config.norm == "scene" and scaling.method != "empty":
        sample = norm_sample(reader, job.bands, job.grid, config, path)
        if sample.tiles:
            result = _norm_pass(dataclasses.replace(job, scaling=scaling), reader,
                                sample.tiles, module, sample.tile_weights())
            return SceneStats(scaling, sample, result.stats, dict(result.outputs))
    return SceneStats(scaling, sample, None)


def _norm_pass(job: InferenceJob, reader: ArrayReader, tiles: Sequence[int],
               module: _Opaque | None, weights: Sequence[float] | None = None
               ) -> inference.NormPassResult:
    """inference.scene_norm_pass with the tiles read from the array: the same pooled
    pass `pipeline run` makes (tile cores, layer by layer), so the same statistics and
    sampled tiles' outputs for the same pixels."""
    runner = None  # the path's cached runner, prepared for the pass (scene_norm=True)
    if module is not None:
        with _module_lock:
            runner = _module_runner(module.value, job.device,
                                    (job.micro_batch, len(job.bands), job.grid.tile),
                                    job.precision, job.channels_last, job.compile, True)[1]
    return inference.scene_norm_pass(job, tiles, reader=reader, runner=runner,
                                     weights=weights)


def _assemble(blocks: list[list[np.ndarray]], r0: int, c0: int, h: int, w: int
              ) -> np.ndarray:
    """The region [C, h, w] from a 2-D list of input chunks, cut at (r0, c0) of them."""
    rows = [np.concatenate(row, axis=-1) if len(row) > 1 else row[0] for row in blocks]
    region = np.concatenate(rows, axis=-2) if len(rows) > 1 else rows[0]
    region = region.reshape(region.shape[-3:])  # a time axis of 1 (if any) dropped
    return region[:, r0:r0 + h, c0:c0 + w]


#: (row0, col0, h, w, r_off, c_off): the scene rows/columns a set of tiles reads, and
#: where they start in what its source gives (input chunks in memory; 0, 0 for a read)
Region = tuple[int, int, int, int, int, int]


def _region_data(source: Any, region: Region) -> np.ndarray:
    """The pixels [C, h, w] of `region`: read here from the input's lazy slice (an
    `_Opaque` Dask array, computed synchronously), or cut from input chunks in memory."""
    _, _, h, w, r_off, c_off = region
    if isinstance(source, _Opaque):
        data = np.asarray(source.value.compute(scheduler="sync"))
        return data.reshape(data.shape[-3:])
    return _assemble(source, r_off, c_off, h, w)


@dataclass(frozen=True)
class _Part:
    """A tile's output cut to one output chunk: what that chunk blends of it, copied.

    Why: the part of a tile that crosses into the next chunk row waits in memory until
    that row is blended; cut, it is on average half a tile (a quarter at a corner), and
    the whole tile output is freed when its task ends. Blending a part adds the same
    products at the same pixels as blending the whole tile, so the bytes are the same."""

    row: int  # scene row / column of the part's top-left pixel
    col: int
    dr: int  # that pixel's row / column in the tile (where the part's weights start)
    dc: int
    out: np.ndarray  # [C, h, w]
    heat: np.ndarray | None  # [h, w]
    valid: np.ndarray | None  # [h, w]


def _cut(out: TileOutput, origin: tuple[int, int], tile: int,
         window: tuple[int, int, int, int]) -> _Part:
    """The part of a tile's output inside `window` (col, row, w, h) of the scene."""
    col, row, w, h = window
    r0, c0 = max(origin[0], row), max(origin[1], col)
    r1, c1 = min(origin[0] + tile, row + h), min(origin[1] + tile, col + w)
    rows = slice(r0 - origin[0], r1 - origin[0])
    cols = slice(c0 - origin[1], c1 - origin[1])
    return _Part(r0, c0, rows.start, cols.start, out.out[:, rows, cols].copy(),
                 None if out.heat is None else out.heat[rows, cols].copy(),
                 None if out.valid is None else out.valid[rows, cols].copy())


def _translate_tiles(scene: _Scene, stats: SceneStats, module: _Opaque | None,
                     tiles: tuple[int, ...],
                     pieces: tuple[tuple[tuple[int, int, int, int], tuple[int, ...]], ...],
                     region: Region, source: Any) -> tuple[dict[int, _Part], ...]:
    """inference.run_batch for the tiles whose origin lies in one output chunk, read from
    `region` of the input; the outputs cut into `pieces` (window, tiles): for each chunk
    they reach, {tile: its part inside the chunk} (tiles without a valid pixel left out),
    so that each chunk's piece is released once that chunk is blended."""
    outputs: dict[int, TileOutput] = {}
    if stats.scaling.method != "empty" and tiles:  # pipeline run: no valid pixel, no tile
        job = dataclasses.replace(scene.job, scaling=stats.scaling,
                                  norm_stats=stats.norm_stats, done=frozenset(stats.outputs))
        outputs = {t: stats.outputs[t] for t in tiles if t in stats.outputs}
        todo = tuple(t for t in tiles if t not in job.done)
        if todo:
            reader = ArrayReader(_region_data(source, region), nodata=job.nodata,
                                 height=job.grid.height, width=job.grid.width,
                                 row0=region[0], col0=region[1])
            inference.pin_threads(job.device, job.precision)
            runner = None if module is None else _generators(job, module)[1]
            done = inference.run_batch(job, todo, reader=reader, runner=runner)
            outputs.update({out.index: out for out in done if out is not None})
    grid = scene.job.grid
    return tuple({t: _cut(outputs[t], grid.origin(t), grid.tile, window)
                  for t in piece if t in outputs} for window, piece in pieces)


def _chunk(scene: _Scene, window: tuple[int, int, int, int], tiles: tuple[int, ...],
           whats: tuple[str, ...], *pieces: dict[int, _Part]
           ) -> np.ndarray | tuple[np.ndarray, ...]:
    """One output chunk from the pieces of the tile tasks that reach it, blended as
    `_write_block` of pipeline/run/scene.py blends: float64 sums in ascending global tile
    number, masked by the tiles' validity, encoded. One array per `whats` ("sar",
    "heat"), with a time axis of 1."""
    outputs: dict[int, _Part] = {}
    for piece in pieces:
        outputs.update(piece)
    results = tuple(_blend(scene, window, tiles, what, outputs)[None] for what in whats)
    return results[0] if len(results) == 1 else results


def _blend(scene: _Scene, window: tuple[int, int, int, int], tiles: tuple[int, ...],
           what: str, outputs: Mapping[int, _Part]) -> np.ndarray:
    """The encoded output (what "sar") or heatmap of `window` from the tiles' parts."""
    job, config = scene.job, scene.config
    col, row, w, h = window
    weight = _weight(job.grid.tile, job.grid.overlap)
    acc = BlockAccumulator(Window(col, row, w, h), job.output_bands if what == "sar" else 1)
    for t in tiles:  # ascending: the fixed blend order
        part = outputs.get(t)
        if part is None:
            continue
        h, w = part.out.shape[-2:]
        acc.add(part.row, part.col, part.out if what == "sar" else part.heat[None],
                weight[part.dr:part.dr + h, part.dc:part.dc + w], part.valid)
    blended = acc.blended(acc.valid)
    if what == "sar":
        db = scene.db_ranges if config.polarisations else config.db_range
        return encode(blended, config.output_scale, db)
    return blended.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _weight(tile: int, overlap: int) -> np.ndarray:
    return weight_window(tile, overlap)


# ---------------------------------------------------------------------------------------
# The graph


def _bounds(chunks: Sequence[int]) -> list[int]:
    out = [0]
    for c in chunks:
        out.append(out[-1] + int(c))
    return out


def _blocks_between(bounds: list[int], start: int, stop: int) -> range:
    """Chunk indices along an axis whose extent meets [start, stop)."""
    import bisect

    first = bisect.bisect_right(bounds, start) - 1
    last = bisect.bisect_left(bounds, stop) - 1
    return range(max(first, 0), min(last, len(bounds) - 2) + 1)


def _culled(arr: Any) -> Any:
    """`arr` with only the graph it needs (a task that reads it carries it)."""
    import dask

    (arr,) = dask.optimize(arr)
    return arr


def _tiles_by_origin(grid: TileGrid, ybounds: list[int], xbounds: list[int]
                     ) -> dict[tuple[int, int], list[int]]:
    """The tiles (ascending) by the output chunk (i, j) their top-left pixel lies in."""
    import bisect

    out: dict[tuple[int, int], list[int]] = {}
    for t in range(grid.count):
        r, c = grid.origin(t)
        key = (bisect.bisect_right(ybounds, r) - 1, bisect.bisect_right(xbounds, c) - 1)
        out.setdefault(key, []).append(t)
    return out


def _pieces(grid: TileGrid, tiles: Sequence[int], ybounds: list[int], xbounds: list[int]
            ) -> dict[tuple[int, int], tuple[int, ...]]:
    """{chunk (i, j): the tiles among `tiles` that overlap it}, chunks in row-major order."""
    out: dict[tuple[int, int], list[int]] = {}
    for t in tiles:
        r, c = grid.origin(t)
        for i in _blocks_between(ybounds, r, min(grid.height, r + grid.tile)):
            for j in _blocks_between(xbounds, c, min(grid.width, c + grid.tile)):
                out.setdefault((i, j), []).append(t)
    return {k: tuple(out[k]) for k in sorted(out)}


def _splits(tasks: int, threads: int) -> int:
    """Tile tasks per output chunk: 1, or enough for every thread when the array has
    fewer chunks with tiles than threads (a one-chunk scene would run on one thread).

    Why not always: each task reads its own region (more tasks, more pixels read twice),
    and a large array has parallelism enough across chunks."""
    return 1 if tasks >= threads else -(-threads // max(tasks, 1))


def _split(tiles: Sequence[int], n: int) -> list[list[int]]:
    """`tiles` (ascending) in up to n consecutive runs (rows of the grid stay together
    where they can: each run reads one band of the scene)."""
    size = -(-len(tiles) // n)
    return [list(tiles[k:k + size]) for k in range(0, len(tiles), size)]


def _region(grid: TileGrid, tiles: Sequence[int]) -> tuple[int, int, int, int]:
    """(row0, col0, h, w): the scene pixels the tiles read (their union's bounding box)."""
    origins = [grid.origin(t) for t in tiles]
    r0, c0 = min(o[0] for o in origins), min(o[1] for o in origins)
    r1 = min(grid.height, max(o[0] for o in origins) + grid.tile)
    c1 = min(grid.width, max(o[1] for o in origins) + grid.tile)
    return r0, c0, r1 - r0, c1 - c0


def _source(x: Any, ti: int, box: tuple[int, int, int, int], lazy: bool,
            in_y: list[int], in_x: list[int]) -> tuple[Region, Any]:
    """(region, source) for a tile task that reads `box` of time step ti: a lazy slice of
    the input read inside the task (`lazy`), else the keys of the in-memory input chunks
    that cover it."""
    r0, c0, h, w = box
    if lazy:
        return (r0, c0, h, w, 0, 0), _Opaque(_culled(x[ti, :, r0:r0 + h, c0:c0 + w]))
    bi, bj = _blocks_between(in_y, r0, r0 + h), _blocks_between(in_x, c0, c0 + w)
    blocks = [[(x.name, ti, 0, a, b) for b in bj] for a in bi]
    return (r0, c0, h, w, r0 - in_y[bi[0]], c0 - in_x[bj[0]]), blocks


def _build(x: Any, scene: _Scene, module: Any, out_chunks: tuple[tuple[int, ...], ...],
           heatmap: bool, token: str, lazy: bool = True) -> tuple[Any, Any | None]:
    """The Dask arrays (time, C, y, x) of the output (and heatmap) over input x
    (time, C, y, x), chunked (1, C, ...).

    Per time step: a statistics task; per output chunk holding tile origins, a TILE task
    (the tiles whose top-left pixel lies in the chunk: read, scaled, translated, cut into
    one piece per chunk they overlap, each piece a getitem task); per output chunk, a
    CHUNK task that blends the pieces reaching it.

    Why: a tile reaches only the chunks right of and below its origin, so each tile is
    computed once, and what outlives a tile task is the parts of its tiles that cross
    into the chunks to the right and below (`_Part`), each freed when that chunk is
    blended: about a quarter of a chunk's tile outputs. The chunk's own part is blended
    at once. (The previous graph kept whole shared tiles and shared input chunks, and
    Dask held two to three rows of both: +0.5 GiB at 16384 px, docs/xarray.md.)

    Input: `lazy` (a Dask array), each tile task reads its region through its own slice
    of the input's graph (a file's chunks fuse to a windowed read), so no input chunk is
    a shared task that waits in memory for its other users (read tasks shared by a chunk
    task and its neighbours' held rows of input chunks). Neighbouring regions overlap by
    up to a tile (each task reads ~1.5 chunks of pixels at 1024 px chunks and 256 px
    tiles). Else x wraps an array in memory and its chunks are used as they are (a
    slice's graph would carry the whole array to every task)."""
    import operator

    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    grid = scene.job.grid
    ybounds, xbounds = _bounds(out_chunks[0]), _bounds(out_chunks[1])
    in_y, in_x = _bounds(x.chunks[2]), _bounds(x.chunks[3])
    names = {what: f"eo2sar-{what}-{token}" for what in
             ("stats", "tiles", "piece", "chunk", "sar", "heat")}
    whats = ("sar", "heat") if heatmap else ("sar",)
    module_key = None
    layer: dict[Any, Any] = {}
    if module is not None:
        module_key = f"eo2sar-model-{token}"
        layer[module_key] = _Opaque(module)

    def window(i: int, j: int) -> tuple[int, int, int, int]:
        return (xbounds[j], ybounds[i], xbounds[j + 1] - xbounds[j],
                ybounds[i + 1] - ybounds[i])

    by_origin = _tiles_by_origin(grid, ybounds, xbounds)
    splits = _splits(len(by_origin), os.cpu_count() or 1)
    for ti in range(x.shape[0]):
        stats = (names["stats"], ti)
        layer[stats] = (_scene_stats, scene, _Opaque(_culled(x[ti])), module_key)
        reaching: dict[tuple[int, int], list[Any]] = {}
        for (a, b), all_tiles in by_origin.items():
            for s, tiles in enumerate(_split(all_tiles, splits)):
                key = (names["tiles"], ti, a, b, s)
                pieces = _pieces(grid, tiles, ybounds, xbounds)
                region, source = _source(x, ti, _region(grid, tiles), lazy, in_y, in_x)
                layer[key] = (_translate_tiles, scene, stats, module_key, tuple(tiles),
                              tuple((window(*c), ts) for c, ts in pieces.items()), region,
                              source)
                for k, chunk in enumerate(pieces):
                    piece = (names["piece"], ti, a, b, s, *chunk)
                    layer[piece] = (operator.getitem, key, k)
                    reaching.setdefault(chunk, []).append(piece)
        for i in range(len(ybounds) - 1):
            for j in range(len(xbounds) - 1):
                c0, r0, w, h = window(i, j)
                chunk_key = (names["chunk"], ti, i, j) if heatmap else \
                    (names["sar"], ti, 0, i, j)
                layer[chunk_key] = (_chunk, scene, (c0, r0, w, h),
                                    tuple(grid.tiles_in(Window(c0, r0, w, h))), whats,
                                    *reaching.get((i, j), ()))
                for k, what in enumerate(whats if heatmap else ()):
                    layer[(names[what], ti, 0, i, j)] = (operator.getitem, chunk_key, k)
    arrays = []
    for what in whats:
        graph = HighLevelGraph.from_collections(names[what], layer,
                                                 dependencies=[] if lazy else [x])
        bands = scene.job.output_bands if what == "sar" else 1
        dtype = output_dtype_nodata(scene.config.output_scale)[0] if what == "sar" \
            else "float32"
        arrays.append(da.Array(graph, names[what], ((1,) * x.shape[0], (bands,), *out_chunks),
                               dtype=dtype))
    return arrays[0], (arrays[1] if heatmap else None)


# ---------------------------------------------------------------------------------------
# The public function


def translate(
    data: Any,
    model: str | os.PathLike[str] | Any,
    *,
    bands: Sequence[Any] | None = None,
    config: PipelineConfig | None = None,
    chunks: int | tuple[int, int] | None = None,
    heatmap: bool = False,
    band_dim: str = "band",
    time_dim: str | None = None,
    y_dim: str = "y",
    x_dim: str = "x",
    **options: Any,
) -> Any:
    """The SAR-like translation of an xarray DataArray, lazily (see the module docstring).

    data: dims (band, y, x) or (time, band, y, x) (names: `band_dim`, `time_dim` (the
        fourth dim when None), `y_dim`, `x_dim`), numpy- or Dask-backed, values as the
        sensor gives them (DN; what `pipeline run` reads from a file).
    model: a checkpoint path, a loaded `ugatit.Checkpoint` (its file is used), or a
        generator module (travels in the graph once per worker).
    bands: labels of the band coordinate to feed the model, in its order (rioxarray's
        1..n band numbers are the --bands of `pipeline run`); by default the model's
        bands (its contract's common names, else red, green, blue) are picked by name
        from the band coordinate (asset keys B04, red, SR_B4, ...; a `common_name`
        coordinate, or band descriptions in attrs `long_name`, win); an array with the
        model's channel count and no names is taken as it is.
    config / options: the settings of `pipeline run` that mean something in memory
        (TRANSLATE_OPTIONS: device, precision, tile_size, overlap, norm, norm_sample,
        output_scale, output_bands, db_range, percentiles, scale, nodata, ...), options
        overriding `config`; nodata defaults to the array's (attrs _FillValue / nodata).
    chunks: output chunk side(s) in y, x (default: the input's chunks, else 1024).
    heatmap: also return the CAM heatmap: a Dataset {"sar": ..., "heatmap": ...}.

    Returns a DataArray (time,) band, y, x with the input's coordinates and CRS: float32
    with NaN for nodata (output_scale unit/db) or uint8 with 0 for nodata, encoded as
    `pipeline run` encodes its COG, so `.compute()` written with rioxarray gives the same
    pixels as `pipeline run` on the same pixels and options.
    """
    xr = _xarray()
    import dask.array as da
    from dask.base import tokenize

    if not isinstance(data, xr.DataArray):
        raise InputError(f"translate takes an xarray.DataArray, not {type(data).__name__}",
                         path="data", hint="e.g. rioxarray.open_rasterio(path, chunks=1024)")
    unknown = sorted(set(options) - set(TRANSLATE_OPTIONS))
    if unknown:
        raise ConfigError(f"translate has no option {', '.join(unknown)}", path="translate",
                          hint="options: " + ", ".join(TRANSLATE_OPTIONS))
    arr, time_dim = _standard_dims(data, band_dim, time_dim, y_dim, x_dim)
    model_path, module, label = _model_source(model)
    base = config if config is not None else load_config(None, {})
    if "nodata" not in options and base.nodata is None:
        nd = _array_nodata(data)
        if nd is not None:
            options["nodata"] = nd
    cfg = base.replace(**options) if options else base
    contract, sha, mcfg = _model_facts(model_path, module)
    cfg = resolve_for_model(cfg, contract, label, out_ch=mcfg.out_ch if contract else None,
                            ngf=mcfg.ngf)
    if not mcfg.light and cfg.tile_size != mcfg.img_size:
        raise ModelError(f"is a full (non-light) U-GAT-IT model for {mcfg.img_size} px tiles, "
                         f"tile_size {cfg.tile_size} asked", path=label,
                         hint=f"pass tile_size={mcfg.img_size}")
    if cfg.output_bands not in (1, mcfg.out_ch):
        raise ConfigError(f"output_bands {cfg.output_bands}: the model gives {mcfg.out_ch}",
                          path="output_bands", hint=f"1 (their mean) or {mcfg.out_ch}")
    picked, names = _pick_bands(arr, band_dim, bands, model_band_names(contract, mcfg.in_ch),
                                mcfg.in_ch)
    n_bands = arr.sizes[band_dim]
    arr = arr.isel({band_dim: picked})
    height, width = arr.sizes[y_dim], arr.sizes[x_dim]
    grid = TileGrid(width, height, cfg.tile_size, cfg.overlap)
    job = InferenceJob(
        input_path=label, bands=tuple(range(1, len(picked) + 1)), nodata=cfg.nodata,
        scaling=Scaling("empty", (), ()), grid=grid, output_bands=output_count(cfg),
        heatmap=heatmap, model_path=model_path, model_sha256=sha, device=cfg.device,
        precision=cfg.precision, channels_last=cfg.channels_last, compile=cfg.compile,
        micro_batch=cfg.forward_micro_batch(), channels=output_channels(cfg, contract))
    scene = _Scene(job=job, config=cfg, label=label,
                   scales=_per_band(data.attrs.get("scale_factor"), picked, n_bands, 1.0),
                   offsets=_per_band(data.attrs.get("add_offset"), picked, n_bands, 0.0),
                   descriptions=tuple(names), reflectance_range=reflectance_range(contract),
                   db_ranges=output_db_ranges(cfg, contract) if contract else ())
    _check_reflectance(scene)

    x = arr.data if time_dim is not None else arr.data[None]
    out_chunks = _output_chunks(x, chunks, height, width)
    lazy = isinstance(x, da.Array)
    if not lazy:
        x = da.from_array(np.asarray(x), chunks=(1, -1, *out_chunks))
    x = x.rechunk({0: 1, 1: -1})
    token = tokenize(x.name, scene, out_chunks, heatmap, sha, id(module) if module else None)
    sar, heat = _build(x, scene, module, out_chunks, heatmap, token, lazy)
    if time_dim is None:
        sar = sar[0]
        heat = None if heat is None else heat[0]
    out = _wrap(xr, arr, sar, time_dim, band_dim, y_dim, x_dim, cfg, contract, mcfg.out_ch,
                names, sha, label, "sar")
    if not heatmap:
        return out
    hm = _wrap(xr, arr, heat, time_dim, band_dim, y_dim, x_dim, cfg, contract, mcfg.out_ch,
               names, sha, label, "heatmap")
    return xr.Dataset({"sar": out, "heatmap": hm})


def _check_reflectance(scene: _Scene) -> None:
    """scale "reflectance" (a reflectance model's default) needs each band's scale to
    reflectance: `reflectance_scale` (as --reflectance-scale), else the array's attrs
    scale_factor / add_offset (rioxarray's reading of the band Scale/Offset), as
    `pipeline run` takes them from the raster. Checked here, when the result is built,
    so that an unknown scale is a one-line error at the call, not in a task."""
    config = scene.config
    if config.scale != "reflectance":
        return
    attrs = ArrayReader(np.empty((len(scene.job.bands), 0, 0)), nodata=None, height=0,
                        width=0, scales=scene.scales, offsets=scene.offsets)
    try:
        band_reflectance(attrs, scene.job.bands, "data", config.reflectance_scale)
    except InputError:
        raise InputError(
            "reflectance scale unknown: the array's attrs have no scale_factor / add_offset "
            "saying how its values become reflectance, and a reflectance model must not be "
            "fed a guess", path="data",
            hint="declare it: reflectance_scale=0.0001 for Sentinel-2 DN (x 10000), "
            "reflectance_scale=(0.0000275, -0.2) for Landsat C2 Level-2") from None


def _standard_dims(data: Any, band_dim: str, time_dim: str | None, y_dim: str, x_dim: str
                   ) -> tuple[Any, str | None]:
    """data transposed to (time,) band, y, x; the time dim's name (None: no time)."""
    dims = list(data.dims)
    missing = [d for d in (band_dim, y_dim, x_dim) if d not in dims]
    if missing:
        raise InputError(f"the array has dims {tuple(dims)}, no {', '.join(missing)}",
                         path="data", hint="name them with band_dim=, y_dim=, x_dim=")
    rest = [d for d in dims if d not in (band_dim, y_dim, x_dim)]
    if time_dim is None and rest:
        if len(rest) > 1:
            raise InputError(f"the array has dims {tuple(dims)}; translate takes (band, y, "
                             "x) or (time, band, y, x)", path="data",
                             hint="select or stack the others first (.isel / .stack)")
        time_dim = rest[0]
    elif time_dim is not None and time_dim not in dims:
        raise InputError(f"the array has no dim {time_dim!r} (dims {tuple(dims)})",
                         path="data", hint="pass the name of its time dim as time_dim=")
    elif time_dim is not None and len(rest) > 1:
        raise InputError(f"the array has dims {tuple(dims)}; translate takes (band, y, x) "
                         "or (time, band, y, x)", path="data",
                         hint="select or stack the others first (.isel / .stack)")
    order = ([time_dim] if time_dim else []) + [band_dim, y_dim, x_dim]
    return data.transpose(*order), time_dim


def _model_source(model: Any) -> tuple[str, Any, str]:
    """(checkpoint path or "", generator module or None, label for messages)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return str(path.resolve()), None, str(model)
    path = getattr(model, "path", None)
    if path is not None and hasattr(model, "networks"):  # a ugatit.Checkpoint
        return str(Path(path).resolve()), None, str(path)
    if hasattr(model, "collect_stats") and hasattr(model, "parameters"):
        return "", model, f"<{type(model).__name__}>"
    raise ModelError(f"cannot use a {type(model).__name__} as the model", path="model",
                     hint="pass a checkpoint path, a ugatit.Checkpoint or its genA2B")


def _model_facts(path: str, module: Any) -> tuple[dict[str, Any] | None, str, Any]:
    """(radiometric contract, sha256, ModelConfig): what planning a run reads."""
    if module is not None:
        return None, "", module.config
    sha = model_sha256(path)
    _, mcfg = inference.get_generator(path, sha, "cpu")
    return model_contract(Path(path)), sha, mcfg


def _per_band(value: Any, picked: list[int], n: int, default: float
              ) -> tuple[float, ...]:
    """A per-band attribute (one value for all, or one per band) for the bands picked."""
    if value is None:
        return (default,) * len(picked)
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == n:
        return tuple(float(value[i]) for i in picked)
    try:
        return (float(value),) * len(picked)
    except (TypeError, ValueError):
        return (default,) * len(picked)


def _array_nodata(data: Any) -> float | None:
    """The array's own nodata value (rioxarray: attrs _FillValue, or `rio.nodata`)."""
    for key in ("_FillValue", "nodata"):
        value = data.attrs.get(key)
        if value is not None:
            return float(value)
    return None


def _band_labels(arr: Any, band_dim: str) -> list[str | None]:
    """Each band's common name, from a `common_name` coordinate, the band coordinate's
    labels or the band descriptions (attrs long_name); None where unknown."""
    n = arr.sizes[band_dim]
    sources: list[Sequence[Any]] = []
    if "common_name" in arr.coords and arr.coords["common_name"].dims == (band_dim,):
        sources.append(list(arr.coords["common_name"].values))
    if band_dim in arr.coords:
        sources.append(list(arr.coords[band_dim].values))
    long_name = arr.attrs.get("long_name")
    if isinstance(long_name, (list, tuple)) and len(long_name) == n:
        sources.append(list(long_name))
    names: list[str | None] = [None] * n
    for source in sources:
        for i, label in enumerate(source):
            if names[i] is None and isinstance(label, str):
                names[i] = common_name(label)
    return names


def _pick_bands(arr: Any, band_dim: str, bands: Sequence[Any] | None,
                wanted: tuple[str, ...], in_ch: int) -> tuple[list[int], list[str]]:
    """(positions along band_dim, labels) of the model's bands, in its order."""
    n = arr.sizes[band_dim]
    labels = list(arr.coords[band_dim].values) if band_dim in arr.coords else \
        list(range(1, n + 1))
    shown = ", ".join(map(str, labels))
    if bands is not None:
        bands = list(bands)
        if len(bands) != in_ch:
            raise ConfigError(f"bands {bands}: the model takes {in_ch} band(s) "
                              f"({', '.join(wanted) or 'unnamed'}); the array's bands: "
                              f"{shown}", path="bands",
                              hint=f"give {in_ch} labels of the {band_dim!r} coordinate")
        picked = []
        for b in bands:
            hits = [i for i, lab in enumerate(labels) if lab == b or str(lab) == str(b)]
            if not hits:
                raise ConfigError(f"bands: no band {b!r}; the array's bands: {shown}",
                                  path="bands", hint=f"give labels of the {band_dim!r} "
                                  f"coordinate, the model's bands in order: "
                                  f"{', '.join(wanted) or in_ch}")
            picked.append(hits[0])
        return picked, [str(labels[i]) for i in picked]
    available = _band_labels(arr, band_dim)
    if wanted and any(a is not None for a in available):
        try:
            picked, _ = match_bands(wanted, available, "data")
        except ConfigError as err:  # the same message; the hint in this API's words
            raise ConfigError(err.message, path="data", hint=f"pass an array with those "
                              f"bands, or bands=[...]: {in_ch} labels of the {band_dim!r} "
                              "coordinate in the model's order") from None
        return picked, [str(labels[i]) for i in picked]
    if n == in_ch:
        return list(range(n)), [str(lab) for lab in labels]
    raise ConfigError(f"the model takes bands {', '.join(wanted) or f'({in_ch} unnamed)'}; "
                      f"the array's bands {shown} are not named", path="bands",
                      hint=f"pass bands=[...] ({in_ch} labels of the {band_dim!r} "
                      "coordinate, in the model's order)")


def _output_chunks(x: Any, chunks: Any, height: int, width: int
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    import dask.array as da
    from dask.array.core import normalize_chunks

    if chunks is None:
        if isinstance(x, da.Array):
            return tuple(x.chunks[-2]), tuple(x.chunks[-1])
        chunks = DEFAULT_CHUNK
    if isinstance(chunks, int):
        chunks = (chunks, chunks)
    cy, cx = normalize_chunks(tuple(chunks), (height, width))
    return tuple(cy), tuple(cx)


def _wrap(xr: Any, arr: Any, values: Any, time_dim: str | None, band_dim: str, y_dim: str,
          x_dim: str, cfg: PipelineConfig, contract: Mapping[str, Any] | None, out_ch: int,
          in_names: list[str], sha: str, label: str, what: str) -> Any:
    """The output DataArray: the input's y/x (and time) coordinates, CRS, attrs."""
    out_dim = "polarisation" if what == "sar" else "band"
    coords: dict[str, Any] = {}
    for name, coord in arr.coords.items():
        if set(coord.dims) <= {time_dim, y_dim, x_dim} - {None}:
            coords[name] = coord
    if what == "sar":
        pols = ((contract or {}).get("sar") or {}).get("polarisations") \
            if isinstance((contract or {}).get("sar"), Mapping) else None
        if cfg.polarisations:  # a model with polarisations: those chosen, one band each
            labels = list(cfg.polarisations)
        elif cfg.output_bands == 1:
            labels = ["sar"] if not pols or len(pols) != 1 else list(pols)
        elif pols and len(pols) == cfg.output_bands:
            labels = [str(p) for p in pols]
        else:
            labels = [f"channel{i + 1}" for i in range(cfg.output_bands)]
    else:
        labels = ["heatmap"]
    coords[out_dim] = labels
    dims = ([time_dim] if time_dim else []) + [out_dim, y_dim, x_dim]
    nodata = output_dtype_nodata(cfg.output_scale)[1]
    attrs: dict[str, Any] = {
        "long_name": "SAR-like backscatter" if what == "sar" else "CAM attention heatmap",
        "units": "dB" if (what == "sar" and cfg.output_scale == "db") else "1",
        "_FillValue": nodata if what == "sar" else math.nan,
        "eo2sar_input_bands": ",".join(in_names),
        "eo2sar_model_sha256": sha,
        "eo2sar_output_scale": cfg.output_scale if what == "sar" else "float32",
        "eo2sar_norm": cfg.norm,
    }
    if what == "sar" and cfg.output_scale == "uint8" and cfg.db_range is not None:
        lo, hi = cfg.db_range
        attrs["scale_factor_db"] = (hi - lo) / 255.0
        attrs["add_offset_db"] = lo
    if cfg.db_range is not None:
        attrs["eo2sar_db_range"] = list(cfg.db_range)
    if "grid_mapping" in arr.attrs:
        attrs["grid_mapping"] = arr.attrs["grid_mapping"]
    elif "spatial_ref" in coords:
        attrs["grid_mapping"] = "spatial_ref"
    for key in ("crs", "transform", "epsg", "resolution"):
        if key in arr.attrs:
            attrs[key] = arr.attrs[key]
    return xr.DataArray(values, dims=dims, coords=coords, attrs=attrs, name=what)
