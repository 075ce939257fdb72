"""Quicklook: the optical input and the SAR-like output side by side, as one small PNG.

For eyeballing a run (seams, nodata, radiometry) without a GIS. Both rasters are read
decimated (``out_shape``; GDAL uses the output's COG overviews when present), so the cost
and memory are those of a ``max_size`` image whatever the scene size.

The optical panel shows EXACTLY what the run fed the model: the scaling recorded in the
output's ``EO2SAR_SCALING`` tag (per-band limits, or uint8 /255) applied by the shared
code (``pipeline.inputs.radiometry.to_unit``), the run's bands (``EO2SAR_BANDS``) unless asked
otherwise, invalid pixels black like the model's fill; only quantised to 8 bits for
display. For a raster that is not a pipeline output (no tag), the scaling is computed with
the same rule the run would use (``compute_scaling``, default percentiles). The SAR-like
panel gets its own 2-98 % stretch over its valid pixels (it is for looking, not
measuring); its nodata pixels are black.

``reference``: a third panel with a real SAR image of the same place (e.g. the Sentinel-1
VV of a co-registered pair), read onto the OUTPUT's grid (bilinear through a WarpedVRT
when the grids differ, so a few pixels of offset between products do not show as a
mismatch) and stretched like the SAR-like panel: the way to judge by eye whether water is
dark, towns bright and fields where the real image has them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import cast

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT

from pipeline.errors import InputError, OutputError
from pipeline.inputs.radiometry import (
    DEFAULT_PERCENTILES,
    Scaling,
    compute_scaling,
    decimated_shape,
    read_masked,
    scaling_from_samples,
    to_unit,
)
from pipeline.run.manifest import atomic_write_bytes

__all__ = ["quicklook", "run_scaling", "stretch"]

GAP_COLOUR = (255, 255, 255)
TAG_PREFIX = "EO2SAR_"


#: Longest side of each panel in px (decimated reads): memory and size of the PNG.
PANEL_MAX_SIZE = 1024

def to_display(unit: np.ndarray) -> np.ndarray:
    """[C, H, W] in [0, 1] -> uint8 [H, W, C]: round(255 * unit), the tile builder's rule."""
    return np.moveaxis(np.round(unit * 255.0).astype(np.uint8), 0, -1)


def stretch(data: np.ndarray, valid: np.ndarray,
            percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """[C, H, W] -> uint8 [H, W, C], per-band percentile stretch over valid pixels.

    For the SAR-like panel. Invalid pixels are 0 (black). A flat band (or no valid pixel)
    maps to mid-grey so the panel is visibly "flat" rather than black like nodata.
    """
    samples = data[:, valid]
    scaling = scaling_from_samples(samples, percentiles)
    unit = to_unit(data, valid, scaling)
    flat = [i for i in range(data.shape[0]) if not samples.shape[1] or not np.ptp(samples[i]) > 0]
    unit[flat] = np.where(valid, np.float32(0.5), np.float32(0.0))
    return to_display(unit)


def run_scaling(output_path: Path) -> tuple[Scaling | None, tuple[int, ...] | None]:
    """(scaling, bands) that the pipeline run recorded in its output's tags, or Nones."""
    try:
        with rasterio.open(output_path) as ds:
            tags = ds.tags()
    except RasterioError:
        return None, None  # reported by the panel read, with the path
    return scaling_from_tags(tags)


def scaling_from_tags(tags: dict[str, str]) -> tuple[Scaling | None, tuple[int, ...] | None]:
    """`run_scaling` of tags already read (the viewer reads them from the dataset it
    opened under its driver allow-list, not by opening the path again)."""
    try:
        s = json.loads(tags[f"{TAG_PREFIX}SCALING"])
        pct = s.get("percentiles")
        scaling = Scaling(s["method"], tuple(s["low"]), tuple(s["high"]),
                          percentiles=None if pct is None else tuple(pct))
    except (KeyError, TypeError, ValueError):
        scaling = None
    text = tags.get(f"{TAG_PREFIX}BANDS", "")
    bands = tuple(int(b) for b in text.split(",")) if text.replace(",", "").isdigit() else None
    names = run_band_names(tags)
    if bands is not None and names is not None and len(names) == len(bands) > 3:
        # a multispectral model's run (e.g. red, green, blue, nir): shown as its red,
        # green and blue bands (else its first three), with their part of the scaling
        pick = ([names.index(c) for c in ("red", "green", "blue")]
                if all(c in names for c in ("red", "green", "blue")) else [0, 1, 2])
        bands = tuple(bands[i] for i in pick)
        if scaling is not None and len(scaling.low) == len(names):
            scaling = Scaling(scaling.method, tuple(scaling.low[i] for i in pick),
                              tuple(scaling.high[i] for i in pick), scaling.percentiles)
    return scaling, bands


def run_band_names(tags: dict[str, str]) -> tuple[str, ...] | None:
    """The common names of a multispectral run's input bands (EO2SAR_BAND_NAMES), in the
    order of EO2SAR_BANDS; None for an RGB run."""
    text = tags.get(f"{TAG_PREFIX}BAND_NAMES", "")
    return tuple(text.split(",")) if text else None


def _polarisations(output_path: Path) -> list[str]:
    """The polarisations of a VV/VH model's output bands ([] for other outputs)."""
    try:
        with rasterio.open(output_path) as ds:
            text = ds.tags().get(f"{TAG_PREFIX}POLARISATIONS", "")
            return [p for p in text.split(",") if p][:ds.count]
    except RasterioError:
        return []


def output_band_names(output_path: Path) -> tuple[str, ...] | None:
    """`run_band_names` of an output file (None when it cannot be read: the panel read
    reports that): `pipeline quicklook` stacks a product's bands as the run did."""
    try:
        with rasterio.open(output_path) as ds:
            return run_band_names(ds.tags())
    except RasterioError:
        return None


def _read_panel(path: Path, bands: tuple[int, ...] | None, max_size: int, what: str,
                scaling: Scaling | None = None) -> tuple[np.ndarray, np.ndarray, Scaling | None]:
    """Decimated read of a panel: (data, valid, scaling). For the input, `scaling` is the
    run's; without one it is computed by the shared rule (the SAR-like panel: None)."""
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
            eo = what == "input"
            data, valid = read_masked(ds, tuple(bands), out_shape=shape, zero_fill=eo)
            if eo and (scaling is None or len(scaling.low) != len(bands)):
                scaling = compute_scaling(ds, tuple(bands))
    except RasterioError as e:
        raise InputError(f"cannot read the {what} raster ({e})", path=path,
                         hint="check that the path is a readable raster") from None
    return data, valid, scaling


#: Grids whose corners agree within this many output pixels are read as they are: a warp
#: by a few hundredths of a pixel would only blur (the SpaceNet 6 pair differs by 0.012 px).
SAME_GRID_PX = 0.05


def _same_grid(a: rasterio.io.DatasetReader, b: rasterio.io.DatasetReader) -> bool:
    if (a.crs, a.width, a.height) != (b.crs, b.width, b.height):
        return False
    corners = [(0, 0), (a.width, a.height)]
    ta, inv = a.transform, ~b.transform
    return all(abs(c - d) <= SAME_GRID_PX
               for x, y in corners
               for c, d in zip(inv @ (ta @ (x, y)), (x, y), strict=True))


def _read_reference(path: Path, band: int, output_path: Path, max_size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Band ``band`` of the real SAR at ``path`` on the output's grid, decimated like the
    output panel: (data [1, h, w], valid [h, w])."""
    try:
        with rasterio.open(output_path) as out, rasterio.open(path) as ref:
            if not 1 <= band <= ref.count:
                raise InputError(f"has {ref.count} band(s), band {band} asked for", path=path,
                                 hint="--reference-band is 1-based")
            shape = decimated_shape(out.width, out.height, max_size)
            if _same_grid(ref, out):
                return read_masked(ref, (band,), out_shape=shape, zero_fill=False)
            if ref.crs is None or out.crs is None:
                raise InputError("is not georeferenced, and its grid differs from the "
                                 "output's", path=path,
                                 hint="give a reference on the output's grid, or with a CRS")
            # float32 with NaN fill: the area the reference does not cover is nodata,
            # not a value of 0 (which is a bright 0 dB)
            with WarpedVRT(ref, crs=out.crs, transform=out.transform, width=out.width,
                           height=out.height, resampling=Resampling.bilinear,
                           dtype="float32", nodata=float("nan")) as vrt:
                return read_masked(vrt, (band,), out_shape=shape, zero_fill=False)
    except RasterioError as e:
        raise InputError(f"cannot read the reference raster ({e})", path=path,
                         hint="check that the path is a readable raster") from None


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


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
    max_size: int = PANEL_MAX_SIZE,
    reference: Path | None = None,
    reference_band: int = 1,
) -> Path:
    """Write ``png_path``: input (RGB of ``bands``) | gap | output band 1 [| gap | output
    band 2, the VH of a VV/VH model's output] [| gap | band ``reference_band`` of the real
    SAR ``reference``, on the output's grid].

    ``bands`` default: the run's (the output's ``EO2SAR_BANDS`` tag), else 1,2,3. Each
    panel's longer side is at most ``max_size`` px. The output panel is resized to the
    input panel's height if the grids differ (they do not for pipeline outputs). The PNG
    appears atomically (temporary file in the same directory, then rename). Raises
    InputError for an unreadable raster or bad band numbers, OutputError if the PNG
    cannot be written.
    """
    if max_size < 16:
        raise ValueError(f"max_size must be >= 16, got {max_size}")
    png_path = Path(png_path)
    scaling, run_bands = run_scaling(Path(output_path))
    if bands is not None and bands != run_bands:
        scaling = None  # other bands than the run's: their own scaling, by the same rule
    in_data, in_valid, scaling = _read_panel(Path(input_path), bands or run_bands, max_size,
                                             "input", scaling)
    out_data, out_valid, _ = _read_panel(Path(output_path), None, max_size, "output")
    if out_valid.shape == in_valid.shape:
        # A pipeline output is nodata exactly where the run found the input invalid
        # (including a --nodata the input file does not carry): show the same mask.
        in_valid = in_valid & out_valid
    left = _rgb(to_display(to_unit(in_data, in_valid, cast(Scaling, scaling))))
    panels = [left, _fit_height(_rgb(stretch(out_data, out_valid)), left.shape[0])]
    if _polarisations(Path(output_path))[1:2]:  # a VV/VH output: VH beside VV
        vh_data, vh_valid, _ = _read_panel(Path(output_path), (2,), max_size, "output")
        panels.append(_fit_height(_rgb(stretch(vh_data, vh_valid)), left.shape[0]))
    if reference is not None:
        ref_data, ref_valid = _read_reference(Path(reference), reference_band,
                                              Path(output_path), max_size)
        panels.append(_fit_height(_rgb(stretch(ref_data, ref_valid)), left.shape[0]))
    gap = max(4, left.shape[1] // 64)
    height = left.shape[0]
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = GAP_COLOUR
    x = 0
    for panel in panels:
        canvas[:, x:x + panel.shape[1]] = panel
        x += panel.shape[1] + gap
    buffer = io.BytesIO()  # a few MB at most: max_size bounds both panels
    Image.fromarray(canvas).save(buffer, format="PNG", optimize=True)
    try:
        atomic_write_bytes(png_path, buffer.getvalue())
    except OSError as e:
        raise OutputError(f"cannot write the quicklook ({e.strerror})", path=png_path,
                          hint="check that the directory exists and is writable") from None
    return png_path
