"""Checks that run before any heavy work: input raster, output paths, checkpoint.

DESIGN.md invariant 7: every check that can fail on the user's files or flags runs
first, writes nothing, and raises a typed error naming the file and the fix. The plan
(pipeline/run/plan.py) calls them in order; the directory CLI calls the checkpoint check
once up front, since a bad model would fail every scene the same way.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import deque
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from rasterio.enums import Interleaving

import ugatit.device
import ugatit.errors
from pipeline.config import PipelineConfig
from pipeline.errors import DeviceError, InputError, ModelError, OutputError
from pipeline.run.inference import get_generator
from pipeline.run.manifest import cached_sha256

#: Largest scene accepted, in samples read (width x height x bands used): 2**35 is e.g.
#: 107,000 x 107,000 px x 3 bands. A header declaring more is almost surely damaged or
#: crafted (a 10 KB file can declare 2**31 px wide and would keep a run busy for days);
#: a real scene that large is better cut into parts, each its own run.
MAX_SCENE_SAMPLES = 2**35
#: Largest block one read may decode (GDAL reads a whole tile or strip, all bands of a
#: pixel-interleaved file at once): above it a single read allocates more than a worker
#: should (a 10 KB file declaring 65536 px tiles asks for 12 GiB per tile).
MAX_BLOCK_BYTES = 2**30


def check_device(device: str) -> None:
    """Refuse a device this machine does not have (ugatit.device's policy), exit 2."""
    try:
        ugatit.device.check_device(device)
    except ugatit.errors.DeviceError as exc:
        raise DeviceError.from_ugatit(exc) from None


def model_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of the checkpoint file (hashed once per process: manifest.cached_sha256)."""
    try:
        return cached_sha256(Path(path))
    except OSError:
        raise ModelError(
            "checkpoint not found", path=path, hint="check the --model path"
        ) from None


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
    from pipeline.inputs.s3 import check_vrt_buckets

    check_vrt_buckets(path)  # before GDAL opens a VRT's sources (and signs for them)
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
    missing = "CRS" if ds.crs is None and has_transform else "georeferencing"
    if ds.crs is None and not has_transform:
        missing = "georeferencing (no CRS, no geotransform)"
    raise InputError(
        f"has no {missing}",
        path=path,
        hint="the output must sit on a map grid; assign one, e.g. gdal_edit.py -a_srs "
        "EPSG:<code> -a_ullr <ulx> <uly> <lrx> <lry> file.tif",
    )


def check_georeferencing_finite(ds: rasterio.io.DatasetReader, path: Path) -> None:
    """Refuse a geotransform with NaN/Inf terms or a zero-area pixel (a damaged header):
    the output would copy it and sit on no grid at all."""
    t = ds.transform
    if all(math.isfinite(v) for v in t[:6]) and t.determinant != 0:
        return
    raise InputError(
        f"has a degenerate geotransform {tuple(t[:6])} (NaN, infinite or zero pixel size)",
        path=path,
        hint="the header is damaged; re-export the file or assign a grid with gdal_edit.py "
        "-a_ullr <ulx> <uly> <lrx> <lry>",
    )


def check_declared_size(ds: rasterio.io.DatasetReader, bands: tuple[int, ...],
                        path: Path) -> None:
    """Bound what the header declares before reading a pixel: the scene's samples
    (MAX_SCENE_SAMPLES) and the bytes one block read decodes (MAX_BLOCK_BYTES)."""
    samples = ds.width * ds.height * len(bands)
    if samples > MAX_SCENE_SAMPLES:
        raise InputError(
            f"declares {ds.width} x {ds.height} px x {len(bands)} bands ({samples:.3g} "
            f"samples), more than the {MAX_SCENE_SAMPLES:.3g} a run accepts",
            path=path,
            hint="check the header with gdalinfo (likely damaged); cut a real scene this "
            "large into parts, e.g. gdal_translate -srcwin <x> <y> <w> <h>",
        )
    per_pixel = ds.count if ds.interleaving == Interleaving.pixel else 1
    for b in sorted(set(bands)):
        rows, cols = ds.block_shapes[b - 1]
        nbytes = rows * cols * np.dtype(ds.dtypes[b - 1]).itemsize * per_pixel
        if nbytes > MAX_BLOCK_BYTES:
            raise InputError(
                f"band {b} is stored in {cols} x {rows} px blocks of {_size(nbytes)} each, "
                f"more than the {_size(MAX_BLOCK_BYTES)} one read may decode",
                path=path,
                hint="re-tile it first: gdal_translate -co TILED=YES in.tif out.tif (or the "
                "header is damaged: gdalinfo)",
            )


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.0f} MiB" if nbytes >= 2**20 else f"{nbytes} bytes"


def read_error(exc: Exception, path: Path, when: str = "cannot read pixel data") -> InputError:
    """The InputError for a failed pixel read (a truncated or corrupt file), one line.

    rasterio says only "Read failed. See previous exception for details."; GDAL's own
    message (which block, which decoder) is the exception's cause: that one is shown."""
    if exc.__cause__ is not None and str(exc).startswith("Read failed"):
        exc = exc.__cause__
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
            blocks = (win for _, win in ds.block_windows(b))
            first = next(blocks)
            last = deque(blocks, maxlen=1)  # a generator: no list of every block
            for win in (first, *last):
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


def check_output_path(path: Path, *, overwrite: bool, what: str = "output") -> None:
    """Refuse early an output we could not (or must not) write; writes nothing."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(
            f"{what} is a directory",
            path=path,
            hint="give a file name, or give an input directory to process a directory",
        )
    if path.exists() and not overwrite:
        raise OutputError(
            f"{what} already exists", path=path, hint="pass --overwrite to replace it"
        )
    if not parent.is_dir():
        raise OutputError(
            f"{what} directory does not exist",
            path=parent,
            hint=f"create it first (mkdir -p {parent})",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"{what} directory is not writable",
            path=parent,
            hint="choose another output directory or fix its permissions",
        )


def check_output_paths(
    inp: Path, output: Path, heatmap: Path | None, *, overwrite: bool
) -> None:
    """The output (and heatmap) can be written and clobber neither the input nor each
    other; an existing file only with `overwrite`."""
    check_output_path(output, overwrite=overwrite)
    if heatmap is None:
        return
    if Path(heatmap).resolve() in (Path(output).resolve(), Path(inp).resolve()):
        raise OutputError(
            "heatmap path is the output or the input",
            path=heatmap,
            hint="give the heatmap its own file name",
        )
    check_output_path(heatmap, overwrite=overwrite, what="heatmap")


def check_not_input(inp: Path, output: Path) -> None:
    """Refuse to write the output over the input (checked even for a dry run)."""
    if inp.resolve() == output.resolve():
        raise OutputError(
            "output is the input", path=output, hint="write to another file name"
        )
