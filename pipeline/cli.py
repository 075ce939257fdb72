"""`python -m pipeline run | quicklook | tiles | view`: thin click commands over the library.

`run` builds a `SceneRequest` and hands it to pipeline.run.scene (a file) or pipeline.run.batch
(a directory). Flags override the YAML config file (`--config`), which overrides the
defaults of PipelineConfig; the flags, their help and `[default: ...]` come from the
dataclass fields (pipeline/options.py), so a default is written once. Errors of the pipeline
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
from pipeline.dataset.tiles import TilesConfig
from pipeline.errors import ConfigError, OutputError, PipelineError, PipelineWarning
from pipeline.options import (
    config_file_option,
    config_options,
    dry_run_option,
    field_option,
    given,
    model_option,
    overwrite_option,
    quiet_option,
    verbose_option,
)
from pipeline.run.plan import SceneRequest
from pipeline.viewing.quicklook import PANEL_MAX_SIZE

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
@click.pass_context
def main(ctx: click.Context) -> None:
    """eo2sar scene pipeline: optical scenes -> georeferenced SAR-like rasters."""
    from pipeline.run.mosaic import gdal_env
    from pipeline.urls import network_defaults

    # HTTP timeouts before anything is read: a local VRT of a directory run (or of
    # `tiles`) may name URLs too, and GDAL has none by default (pipeline/urls.py)
    network_defaults()
    # Every command reads whole scenes (statistics, quicklooks, tiles): GDAL's block cache
    # defaults to 5 % of RAM and would keep what it read (pipeline/run/mosaic.py).
    ctx.with_resource(gdal_env())


@main.command("run")
@click.argument("input_path", metavar="INPUT")  # a str: a URL's "//" must survive
@click.argument("output_path", metavar="OUTPUT")  # a str: a URL is refused, not folded
@model_option
@config_file_option
@config_options()
@click.option("--heatmap", "heatmap_path", type=click.Path(path_type=Path), default=None,
              help="Also write the CAM attention heatmap mosaic here (file input) or "
              "beside each output (directory input: any value turns it on). [default: off]")
@overwrite_option
@click.option("--pattern", default=None,
              help="Glob (relative to INPUT, a directory) of the scenes to process; '**' "
              "recurses, a match inside a product folder stands for the product. "
              "[default: every raster (.tif, .tiff, .vrt), SAFE folder or zip, Landsat "
              "folder and STAC Item JSON in the directory]")
@click.option("--exclude", "excludes", multiple=True,
              help="Glob of directory entries to leave out (relative path or name), e.g. "
              "'*.zip' beside unzipped SAFE folders; repeatable. [default: none]")
@click.option("--assets", default=None,
              help="The R,G,B assets of a STAC Item INPUT (or bands of a Landsat / "
              "Sentinel-2 product, e.g. B5,B4,B3). [default: by eo:bands common names, "
              "else the visual asset; products: their red, green, blue bands]")
@dry_run_option("Check everything and print the plan (tiles, batches, memory, output); "
                "write nothing.")
@verbose_option
@quiet_option("No progress bar, warnings and errors only.")
def run(
    input_path: str,
    output_path: str,
    model_path: Path,
    config_path: Path | None,
    heatmap_path: Path | None,
    overwrite: bool,
    pattern: str | None,
    excludes: tuple[str, ...],
    assets: str | None,
    dry_run: bool,
    verbose: int,
    quiet: bool,
    **options: Any,
) -> None:
    """Translate INPUT (a georeferenced optical raster, or a directory of them) into a
    SAR-like Cloud Optimized GeoTIFF at OUTPUT (a file, or a directory), on the same
    grid, nodata where the input is invalid, with a STAC Item beside it (OUT.stac.json).
    INPUT may also be a STAC Item (file or URL), a Landsat Collection 2 folder, a
    Sentinel-2 SAFE folder or zip, or a remote raster (https://, s3://, /vsi...); a
    directory of any of those, or a STAC Catalog, Collection or ItemCollection (file or
    URL: every Item), runs each into OUTPUT, a directory: docs/data_sources.md.

    \b
    Examples:
      python -m pipeline run scene.tif out.tif --model eo2sar_params_latest.pt
      python -m pipeline run l8.tif out.tif --model m.pt --bands 3,2,1
      python -m pipeline run scenes/ out/ --model m.pt --device cuda:0
      python -m pipeline run downloads/ out/ --model m.pt --exclude '*.zip'
      python -m pipeline run search.json out/ --model m.pt
      python -m pipeline run item.json out.tif --model m.pt --assets B04,B03,B02
      python -m pipeline run S2B_MSIL2A_..._.SAFE out.tif --model m.pt
      python -m pipeline run https://host/cog.tif out.tif --model m.pt
    """
    level = logging.WARNING if quiet else (logging.INFO if verbose == 1 else logging.WARNING)
    if verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    _redact_logs()
    from pipeline.inputs.sources import is_remote, parse_assets, resolve_input

    try:
        if is_remote(output_path):
            raise OutputError("outputs are written to local files", path=output_path,
                              hint="write to a local path, then upload it (aws s3 cp, "
                              "gcloud storage cp, rclone)")
        request = SceneRequest(
            input=Path(input_path), output=output_path, model=model_path,
            config=load_config(config_path, options), heatmap=heatmap_path,
            overwrite=overwrite,
        )
        products = _several_products(input_path, pattern, excludes, request.output)
        if products is not None:
            request = dataclasses.replace(request, source=input_path)
            _run_products(request, products, pattern, quiet=quiet, dry_run=dry_run,
                          assets=parse_assets(assets))
            return
        if pattern is not None or excludes:
            raise ConfigError("--pattern and --exclude select the scenes of a directory",
                              path="--pattern" if pattern is not None else "--exclude",
                              hint="give a directory as INPUT, or leave them out")
        with resolve_input(input_path, assets=parse_assets(assets),
                           bands_given=request.config.bands is not None,
                           names=_product_names(input_path, model_path)) as resolved:
            if resolved.description and not quiet:
                click.echo(f"input: {resolved.description}", err=True)
            request = dataclasses.replace(request, input=resolved.path,
                                          source=_source_label(resolved))
            _run_file(request, quiet=quiet, dry_run=dry_run, source=resolved.source,
                      acquired=resolved.acquired)
    except PipelineError as err:
        _fail(err)


def _product_names(input_path: str, model_path: Path) -> tuple[str, ...] | None:
    """A multispectral model's band names, for an INPUT that is a product or STAC Item
    (its bands are picked by name); None for a raster (picked in the plan, by band
    description or --bands) and for every RGB model."""
    from pipeline.inputs.sources import product_kind
    from pipeline.run.model_io import input_names

    if product_kind(input_path) in ("raster", "directory", "remote"):
        return None
    return input_names(model_path)


def _redact_logs() -> None:
    """URLs in log lines lose userinfo and query (pipeline/urls.py): GDAL's messages,
    logged by rasterio at -v, name the URL they read. On every handler of the process
    (the root logger's, Dask's own, the last-resort one); Dask workers get the same
    filter when their cluster is connected (pipeline/run/cluster.py)."""
    from pipeline.urls import redact_log_handlers

    redact_log_handlers()


def _source_label(resolved: Any) -> str | None:
    """The input as the output's EO2SAR_INPUT tag names it: the file name for a plain
    local raster (as before), what the user gave (a URL, a product, an Item) otherwise;
    a URL without its userinfo and query (a signed URL's token stays out)."""
    from pipeline.urls import redact_url

    if resolved.kind == "raster":
        return None
    if "://" in resolved.source or resolved.source.startswith("/vsi"):
        return redact_url(resolved.source)
    return Path(resolved.source).name


def _run_file(request: SceneRequest, *, quiet: bool, dry_run: bool, source: str,
              acquired: Any = None) -> None:
    """One scene (request.input: a local raster, or the VRT pipeline.inputs.sources made for
    `source`), then its STAC Item, derived from `source`."""
    from pipeline.run.scene import plan_scene, run_request

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
    _write_stac_item(result.output, source=source, heatmap=result.heatmap, acquired=acquired,
                     quiet=quiet)


def _write_stac_item(output: Path, *, quiet: bool, **kwargs: Any) -> None:
    """The output's STAC Item beside it (pipeline/run/stac.py): `out.tif` -> `out.stac.json`."""
    from pipeline.run.stac import item_path, write_item

    try:
        path = write_item(output, **kwargs)
    except OSError as err:  # the COG is complete; say what is missing and why
        raise OutputError(f"cannot write the STAC Item ({err.strerror or err})",
                          path=item_path(output), hint="check the output directory's free "
                          "space and permissions") from None
    if not quiet:
        click.echo(f"{path}: STAC Item", err=True)


def _several_products(input_path: str, pattern: str | None, excludes: tuple[str, ...],
                      output: Path) -> Any:
    """The products of an INPUT that holds several (a directory, a STAC Catalog /
    Collection / ItemCollection, a multi-granule Sentinel-2 product) as a callable that
    lists them (called once the checkpoint and device are checked), else None."""
    from pipeline.inputs.sources import product_kind

    kind = product_kind(input_path)
    if kind == "directory":
        from pipeline.run.batch import directory_products

        return lambda: directory_products(Path(input_path), output, pattern, excludes)
    if kind == "stac":
        from pipeline.inputs.catalogs import CATALOG_TYPES, catalog_products, read_document

        try:
            doc = read_document(input_path)  # read once, walked later
        except PipelineError:
            return None  # the single-Item path says why it cannot be read
        if doc.get("type") in CATALOG_TYPES:
            return lambda: catalog_products(input_path, doc)
        return None
    if kind == "sentinel2":
        from pipeline.inputs.discovery import product_from_source

        products = product_from_source(input_path)
        if len(products) > 1:
            return lambda: products
    return None


def _run_products(request: SceneRequest, list_products: Any, pattern: str | None, *,
                  quiet: bool, dry_run: bool, assets: Any = None) -> None:
    """A run of several products (a directory, a catalog, the granules of a product)
    into the output directory: pipeline.run.batch.run_products."""
    from pipeline.run.batch import run_products
    from pipeline.run.checks import check_device, load_model_info
    from pipeline.run.plan import resolve_model_config
    from pipeline.run.scene import run_scene
    from pipeline.run.scheduling import is_remote, scheduler_client
    from pipeline.urls import redact_url

    config = request.config
    # What would fail every scene the same way fails once, up front, before the output
    # directory is created: the device (exit 2) and the checkpoint (exit 1).
    if not is_remote(config, None):
        check_device(config.device)
    load_model_info(request.model, config)
    # the model's radiometric contract resolved once, so the config hash that decides
    # which outputs are up to date sees the values the scenes are run with
    config = resolve_model_config(request.model, config)
    request = dataclasses.replace(request, config=config)
    source = request.source or str(request.input)
    products = list_products()  # before the output's check: a catalog without Items says so
    if (request.output.exists() and not request.output.is_dir()) or (
            not request.output.exists()
            and request.output.suffix.lower() in (".tif", ".tiff")):
        raise OutputError(
            "input holds several scenes (a directory, a catalog, the granules of a "
            "product) but the output is a file",
            path=request.output,
            hint="give an output directory",
        )
    from pipeline.inputs.sources import product_kind

    catalog = source if product_kind(source) == "stac" else None  # linked from the output
    if dry_run:
        _dry_run_products(request, products, pattern, assets)
        return
    with scheduler_client(config, None) as client:
        report = run_products(
            products, request.output, model_path=request.model, config=config,
            input_label=redact_url(source), pattern=pattern, overwrite=request.overwrite,
            run_scene=run_scene, heatmap=request.heatmap is not None, quiet=quiet,
            client=client, assets=assets, sources_link=catalog,
        )
    if report.exit_code:
        sys.exit(report.exit_code)


def _dry_run_products(request: SceneRequest, products: Any, pattern: str | None,
                      assets: Any) -> None:
    """Print, per product, what a real run would do and the scene's plan."""
    from pipeline.inputs.discovery import check_unique_outputs
    from pipeline.run.batch import heatmap_for, product_raster, scene_status
    from pipeline.run.scene import model_sha256, plan_scene

    output_dir, heatmap = request.output, request.heatmap is not None
    outputs = check_unique_outputs(products, output_dir)  # as a real run
    what = f"matching {pattern!r}" if pattern is not None else "(every product kind)"
    click.echo(f"{len(products)} scene(s) in {request.source or request.input} {what} -> "
               f"{output_dir}")
    model_sha, cfg_hash = model_sha256(request.model), request.config.config_hash()
    for out, product in outputs.items():
        try:
            status = scene_status(product, out, model_sha=model_sha, cfg_hash=cfg_hash,
                                  overwrite=request.overwrite, heatmap=heatmap)
        except OSError as err:
            status = f"run (cannot check the manifest: {err.strerror})"
        click.echo(f"\n{product.name}: {status}")
        if status.startswith("skip"):
            continue
        try:
            with product_raster(product, assets, request.model) as (raster, _, _):
                scene_request = dataclasses.replace(
                    request, input=raster, output=out,
                    heatmap=heatmap_for(out) if heatmap else None)
                plan, _ = plan_scene(scene_request, check_output=False)
        except PipelineError as err:
            click.echo(f"  would fail: {err.format()}")
            continue
        click.echo("\n".join("  " + line for line in plan.describe().splitlines()))
    click.echo("dry run: nothing written")


@main.command("quicklook")
@click.argument("input_path", metavar="INPUT")  # as `run`: a file, product, STAC Item, URL
@click.argument("output_path", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.argument("png_path", metavar="PNG", type=click.Path(path_type=Path))
@click.option("--bands", default=None,
              help="Three 1-based input bands shown as R,G,B. [default: the run's bands "
              "(OUTPUT's tags), else 1,2,3]")
@click.option("--max-size", type=int, default=PANEL_MAX_SIZE, show_default=True,
              help="Longest side of each panel in px (decimated reads).")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="A real SAR image of the same place (e.g. the Sentinel-1 VV of a "
              "co-registered pair) shown as a third panel, read onto OUTPUT's grid. "
              "[default: none]")
@click.option("--reference-band", type=click.IntRange(min=1), default=1, show_default=True,
              help="Band of --reference shown.")
def quicklook_cmd(input_path: str, output_path: Path, png_path: Path, bands: str | None,
                  max_size: int, reference: Path | None, reference_band: int) -> None:
    """Write PNG: the optical INPUT, scaled exactly as the run fed it to the model (the
    scaling recorded in OUTPUT's tags), beside the SAR-like OUTPUT (2-98% stretch), and
    beside a real SAR image of the same place with --reference."""
    from pipeline.config import parse_int_tuple
    from pipeline.inputs.sources import resolve_input
    from pipeline.viewing.quicklook import output_band_names, quicklook

    try:
        band_tuple = parse_int_tuple(bands, "bands", "--bands", minimum=1)
        # a multispectral run's product: its bands stacked in the run's order, by name
        names = output_band_names(output_path) if band_tuple is None else None
        with resolve_input(input_path, bands_given=band_tuple is not None,
                           names=names) as resolved:
            quicklook(resolved.path, output_path, png_path, bands=band_tuple,
                      max_size=max_size, reference=reference, reference_band=reference_band)
    except PipelineError as err:
        _fail(err)
    click.echo(f"wrote {png_path}", err=True)
    from pipeline.run.stac import add_quicklook

    item = add_quicklook(output_path, png_path)  # the run's STAC Item, when beside OUTPUT
    if item is not None:
        click.echo(f"{item}: quicklook asset added", err=True)


def _reflectance_pair(text: str) -> tuple[float, float]:
    """--reflectance-scale "SCALE[,OFFSET]" -> (scale, offset): the parser of `run
    --reflectance-scale` (PipelineConfig.reflectance_scale), one rule for both."""
    from pipeline.config import setting_parser

    try:
        pair = setting_parser("reflectance_scale")(text, "--reflectance-scale")
    except ConfigError:
        pair = None
    if pair is None:
        raise ConfigError(f"bad value for --reflectance-scale: {text!r}",
                          path="--reflectance-scale",
                          hint="SCALE or SCALE,OFFSET, e.g. 0.0001 or 0.0000275,-0.2")
    return pair


@main.command("tiles")
@click.option("--eo", multiple=True, type=click.Path(path_type=Path),
              help="Optical scene (GeoTIFF/VRT), directory of them, folder of Sentinel-2 "
              "band files (B02/B03/B04: one scene), or a quoted glob -> domain A; "
              "repeatable.")
@click.option("--sar", multiple=True, type=click.Path(path_type=Path),
              help="SAR scene, directory of them or a quoted glob ('s1/*/VV.tif') -> "
              "domain B; repeatable.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Dataset directory (trainA/trainB/testA/testB, index.geojson, "
              "dataset.json); a rerun or another invocation adds to it. Required.")
@click.option("--eo-bands", default=None,
              help="EO bands: three 1-based numbers fed as R,G,B (3,2,1), or any number of "
              "bands by name (red,green,blue,nir; STAC common names or B04-style ids), "
              "picked from band folders and band descriptions -> multiband GeoTIFF tiles. "
              "[default: 3-band as is, 1-band 1,1,1, else required]")
@click.option("--eo-scale", type=click.Choice(["auto", "reflectance"]), default="auto",
              show_default=True,
              help="auto: 8-bit /255, else a per-scene 2-98 % stretch (PNG tiles); "
              "reflectance: the product's physical scale, reflectance [0, 0.5] -> [0, 1], "
              "the same in every scene (multiband tiles).")
@click.option("--reflectance-scale", default=None, metavar="SCALE[,OFFSET]",
              help="Declare how values become reflectance for rasters that do not say it "
              "(no band Scale/Offset): 0.0001 for Sentinel-2 DN, 0.0000275,-0.2 for Landsat "
              "C2 Level-2. [default: the raster's band Scale/Offset]")
@click.option("--sar-pols", default=None, metavar="VV,VH",
              help="Polarisations stacked as bands of one multiband SAR tile, each on its "
              "own dB range (VV -25,0, VH -32.5,0 unless --sar-db-range gives LOW,HIGH or "
              "LOW,HIGH/LOW,HIGH): picked by band description, or the per-polarisation "
              "files of a product folder (*_VV.tif, *_VH.tif). [default: one band, "
              "--sar-band, 8-bit PNG]")
@click.option("--eo-nodata", default=None,
              help="Declare the EO nodata value (as `run --nodata`). [default: the file's "
              "nodata, masks, NaN and zero fill]")
@field_option(TilesConfig, "sar_band", "1-based SAR band (polarisation) used.", type=int)
@field_option(TilesConfig, "sar_units", "SAR values: linear intensity (-> 10 log10) or dB.",
              type=click.Choice(["linear", "db"]))
@field_option(TilesConfig, "sar_db_range",
              "LOW,HIGH dB mapped to 0..255 (write --sar-db-range=-32.5,0), or auto: "
              "per-scene 2-98 % percentiles (uncalibrated data).")
@field_option(TilesConfig, "tile_size", "Tile side in px.", type=int)
@field_option(TilesConfig, "stride", "Pixels between tile origins.", type=int,
              default_text="the tile size")
@field_option(TilesConfig, "min_valid", "Least fraction of valid pixels a tile needs.",
              type=float)
@field_option(TilesConfig, "aoi", "GeoJSON polygon(s) in lon/lat: keep only tiles that "
              "intersect them.", type=click.Path(path_type=Path), default_text="no AOI")
@field_option(TilesConfig, "test_fraction",
              "Share of each scene's spatial blocks that goes to test.", type=float)
@field_option(TilesConfig, "seed", "Seed of the block split (deterministic).", type=int)
@field_option(TilesConfig, "split_block", "Side of the split's spatial blocks in px.",
              type=int, default_text="2 x tile size")
@field_option(TilesConfig, "paired",
              "Co-registered EO/SAR pairs (matched by footprint): the same windows from "
              "both, identical names in trainA/trainB and testA/testB, one split per pair.")
@field_option(TilesConfig, "resample_sar",
              "--paired: warp each SAR scene onto its EO partner's grid (bilinear) when "
              "the grids differ (SSL4EO); without it such a pair is refused.")
@dry_run_option("Print the counts; write nothing.")
@quiet_option("No progress bar.")
def tiles_cmd(eo: tuple[Path, ...], sar: tuple[Path, ...], out: Path, eo_bands: str | None,
              eo_scale: str, reflectance_scale: str | None, sar_pols: str | None,
              eo_nodata: str | None, sar_db_range: str | None, quiet: bool,
              **options: Any) -> None:
    """Cut training tiles (8-bit RGB PNG, or float32 GeoTIFF for more bands, reflectance
    or VV and VH) from EO scenes (A) and SAR scenes (B) into OUT.

    \b
    Examples:
      python -m pipeline tiles --eo l8.tif --eo-bands 3,2,1 --sar s1/ \\
          --sar-db-range auto --out data/ds --tile-size 128 --stride 64
      python -m pipeline tiles --paired --eo eo.tif --sar sar_db.tif --sar-units db \\
          --out data/paired
      python -m pipeline tiles --paired --resample-sar --eo 'ssl4eo/s2a/0000200/*' \\
          --sar 'ssl4eo/s1/0000200/*/VV.tif' --sar-units db --out data/ssl4eo
      python -m pipeline tiles --eo-bands red,green,blue,nir --eo-scale reflectance \\
          --eo 'bigearthnet/S2A_*' --sar-pols VV,VH --sar 'bigearthnet/S1A_*' \\
          --sar-units db --paired --out data/ms
    """
    from pipeline.dataset.tiles import (
        build_tiles,
        parse_db_range,
        parse_db_ranges,
        parse_eo_bands,
        parse_pols,
    )

    try:
        try:
            nodata = _nodata_value(eo_nodata)
        except ConfigError:
            raise ConfigError(f"bad value for --eo-nodata: {eo_nodata!r}", path="--eo-nodata",
                              hint="a number, or nan") from None
        settings = given(options)  # the rest: TilesConfig's defaults
        pols = parse_pols(sar_pols)
        if sar_db_range is not None and pols is not None:
            settings["sar_db_ranges"] = parse_db_ranges(sar_db_range)
        elif sar_db_range is not None:
            settings["sar_db_range"] = parse_db_range(sar_db_range)  # None: auto
        numbers, names = parse_eo_bands(eo_bands)
        declared = None if reflectance_scale is None else _reflectance_pair(reflectance_scale)
        config = TilesConfig(out=out, eo=eo, sar=sar, eo_bands=numbers, eo_names=names,
                             eo_scale=eo_scale, reflectance_scale=declared, sar_pols=pols,
                             eo_nodata=nodata, progress=not quiet, **settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PipelineWarning)  # printed below, once
            report = build_tiles(config)
    except PipelineError as err:
        _fail(err)
    for w in report.warnings:
        click.echo(f"Warning: {w}", err=True)
    for line in report.lines():
        click.echo(line)


@main.command("view")
@click.argument("output_path", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="The optical scene, shown left of the swipe line. [default: the input "
              "recorded in OUTPUT's manifest (directory runs), else none]")
@click.option("--heatmap", "heatmap_path", type=click.Path(path_type=Path), default=None,
              help="The CAM heatmap raster, an overlay. [default: none; directories: "
              "NAME.heatmap.tif]")
@click.option("--bands", default=None,
              help="Three 1-based input bands shown as R,G,B. [default: the run's bands]")
@click.option("--out", "page_path", type=click.Path(path_type=Path), default=None,
              help="HTML page to write. [default: OUTPUT with .html; a directory: "
              "index.html and a page per output inside it]")
@click.option("--max-size", type=int, default=None,
              help="Longest side of the embedded layers in px. [default: 2048]")
@click.option("--serve", is_flag=True,
              help="Then serve the page (and a directory's pages, nothing else) on "
              "127.0.0.1 and print its URL, which carries a secret token: only that URL "
              "is answered (Ctrl-C stops).")
def view_cmd(output_path: Path, input_path: Path | None, heatmap_path: Path | None,
             bands: str | None, page_path: Path | None, max_size: int | None,
             serve: bool) -> None:
    """Write ONE self-contained HTML page (no network needed) showing the optical input,
    the SAR-like OUTPUT and the heatmap on the output grid: swipe, zoom, pan, lon/lat
    under the cursor. OUTPUT a directory (of a directory run): a page per output and an
    index.html linking them.

    \b
    Examples:
      python -m pipeline view out.tif --input scene.tif --heatmap heat.tif
      python -m pipeline view out/ --serve
    """
    from pipeline.config import parse_int_tuple
    from pipeline.viewing.viewer import VIEW_MAX_SIZE, serve_page, view_directory, write_viewer

    size = VIEW_MAX_SIZE if max_size is None else max_size
    try:
        if size < 16:
            raise ConfigError(f"--max-size must be >= 16, got {size}", path="--max-size",
                              hint="e.g. --max-size 1024")
        if output_path.is_dir():
            page = view_directory(output_path, page_path, max_size=size)
        else:
            page = write_viewer(
                output_path, page_path, input_path=input_path, heatmap=heatmap_path,
                bands=parse_int_tuple(bands, "bands", "--bands", minimum=1), max_size=size)
    except PipelineError as err:
        _fail(err)
    click.echo(f"wrote {page}", err=True)
    if serve:
        serve_page(page)


@main.command("evaluate-pairs")
@click.option("--model", "model_path", default=None, type=click.Path(path_type=Path),
              help="U-GAT-IT checkpoint (published eo2sar file or ours). [default: none, "
              "the baselines only]")
@click.option("--pair", "pairs", nargs=2, multiple=True, required=True,
              type=click.Path(path_type=Path), metavar="OPTICAL SAR",
              help="An optical raster/VRT (or a folder of band files) and the co-registered "
              "real SAR VV in dB (a raster, or a folder with one *VV.tif; a *VH.tif beside "
              "it is the VH); repeatable.")
@click.option("--fit-pair", "fit_pairs", nargs=2, multiple=True,
              type=click.Path(path_type=Path), metavar="OPTICAL SAR",
              help="A pair (as --pair, with NIR) that the best-single and linear baselines "
              "are fitted on; repeatable. Never the reported pairs.")
@click.option("--fit-tiles", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Fit those baselines on a multiband reflectance tile dataset's "
              "trainA/trainB pairs instead (pipeline tiles --eo-bands red,green,blue,nir "
              "--eo-scale reflectance).")
@click.option("--pols", default="VV,VH", show_default=True,
              help="Polarisations to report: VV, and VH where a VH raster sits beside the VV.")
@click.option("--bands", default="1,2,3", show_default=True,
              help="R,G,B bands (1-based) of an optical raster.")
@click.option("--nir-band", type=click.IntRange(min=1), default=None,
              help="NIR band (1-based) of an optical raster: enables the water check.")
@click.option("--band-files", default=",".join(("B04", "B03", "B02", "B08")),
              show_default=True,
              help="R,G,B[,NIR] band names of a folder input (B04 also matches B4).")
@click.option("--reflectance-scale", type=float, default=1e-4, show_default=True,
              help="Reflectance = DN x this (Sentinel-2 L2A: 1/10000).")
@click.option("--resample-sar", is_flag=True,
              help="Reproject the real SAR onto the optical grid (bilinear) when the grids "
              "differ (e.g. SSL4EO). [default: a different grid is an error]")
@click.option("--device", default=None, help="cpu, cuda or cuda:N. [default: pipeline run's]")
@click.option("--db-range", default=None,
              help="LOW,HIGH dB of the model's output 0..1. [default: the model's contract]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("evaluate_pairs.json"), show_default=True, help="Report path.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the SAR-like outputs in this folder. [default: discarded]")
def evaluate_pairs_cmd(model_path: Path | None, pairs: tuple[tuple[Path, Path], ...],
                       fit_pairs: tuple[tuple[Path, Path], ...], fit_tiles: Path | None,
                       pols: str, bands: str, nir_band: int | None, band_files: str,
                       reflectance_scale: float, resample_sar: bool, device: str | None,
                       db_range: str | None, json_path: Path, keep: Path | None) -> None:
    """Run the model through the scene pipeline on optical scenes with a co-registered real
    SAR and report issue 14's measures: water/land contrast ratio (NIR < 4 %), 9x9
    box-filtered correlation with the real VV (dB) against the red band's, SSIM and PSNR;
    beside them the baselines a user would try first, per polarisation: red, NIR, NDVI,
    NDWI, the best of those and a linear regression fitted on --fit-pair / --fit-tiles
    (docs/evaluation.md).

    \b
    Example (BigEarthNet: a folder of S2 band files, a folder with the S1 VV dB):
      python -m pipeline evaluate-pairs --model m.pt \\
          --pair S2A_..._36_85 S1A_..._36_85 --pair S2A_..._4_55 S1A_..._4_55
    """
    from pipeline.config import parse_float_pair, parse_int_tuple
    from pipeline.run.evaluate_pairs import (
        OpticalOptions,
        Pair,
        evaluate_pairs,
        format_table,
        write_report,
    )

    try:
        rgb = parse_int_tuple(bands, "bands", "--bands", minimum=1)
        if len(rgb) != 3:
            raise ConfigError(f"--bands needs three bands, got {bands!r}", path="--bands",
                              hint="e.g. --bands 3,2,1")
        settings: dict[str, Any] = {}
        if device is not None:
            settings["device"] = device
        if db_range is not None:
            settings["db_range"] = parse_float_pair(db_range, "db_range", "--db-range")
        opts = OpticalOptions(bands=rgb, nir_band=nir_band, reflectance_scale=reflectance_scale,
                              band_names=tuple(n.strip() for n in band_files.split(",")))
        pol_list = tuple(p.strip().upper() for p in pols.split(",") if p.strip())
        if not pol_list or pol_list[0] != "VV" or not set(pol_list) <= {"VV", "VH"}:
            raise ConfigError(f"--pols takes VV or VV,VH, got {pols!r}", path="--pols",
                              hint="e.g. --pols VV,VH")
        report = evaluate_pairs([Pair(Path(o), Path(s)) for o, s in pairs], model_path,
                                settings, opts, resample=resample_sar, keep=keep,
                                log=lambda s: click.echo(s, err=True), pols=pol_list,
                                fit_pairs=[Pair(Path(o), Path(s)) for o, s in fit_pairs],
                                fit_tiles=fit_tiles)
        click.echo(format_table(report))
        click.echo(f"wrote {write_report(report, json_path)}")
    except PipelineError as err:
        _fail(err)
