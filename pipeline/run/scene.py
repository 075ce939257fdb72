"""One scene in, one georeferenced SAR-like COG out: `run_scene`, the data flow.

Order of work, on purpose (DESIGN.md invariant 7): `plan_scene` (pipeline/run/plan.py) runs
every check that can fail on the user's files or flags and the global scaling
statistics, and writes nothing; only then are temporary files created, and from there
every failure removes them (pipeline/run/mosaic.py).

Memory is bounded by the block and the batch, not the scene: blocks are processed
row-major; the tiles a block needs are computed (a bounded window of Dask batches at a
time, pipeline/run/scheduling.py), blended into per-block float64 buffers, written, and
dropped as soon as no later block needs them (pipeline/run/blend_order.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from rasterio.windows import Window

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineWarning
from pipeline.inputs.radiometry import read_masked
from pipeline.run import inference
from pipeline.run.blend_order import BlendOrder
from pipeline.run.checks import model_sha256, read_error
from pipeline.run.inference import InferenceJob, TileOutput
from pipeline.run.mosaic import BlockAccumulator, RasterTarget, encode, gdal_env, open_targets
from pipeline.run.outputs import TAG_PREFIX, output_targets
from pipeline.run.plan import ScenePlan, SceneRequest, plan_scene
from pipeline.run.scheduling import (
    batch_results,
    local_threads,
    run_one_task,
    scheduler_client,
    torch_threads_kept,
)
from pipeline.run.tiling import batches, blocks, weight_window
from pipeline.urls import redact_url

__all__ = [
    "TAG_PREFIX",
    "SceneRequest",
    "SceneResult",
    "model_sha256",
    "plan_scene",
    "run_request",
    "run_scene",
]

log = logging.getLogger("pipeline")


@dataclass
class SceneResult:
    """What one scene run did (returned by run_scene, recorded by the batch manifest)."""

    input: Path
    output: Path
    width: int
    height: int
    tiles_total: int
    tiles_run: int
    seconds: float
    model_sha256: str
    config_hash: str = ""
    heatmap: Path | None = None
    scaling: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    norm_seconds: float = 0.0  # the --norm scene statistics pass (part of `seconds`)


def run_scene(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str],
    config: PipelineConfig,
    heatmap_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    client: Any = None,
    progress: bool = True,
    write_stac: bool = True,
    source: str | None = None,
    assets: tuple[str, str, str] | None = None,
) -> SceneResult:
    """Translate one scene into a SAR-like COG at `output_path` (atomically), and write
    its STAC Item beside it (`out.stac.json`) unless `write_stac` is False.

    The library entry point (keyword form of `run_request`). `input_path` takes what
    `python -m pipeline run` takes for one input: a raster, a STAC Item (file or URL), a
    Landsat / Sentinel-2 product, a remote raster (pipeline/inputs/sources.py; `assets` picks
    the bands of an Item or product). `client`: a dask.distributed Client to run on (else
    config.scheduler / config.workers / the in-process threaded scheduler). `source`:
    the input as the output's tags name it (default: what was given). Raises
    PipelineError subclasses; on any error nothing is left behind.
    """
    from pipeline.inputs.sources import product_kind, resolve_input
    from pipeline.run.model_io import input_names

    text = os.fspath(input_path)
    names = None if product_kind(text) in ("raster", "directory", "remote") else (
        input_names(model_path))  # a multispectral model's bands, picked by name
    with resolve_input(text, assets=assets, names=names) as resolved:
        if resolved.kind != "raster" and source is None:
            source = redact_url(text) if resolved.kind in ("remote", "stac") and (
                "://" in text) else Path(text).name
        request = SceneRequest(
            input=resolved.path, output=Path(output_path), model=Path(model_path),
            config=config, heatmap=None if heatmap_path is None else Path(heatmap_path),
            overwrite=overwrite, source=source,
        )
        result = run_request(request, client=client, progress=progress)
    if write_stac:
        from pipeline.errors import OutputError
        from pipeline.run.stac import item_path, write_item

        try:
            write_item(result.output, source=text if product_kind(text) != "raster"
                       else resolved.path, heatmap=result.heatmap,
                       acquired=resolved.acquired)
        except OSError as err:  # the COG is complete; say what is missing and why
            raise OutputError(f"cannot write the STAC Item ({err.strerror or err})",
                              path=item_path(result.output), hint="check the output "
                              "directory's free space and permissions") from None
    return result


def run_request(request: SceneRequest, *, client: Any = None, progress: bool = True
                ) -> SceneResult:
    """check + plan -> compute, blend and write every block -> COG, renamed into place."""
    t0 = time.perf_counter()
    plan, job = plan_scene(request, client=client)
    log.info("plan:\n%s", plan.describe())
    config = plan.config  # model-dependent settings resolved
    result_warnings: list[str] = []
    if plan.scaling.method == "empty":
        # a product's or URL's warnings name it, not the temporary VRT made for the run
        msg = f"{request.source or request.input}: no valid pixel; writing an all-nodata output"
        warnings.warn(msg, PipelineWarning, stacklevel=3)
        result_warnings.append(msg)
    for msg in _norm_warnings(plan, request.source or request.input):
        warnings.warn(msg, PipelineWarning, stacklevel=3)
        result_warnings.append(msg)
    with torch_threads_kept(), scheduler_client(config, client) as run_client, gdal_env():
        job, known, norm_seconds = with_norm_stats(plan, job, run_client)
        tiles_run = _write_scene(plan, job, config, run_client, progress=progress,
                                 overwrite=request.overwrite, known=known)
    log.info("%s: %d/%d tiles run", request.output, tiles_run, plan.grid.count)
    return SceneResult(
        input=request.input,
        output=request.output,
        width=plan.width,
        height=plan.height,
        tiles_total=plan.grid.count,
        tiles_run=tiles_run,
        seconds=time.perf_counter() - t0,
        model_sha256=plan.model_sha256,
        config_hash=config.config_hash(),
        heatmap=request.heatmap,
        scaling=plan.scaling.to_dict(),
        warnings=result_warnings,
        norm_seconds=norm_seconds,
    )


def _norm_warnings(plan: ScenePlan, label: object) -> list[str]:
    """What the user should know about the scene normalisation's sample."""
    sample = plan.norm_sample
    if sample is None or (sample.tiles and sample.fully_valid):
        return []
    if not sample.tiles:
        return [f"{label}: --norm scene found no tile to pool statistics from; every "
                "tile is normalised by its own statistics"]
    return [f"{label}: no tile is fully valid; the scene's normalisation statistics "
            f"come from the {len(sample.tiles)} most-valid tiles, nodata filled as the "
            "model sees it"]


def with_norm_stats(plan: ScenePlan, job: InferenceJob, client: Any
                    ) -> tuple[InferenceJob, dict[int, TileOutput], float]:
    """`job` carrying the scene's normalisation statistics (--norm scene) and the tiles
    the statistics pass already translated (`job.done`), those tiles' outputs, and the
    seconds the pass took. Computed once, before any batch task, where the tasks run:
    in this process with the run's threads, or as one task on the cluster (whose
    workers hold the device; it uses that worker's cores)."""
    sample = plan.norm_sample
    if sample is None or not sample.tiles:
        return job, {}, 0.0
    t0 = time.perf_counter()
    tiles = list(sample.tiles)
    config = plan.config
    workers = None if client is not None else local_threads(config.threads, config.device)
    weighted = functools.partial(inference.scene_norm_pass, weights=sample.tile_weights())
    result = run_one_task(client, job.device, weighted, job, tiles, workers)
    seconds = time.perf_counter() - t0
    log.info("%s: normalisation statistics of %d tiles (and their outputs) in %.2f s",
             plan.input.name, len(tiles), seconds)
    job = dataclasses.replace(job, norm_stats=result.stats,
                              done=frozenset(result.outputs))
    return job, dict(result.outputs), seconds


def _write_scene(
    plan: ScenePlan, job: InferenceJob, config: PipelineConfig, client: Any, *, progress: bool,
    overwrite: bool = True, known: dict[int, TileOutput] | None = None,
) -> int:
    """Compute, blend and write every block, then COG + rename. Returns tiles run
    (`known`: outputs the statistics pass made, counted as run)."""
    grid = plan.grid
    with rasterio.open(plan.input) as ds:
        targets = output_targets(plan, config, ds.profile)
    windows = blocks(plan.width, plan.height, config.block_size)
    block_tiles = [grid.tiles_in(w) for w in windows]
    empty = plan.scaling.method == "empty"
    blend = BlendOrder(block_tiles, batches(grid.count, config.task_tiles()), empty=empty)
    bar = _progress_bar(grid.count, progress, plan.input.name)
    if empty:
        bar.update(grid.count)
    tiles_run = 0
    try:
        with open_targets(targets, overwrite=overwrite), rasterio.open(plan.input) as src, \
                contextlib.closing(batch_results(job, blend.order, config, client,
                                                 on_done=bar.update, known=known)) as results:
            # closing: on an error the batches in flight finish or are cancelled before
            # the temporary files are removed (the iterators compute ahead)
            for window, tiles in zip(windows, block_tiles, strict=True):
                while not blend.ready(tiles):
                    tiles_run += blend.add(*next(results))
                _write_block(src, window, blend.take(tiles), plan, config, targets)
            for t in targets:
                t.finish()
    except rasterio.errors.RasterioIOError as exc:
        raise read_error(exc, plan.input, "read failed during the run") from None
    finally:
        bar.close()
    return tiles_run


def _write_block(
    src: rasterio.io.DatasetReader,
    window: Window,
    tiles: list[tuple[int, Any]],
    plan: ScenePlan,
    config: PipelineConfig,
    targets: list[RasterTarget],
) -> None:
    """Blend the block's tile outputs (ascending tile number: the fixed order), mask
    what the input has invalid, encode, write.

    The mask is the union of the tiles' own masks (each task read its tiles' validity):
    validity is a per-pixel rule (pipeline/run/tiling.py: read_tiles), every pixel of the
    scene lies in some tile, and a tile that was not run has no valid pixel, so the
    union is what reading the block's bands again would give, without that read. Tile
    outputs without a mask (a stand-in task) fall back to the read."""
    grid = plan.grid
    weight = _weight(grid.tile, grid.overlap)
    acc = BlockAccumulator(window, plan.output_count)
    hacc = BlockAccumulator(window, 1) if plan.heatmap is not None else None
    for t, out in tiles:
        row, col = grid.origin(t)
        acc.add(row, col, out.out, weight, out.valid)
        if hacc is not None and out.heat is not None:
            hacc.add(row, col, out.heat[None], weight)
    if all(out.valid is not None for _, out in tiles):
        valid = acc.valid
    else:
        _, valid = read_masked(src, plan.bands, window, nodata=config.nodata)
    # a VV/VH model: each polarisation on its own dB range; else one range
    db = plan.db_ranges if config.polarisations else config.db_range
    targets[0].write(encode(acc.blended(valid), config.output_scale, db), window)
    if hacc is not None:
        targets[1].write(hacc.blended(valid).astype(np.float32), window)


@functools.lru_cache(maxsize=8)
def _weight(tile: int, overlap: int) -> np.ndarray:
    """The blend window, made once per (tile, overlap) in this process (read only)."""
    return weight_window(tile, overlap)


def _progress_bar(total: int, enabled: bool, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="tile",
        desc=name,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )
