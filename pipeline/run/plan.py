"""What a scene run will do, decided before any heavy work: the request and the plan.

`plan_scene` runs every check (pipeline/run/checks.py) and the scene's global scaling
statistics (one bounded, decimated read), and writes nothing: `--dry-run` prints its
plan, `run_scene` executes it. The memory estimate is here because it follows from the
plan's numbers (block, batch, tile grid), not from the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
import rasterio.errors

from pipeline.config import NORM_PASS_TILE_BYTES, PipelineConfig, resolve_for_model
from pipeline.errors import InputError
from pipeline.inputs.radiometry import (
    REFLECTANCE_RANGE,
    SUPPORTED_DTYPES,
    Scaling,
    band_reflectance,
    compute_scaling,
    scene_is_empty,
    select_bands,
)
from pipeline.run.checks import (
    check_declared_size,
    check_device,
    check_georeferencing,
    check_georeferencing_finite,
    check_not_input,
    check_output_paths,
    check_readable,
    load_model_info,
    open_input,
    read_error,
)
from pipeline.run.inference import InferenceJob
from pipeline.run.model_io import (
    model_contract,
    model_io,
    output_channels,
    output_db_ranges,
    pick_bands,
    reflectance_range,
)
from pipeline.run.mosaic import (
    COG_BLOCK,
    GDAL_CACHE_BYTES,
    gdal_env,
    output_dtype_nodata,
    overview_count,
)
from pipeline.run.norm_sample import NormSample, choose_sample
from pipeline.run.scheduling import describe, is_remote, local_threads, local_window
from pipeline.run.tiling import TileGrid
from ugatit.io import fault_point


@dataclass(frozen=True)
class SceneRequest:
    """What the user asked for one run: input, output, model, settings.

    For a directory run `input` and `output` are directories and `heatmap` (any value)
    asks for a heatmap beside every output.
    """

    input: Path
    output: Path
    model: Path
    config: PipelineConfig
    heatmap: Path | None = None
    overwrite: bool = False
    #: what the user named when `input` is a VRT made for it (a product, a STAC Item, a
    #: URL: pipeline/inputs/sources.py), recorded in the output's tags instead of the VRT's name
    source: str | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "model", "heatmap"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


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
    #: the input as the user named it (SceneRequest.source, else the file's name)
    source: str = ""
    #: --norm scene: the tiles whose pooled statistics normalise every tile (None: per
    #: tile, or a scene with no valid pixel)
    norm_sample: NormSample | None = None
    #: the model's input bands by name (pipeline/run/model_io.py; None: RGB as always)
    band_names: tuple[str, ...] | None = None
    #: the dB range of each output band (--output-scale db), one per polarisation
    db_ranges: tuple[tuple[float, float], ...] = ()

    def norm_dict(self) -> dict[str, Any]:
        """The normalisation of this run, for the output tags (EO2SAR_NORM)."""
        if self.norm_sample is None:
            return {"mode": "tile"} if self.config.norm == "tile" else {
                "mode": "scene", "sample": self.config.norm_sample, "tiles": 0}
        return self.norm_sample.to_dict()

    def describe_norm(self) -> str:
        s = self.norm_sample
        if self.config.norm == "tile":
            return "tile: every tile normalised by its own statistics"
        if s is None or not s.tiles:
            return "scene: no valid tile to pool (every tile by its own statistics)"
        kind = "fully valid" if s.fully_valid else "MOST-valid (no tile is fully valid)"
        return (f"scene: statistics pooled once over {len(s.tiles)} {kind} tile(s) of "
                f"{self.grid.count} (--norm-sample {s.requested}), used by every tile")

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
            f"norm     {self.describe_norm()}",
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
        if self.band_names:
            lines.insert(1, f"model in bands {', '.join(self.band_names)} (by name)")
        if self.config.polarisations:
            lines.append("bands    " + ", ".join(
                f"{p} {lo:g}..{hi:g} dB" for p, (lo, hi) in zip(
                    self.config.polarisations, self.db_ranges, strict=True)))
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


def resolve_model_config(model_path: Path, config: PipelineConfig) -> PipelineConfig:
    """`config` with percentiles / db_range (and a multispectral model's scale and
    polarisations) resolved against the model's contract."""
    if config.resolved:
        return config
    contract = model_contract(model_path)
    mio = model_io(model_path, contract)
    return resolve_for_model(config, contract, str(model_path), out_ch=mio.out_ch,
                             ngf=mio.ngf)


def output_count(config: PipelineConfig) -> int:
    """Bands of the SAR-like output: one per polarisation of a model that names them,
    else --output-bands (1 = the mean of 3 channels, 3 = all)."""
    return len(config.polarisations) if config.polarisations else config.output_bands


def select_dtypes(ds: rasterio.io.DatasetReader, bands: tuple[int, ...], label: str) -> None:
    """select_bands' dtype rule, for bands picked by name."""
    for b in bands:
        if ds.dtypes[b - 1] not in SUPPORTED_DTYPES:
            raise InputError(f"band {b} has dtype {ds.dtypes[b - 1]}, not supported",
                             path=label, hint="convert it first, e.g. gdal_translate -ot "
                             "Float32 in.tif out.tif")


#: Peak bytes of one tile's forward per (tile pixel x ngf): measured +1.73 GiB for 16
#: tiles of 256 px in one forward through a light ngf 64, n_res 4 generator (CPU, float32).
FORWARD_BYTES = 4 * 7.0
#: Bytes per (tile pixel x ngf) that each sampled tile holds while the --norm scene
#: statistics pass waits for the others at a norm layer (pipeline/run/inference.py:
#: scene_norm_pass): its activations at the widest layers (ngf channels at full
#: resolution, float32), its input and its kept output (pipeline.config, measured).
NORM_PASS_WAIT_BYTES = NORM_PASS_TILE_BYTES


def estimate_memory(
    config: PipelineConfig, grid: TileGrid, n_bands_in: int, threads: int, heatmap: bool,
    *, norm_tiles: int = 0, ngf: int = 0,
) -> int:
    """Rough peak bytes of this process: block buffers + tile cache + batches in flight,
    or the statistics pass of `norm_tiles` tiles (before the run: each tile's activation
    at one layer, and `threads` forwards at work) when it is larger."""
    b = config.block_size
    out_c = output_count(config)
    heat = 1 if heatmap else 0
    acc = b * b * ((out_c + 1) * 8 + n_bands_in * 8 + 8)  # num, den, input read, blend
    t2 = grid.tile * grid.tile
    per_tile = t2 * 4 * (out_c + heat)
    cached = (grid.nx * (math.ceil(b / grid.stride) + 2)) * per_tile
    window = local_window(threads) * config.task_tiles()
    flight = window * (per_tile + t2 * 4 * 3 * 8)  # outputs + inputs/activations (rough)
    norm_pass = 0
    if norm_tiles:
        forwards = min(threads, norm_tiles) * config.forward_micro_batch()
        norm_pass = int(t2 * ngf * (norm_tiles * NORM_PASS_WAIT_BYTES
                                    + forwards * FORWARD_BYTES))
    # + imported libraries (~250 MiB measured), GDAL block cache, allocator slack
    return int(max(acc + cached + flight, norm_pass) + 350 * 2**20 + GDAL_CACHE_BYTES)


def scene_scaling(
    ds: rasterio.io.DatasetReader, bands: tuple[int, ...], config: PipelineConfig, path: Path,
    reflectance_range: tuple[float, float] = REFLECTANCE_RANGE, label: object = None,
) -> Scaling:
    """The global scaling, "empty" when the scene has no valid pixel at all. Scale
    "reflectance": each band's scale to reflectance from --reflectance-scale or the
    raster's band Scale/Offset (refused when it has none), `reflectance_range` -> 0..1."""
    reflectance = None
    if config.scale == "reflectance":
        reflectance = band_reflectance(ds, bands, str(label or path), config.reflectance_scale)
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
            reflectance=reflectance,
            reflectance_range=reflectance_range,
        )
        fault_point("stats")  # test hook (tests/faults): statistics read, nothing written
        if scene_is_empty(ds, bands, scaling, nodata=config.nodata,
                          stats_size=config.stats_size):
            scaling = dataclasses.replace(scaling, method="empty")
    except rasterio.errors.RasterioIOError as exc:
        raise read_error(exc, path) from None
    return scaling


def norm_sample(
    ds: rasterio.io.DatasetReader, bands: tuple[int, ...], grid: TileGrid,
    config: PipelineConfig, path: Path
) -> NormSample:
    """The tiles of `--norm scene` (pipeline/run/norm_sample.py): reads, decides nothing else."""
    try:
        return choose_sample(ds, bands, grid, config.norm_sample, nodata=config.nodata,
                             stats_size=config.stats_size)
    except rasterio.errors.RasterioIOError as exc:
        raise read_error(exc, path) from None


def _local_norm_tiles(sample: NormSample | None, config: PipelineConfig, client: Any) -> int:
    """Tiles of the statistics pass when it runs in this process's memory (CPU, no
    cluster); 0 otherwise (GPU memory, or a worker's)."""
    if sample is None or config.device != "cpu" or config.workers or is_remote(config, client):
        return 0
    return len(sample.tiles)


def plan_scene(
    request: SceneRequest, *, client: Any = None, check_output: bool = True
) -> tuple[ScenePlan, InferenceJob]:
    """Run every check and the scaling statistics; write nothing.

    `check_output=False` leaves out the checks of the output paths (a directory dry run,
    whose output directory may not exist yet: the directory runner decides what to
    (re)write).
    """
    inp = request.input
    config = request.config
    if not is_remote(config, client):
        check_device(config.device)
    check_not_input(inp, request.output)
    if check_output:
        check_output_paths(inp, request.output, request.heatmap, overwrite=request.overwrite)
    # gdal_env: the statistics read the whole scene (decimated) through GDAL's block
    # cache, whose default (5 % of RAM) kept most of a 16k scene: +750 MiB at planning
    with gdal_env(), open_input(inp) as ds:
        check_georeferencing(ds, inp)
        check_georeferencing_finite(ds, inp)
        sha, desc = load_model_info(request.model, config)
        contract = model_contract(request.model)
        mio = model_io(request.model, contract)
        label = request.source or str(inp)
        if mio.by_name:  # a multispectral model: its bands by name (model_io.py)
            bands = pick_bands(mio, ds.descriptions, ds.count, config.bands, label)
            select_dtypes(ds, bands, label)
        else:
            bands = select_bands(ds.count, config.bands, str(inp), tuple(ds.dtypes))
        check_declared_size(ds, bands, inp)
        check_readable(ds, bands, inp)
        config = resolve_for_model(config, contract, str(request.model),  # idempotent
                                   out_ch=mio.out_ch, ngf=mio.ngf)
        scaling = scene_scaling(ds, bands, config, inp, reflectance_range(contract), label)
        grid = TileGrid(ds.width, ds.height, config.tile_size, config.overlap)
        sample = None
        if config.norm == "scene" and scaling.method != "empty":
            sample = norm_sample(ds, bands, grid, config, inp)
        out_dtype, out_nodata = output_dtype_nodata(config.output_scale)
        threads = local_threads(config.threads, config.device)
        n_blocks = math.ceil(ds.width / config.block_size) * math.ceil(
            ds.height / config.block_size
        )
        plan = ScenePlan(
            source=request.source or inp.name,
            input=inp,
            output=request.output,
            heatmap=request.heatmap,
            width=ds.width,
            height=ds.height,
            crs=ds.crs.to_string(),
            bands=bands,
            dtypes=tuple(ds.dtypes[b - 1] for b in bands),
            scaling=scaling,
            grid=grid,
            batches=math.ceil(grid.count / config.task_tiles()),
            blocks=n_blocks,
            output_dtype=out_dtype,
            output_nodata=out_nodata,
            output_count=output_count(config),
            memory_bytes=estimate_memory(
                config, grid, len(bands), threads, request.heatmap is not None,
                norm_tiles=_local_norm_tiles(sample, config, client),
                ngf=mio.ngf,
            ),
            model_sha256=sha,
            model_desc=desc,
            scheduler=describe(config, client),
            compress=config.compress,
            config=config,
            contract=contract,
            norm_sample=sample,
            band_names=mio.band_names if mio.by_name and mio.band_names else None,
            db_ranges=output_db_ranges(config, contract),
        )
    job = InferenceJob(
        input_path=str(inp.resolve()),
        bands=bands,
        nodata=config.nodata,
        scaling=scaling,
        grid=grid,
        output_bands=output_count(config),
        channels=output_channels(config, contract),
        heatmap=request.heatmap is not None,
        model_path=str(request.model.resolve()),
        model_sha256=sha,
        device=config.device,
        precision=config.precision,
        channels_last=config.channels_last,
        compile=config.compile,
        micro_batch=config.forward_micro_batch(),
    )
    return plan, job
