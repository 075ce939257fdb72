"""COG checks for tests (GDAL's validate_cloud_optimized_geotiff lives in osgeo_utils,
which the pip rasterio wheel does not ship; these are its checks, re-done with rasterio).

A COG is a tiled GeoTIFF with overviews whose byte layout lets a reader fetch the header
and then any tile of any level with range requests:
  * the GDAL "ghost" structural metadata sits right after the TIFF header;
  * every IFD (full resolution, then each overview, in that order) comes before any
    image data, so one read of the file's start gets the whole directory;
  * image data are stored smallest overview first, full resolution last;
  * within a level, tiles are in row-major order.
The LAYOUT=COG item of IMAGE_STRUCTURE is only GDAL's reading of the ghost header (a
claim of the writer); the IFD and tile offsets below check the layout itself, from the
TIFF tags GDAL exposes (IFD_OFFSET, BLOCK_OFFSET_x_y).
"""

from __future__ import annotations

from pathlib import Path

import rasterio


def cog_problems(path: Path) -> list[str]:
    """Everything that keeps `path` from being a proper COG (empty list: it is one)."""
    problems: list[str] = []
    with rasterio.open(path) as ds:
        if ds.driver != "GTiff":
            problems.append(f"driver is {ds.driver}, not GTiff")
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        if structure.get("LAYOUT") != "COG":
            problems.append(f"IMAGE_STRUCTURE LAYOUT is {structure.get('LAYOUT')!r}, not 'COG'")
        if not ds.profile.get("tiled"):
            problems.append("not tiled")
        for i, (bh, bw) in enumerate(ds.block_shapes, start=1):
            if bh != bw or bh % 16:
                problems.append(f"band {i} blocks are {bh}x{bw}, not square multiples of 16")
        for band in range(1, ds.count + 1):
            factors = ds.overviews(band)
            if not factors:
                problems.append(f"band {band} has no overviews")
            elif factors != sorted(set(factors)) or factors[0] < 2:
                # 2, 4, 8 ... for ordinary sizes; rasterio reports odd factors for
                # degenerate ones (3 x 1 px -> 2 x 1 px is "3")
                problems.append(f"band {band} overview factors {factors} do not increase")
        if ds.compression is None:
            problems.append("not compressed")
        if ds.profile.get("tiled"):
            problems += _layout_problems(ds, Path(path))
    return problems


def _offset(ds: rasterio.io.DatasetReader, item: str, ovr: int | None) -> int | None:
    value = ds.get_tag_item(item, "TIFF", bidx=1, ovr=ovr)
    return None if value in (None, "") else int(value)


def _layout_problems(ds: rasterio.io.DatasetReader, path: Path) -> list[str]:
    """The byte-layout checks of GDAL's validator (see module docstring)."""
    problems: list[str] = []
    with open(path, "rb") as f:
        head = f.read(64)
    if b"GDAL_STRUCTURAL_METADATA_SIZE=" not in head:
        problems.append("no GDAL ghost header after the TIFF header")
    levels: list[int | None] = [None, *range(len(ds.overviews(1)))]  # full res, then ovrs
    ifds = [_offset(ds, "IFD_OFFSET", o) for o in levels]
    first = [_offset(ds, "BLOCK_OFFSET_0_0", o) for o in levels]
    if None in ifds or None in first:
        return [*problems, "TIFF IFD or block offsets not reported"]
    if ifds != sorted(ifds):
        problems.append(f"IFDs not in full-res-then-overviews order: {ifds}")
    if max(ifds) > min(first):  # type: ignore[type-var]
        problems.append("an IFD lies after image data (IFDs must all come first)")
    if first[::-1] != sorted(first):  # type: ignore[type-var]
        problems.append(f"image data not stored smallest overview first: {first}")
    for o, level_first in zip(levels, first, strict=True):
        with rasterio.open(path, **({} if o is None else {"OVERVIEW_LEVEL": o})) as lv:
            bh, bw = lv.block_shapes[0]
            last = (-(-lv.height // bh) - 1, -(-lv.width // bw) - 1)
        last_off = _offset(ds, f"BLOCK_OFFSET_{last[1]}_{last[0]}", o)
        if last_off is not None and last_off < level_first:  # type: ignore[operator]
            problems.append(f"level {o}: tiles not in row-major order")
    return problems


def assert_cog(path: Path) -> None:
    problems = cog_problems(path)
    assert not problems, f"{path} is not a valid COG: " + "; ".join(problems)


def overview_matches_average(path: Path, band: int = 1, atol: float = 1e-5) -> float:
    """Max |first overview - mean of each full 2x2 block of valid pixels| (float rasters).

    AVERAGE is the right resampling for a continuous product (nearest would alias);
    the file does not record which resampling made the overviews, so we recompute it.
    Returns the max difference over 2x2 blocks with four valid pixels.
    """
    import numpy as np

    with rasterio.open(path) as ds:
        full = ds.read(band).astype(np.float64)
        h, w = full.shape
        with rasterio.open(path, OVERVIEW_LEVEL=0) as ov:
            small = ov.read(band).astype(np.float64)
    hh, ww = (h // 2) * 2, (w // 2) * 2
    blocks = full[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2)
    means = blocks.mean(axis=(1, 3))
    ok = np.isfinite(means)
    sub = small[: hh // 2, : ww // 2]
    return float(np.abs(sub[ok] - means[ok]).max())
