"""One scene in, one georeferenced SAR-like COG out: the orchestration of a run.

Order of work, on purpose (DESIGN.md invariant 7): every check that can fail on the
user's files or flags (config, device, output path, input raster, bands,
georeferencing, checkpoint compatibility) runs first and writes nothing; then the
global scaling statistics (one bounded decimated read); only then are temporary files
created, and from there every failure removes them.

Memory is bounded by the block and the batch, not the scene: blocks are processed
row-major; the tiles a block needs are computed (a bounded window of Dask batches at a
time), blended into per-block float64 buffers, written, and dropped as soon as no later
block needs them. At most one row of tiles across the scene is kept waiting for the
next row of blocks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from rasterio.windows import Window

from pipeline.config import PipelineConfig, resolve_for_model
from pipeline.errors import (
    InputError,
    ModelError,
    OutputError,
    PipelineError,
    PipelineWarning,
)
from pipeline.inference import (
    InferenceJob,
    TileOutput,
    check_device,
    get_generator,
    iter_distributed,
    iter_local,
    local_threads,
    local_window,
)
from pipeline.manifest import cached_sha256
from pipeline.mosaic import (
    COG_BLOCK,
    GDAL_CACHE_BYTES,
    BlockAccumulator,
    RasterTarget,
    check_output_path,
    encode,
    gdal_env,
    open_targets,
    output_dtype_nodata,
    output_profile,
    overview_count,
    tiles_for_blocks,
)
from pipeline.radiometry import (
    Scaling,
    compute_scaling,
    has_valid_pixel,
    read_masked,
    select_bands,
)
from pipeline.tiling import TileGrid, batches, blocks, weight_window
from ugatit import UgatitError, read_meta

log = logging.getLogger("pipeline")

TAG_PREFIX = "EO2SAR_"



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


@dataclass
class ScenePlan:
    """Everything decided before heavy work; printed by --dry-run."""

    input: Path
    output: Path
    heatmap: Path | None
    width: int
    height: int
    crs: str
    bands: tuple[int, ...]
    dtypes: tuple[str, ...]
    scaling: Scaling
    grid: TileGrid
    batches: int
    blocks: int
    output_dtype: str
    output_nodata: float
    output_count: int
    memory_bytes: int
    model_sha256: str
    model_desc: str
    scheduler: str
    compress: str = "DEFLATE"
    #: the run's settings with the model-dependent ones resolved (resolve_for_model)
    config: PipelineConfig = field(default_factory=PipelineConfig)
    #: the model's radiometric contract (None: a seed checkpoint without one)
    contract: dict[str, Any] | None = None

    def describe(self) -> str:
        """Human-readable plan (the --dry-run output)."""
        g = self.grid
        nodata = "NaN" if math.isnan(self.output_nodata) else f"{self.output_nodata:g}"
        lines = [
            f"input    {self.input}  {self.width} x {self.height} px, {self.crs}, "
            f"bands {','.join(map(str, self.bands))} ({'/'.join(self.dtypes)})",
            f"scaling  {self.scaling.method}: low {_fmt(self.scaling.low)} "
            f"high {_fmt(self.scaling.high)}",
            "radiometry " + "; ".join(
                f"{k} {_fmt(v['value'])} ({v['from']})"
                for k, v in radiometry_sources(self.config).items()
            ),
            f"tiles    {g.count} ({g.nx} x {g.ny}) of {g.tile} px, overlap {g.overlap}, "
            f"stride {g.stride}",
            f"batches  {self.batches}; blocks {self.blocks}",
            f"model    {self.model_desc} sha256 {self.model_sha256[:12]}",
            f"run on   {self.scheduler}",
            f"memory   ~{self.memory_bytes / 2**20:.0f} MiB (estimate, this process)",
            f"output   {self.output}  COG {self.output_count} x {self.output_dtype}, "
            f"nodata {nodata}; the input's grid ({self.width} x {self.height} px, CRS, "
            f"transform); {self.compress}, {COG_BLOCK} px blocks, "
            f"{overview_count(self.width, self.height)} AVERAGE overview level(s)",
        ]
        if self.heatmap is not None:
            lines.append(f"heatmap  {self.heatmap}  COG 1 x float32, nodata NaN")
        return "\n".join(lines)


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def radiometry_sources(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """{"percentiles": {"value": [2.0, 98.0], "from": "model"}, "db_range": {...}} of a
    resolved config: where each model-dependent value came from (output tags, plan)."""
    return {
        name: {"value": list(getattr(config, name) or ()), "from": config.origin(name)}
        for name in ("percentiles", "db_range")
    }


def model_contract(model_path: Path) -> dict[str, Any] | None:
    """The radiometric contract a checkpoint carries (None for the published seed file)."""
    try:
        value = read_meta(model_path).get("radiometry")
    except (UgatitError, OSError, RuntimeError) as exc:
        raise ModelError(
            f"cannot read the checkpoint's metadata ({str(exc).splitlines()[0]})",
            path=model_path,
            hint="pass an eo2sar/U-GAT-IT checkpoint with --model",
        ) from None
    return dict(value) if isinstance(value, dict) else None


def resolve_model_config(model_path: Path, config: PipelineConfig) -> PipelineConfig:
    """`config` with percentiles / db_range resolved against the model's contract."""
    if config.resolved:
        return config
    return resolve_for_model(config, model_contract(model_path), str(model_path))


# ---------------------------------------------------------------------------------------
# model hash


def model_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of the checkpoint file (hashed once per process: manifest.cached_sha256)."""
    try:
        return cached_sha256(Path(path))
    except OSError:
        raise ModelError(
            "checkpoint not found", path=path, hint="check the --model path"
        ) from None


# ---------------------------------------------------------------------------------------
# checks that run before any heavy work


def open_input(path: Path) -> rasterio.io.DatasetReader:
    """Open the input raster or raise an InputError saying why and what to do."""
    if not path.exists():
        raise InputError("input does not exist", path=path, hint="check the path")
    if path.is_dir():
        raise InputError(
            "input is a directory but the output is not",
            path=path,
            hint="give an output directory to process every scene of a directory",
        )
    try:
        with warnings.catch_warnings():
            # a missing geotransform is reported by check_georeferencing, as an error
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError:
        raise InputError(
            "not a raster GDAL can read",
            path=path,
            hint="give a GeoTIFF or VRT (check the file is complete: gdalinfo)",
        ) from None


def check_georeferencing(ds: rasterio.io.DatasetReader, path: Path) -> None:
    """Require a CRS and an affine geotransform; GCP/RPC-only rasters need gdalwarp."""
    has_transform = not ds.transform.is_identity and ds.transform != rasterio.Affine(
        1, 0, 0, 0, -1, 0
    )
    if ds.crs is not None and has_transform:
        return
    gcps, _ = ds.gcps
    if gcps or ds.rpcs is not None:
        kind = "GCPs" if gcps else "RPCs"
        raise InputError(
            f"is georeferenced only by {kind}, not by a geotransform",
            path=path,
            hint=(
                f"warp it onto a map grid first, e.g. gdalwarp {'-rpc ' if not gcps else ''}"
                f"-t_srs EPSG:<code> {path.name} warped.tif"
            ),
        )
    missing = "a CRS" if ds.crs is None and has_transform else "georeferencing"
    if ds.crs is None and not has_transform:
        missing = "georeferencing (no CRS, no geotransform)"
    raise InputError(
        f"has no {missing}",
        path=path,
        hint="the output must sit on a map grid; assign one, e.g. gdal_edit.py -a_srs "
        "EPSG:<code> -a_ullr <ulx> <uly> <lrx> <lry> file.tif",
    )


def read_error(exc: Exception, path: Path, when: str = "cannot read pixel data") -> InputError:
    """The InputError for a failed pixel read (a truncated or corrupt file), one line."""
    first = str(exc).splitlines()[0] if str(exc) else "read error"
    return InputError(
        f"{when} ({first})",
        path=path,
        hint="the file looks truncated or corrupt; re-download or re-export it",
    )


def check_readable(ds: rasterio.io.DatasetReader, bands: tuple[int, ...], path: Path) -> None:
    """Read the first and last block of each band: catches truncated files up front."""
    try:
        for b in sorted(set(bands)):
            h, w = ds.block_shapes[b - 1]
            last_row = ((ds.height - 1) // h) * h
            last_col = ((ds.width - 1) // w) * w
            for row, col in ((0, 0), (last_row, last_col)):
                win = Window(col, row, min(w, ds.width - col), min(h, ds.height - row))
                ds.read(b, window=win)
    except rasterio.errors.RasterioIOError as exc:
        raise read_error(exc, path) from None


def load_model_info(model_path: Path, config: PipelineConfig) -> tuple[str, str]:
    """Check the checkpoint exists, loads and fits the tiling; (sha256, description)."""
    sha = model_sha256(model_path)
    # the main process validates on CPU (cheap: genA2B only, memory-mapped); workers
    # load onto their own device
    _, mcfg = get_generator(str(Path(model_path).resolve()), sha, "cpu")
    if not mcfg.light and config.tile_size != mcfg.img_size:
        raise ModelError(
            f"is a full (non-light) U-GAT-IT model for {mcfg.img_size} px tiles, "
            f"tile size {config.tile_size} asked",
            path=model_path,
            hint=f"use --tile-size {mcfg.img_size} with this model",
        )
    variant = "light" if mcfg.light else f"full {mcfg.img_size} px"
    return sha, f"U-GAT-IT {variant} ngf {mcfg.ngf} n_res {mcfg.n_res}"


def _check_heatmap_path(heatmap: Path | None, output: Path, inp: Path, overwrite: bool) -> None:
    if heatmap is None:
        return
    if Path(heatmap).resolve() in (Path(output).resolve(), Path(inp).resolve()):
        raise OutputError(
            "heatmap path is the output or the input",
            path=heatmap,
            hint="give the heatmap its own file name",
        )
    check_output_path(heatmap, overwrite=overwrite, what="heatmap")


def estimate_memory(
    config: PipelineConfig, grid: TileGrid, n_bands_in: int, threads: int, heatmap: bool
) -> int:
    """Rough peak bytes of this process: block buffers + tile cache + batches in flight."""
    b = config.block_size
    out_c = config.output_bands
    heat = 1 if heatmap else 0
    acc = b * b * ((out_c + 1) * 8 + n_bands_in * 8 + 8)  # num, den, input read, blend
    t2 = grid.tile * grid.tile
    per_tile = t2 * 4 * (out_c + heat)
    cached = (grid.nx * (math.ceil(b / grid.stride) + 2)) * per_tile
    window = local_window(threads) * config.batch_size
    flight = window * (per_tile + t2 * 4 * 3 * 8)  # outputs + inputs/activations (rough)
    # + imported libraries (~250 MiB measured), GDAL block cache, allocator slack
    return int(acc + cached + flight + 350 * 2**20 + GDAL_CACHE_BYTES)


def is_remote(config: PipelineConfig, client: Any) -> bool:
    """Whether the tiles run on machines other than this one, whose devices this process
    cannot check: `--scheduler`, or a client passed in by a library caller. A client made
    for `--workers` is a LocalCluster on this machine, so its device is checked here."""
    return bool(config.scheduler) or (client is not None and not config.workers)


# ---------------------------------------------------------------------------------------
# the run


def plan_scene(
    input_path: Path,
    output_path: Path,
    *,
    model_path: Path,
    config: PipelineConfig,
    heatmap_path: Path | None = None,
    overwrite: bool = False,
    client: Any = None,
    check_output: bool = True,
) -> tuple[ScenePlan, InferenceJob]:
    """Run every check and the scaling statistics; write nothing.

    `check_output=False` leaves out the checks of the output paths (a directory dry run,
    whose output directory may not exist yet: the directory runner decides what to
    (re)write).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if not is_remote(config, client):
        check_device(config.device)
    if input_path.resolve() == output_path.resolve():
        raise OutputError(
            "output is the input", path=output_path, hint="write to another file name"
        )
    if check_output:
        check_output_path(output_path, overwrite=overwrite)
        _check_heatmap_path(heatmap_path, output_path, input_path, overwrite)
    with open_input(input_path) as ds:
        check_georeferencing(ds, input_path)
        bands = select_bands(ds.count, config.bands, str(input_path), tuple(ds.dtypes))
        check_readable(ds, bands, input_path)
        sha, desc = load_model_info(model_path, config)
        contract = model_contract(model_path)
        config = resolve_for_model(config, contract, str(model_path))  # idempotent
        try:
            scaling = compute_scaling(
                ds,
                bands,
                scale=config.scale,
                percentiles=config.percentiles,
                fixed_min=config.fixed_min,
                fixed_max=config.fixed_max,
                nodata=config.nodata,
                stats_size=config.stats_size,
            )
            if scaling.method != "empty" and not has_valid_pixel(
                ds, bands, nodata=config.nodata, stats_size=config.stats_size
            ):
                scaling = dataclasses.replace(scaling, method="empty")
        except rasterio.errors.RasterioIOError as exc:
            raise read_error(exc, input_path) from None
        grid = TileGrid(ds.width, ds.height, config.tile_size, config.overlap)
        out_dtype, out_nodata = output_dtype_nodata(config.output_scale)
        threads = local_threads(config.threads, config.device)
        if client is not None:
            sched = f"dask.distributed client {getattr(client, 'dashboard_link', '')}".strip()
        elif config.scheduler:
            sched = f"dask.distributed scheduler {config.scheduler}"
        elif config.workers:
            sched = f"dask LocalCluster, {config.workers} worker process(es) x 1 thread"
        else:
            sched = f"dask local threads x {threads}"
        sched += f", device {config.device}"
        n_blocks = math.ceil(ds.width / config.block_size) * math.ceil(
            ds.height / config.block_size
        )
        plan = ScenePlan(
            input=input_path,
            output=output_path,
            heatmap=heatmap_path,
            width=ds.width,
            height=ds.height,
            crs=ds.crs.to_string(),
            bands=bands,
            dtypes=tuple(ds.dtypes[b - 1] for b in bands),
            scaling=scaling,
            grid=grid,
            batches=math.ceil(grid.count / config.batch_size),
            blocks=n_blocks,
            output_dtype=out_dtype,
            output_nodata=out_nodata,
            output_count=config.output_bands,
            memory_bytes=estimate_memory(
                config, grid, len(bands), threads, heatmap_path is not None
            ),
            model_sha256=sha,
            model_desc=desc,
            scheduler=sched,
            compress=config.compress,
            config=config,
            contract=contract,
        )
    job = InferenceJob(
        input_path=str(input_path.resolve()),
        bands=bands,
        nodata=config.nodata,
        scaling=scaling,
        grid=grid,
        output_bands=config.output_bands,
        heatmap=heatmap_path is not None,
        model_path=str(Path(model_path).resolve()),
        model_sha256=sha,
        device=config.device,
        tf32=config.tf32,
    )
    return plan, job


def run_scene(
    input_path: Path,
    output_path: Path,
    *,
    model_path: Path,
    config: PipelineConfig,
    heatmap_path: Path | None = None,
    overwrite: bool = False,
    client: Any = None,
    progress: bool = True,
) -> SceneResult:
    """Translate one scene into a SAR-like COG at `output_path` (atomically).

    `client`: a dask.distributed Client to run on (else config.scheduler / config.workers
    / the in-process threaded scheduler). Raises PipelineError subclasses; on any error
    nothing is left behind.
    """
    t0 = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    heatmap_path = None if heatmap_path is None else Path(heatmap_path)
    plan, job = plan_scene(
        input_path,
        output_path,
        model_path=model_path,
        config=config,
        heatmap_path=heatmap_path,
        overwrite=overwrite,
        client=client,
    )
    log.info("plan:\n%s", plan.describe())
    config = plan.config  # model-dependent settings resolved
    result_warnings: list[str] = []
    if plan.scaling.method == "empty":
        msg = f"{input_path}: no valid pixel; writing an all-nodata output"
        warnings.warn(msg, PipelineWarning, stacklevel=2)
        result_warnings.append(msg)
    import torch

    torch_threads = torch.get_num_threads()  # CPU tasks pin it to 1; restore for callers
    try:
        with scheduler_client(config, client) as run_client, gdal_env():
            tiles_run = _write_scene(plan, job, config, run_client, progress=progress)
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    log.info("%s: %d/%d tiles run", output_path, tiles_run, plan.grid.count)
    return SceneResult(
        input=input_path,
        output=output_path,
        width=plan.width,
        height=plan.height,
        tiles_total=plan.grid.count,
        tiles_run=tiles_run,
        seconds=time.perf_counter() - t0,
        model_sha256=plan.model_sha256,
        config_hash=config.config_hash(),
        heatmap=heatmap_path,
        scaling=plan.scaling.to_dict(),
        warnings=result_warnings,
    )


class scheduler_client:
    """Context manager yielding a distributed Client or None (in-process threads)."""

    def __init__(self, config: PipelineConfig, client: Any) -> None:
        self.config, self.client = config, client
        self.owned: list[Any] = []

    def __enter__(self) -> Any:
        if self.client is not None:
            return self.client
        if not (self.config.scheduler or self.config.workers):
            return None
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise PipelineError(
                "dask.distributed is not installed",
                path="--scheduler/--workers",
                hint="pip install distributed, or run without --scheduler/--workers",
            ) from None
        try:
            if self.config.scheduler:
                client = Client(self.config.scheduler, timeout="10s")
                self.owned.append(client)
            else:
                cluster = LocalCluster(
                    n_workers=self.config.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                self.owned.append(cluster)
                client = Client(cluster)
                self.owned.insert(0, client)
        except OSError as exc:
            self.__exit__(None, None, None)
            raise PipelineError(
                f"cannot reach the Dask scheduler ({exc})",
                path=self.config.scheduler or "LocalCluster",
                hint="check the address (tcp://host:8786) and that the scheduler runs",
            ) from None
        return client

    def __exit__(self, *exc: Any) -> None:
        for obj in self.owned:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - closing must not mask the real error
                log.debug("closing %r failed", obj, exc_info=True)
        self.owned.clear()


def _tags(plan: ScenePlan, config: PipelineConfig, kind: str) -> dict[str, str]:
    from pipeline import __version__

    return {
        f"{TAG_PREFIX}VERSION": __version__,
        f"{TAG_PREFIX}PRODUCT": kind,
        f"{TAG_PREFIX}INPUT": plan.input.name,
        f"{TAG_PREFIX}BANDS": ",".join(map(str, plan.bands)),
        f"{TAG_PREFIX}MODEL_SHA256": plan.model_sha256,
        f"{TAG_PREFIX}MODEL": plan.model_desc,
        f"{TAG_PREFIX}CONFIG": json.dumps(config.output_dict(), sort_keys=True),
        f"{TAG_PREFIX}CONFIG_HASH": config.config_hash(),
        f"{TAG_PREFIX}SCALING": json.dumps(plan.scaling.to_dict(), sort_keys=True),
        # where the model-dependent settings came from (flag/config/model/default), and
        # the model's own contract
        f"{TAG_PREFIX}RADIOMETRY": json.dumps(
            {**radiometry_sources(config), "model": plan.contract}, sort_keys=True
        ),
        # scheduling settings: recorded for provenance, they never change the pixels
        f"{TAG_PREFIX}RUNTIME": json.dumps(
            {k: v for k, v in config.to_dict().items() if k not in config.output_dict()},
            sort_keys=True,
        ),
    }


def _write_scene(
    plan: ScenePlan, job: InferenceJob, config: PipelineConfig, client: Any, *, progress: bool
) -> int:
    """Compute, blend and write every block, then COG + rename. Returns tiles run."""
    grid = plan.grid
    with rasterio.open(plan.input) as ds:
        src_profile = ds.profile
    windows = list(blocks(plan.width, plan.height, config.block_size))
    block_tiles = tiles_for_blocks(grid, windows)
    batch_list = batches(grid.count, config.batch_size)
    batch_of = {t: bi for bi, tiles in enumerate(batch_list) for t in tiles}
    empty = plan.scaling.method == "empty"

    # the order in which blocks first need batches, and how many blocks need each tile
    order: list[tuple[int, tuple[int, ...]]] = []
    seen: set[int] = set()
    uses: dict[int, int] = {}
    for tiles in block_tiles:
        for t in tiles:
            uses[t] = uses.get(t, 0) + 1
            bi = batch_of[t]
            if bi not in seen and not empty:
                seen.add(bi)
                order.append((bi, batch_list[bi]))

    out_desc = (
        ("sar_like",) if config.output_bands == 1 else ("sar_like_1", "sar_like_2", "sar_like_3")
    )
    targets = [
        RasterTarget(
            final=plan.output,
            profile=output_profile(
                src_profile,
                count=config.output_bands,
                dtype=plan.output_dtype,
                nodata=plan.output_nodata,
                block_size=config.block_size,
            ),
            tags=_tags(plan, config, "sar_like"),
            band_descriptions=out_desc,
            compress=config.compress,
        )
    ]
    if plan.heatmap is not None:
        targets.append(
            RasterTarget(
                final=plan.heatmap,
                profile=output_profile(
                    src_profile, count=1, dtype="float32", nodata=math.nan,
                    block_size=config.block_size,
                ),
                tags=_tags(plan, config, "cam_heatmap"),
                band_descriptions=("cam_heatmap",),
                compress=config.compress,
            )
        )

    bar = _progress_bar(grid.count, progress, plan.input.name)
    weight = weight_window(grid.tile, grid.overlap)
    tiles_run = 0
    try:
        with open_targets(targets), rasterio.open(plan.input) as src:
            results = _results(job, order, config, client, bar)
            done: set[int] = set()
            cache: dict[int, TileOutput | None] = {}
            if empty:
                bar.update(grid.count)
            for window, tiles in zip(windows, block_tiles, strict=True):
                for t in tiles:
                    while not empty and batch_of[t] not in done:
                        bi, outs = next(results)
                        done.add(bi)
                        for t2, o in zip(batch_list[bi], outs, strict=True):
                            cache[t2] = o
                            tiles_run += o is not None
                _, valid = read_masked(src, plan.bands, window, nodata=config.nodata)
                acc = BlockAccumulator(window, config.output_bands)
                hacc = BlockAccumulator(window, 1) if plan.heatmap is not None else None
                for t in tiles:  # ascending global tile number: the fixed order
                    o = cache.get(t)
                    if o is not None:
                        row, col = grid.origin(t)
                        acc.add(row, col, o.out, weight)
                        if hacc is not None and o.heat is not None:
                            hacc.add(row, col, o.heat[None], weight)
                    uses[t] -= 1
                    if uses[t] == 0:
                        cache.pop(t, None)
                y = acc.blended(valid)
                targets[0].write(encode(y, config.output_scale, config.db_range), window)
                if hacc is not None:
                    targets[1].write(hacc.blended(valid).astype(np.float32), window)
            for t in targets:
                t.finish()
    except rasterio.errors.RasterioIOError as exc:
        raise read_error(exc, plan.input, "read failed during the run") from None
    finally:
        bar.close()
    return tiles_run


def _results(
    job: InferenceJob,
    order: list[tuple[int, tuple[int, ...]]],
    config: PipelineConfig,
    client: Any,
    bar: Any,
) -> Iterator[tuple[int, list[TileOutput | None]]]:
    if client is not None:
        return iter_distributed(job, order, client, on_done=bar.update)
    return iter_local(
        job, order, threads=local_threads(config.threads, config.device), on_done=bar.update
    )


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
