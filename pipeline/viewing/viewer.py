"""`pipeline view`: one self-contained HTML page to look at a run on a map.

Layers, all ON THE OUTPUT GRID and read at a bounded size (``max_size`` px on the long
side; decimated reads use the COG's overviews), embedded as PNG data URIs:
  optical   the input as the run fed it to the model (the scaling and bands recorded in
            the output's tags, `pipeline.viewing.quicklook.run_scaling`, applied by the shared
            radiometry code), reprojected onto the output grid with a WarpedVRT when the
            grids differ; invalid pixels transparent;
  sar       the SAR-like output band 1, 2-98 % stretch of its valid pixels (for looking,
            not measuring: the legend gives the stretch in the band's units, dB when the
            output reads as dB), nodata transparent;
  heat      the CAM heatmap, 2-98 % stretch, jet colours (as app.py), nodata transparent.
The page (pipeline/viewing/viewer_page.py) swipes between optical and SAR-like, zooms and pans,
and shows lon/lat, CRS x/y and the full-resolution pixel under the cursor. CRS x/y are
exact (the output's affine transform); lon/lat are bilinear in a (n+1) x (n+1) grid of
exactly projected nodes, and the page states the interpolation error measured at the
cell centres (`lonlat_grid`): 3.5 cm on the demo's 61 km Landsat scene (UTM, 32 x 32
cells), far below a 30 m pixel, because a projection is smooth at that scale; the page
prints the figure for its own scene.

`view_directory` writes a page per output of a directory run and an index.html linking
them (each output's input from its manifest; heatmaps by the directory runner's naming).

`--serve` serves exactly the page and the pages it links, under a secret token, to
loopback only (pipeline/viewing/view_server.py). A viewed folder may be someone else's: what
the viewer reads from it (the output, the heatmap, the input its manifest names) goes
through pipeline/viewing/view_inputs.py, so a hostile folder cannot make the page carry a copy
of another of the user's files.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import xy
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform

from pipeline.errors import InputError, OutputError
from pipeline.inputs.radiometry import (
    DEFAULT_PERCENTILES,
    compute_scaling,
    decimated_shape,
    read_masked,
    scaling_from_samples,
    to_unit,
)
from pipeline.run.batch import heatmap_for
from pipeline.run.manifest import atomic_write_text, manifest_path
from pipeline.viewing.quicklook import scaling_from_tags, to_display
from pipeline.viewing.view_inputs import (
    OUTPUT_DRIVERS,
    manifest_input,
    open_allowed,
    open_input,
    refuse_symlink_out,
    view_env,
)
from pipeline.viewing.view_server import page_server, serve_page
from pipeline.viewing.viewer_page import render_page
from ugatit.sheets import jet

__all__ = ["VIEW_MAX_SIZE", "build_page", "lonlat_grid", "page_server", "serve_page",
           "view_directory", "write_viewer"]

#: Longest side of the embedded layers in px: enough to zoom into a screen's worth of
#: detail, small enough for a page of a few MB.
VIEW_MAX_SIZE = 2048
#: Cells per side of the lon/lat lookup grid.
LONLAT_CELLS = 32


@dataclass
class Layer:
    """One layer of the page: an image on the output grid (transparent where invalid)
    and its legend text. The image mode keeps the PNG small: "LA" for the gray SAR-like
    layer, "P" (a 256-colour palette, index 0 transparent) for the heatmap, "RGBA" for
    the optical one (the demo scene's page: 17 MB, against 23 MB all in RGBA)."""

    id: str
    label: str
    image: Image.Image
    legend: str

    def to_json(self) -> dict[str, str]:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        src = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return {"id": self.id, "label": self.label, "src": src, "legend": self.legend}


def _with_alpha(img: np.ndarray, valid: np.ndarray) -> Image.Image:
    """[H, W, 3 or 1] uint8 + valid -> an RGBA or LA image, transparent where invalid."""
    alpha = np.where(valid, 255, 0).astype(np.uint8)[..., None]
    return Image.fromarray(np.concatenate([img, alpha], axis=2))


def _jet_palette_image(unit: np.ndarray, valid: np.ndarray) -> Image.Image:
    """[H, W] in [0, 1] -> "P" image: index 0 transparent (invalid), 1..255 jet colours."""
    index = np.where(valid, 1 + np.rint(np.clip(unit, 0.0, 1.0) * 254.0), 0).astype(np.uint8)
    img = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1:] = jet(np.linspace(0.0, 1.0, 255)[None])[0]
    img.putpalette(palette.ravel().tolist())
    img.info["transparency"] = 0
    return img


def _open_output(path: Path, what: str) -> rasterio.io.DatasetReader:
    """A pipeline output or heatmap: GTiff driver only, no sidecar files, not a symlink
    out of its folder (pipeline/viewing/view_inputs.py)."""
    path = Path(path)
    refuse_symlink_out(path, path.parent, what)
    try:
        return open_allowed(path, OUTPUT_DRIVERS, what)
    except RasterioError as e:
        raise InputError(f"cannot read the {what} raster ({e})", path=path,
                         hint="check that the path is a readable raster") from None


def _stretch_limits(values: np.ndarray) -> tuple[float, float]:
    """2-98 % of `values` (the quicklook's display stretch), widened if flat."""
    s = scaling_from_samples(values[None], DEFAULT_PERCENTILES)
    lo, hi = float(s.low[0]), float(s.high[0])
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def _unit_of(ds: rasterio.io.DatasetReader, value: float) -> str:
    """A band-1 value as text in the band's own terms (DN * scale + offset, units)."""
    scale, offset = ds.scales[0], ds.offsets[0]
    units = ds.units[0] or ""
    return f"{value * scale + offset:.3g}{' ' + units if units else ''}"


def sar_layer(ds: rasterio.io.DatasetReader, shape: tuple[int, int]
              ) -> tuple[Layer, np.ndarray]:
    """The SAR-like band 1 at `shape`, 2-98 % stretch; (layer, valid mask)."""
    data, valid = read_masked(ds, (1,), out_shape=shape, zero_fill=False)
    band = data[0].astype(np.float64)
    if valid.any():
        lo, hi = _stretch_limits(band[valid])
        legend = f"2-98 % stretch, {_unit_of(ds, lo)} to {_unit_of(ds, hi)}"
    else:
        lo, hi, legend = 0.0, 1.0, "no valid pixel"
    gray = np.clip((band - lo) / (hi - lo), 0.0, 1.0)
    shade = to_display(np.where(valid, gray, 0.0)[None].astype(np.float32))
    return Layer("sar", "SAR-like", _with_alpha(shade, valid), legend), valid


def heat_layer(path: Path, out: rasterio.io.DatasetReader, shape: tuple[int, int]) -> Layer:
    """The CAM heatmap at `shape` (the output grid), 2-98 % stretch, jet. A pipeline
    heatmap is always on its output's grid; another grid is refused, not guessed. Read
    as a GeoTIFF only, like the output (pipeline/viewing/view_inputs.py)."""
    with _open_output(path, "heatmap") as ds:
        if not _same_grid(ds, out):
            raise InputError("the heatmap is not on the output's grid", path=path,
                             hint="pass the heatmap written by the same run (--heatmap)")
        data, valid = read_masked(ds, (1,), out_shape=shape, zero_fill=False)
    band = data[0].astype(np.float64)
    lo, hi = _stretch_limits(band[valid]) if valid.any() else (0.0, 1.0)
    image = _jet_palette_image(np.where(valid, (band - lo) / (hi - lo), 0.0), valid)
    legend = f"CAM attention {lo:.3g} to {hi:.3g}" if valid.any() else "no valid pixel"
    return Layer("heat", "heatmap", image, legend)


def _same_grid(a: rasterio.io.DatasetReader, b: rasterio.io.DatasetReader) -> bool:
    return (a.crs == b.crs and a.transform == b.transform
            and (a.width, a.height) == (b.width, b.height))


def optical_layer(
    path: Path,
    out: rasterio.io.DatasetReader,
    shape: tuple[int, int],
    out_valid: np.ndarray,
    bands: tuple[int, ...] | None = None,
    trusted: bool = True,
) -> Layer:
    """The optical input on the output grid at `shape`, scaled as the run fed it.
    `trusted`: the user named it (any GDAL driver); else it came from a manifest and was
    vetted by pipeline/viewing/view_inputs.py, and is read with its driver allow-list.

    `bands`: the run's (EO2SAR_BANDS) unless given; scaling: the run's (EO2SAR_SCALING)
    for those bands, else computed by the shared rule on the input itself. An input on
    another grid is warped onto the output's (nearest neighbour, like the decimated
    reads: values stay real pixel values). On the same grid the output's nodata mask is
    applied too (it includes a --nodata the input file does not carry), as the quicklook.
    """
    scaling, run_bands = scaling_from_tags(out.tags())
    if bands is not None and bands != run_bands:
        scaling = None  # other bands than the run's: their own scaling, by the same rule
    how = "scaling as the run"
    try:
        opened = open_input(path, trusted)
    except RasterioError as e:
        raise InputError(f"cannot read the input raster ({e})", path=path,
                         hint="check that the path is a readable raster") from None
    with opened as src:
        use = bands or run_bands or ((1, 2, 3) if src.count >= 3 else (1, 1, 1))
        bad = [b for b in use if not 1 <= b <= src.count]
        if bad:
            raise InputError(f"has {src.count} band(s), band(s) {bad} asked for", path=path,
                             hint="band numbers are 1-based, e.g. --bands 3,2,1")
        if scaling is None or len(scaling.low) != len(use):
            scaling = compute_scaling(src, tuple(use))
            how = "scaling by the run's rule"
        same = _same_grid(src, out)
        where = "same grid" if same else f"warped onto the output grid from {src.crs}"
        if same:
            data, valid = read_masked(src, tuple(use), out_shape=shape)
            valid &= out_valid
        else:
            # the alpha band marks what lies outside the input (transparent, whatever
            # the dtype) as well as the input's own nodata
            with WarpedVRT(src, crs=out.crs, transform=out.transform, width=out.width,
                           height=out.height, resampling=Resampling.nearest,
                           add_alpha=True) as vrt:
                data, valid = read_masked(vrt, tuple(use), out_shape=shape)
    rgb = to_display(to_unit(data, valid, scaling))
    legend = f"bands {','.join(map(str, use))}, {scaling.method} {how} ({where})"
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return Layer("optical", "optical", _with_alpha(rgb, valid), legend)


def lonlat_grid(ds: rasterio.io.DatasetReader, cells: int = LONLAT_CELLS
                ) -> dict[str, Any] | None:
    """{n, lon, lat, error_m}: lon/lat of (n+1) x (n+1) evenly spaced pixel positions
    (corners included) and the largest error of bilinear interpolation between them,
    measured at the n x n cell centres against the exact projection. None without a CRS.
    """
    if ds.crs is None:
        return None
    n = max(1, min(cells, ds.width, ds.height))

    def exact(cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = xy(ds.transform, rows.ravel(), cols.ravel(), offset="ul")
        lon, lat = warp_transform(ds.crs, "EPSG:4326", list(xs), list(ys))
        return np.reshape(lon, cols.shape), np.reshape(lat, cols.shape)

    fx = np.linspace(0.0, ds.width, n + 1)
    fy = np.linspace(0.0, ds.height, n + 1)
    lon, lat = exact(*np.meshgrid(fx, fy))
    mid_lon, mid_lat = exact(*np.meshgrid((fx[:-1] + fx[1:]) / 2, (fy[:-1] + fy[1:]) / 2))
    # bilinear interpolation at a cell centre = mean of its 4 corners
    est_lon = (lon[:-1, :-1] + lon[:-1, 1:] + lon[1:, :-1] + lon[1:, 1:]) / 4
    est_lat = (lat[:-1, :-1] + lat[:-1, 1:] + lat[1:, :-1] + lat[1:, 1:]) / 4
    metres_per_degree = 111_320.0  # along a meridian; along a parallel times cos(lat)
    err = np.hypot((est_lon - mid_lon) * np.cos(np.radians(mid_lat)), est_lat - mid_lat)
    return {"n": n, "lon": np.round(lon, 9).tolist(), "lat": np.round(lat, 9).tolist(),
            "error_m": float(err.max() * metres_per_degree)}


def default_input(output: Path) -> Path | None:
    """The input recorded by a directory run's manifest beside `output`, if it exists and
    the viewer may read it (pipeline/viewing/view_inputs.py: `manifest_input`; UnsafeInput
    otherwise, whose hint asks for `--input`)."""
    try:
        doc = json.loads(manifest_path(output).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    return manifest_input(doc, Path(output).parent)


def build_page(
    output: Path,
    *,
    input_path: Path | None = None,
    heatmap: Path | None = None,
    bands: tuple[int, ...] | None = None,
    max_size: int = VIEW_MAX_SIZE,
    trusted_input: bool = True,
) -> str:
    """The HTML of the viewer of `output` (see the module docstring). Every read runs
    under the viewer's GDAL restrictions (pipeline/viewing/view_inputs.py: `view_env`);
    `trusted_input=False` for an input taken from a manifest."""
    if max_size < 16:
        raise ValueError(f"max_size must be >= 16, got {max_size}")
    with view_env():
        return _build_page(Path(output), input_path, heatmap, bands, max_size, trusted_input)


def _build_page(output: Path, input_path: Path | None, heatmap: Path | None,
                bands: tuple[int, ...] | None, max_size: int, trusted_input: bool) -> str:
    with _open_output(output, "output") as out:
        shape = decimated_shape(out.width, out.height, max_size)
        sar, out_valid = sar_layer(out, shape)
        layers = [sar]
        if input_path is not None:
            layers.insert(0, optical_layer(Path(input_path), out, shape, out_valid, bands,
                                           trusted=trusted_input))
        if heatmap is not None:
            layers.append(heat_layer(Path(heatmap), out, shape))
        grid = lonlat_grid(out)
        notes = [f"{out.width} x {out.height} px, {out.crs.to_string() if out.crs else 'no CRS'}",
                 f"layers at {shape[1]} x {shape[0]} px"]
        if grid is not None:
            notes.append(f"lon/lat interpolated in a {grid['n'] + 1} x {grid['n'] + 1} grid, "
                         f"error <= {grid['error_m']:.2g} m")
        data = {
            "title": output.name,
            "width": out.width,
            "height": out.height,
            "image": [shape[1], shape[0]],
            "crs": out.crs.to_string() if out.crs else None,
            "transform": list(out.transform.to_gdal()),
            "lonlat": grid,
            "layers": [layer.to_json() for layer in layers],
            "notes": notes,
        }
    return render_page(f"eo2sar: {output.name}", data)


def _write(path: Path, text: str, what: str) -> Path:
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise OutputError(f"cannot write the {what} ({e.strerror})", path=path,
                          hint="check that the directory exists and is writable") from None
    return path


def write_viewer(
    output: Path,
    page: Path | None = None,
    *,
    input_path: Path | None = None,
    heatmap: Path | None = None,
    bands: tuple[int, ...] | None = None,
    max_size: int = VIEW_MAX_SIZE,
) -> Path:
    """Write the viewer of `output` to `page` (default: beside it, NAME.html), atomically.
    `input_path` defaults to the one a directory run's manifest records, if it exists."""
    output = Path(output)
    page = Path(page) if page is not None else output.with_suffix(".html")
    trusted = input_path is not None
    if input_path is None:
        input_path = default_input(output)
    text = build_page(output, input_path=input_path, heatmap=heatmap, bands=bands,
                      max_size=max_size, trusted_input=trusted)
    return _write(page, text, "viewer page")


def view_directory(directory: Path, out_dir: Path | None = None, *,
                   max_size: int = VIEW_MAX_SIZE) -> Path:
    """A page per output of a directory run (`*.tif` but heatmaps, recursively) and
    `index.html` linking them; each output's input from its manifest, its heatmap
    `NAME.heatmap.tif` when present. Returns the index path."""
    directory = Path(directory)
    out_dir = Path(out_dir) if out_dir is not None else directory
    outputs = sorted(p for p in directory.rglob("*.tif")
                     if not p.name.endswith(".heatmap.tif") and not p.name.startswith("."))
    if not outputs:
        raise InputError("no output raster (*.tif) in this directory", path=directory,
                         hint="give the OUTPUT directory of a `pipeline run` directory run")
    rows = []
    for out in outputs:
        refuse_symlink_out(out, directory, "output")
        rel = out.relative_to(directory)
        page = out_dir / rel.with_suffix(".html")
        page.parent.mkdir(parents=True, exist_ok=True)
        heat = heatmap_for(out)
        write_viewer(out, page, heatmap=heat if heat.exists() else None, max_size=max_size)
        href = html.escape(os.path.relpath(page, out_dir).replace(os.sep, "/"))
        rows.append(f'<li><a href="{href}">{html.escape(rel.as_posix())}</a></li>')
    index = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             "<title>eo2sar outputs</title></head><body style=\"font-family:sans-serif\">"
             f"<h1>eo2sar outputs: {html.escape(directory.name)}</h1>\n<ul>\n"
             + "\n".join(rows) + "\n</ul></body></html>\n")
    return _write(out_dir / "index.html", index, "index page")
