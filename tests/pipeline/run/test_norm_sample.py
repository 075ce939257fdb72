"""The sample of tiles of `--norm scene` (pipeline/run/norm_sample.py): fully valid, spread,
seeded, and its fall back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.run.norm_sample import (
    choose_sample,
    spread_pick,
    spread_pick_weighted,
    tile_valid_fractions,
)
from pipeline.run.tiling import TileGrid

GRID = TileGrid(width=512, height=512, tile=128, overlap=32)  # 5 x 5 tiles, stride 96


def _write(path: Path, data: np.ndarray) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype.name, "crs": "EPSG:32631",
               "transform": from_origin(500_000.0, 5_760_000.0, 1.0, 1.0)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def _scene(size: int = 512, seed: int = 0) -> np.ndarray:
    """uint16, no zero: every pixel valid until a test zeroes some (zero = fill)."""
    return np.random.default_rng(seed).integers(100, 4000, (3, size, size), dtype=np.uint16)


def test_valid_fractions_of_the_tiles_from_a_decimated_mask():
    valid = np.ones((512, 512), dtype=bool)
    valid[:, :96] = False  # the first column of tiles: 96 of its 128 columns invalid
    fractions = tile_valid_fractions(valid, GRID).reshape(5, 5)
    np.testing.assert_allclose(fractions[:, 0], 32 / 128)
    np.testing.assert_allclose(fractions[:, 1:], 1.0)
    # a decimated (half-size) mask gives the same estimate here
    np.testing.assert_allclose(tile_valid_fractions(valid[::2, ::2], GRID).reshape(5, 5),
                               fractions)


def test_spread_pick_takes_one_per_run_and_is_seeded():
    candidates = np.arange(100)
    a = spread_pick(candidates, 10, np.random.default_rng(0))
    assert a == spread_pick(candidates, 10, np.random.default_rng(0))
    assert [p // 10 for p in a] == list(range(10))  # one from each tenth of the scene
    assert spread_pick(candidates[:7], 10, np.random.default_rng(0)) == list(range(7))


def test_sample_is_fully_valid_tiles_only(tmp_path):
    data = _scene()
    data[:, :, :96] = 0  # zero collar on the left (fill in every band)
    data[:, 300, 300] = 0  # one invalid pixel in the middle: its tiles are out too
    with rasterio.open(_write(tmp_path / "c.tif", data)) as ds:
        sample = choose_sample(ds, (1, 2, 3), GRID, 25)
    assert sample.fully_valid
    bad = {ty * 5 + tx for ty in range(5) for tx in range(5)
           if tx == 0 or (ty * 96 <= 300 < ty * 96 + 128 and tx * 96 <= 300 < tx * 96 + 128)}
    assert set(sample.tiles) == set(range(25)) - bad


def test_a_thin_invalid_line_missed_by_the_decimated_read_is_caught(tmp_path):
    """stats_size 64 decimates 512 px by 8: an invalid single column at an odd position
    is not in the decimated mask; the full-resolution check still rejects its tiles."""
    data = _scene()
    data[:, :, 251] = 0
    with rasterio.open(_write(tmp_path / "line.tif", data)) as ds:
        sample = choose_sample(ds, (1, 2, 3), GRID, 25, stats_size=64)
    assert sample.tiles and all(not (tx * 96 <= 251 < tx * 96 + 128)
                                for tx in (t % 5 for t in sample.tiles))


@pytest.mark.parametrize("n", [1, 4, 9])
def test_sample_is_spread_deterministic_and_sized(tmp_path, n):
    with rasterio.open(_write(tmp_path / "s.tif", _scene())) as ds:
        a = choose_sample(ds, (1, 2, 3), GRID, n)
        b = choose_sample(ds, (1, 2, 3), GRID, n)
    assert a == b and len(a.tiles) == n and a.requested == n
    if n == 9:
        rows = {t // 5 for t in a.tiles}
        assert len(rows) >= 4  # every band of rows of the scene is represented


def test_no_fully_valid_tile_gives_the_most_valid_ones(tmp_path):
    data = _scene()
    data[:, :, ::100] = 0  # a fill column every 100 px: every 128 px tile has one
    data[:, 200:, :] = 0  # and the lower part of the scene is fill
    with rasterio.open(_write(tmp_path / "f.tif", data)) as ds:
        sample = choose_sample(ds, (1, 2, 3), GRID, 3)
    assert not sample.fully_valid and len(sample.tiles) == 3
    assert all(t // 5 <= 1 for t in sample.tiles)  # from the rows that are mostly valid
    assert sample.to_dict() == {"mode": "scene", "sample": 3, "tiles": 3, "fully_valid": False}


@pytest.mark.parametrize("size", [(1440, 1440), (348, 352), (200, 120), (2041, 1860)])
def test_tile_cores_partition_the_scene(size):
    """Every pixel of the scene lies in exactly one tile's core, and no core reaches past
    the scene's edge: pooled over every tile, the statistics see the scene once."""
    from pipeline.run.norm_sample import core_region

    grid = TileGrid(*size, 256, 64)
    cover = np.zeros((grid.height, grid.width), dtype=np.int32)
    for t in range(grid.count):
        row, col = grid.origin(t)
        r0, r1, c0, c1 = core_region(grid, t)
        assert 0 <= r0 < r1 <= grid.tile and 0 <= c0 < c1 <= grid.tile
        assert row + r1 <= grid.height and col + c1 <= grid.width
        cover[row + r0 : row + r1, col + c0 : col + c1] += 1
    assert (cover == 1).all()


def test_each_pick_stands_for_its_run():
    """Runs of unequal length (225 tiles in 128 runs: 97 of 2, then 31 of 1) give the
    tiles unequal chances; each pick's weight is its run's length, so the weights add up
    to the candidates (every tile stood for once) and a tile drawn with chance 1/2
    counts twice. All candidates taken: weight 1 each."""
    picks = spread_pick_weighted(np.arange(225), 128, np.random.default_rng(0))
    weights = [w for _, w in picks]
    assert len(picks) == 128 and sum(weights) == 225
    assert weights == [2.0] * 97 + [1.0] * 31
    assert [p for p, _ in picks] == spread_pick(np.arange(225), 128, np.random.default_rng(0))
    assert spread_pick_weighted(np.arange(5), 8, np.random.default_rng(0)) == [
        (i, 1.0) for i in range(5)]


def test_the_sample_records_weights_that_cover_the_scene(tmp_path):
    with rasterio.open(_write(tmp_path / "s.tif", _scene())) as ds:
        sample = choose_sample(ds, (1, 2, 3), GRID, 7)
        every = choose_sample(ds, (1, 2, 3), GRID, GRID.count)
    assert len(sample.weights) == len(sample.tiles) == 7
    assert sum(sample.weights) == GRID.count and set(sample.weights) <= {3.0, 4.0}
    assert every.tile_weights() == (1.0,) * GRID.count
