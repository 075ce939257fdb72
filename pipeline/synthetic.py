"""Sample rasters for tests, benchmarks and GPU scripts: a synthetic scene and crops.

One generator, so every benchmark and device check measures the same kind of landscape
(plane-wave "terrain", 700 px "fields", 1100 px "roads", pixel noise) and numbers from
different scripts stay comparable. The scene is a function of the global pixel
coordinates, so it is written block by block and never exists as a full array: a
16384 x 16384 scene costs one block of memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window, subdivide

from ugatit.io import atomic_path

__all__ = ["crop_raster", "synthetic_block", "write_synthetic_scene"]


def _smooth_noise(rows: np.ndarray, cols: np.ndarray, seed: int, n_waves: int = 24
                  ) -> np.ndarray:
    """Sum of random plane waves evaluated at global pixel coordinates.

    A function of the coordinates (not of the block), so the field is continuous across
    the blocks it is written in, and any block can be generated alone: the synthetic scene
    never exists as a full array. cos(a + b) = cos a cos b - sin a sin b turns the sum
    into one [h, 2n] x [2n, w] matrix product (BLAS), ~10x faster than a cos per pixel.
    """
    rng = np.random.default_rng(seed)
    left = np.empty((rows.size, 2 * n_waves), dtype=np.float64)
    right = np.empty((2 * n_waves, cols.size), dtype=np.float64)
    for i in range(n_waves):
        wavelength = rng.uniform(40.0, 3000.0)
        angle = rng.uniform(0.0, math.pi)
        phase = rng.uniform(0.0, 2 * math.pi)
        k = 2 * math.pi / wavelength
        ky, kx = k * math.sin(angle), k * math.cos(angle)
        amp = (wavelength / 3000.0) ** 0.5  # long waves stronger, like real landscapes
        a = ky * rows + phase
        b = kx * cols
        left[:, 2 * i], left[:, 2 * i + 1] = amp * np.cos(a), -amp * np.sin(a)
        right[2 * i], right[2 * i + 1] = np.cos(b), np.sin(b)
    out = left.astype(np.float32) @ right.astype(np.float32)
    return out / np.float32(math.sqrt(n_waves))


def synthetic_block(row0: int, col0: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """[3, h, w] uint8 of the synthetic scene at (row0, col0).

    Smooth "terrain" per band (plane waves), "fields" (a 700 px block pattern with a
    per-field brightness), "roads" (bright 6 px lines every 1100 px) and pixel noise, so
    a percentile stretch and the generator see structure at several scales.
    """
    rows = np.arange(row0, row0 + h, dtype=np.float64)
    cols = np.arange(col0, col0 + w, dtype=np.float64)
    fy = (rows // 700).astype(np.int64)[:, None]
    fx = (cols // 700).astype(np.int64)[None, :]
    field_id = (fy * 7919 + fx * 104729) % 251  # deterministic per-field value
    roads = ((rows % 1100) < 6)[:, None] | ((cols % 1100) < 6)[None, :]
    noise_rng = np.random.default_rng([seed, row0, col0])  # per block, reproducible
    bands = []
    for b in range(3):
        terrain = _smooth_noise(rows, cols, seed * 10 + b)
        v = 110 + 45 * terrain + 0.12 * (field_id.astype(np.float32) - 125) * (1 + 0.3 * b)
        v = v + noise_rng.normal(0.0, 6.0, size=(h, w)).astype(np.float32)
        v = np.where(roads, 225.0 - 10 * b, v)
        bands.append(np.clip(v, 1, 255))
    return np.stack(bands).astype(np.uint8)


def write_synthetic_scene(path: Path, size: int, *, seed: int = 0, block: int = 1024,
                          crs: str = "EPSG:32631", dtype: str = "uint8") -> Path:
    """A size x size 3-band GeoTIFF (tiled 512, deflate), written block by block.

    Georeferenced on a 1 m UTM grid so the pipeline treats it like a real scene. Peak
    memory is one ``block`` x ``block`` window, never the scene. `dtype` "uint16" gives
    reflectance-like digital numbers (40 * v + 1000, as Landsat/Sentinel-2 products
    store them: no 0, which the pipeline would read as fill) for a percentile stretch.
    """
    if dtype not in ("uint8", "uint16"):
        raise ValueError(f"dtype must be uint8 or uint16, got {dtype!r}")
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": dtype,
        "crs": crs, "transform": from_origin(500_000.0, 5_760_000.0, 1.0, 1.0),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        "predictor": 2, "BIGTIFF": "IF_SAFER",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for win in subdivide(Window(0, 0, size, size), block, block):
            r, c, h, w = win.row_off, win.col_off, win.height, win.width
            data = synthetic_block(r, c, h, w, seed)
            if dtype == "uint16":
                data = data.astype(np.uint16) * 40 + 1000
            dst.write(data, window=win)
    return path


def crop_raster(src: Path, dst: Path, window: Window, **profile_changes: Any) -> Path:
    """Copy ``window`` of a real raster to ``dst``, keeping its georeferencing.

    The transform comes from ``window_transform`` (never by hand). The copy is a plain
    striped GeoTIFF unless ``profile_changes`` say otherwise (``tiled=True,
    blockxsize=256, ...``); a ``dtype`` change casts the values.
    """
    with rasterio.open(src) as ds:
        data = ds.read(window=window)
        profile = ds.profile
        profile.update(width=int(window.width), height=int(window.height),
                       transform=ds.window_transform(window))
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    profile["tiled"] = False
    profile.update(profile_changes)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data.astype(profile["dtype"]))
    return Path(dst)
