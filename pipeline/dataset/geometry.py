"""Where the tile builder cuts a scene, which side of the split each tile lands on, and
where each tile lies on Earth: pure geometry, no pixels read, nothing written.

Split (invariant 9, no leakage): the scene is cut into square blocks of `split_block` px;
a seeded hash of (seed, scene, block) ranks the blocks and the first
``floor(test_fraction * n_blocks + u)`` go to test (u: a seeded per-scene uniform, so the
expected share is exact and small scenes still get test blocks sometimes). The choice
depends only on the seed, the scene name and the block, never on the other inputs of a
run, so adding scenes to a dataset never moves a tile across the split. A tile whose window
touches blocks of both splits is dropped (`window_split`). The builder that uses all this:
pipeline/dataset/tiles.py.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
import shapely
from rasterio.windows import Window
from shapely.geometry import Polygon, shape

from pipeline.errors import ConfigError

# Points per footprint edge (corners included): the lon/lat footprint of a projected square
# is slightly curved; 5 points keep the polygon's bounds within ~1e-9 deg of GDAL's
# transform_bounds (21 points per edge) for tiles of a few km, at 16 vertices a tile.
FOOTPRINT_POINTS = 5
COORD_DECIMALS = 9  # 1e-9 deg ~ 0.1 mm: more digits only grow index.geojson


def origins(size: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every `stride` px from 0, plus one flush with the far
    edge when the stride does not land there (the last strip of a scene is not lost; the
    SpaceNet 6 SAR chip, NaN in its top 39 %, has valid 128 px tiles only there)."""
    if size < tile:
        return []
    out = list(range(0, size - tile + 1, stride))
    if out[-1] != size - tile:
        out.append(size - tile)
    return out


def windows(width: int, height: int, tile: int, stride: int) -> Iterator[Window]:
    """Full tiles only, row-major (see `origins`)."""
    for row in origins(height, tile, stride):
        for col in origins(width, tile, stride):
            yield Window(col, row, tile, tile)


def _unit_hash(*parts: object) -> float:
    """A deterministic uniform in [0, 1) from the parts (not Python's salted hash())."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def choose_test_blocks(name: str, width: int, height: int, block: int, fraction: float,
                seed: int) -> frozenset[tuple[int, int]]:
    """The (bx, by) blocks of a scene that go to test (see the module docstring)."""
    nbx, nby = math.ceil(width / block), math.ceil(height / block)
    ranked = sorted((_unit_hash(seed, name, bx, by), bx, by)
                    for by in range(nby) for bx in range(nbx))
    n = min(len(ranked), math.floor(fraction * len(ranked) + _unit_hash(seed, name, "n")))
    return frozenset((bx, by) for _, bx, by in ranked[:n])


def window_split(window: Window, block: int, tests: frozenset[tuple[int, int]]) -> str | None:
    """"train" or "test", or None when the window touches blocks of both splits."""
    bx = range(window.col_off // block, (window.col_off + window.width - 1) // block + 1)
    by = range(window.row_off // block, (window.row_off + window.height - 1) // block + 1)
    sides = {(x, y) in tests for x in bx for y in by}
    if len(sides) > 1:
        return None
    return "test" if sides.pop() else "train"


def footprint(crs: str, transform: tuple[float, ...], window: Window) -> Polygon:
    """The window's outline in lon/lat: its bounds (rasterio.windows.bounds), edges
    densified (FOOTPRINT_POINTS per edge) and reprojected with rasterio.warp."""
    left, bottom, right, top = rasterio.windows.bounds(window, rasterio.Affine(*transform))
    t = np.linspace(0.0, 1.0, FOOTPRINT_POINTS)[:-1]
    xs = np.concatenate([left + (right - left) * t, np.full_like(t, right),
                         right - (right - left) * t, np.full_like(t, left)])
    ys = np.concatenate([np.full_like(t, top), top - (top - bottom) * t,
                         np.full_like(t, bottom), bottom + (top - bottom) * t])
    lon, lat = rasterio.warp.transform(crs, "EPSG:4326", xs.tolist(), ys.tolist())
    ring = [(round(x, COORD_DECIMALS), round(y, COORD_DECIMALS))
            for x, y in zip(lon, lat, strict=True)]
    return Polygon(ring)


def load_aoi(path: Path | None) -> Any:
    """--aoi: the union of the (multi)polygons of a GeoJSON file in lon/lat (prepared)."""
    if path is None:
        return None
    try:
        doc = json.loads(Path(path).read_text())
        items = doc.get("features", [doc]) if doc.get("type") == "FeatureCollection" else [doc]
        geoms = [shape(i["geometry"] if i.get("type") == "Feature" else i) for i in items]
    except FileNotFoundError:
        raise ConfigError("AOI file not found", path=path, hint="check the --aoi path") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError,
            shapely.errors.GeometryTypeError) as exc:
        raise ConfigError(f"not a GeoJSON polygon file ({type(exc).__name__}: {exc})",
                          path=path, hint="give a GeoJSON Polygon/MultiPolygon (lon/lat), "
                          "Feature or FeatureCollection") from None
    if not geoms or any(g.geom_type not in ("Polygon", "MultiPolygon") for g in geoms):
        raise ConfigError("the AOI must be Polygon/MultiPolygon geometries", path=path,
                          hint="draw the area as polygons in lon/lat (EPSG:4326)")
    aoi = shapely.union_all(geoms)
    shapely.prepare(aoi)
    return aoi
