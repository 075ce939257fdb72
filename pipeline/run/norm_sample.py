"""Which tiles of a scene give its normalisation statistics (`--norm scene`).

The generator normalises by statistics (instance/layer norms, the light generator's
gamma/beta); `--norm scene` computes them ONCE per scene, pooled over a sample of tiles
in one forward (ugatit.networks.ResnetGenerator.collect_stats), and every tile uses them
(DESIGN.md invariant 3). This module picks that sample; it decides nothing about the
math and writes nothing.

The sample is a pure function of the scene (its validity) and the grid, never of the
block size, batch size or scheduler, so the output bytes stay independent of them:
  * tiles on the run's own grid (what the run feeds the model, edge tiles mirrored);
  * made of VALID pixels only: a nodata collar (zero fill, masks) would otherwise enter
    every statistic as a block of -1 inputs. Validity is first estimated for every tile
    from one decimated read (bounded cost, like the scaling statistics), then checked at
    full resolution on the tiles picked;
  * spread over the scene: the fully valid tiles in row-major order are cut into
    `n` equal runs and one tile is drawn from each run by a seeded generator (SEED):
    every part of the scene is represented, and the choice is reproducible;
  * weighted: runs differ in length by one (225 tiles in 128 runs: 97 of 2 tiles, then
    31 of 1), so a tile's chance to be drawn is 1 / its run's length, and the rows of the
    short runs (the scene's bottom) would be over-represented. Each drawn tile stands for
    its run (weight = the run's length, Horvitz-Thompson): unweighted, 128 spread tiles
    of a 225-tile Landsat crop stayed 0.011-0.012 from the whole-scene forward whatever
    the draw (a bias, not noise), and 48 of 64 tiles 0.008-0.014.
Each sampled tile's statistics count over its CORE only (`core_region`): the part of the
scene that it alone owns in the partition of the scene by the grid (the overlap split in
the middle between neighbours, nothing past the scene's edge). Pooled over every tile of a
scene, the cores are the scene's pixels once each, as the whole-scene forward sees them
(whole tiles would count every overlap twice and the mirrored padding past the edges:
on the 64-tile Landsat 8 crop the tiled output then stayed 0.015 from the whole-scene
forward at tile scale with every tile in the sample; 0.004 with cores, benchmarks/
bench_norm.py), and a core is at least overlap/2 from its tile's border, where a tile's
activations differ from the scene's.
When too few tiles are fully valid (a narrow or ragged scene), the sample is what there
is; when NONE is, it falls back to the most-valid tiles, whose invalid pixels enter as
inference fills them (-1), with a warning (`NormSample.fully_valid` False, recorded in the
output's tags): better than per-tile statistics, which see the same fill tile by tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio

from pipeline.inputs.radiometry import decimated_shape, read_masked
from pipeline.run.tiling import TileGrid, read_tiles

SEED = 0  # the sample's seed: fixed, so a scene always gets the same sample
MAX_CHECKED = 4  # full-resolution checks per requested tile before giving up on more


@dataclass(frozen=True)
class NormSample:
    """The tiles whose pooled statistics normalise a whole scene."""

    tiles: tuple[int, ...]  # tile numbers on the scene's grid, ascending
    requested: int  # --norm-sample
    fully_valid: bool  # False: the most-valid-tiles fall back (see module docstring)
    #: per tile (in `tiles` order) how many candidate tiles it stands for; () = 1 each
    weights: tuple[float, ...] = ()

    def tile_weights(self) -> tuple[float, ...]:
        """The weights, one per tile (1 each when none were recorded)."""
        return self.weights or (1.0,) * len(self.tiles)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": "scene", "sample": self.requested, "tiles": len(self.tiles),
                "fully_valid": self.fully_valid}


def core_region(grid: TileGrid, index: int) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) in tile `index`'s own pixels: its core (module docstring)."""
    row, col = grid.origin(index)
    ty, tx = divmod(index, grid.nx)
    r0, r1 = _core(ty, grid.ny, row, grid.height, grid)
    c0, c1 = _core(tx, grid.nx, col, grid.width, grid)
    return r0, r1, c0, c1


def _core(i: int, n: int, origin: int, length: int, grid: TileGrid) -> tuple[int, int]:
    half = grid.overlap // 2
    start = 0 if i == 0 else half
    end = length if i == n - 1 else (i + 1) * grid.stride + half
    return start, min(end - origin, grid.tile)


def tile_valid_fractions(valid: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Estimated valid fraction [grid.count] of every tile's part inside the scene, from a
    decimated validity mask `valid` [rows, cols] of the whole scene (integral image)."""
    rows, cols = valid.shape
    integral = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    integral[1:, 1:] = valid.astype(np.int64).cumsum(0).cumsum(1)
    fy, fx = rows / grid.height, cols / grid.width
    out = np.zeros(grid.count, dtype=np.float64)
    for index in range(grid.count):
        row, col = grid.origin(index)
        r0, c0 = int(row * fy), int(col * fx)
        r1 = max(r0 + 1, math.ceil(min(row + grid.tile, grid.height) * fy))
        c1 = max(c0 + 1, math.ceil(min(col + grid.tile, grid.width) * fx))
        total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
        out[index] = total / ((r1 - r0) * (c1 - c0))
    return out


def spread_pick(candidates: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """One candidate from each of `n` equal runs of `candidates` (ascending tile numbers,
    so runs are bands of the scene), drawn by `rng`; all of them if there are <= n."""
    return [pick for pick, _ in spread_pick_weighted(candidates, n, rng)]


def spread_pick_weighted(candidates: np.ndarray, n: int, rng: np.random.Generator
                         ) -> list[tuple[int, float]]:
    """`spread_pick` with each pick's weight: the length of the run it was drawn from
    (the inverse of its chance to be drawn; 1 each when all candidates are taken)."""
    if len(candidates) <= n:
        return [(int(c), 1.0) for c in candidates]
    return [(int(run[rng.integers(len(run))]), float(len(run)))
            for run in np.array_split(candidates, n)]


def choose_sample(
    ds: rasterio.io.DatasetReader,
    bands: tuple[int, ...],
    grid: TileGrid,
    n: int,
    *,
    nodata: float | None = None,
    stats_size: int = 1024,
) -> NormSample:
    """Up to `n` spread, fully valid tiles of the scene (see module docstring)."""
    rows, cols = decimated_shape(grid.width, grid.height, stats_size)
    _, valid = read_masked(ds, bands, nodata=nodata, out_shape=(rows, cols))
    fractions = tile_valid_fractions(valid, grid)
    rng = np.random.default_rng(SEED)
    candidates = np.flatnonzero(fractions >= 1.0)
    weighted = spread_pick_weighted(candidates, n, rng)
    picked = [p for p, _ in weighted]
    # then the other candidates in a seeded order: replacements for picks that the
    # full-resolution check rejects (an invalid line the decimated read stepped over);
    # a replacement stands for the run of the pick it replaces
    rest = [int(c) for c in rng.permutation(np.setdiff1d(candidates, picked))]
    chosen: dict[int, float] = {}
    owed: list[float] = []  # the weights of rejected tiles, for their replacements
    for k, index in enumerate((picked + rest)[: MAX_CHECKED * n]):
        if k < len(weighted):
            weight = weighted[k][1]
        else:
            weight = owed.pop(0) if owed else 1.0
        if _fully_valid(ds, bands, grid, index, nodata):
            chosen[index] = weight
            if len(chosen) == n:
                break
        else:
            owed.append(weight)
    if chosen:
        order = sorted(chosen)
        return NormSample(tuple(order), n, fully_valid=True,
                          weights=tuple(chosen[i] for i in order))
    # No fully valid tile: the most valid ones (ties: lower tile number first).
    order = [int(i) for i in np.argsort(-fractions, kind="stable") if fractions[i] > 0]
    return NormSample(tuple(sorted(order[:n])), n, fully_valid=False)


def _fully_valid(ds: rasterio.io.DatasetReader, bands: tuple[int, ...], grid: TileGrid,
                 index: int, nodata: float | None) -> bool:
    """Whether every pixel of tile `index` as the run reads it (mirrored past the scene
    edge) is valid, at full resolution."""
    _, valid, _ = next(read_tiles(ds, bands, [grid.origin(index)], grid.tile, nodata=nodata))
    return bool(valid.all())
