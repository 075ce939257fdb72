"""COG checks for tests (GDAL's validate_cloud_optimized_geotiff lives in osgeo_utils,
which the pip rasterio wheel does not ship; these are its essential checks).

A COG is a tiled GeoTIFF whose overviews exist and whose IFDs and data are laid out
overviews-last so a reader can fetch the header then any tile with range requests. GDAL
records that it wrote such a layout in the IMAGE_STRUCTURE metadata (LAYOUT=COG), which
it only reports when the ghost header of the COG driver is present and consistent.
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
