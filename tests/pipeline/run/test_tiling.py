"""Tile grid, reflect-padded reads, blend window."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from pipeline.run.tiling import (
    TileGrid,
    batches,
    blocks,
    ramp_window,
    read_tile,
    read_tiles,
    weight_window,
)
from tests.helpers import SN6, crop


@pytest.mark.parametrize("size", [1, 5, 255, 256, 257, 448, 449, 2041])
def test_grid_covers_scene_and_tiles_start_inside(size):
    g = TileGrid(size, size, 256, 64)
    starts = [g.origin(i)[1] for i in range(g.nx)]
    assert starts[0] == 0 and starts[-1] < size  # no tile entirely outside
    assert starts[-1] + 256 >= size  # the last tile reaches the edge
    assert all(b - a == 192 for a, b in zip(starts, starts[1:], strict=False))


def test_tiles_in_window_match_brute_force():
    g = TileGrid(1000, 700, 256, 64)
    for win in (Window(0, 0, 1000, 700), Window(190, 250, 10, 300), Window(999, 699, 1, 1),
                Window(384, 0, 128, 128)):
        brute = []
        for i in range(g.count):
            r, c = g.origin(i)
            if (r < win.row_off + win.height and r + 256 > win.row_off
                    and c < win.col_off + win.width and c + 256 > win.col_off):
                brute.append(i)
        assert g.tiles_in(win) == brute


def test_batches_and_blocks_partition():
    assert batches(10, 4) == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    ws = list(blocks(100, 50, 32))
    assert sum(int(w.width * w.height) for w in ws) == 100 * 50
    assert ws[-1] == Window(96, 32, 4, 18)


def test_ramp_window_partition_of_unity_and_positive():
    t, o = 256, 64
    w = ramp_window(t, o)
    assert (w > 0).all() and w.max() == 1.0
    # falling ramp of a tile + rising ramp of the next (stride t - o) sum to 1
    np.testing.assert_allclose(w[t - o:] + w[:o], 1.0, rtol=0, atol=1e-15)
    assert (ramp_window(t, 0) == 1).all()
    assert weight_window(8, 2).shape == (8, 8)


def test_read_tile_reflect_pads_tiny_scene(tmp_path):
    tiny = crop(SN6, tmp_path / "t.tif", Window(0, 0, 5, 3))
    with rasterio.open(tiny) as ds:
        raw = ds.read()
        data, valid, inside = read_tile(ds, (1, 2, 3), 0, 0, 16)
    assert data.shape == (3, 16, 16) and valid.all() and inside == 15
    np.testing.assert_array_equal(data[:, :3, :5], raw)  # the scene itself, unchanged
    np.testing.assert_array_equal(data[:, :3, 5], raw[:, :, 3])  # mirrored, no edge repeat
    np.testing.assert_array_equal(data[:, 3, :5], raw[:, 1, :])


def test_read_tiles_cut_from_strips_equal_tile_by_tile_reads(tmp_path):
    """A batch's tiles read as one strip per row are the arrays read_tile gives, edge
    tiles (reflect-padded) and validity (zero collar of a uint16 scene) included, for
    runs that wrap onto the next row."""
    from tests.helpers import L8

    scene = crop(L8, tmp_path / "l8.tif", Window(0, 0, 300, 170))
    grid = TileGrid(300, 170, 64, 16)
    with rasterio.open(scene) as ds:
        for run in batches(grid.count, 7):
            origins = [grid.origin(i) for i in run]
            got = list(read_tiles(ds, (3, 2, 1), origins, 64))
            assert len(got) == len(origins)
            for (row, col), (data, valid, inside) in zip(origins, got, strict=True):
                want = read_tile(ds, (3, 2, 1), row, col, 64)
                np.testing.assert_array_equal(data, want[0])
                np.testing.assert_array_equal(valid, want[1])
                assert inside == want[2]
        assert any(not v.all() for _, v, _ in read_tiles(ds, (3, 2, 1), [(0, 0)], 64))
