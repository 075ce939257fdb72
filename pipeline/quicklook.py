"""Quicklook: the optical input and the SAR-like output side by side, as one small PNG.

For eyeballing a run (seams, nodata, radiometry) without a GIS. Both rasters are read
decimated (``out_shape``; GDAL uses the output's COG overviews when present), so the cost
and memory are those of a ``max_size`` image whatever the scene size. Each panel gets its
own 2-98 % percentile stretch over its valid pixels: the PNG is for looking, not
measuring, and the input's stretch is computed from the same decimated read (which is
the whole scene, so it is global, like the pipeline's own scaling, never per tile).
Nodata pixels are black.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.errors import RasterioError

from pipeline.errors import InputError, OutputError
from pipeline.manifest import atomic_write_bytes
from pipeline.radiometry import Scaling, decimated_shape, read_masked, scale_to_unit

__all__ = ["quicklook", "stretch"]

GAP_COLOUR = (255, 255, 255)


def stretch(data: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = (2, 98)
            ) -> np.ndarray:
    """[C, H, W] -> uint8 [H, W, C], per-band percentile stretch over valid pixels.

    Invalid pixels are 0 (black). A flat band (or no valid pixel) maps to mid-grey so
    the panel is visibly "flat" rather than black like nodata.
    """
    n = data.shape[0]
    samples = data[:, valid].astype(np.float64)
    if samples.shape[1] == 0:
        low, high = (0.0,) * n, (1.0,) * n
    else:
        lo_q, hi_q = np.percentile(samples, percentiles, axis=1)
        low = tuple(float(v) for v in lo_q)
        high = tuple(float(h) if h > lo else float(lo) + 1.0 for lo, h in zip(lo_q, hi_q,
                                                                           strict=True))
    unit = scale_to_unit(data, Scaling("percentile", low, high, percentiles=percentiles))
    if samples.shape[1]:
        flat = [i for i in range(n) if not np.ptp(samples[i]) > 0]
        unit[flat] = 0.5
    img = np.round(unit * 255.0).astype(np.uint8)
    img[:, ~valid] = 0
    return np.moveaxis(img, 0, -1)


def _read_panel(path: Path, bands: tuple[int, ...] | None, max_size: int,
                what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with rasterio.open(path) as ds:
            if bands is None:
                bands = (1, 2, 3) if ds.count >= 3 and what == "input" else (1,)
            bad = [b for b in bands if not 1 <= b <= ds.count]
            if bad:
                raise InputError(
                    f"has {ds.count} band(s), band(s) {bad} asked for", path=path,
                    hint="band numbers are 1-based, e.g. --bands 3,2,1 for B,G,R files",
                )
            shape = decimated_shape(ds.width, ds.height, max_size)
            data, valid = read_masked(ds, tuple(bands), out_shape=shape)
    except RasterioError as e:
        raise InputError(f"cannot read the {what} raster ({e})", path=path,
                         hint="check that the path is a readable raster") from None
    return data, valid


def _to_rgb(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    rgb = stretch(data, valid)
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb


def _fit_height(img: np.ndarray, height: int) -> np.ndarray:
    if img.shape[0] == height:
        return img
    width = max(1, round(img.shape[1] * height / img.shape[0]))
    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BILINEAR))


def quicklook(
    input_path: Path,
    output_path: Path,
    png_path: Path,
    *,
    bands: tuple[int, ...] | None = None,
    max_size: int = 1024,
) -> Path:
    """Write ``png_path``: input (RGB of ``bands``, default 1,2,3) | gap | output band 1.

    Each panel's longer side is at most ``max_size`` px. The output panel is resized to
    the input panel's height if the grids differ (they do not for pipeline outputs).
    The PNG appears atomically (temporary file in the same directory, then rename).
    Raises InputError for an unreadable raster or bad band numbers, OutputError if the PNG
    cannot be written.
    """
    if max_size < 16:
        raise ValueError(f"max_size must be >= 16, got {max_size}")
    png_path = Path(png_path)
    in_data, in_valid = _read_panel(Path(input_path), bands, max_size, "input")
    out_data, out_valid = _read_panel(Path(output_path), None, max_size, "output")
    if out_valid.shape == in_valid.shape:
        # A pipeline output is nodata exactly where the run found the input invalid,
        # including a --nodata the input file does not carry (the Landsat zero collar):
        # use that mask for the input panel too, so its stretch ignores the collar.
        in_valid = in_valid & out_valid
    left = _to_rgb(in_data, in_valid)
    right = _fit_height(_to_rgb(out_data, out_valid), left.shape[0])
    gap = max(4, left.shape[1] // 64)
    height = left.shape[0]
    canvas = np.empty((height, left.shape[1] + gap + right.shape[1], 3), dtype=np.uint8)
    canvas[:] = GAP_COLOUR
    canvas[:, : left.shape[1]] = left
    canvas[:, left.shape[1] + gap:] = right
    buffer = io.BytesIO()  # a few MB at most: max_size bounds both panels
    Image.fromarray(canvas).save(buffer, format="PNG", optimize=True)
    try:
        atomic_write_bytes(png_path, buffer.getvalue())
    except OSError as e:
        raise OutputError(f"cannot write the quicklook ({e.strerror})", path=png_path,
                          hint="check that the directory exists and is writable") from None
    return png_path
