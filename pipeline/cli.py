"""`python -m pipeline run`: a thin click layer over pipeline.scene / pipeline.batch.

Flags override the YAML config file (`--config`), which overrides the defaults of
PipelineConfig; every option's help says its default. Errors of the pipeline
(PipelineError) become ONE line on stderr, `Error: <path>: <message>. Hint: <hint>`,
and exit status 2 for usage errors (bad flag or config value, bad or absent device:
ConfigError, DeviceError, like click's own usage errors) or 1 for everything else
(unusable input, output or model; failures while running; a directory run with failed
scenes).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from pipeline.config import load_config
from pipeline.errors import ConfigError, PipelineError, PipelineWarning
from pipeline.plan import SceneRequest

log = logging.getLogger("pipeline")


def _fail(err: PipelineError) -> None:
    click.echo(f"Error: {err.format()}", err=True)
    sys.exit(err.exit_code)


def _nodata_value(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            f"bad value for --nodata: {text!r}", path="--nodata", hint="a number, or nan"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """eo2sar scene pipeline: optical scenes -> georeferenced SAR-like rasters."""


@main.command("run")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.option(
    "--model", "model_path", required=True, type=click.Path(path_type=Path),
    help="U-GAT-IT checkpoint (published eo2sar file or ours). Required.",
)
@click.option(
    "--device", default=None,
    help="cpu, cuda or cuda:N. [default: cpu]",
)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="YAML file of settings (see configs/pipeline.yaml); flags override it. "
    "[default: none, built-in defaults]",
)
@click.option(
    "--bands", default=None,
    help="Three 1-based input bands fed as R,G,B, e.g. 3,2,1 for B,G,R files. "
    "[default: a 3-band input as is; anything else needs --bands]",
)
@click.option(
    "--scale", type=click.Choice(["auto", "fixed", "none"]), default=None,
    help="Input scaling to [0,1]: auto = uint8/255, else a global per-band percentile "
    "stretch; fixed = fixed_min/fixed_max from the config; none = already 0..1. "
    "[default: auto]",
)
@click.option(
    "--percentiles", default=None,
    help="LOW,HIGH percentiles of the auto stretch of non-uint8 input. "
    "[default: the model's radiometric contract, else 2,98]",
)
@click.option(
    "--nodata", default=None,
    help="Declare the input nodata value (replaces the file's tag). Not needed for the "
    "zero collar of 16-bit products: pixels 0 in every band of non-uint8 input are fill. "
    "[default: the file's nodata, masks, NaN and that fill rule]",
)
@click.option("--tile-size", type=int, default=None, help="Tile size in px (multiple of 4; "
              "a full model needs its own size). [default: 256]")
@click.option("--overlap", type=int, default=None,
              help="Pixels shared by neighbouring tiles, blended away. [default: 64]")
@click.option("--batch-size", type=int, default=None,
              help="Tiles per Dask task (does not change the output). [default: 4]")
@click.option("--block-size", type=int, default=None,
              help="Output block side written at a time, multiple of 16 (bounds memory; "
              "does not change the output). [default: 1024]")
@click.option("--output-bands", type=click.Choice(["1", "3"]), default=None,
              help="1 = mean of the generator's 3 channels, 3 = all. [default: 1]")
@click.option("--output-scale", type=click.Choice(["unit", "uint8", "db"]), default=None,
              help="unit = float32 0..1 (nodata NaN); uint8 = 1..255 (nodata 0); "
              "db = float32 mapped linearly onto --db-range (nodata NaN). [default: unit]")
@click.option("--db-range", default=None,
              help="LOW,HIGH dB that output 0..1 maps to with --output-scale db, e.g. "
              "--db-range=-25,0. [default: the model's radiometric contract, else -25,0]")
@click.option("--heatmap", "heatmap_path", type=click.Path(path_type=Path), default=None,
              help="Also write the CAM attention heatmap mosaic here (file input) or "
              "beside each output (directory input: any value turns it on). [default: off]")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace existing outputs. [default: refuse]")
@click.option("--pattern", default="*.tif", show_default=True,
              help="Glob of the scenes to process when INPUT is a directory.")
@click.option("--scheduler", default=None,
              help="Address of an existing dask.distributed scheduler (tcp://host:8786). "
              "[default: in-process threads]")
@click.option("--workers", type=int, default=None,
              help="Start a local cluster of N worker processes (1 thread each). "
              "[default: in-process threads]")
@click.option("--tf32", is_flag=True, default=None,
              help="CUDA: TF32 convolutions (about 3.7x faster on an H200; outputs move by "
              "up to ~2e-3). [default: off, float32 parity with the CPU]")
@click.option("--threads", type=int, default=None,
              help="Threads of the in-process scheduler. [default: CPU cores; 2 on CUDA]")
@click.option("--dry-run", is_flag=True, default=False,
              help="Check everything and print the plan (tiles, batches, memory, output); "
              "write nothing. [default: off]")
@click.option("-v", "--verbose", count=True,
              help="More log output (-v: info, -vv: debug). [default: warnings]")
@click.option("-q", "--quiet", is_flag=True, default=False,
              help="No progress bar, warnings and errors only. [default: off]")
def run(
    input_path: Path,
    output_path: Path,
    model_path: Path,
    config_path: Path | None,
    heatmap_path: Path | None,
    overwrite: bool,
    pattern: str,
    dry_run: bool,
    verbose: int,
    quiet: bool,
    **options: Any,
) -> None:
    """Translate INPUT (a georeferenced optical raster, or a directory of them) into a
    SAR-like Cloud Optimized GeoTIFF at OUTPUT (a file, or a directory), on the same
    grid, nodata where the input is invalid.

    \b
    Examples:
      python -m pipeline run scene.tif out.tif --model eo2sar_params_latest.pt
      python -m pipeline run l8.tif out.tif --model m.pt --bands 3,2,1
      python -m pipeline run scenes/ out/ --model m.pt --device cuda:0
    """
    level = logging.WARNING if quiet else (logging.INFO if verbose == 1 else logging.WARNING)
    if verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        overrides = dict(options)
        overrides["nodata"] = _nodata_value(options.get("nodata"))
        if overrides.get("output_bands") is not None:
            overrides["output_bands"] = int(overrides["output_bands"])
        request = SceneRequest(
            input=input_path, output=output_path, model=model_path,
            config=load_config(config_path, overrides), heatmap=heatmap_path,
            overwrite=overwrite,
        )
        if input_path.is_dir():
            _run_directory(request, pattern, quiet=quiet, dry_run=dry_run)
        else:
            _run_file(request, quiet=quiet, dry_run=dry_run)
    except PipelineError as err:
        _fail(err)


def _run_file(request: SceneRequest, *, quiet: bool, dry_run: bool) -> None:
    from pipeline.scene import plan_scene, run_request

    if request.output.is_dir():  # the name a directory run would give it (x.vrt -> x.tif)
        output = request.output / (request.input.stem + ".tif")
        request = dataclasses.replace(request, output=output)
    if dry_run:
        plan, _ = plan_scene(request)
        click.echo(plan.describe())
        click.echo("dry run: nothing written")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PipelineWarning)  # printed below, once
        result = run_request(request, progress=not quiet)
    if not quiet:
        rate = result.tiles_run / result.seconds if result.seconds > 0 else math.nan
        click.echo(
            f"{result.output}: {result.width} x {result.height} px, "
            f"{result.tiles_run}/{result.tiles_total} tiles in {result.seconds:.1f} s "
            f"({rate:.2f} tiles/s)",
            err=True,
        )
    for w in result.warnings:
        click.echo(f"Warning: {w}", err=True)


def _run_directory(request: SceneRequest, pattern: str, *, quiet: bool, dry_run: bool) -> None:
    from pipeline.batch import run_directory
    from pipeline.checks import check_device, load_model_info
    from pipeline.errors import OutputError
    from pipeline.plan import resolve_model_config
    from pipeline.scene import run_scene
    from pipeline.scheduling import is_remote, scheduler_client

    config = request.config
    if request.output.exists() and not request.output.is_dir():
        raise OutputError(
            "input is a directory but the output is a file",
            path=request.output,
            hint="give an output directory",
        )
    # What would fail every scene the same way fails once, up front, before the output
    # directory is created: the device (exit 2) and the checkpoint (exit 1).
    if not is_remote(config, None):
        check_device(config.device)
    load_model_info(request.model, config)
    # the model's radiometric contract resolved once, so the config hash that decides
    # which outputs are up to date sees the values the scenes are run with
    config = resolve_model_config(request.model, config)
    request = dataclasses.replace(request, config=config)
    if dry_run:
        _dry_run_directory(request, pattern)
        return
    with scheduler_client(config, None) as client:
        report = run_directory(
            request.input, request.output, model_path=request.model, config=config,
            pattern=pattern, overwrite=request.overwrite, run_scene=run_scene,
            heatmap=request.heatmap is not None, quiet=quiet, client=client,
        )
    if report.exit_code:
        sys.exit(report.exit_code)


def _dry_run_directory(request: SceneRequest, pattern: str) -> None:
    """Print, per scene, what a real directory run would do and the scene's plan."""
    from pipeline.batch import find_scenes, heatmap_for, output_for, scene_status
    from pipeline.scene import model_sha256, plan_scene

    input_dir, output_dir, heatmap = request.input, request.output, request.heatmap is not None
    scenes = find_scenes(input_dir, pattern, exclude=output_dir)  # as a real run
    click.echo(f"{len(scenes)} scene(s) in {input_dir} matching {pattern!r} -> {output_dir}")
    model_sha, cfg_hash = model_sha256(request.model), request.config.config_hash()
    for scene in scenes:
        out = output_for(scene, input_dir, output_dir)
        try:
            status = scene_status(scene, out, model_sha=model_sha, cfg_hash=cfg_hash,
                                  overwrite=request.overwrite, heatmap=heatmap)
        except OSError as err:
            status = f"run (cannot check the manifest: {err.strerror})"
        click.echo(f"\n{scene.relative_to(input_dir).as_posix()}: {status}")
        if status.startswith("skip"):
            continue
        scene_request = dataclasses.replace(
            request, input=scene, output=out, heatmap=heatmap_for(out) if heatmap else None
        )
        try:
            plan, _ = plan_scene(scene_request, check_output=False)
        except PipelineError as err:
            click.echo(f"  would fail: {err.format()}")
            continue
        click.echo("\n".join("  " + line for line in plan.describe().splitlines()))
    click.echo("dry run: nothing written")


@main.command("quicklook")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.argument("png_path", metavar="PNG", type=click.Path(path_type=Path))
@click.option("--bands", default=None,
              help="Three 1-based input bands shown as R,G,B. [default: the run's bands "
              "(OUTPUT's tags), else 1,2,3]")
@click.option("--max-size", type=int, default=1024, show_default=True,
              help="Longest side of each panel in px (decimated reads).")
def quicklook_cmd(input_path: Path, output_path: Path, png_path: Path, bands: str | None,
                  max_size: int) -> None:
    """Write PNG: the optical INPUT, scaled exactly as the run fed it to the model (the
    scaling recorded in OUTPUT's tags), beside the SAR-like OUTPUT (2-98% stretch)."""
    from pipeline.config import _int_tuple
    from pipeline.quicklook import quicklook

    try:
        band_tuple = _int_tuple(bands, "bands", "--bands", minimum=1)
        quicklook(input_path, output_path, png_path, bands=band_tuple, max_size=max_size)
    except PipelineError as err:
        _fail(err)
    click.echo(f"wrote {png_path}", err=True)


@main.command("tiles")
@click.option("--eo", multiple=True, type=click.Path(path_type=Path),
              help="Optical scene (GeoTIFF/VRT) or directory of them -> domain A; repeatable.")
@click.option("--sar", multiple=True, type=click.Path(path_type=Path),
              help="SAR scene or directory of them -> domain B; repeatable.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Dataset directory (trainA/trainB/testA/testB, index.geojson, "
              "dataset.json); a rerun or another invocation adds to it. Required.")
@click.option("--eo-bands", default=None,
              help="Three 1-based EO bands fed as R,G,B, e.g. 3,2,1. [default: 3-band as is, "
              "1-band 1,1,1, else required]")
@click.option("--eo-nodata", default=None,
              help="Declare the EO nodata value (as `run --nodata`). [default: the file's "
              "nodata, masks, NaN and zero fill]")
@click.option("--sar-band", type=int, default=1, show_default=True,
              help="1-based SAR band (polarisation) used.")
@click.option("--sar-units", type=click.Choice(["linear", "db"]), default="linear",
              show_default=True, help="SAR values: linear intensity (-> 10 log10) or dB.")
@click.option("--sar-db-range", default="-25,0", show_default=True,
              help="LOW,HIGH dB mapped to 0..255 (write --sar-db-range=-32.5,0), or auto: "
              "per-scene 2-98 % percentiles (uncalibrated data).")
@click.option("--tile-size", type=int, default=256, show_default=True, help="Tile side in px.")
@click.option("--stride", type=int, default=None,
              help="Pixels between tile origins. [default: the tile size]")
@click.option("--min-valid", type=float, default=0.9, show_default=True,
              help="Least fraction of valid pixels a tile needs.")
@click.option("--aoi", type=click.Path(path_type=Path), default=None,
              help="GeoJSON polygon(s) in lon/lat: keep only tiles that intersect them. "
              "[default: no AOI]")
@click.option("--test-fraction", type=float, default=0.1, show_default=True,
              help="Share of each scene's spatial blocks that goes to test.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the block split (deterministic).")
@click.option("--split-block", type=int, default=None,
              help="Side of the split's spatial blocks in px. [default: 2 x tile size]")
@click.option("--paired", is_flag=True, default=False,
              help="One EO and one SAR scene on the same grid: same windows from both, "
              "all to testA/testB with identical names. [default: off]")
@click.option("--dry-run", is_flag=True, default=False,
              help="Print the counts; write nothing. [default: off]")
@click.option("-q", "--quiet", is_flag=True, default=False,
              help="No progress bar. [default: off]")
def tiles_cmd(eo: tuple[Path, ...], sar: tuple[Path, ...], out: Path, eo_bands: str | None,
              eo_nodata: str | None, sar_db_range: str, quiet: bool, **options: Any) -> None:
    """Cut training tiles (8-bit RGB PNG) from EO scenes (A) and SAR scenes (B) into OUT.

    \b
    Examples:
      python -m pipeline tiles --eo l8.tif --eo-bands 3,2,1 --sar s1/ \\
          --sar-db-range auto --out data/ds --tile-size 128 --stride 64
      python -m pipeline tiles --paired --eo eo.tif --sar sar_db.tif --sar-units db \\
          --out data/paired
    """
    from pipeline.tiles import TilesConfig, build_tiles, parse_bands, parse_db_range

    try:
        try:
            nodata = _nodata_value(eo_nodata)
        except ConfigError:
            raise ConfigError(f"bad value for --eo-nodata: {eo_nodata!r}", path="--eo-nodata",
                              hint="a number, or nan") from None
        config = TilesConfig(out=out, eo=eo, sar=sar, eo_bands=parse_bands(eo_bands),
                             eo_nodata=nodata,
                             sar_db_range=parse_db_range(sar_db_range),
                             progress=not quiet, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PipelineWarning)  # printed below, once
            report = build_tiles(config)
    except PipelineError as err:
        _fail(err)
    for w in report.warnings:
        click.echo(f"Warning: {w}", err=True)
    for line in report.lines():
        click.echo(line)
