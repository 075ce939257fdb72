"""pipeline.run.blend_order: batch order and tile-output eviction, without rasters or models."""

from __future__ import annotations

from rasterio.windows import Window

from pipeline.run.blend_order import BlendOrder
from pipeline.run.tiling import TileGrid, batches, blocks


def _drive(blend: BlendOrder, block_tiles: list[list[int]]) -> tuple[list[list[int]], int]:
    """Run the blend loop as run_scene does, with tile outputs = tile numbers; return
    the tiles each block got and the most outputs cached at once."""
    results = iter(blend.order)
    got, peak = [], 0
    for tiles in block_tiles:
        while not blend.ready(tiles):
            b, batch = next(results)
            blend.add(b, list(batch))
            peak = max(peak, blend.cached())
        got.append([t for t, _ in blend.take(tiles)])
    assert next(results, None) is None  # every batch computed is used
    return got, peak


def test_every_needed_batch_once_in_first_need_order():
    block_tiles = [[0, 1, 4, 5], [1, 2, 5, 6], [4, 5, 8, 9]]
    blend = BlendOrder(block_tiles, batches(10, 2))
    assert [b for b, _ in blend.order] == [0, 2, 1, 3, 4]
    assert blend.order[0] == (0, (0, 1))


def test_blocks_get_their_tiles_in_ascending_order():
    grid = TileGrid(width=1000, height=700, tile=256, overlap=64)
    windows = blocks(grid.width, grid.height, 256)
    block_tiles = [grid.tiles_in(w) for w in windows]
    got, _ = _drive(BlendOrder(block_tiles, batches(grid.count, 3)), block_tiles)
    assert got == block_tiles


def test_a_tile_is_dropped_after_the_last_block_that_needs_it():
    block_tiles = [[0, 1], [1, 2], [2]]
    blend = BlendOrder(block_tiles, [(0, 1, 2)])
    blend.add(0, [0, 1, 2])
    assert blend.cached() == 3
    assert blend.take([0, 1]) == [(0, 0), (1, 1)]
    assert blend.cached() == 2  # tile 0 gone: no later block needs it
    blend.take([1, 2])
    assert blend.cached() == 1
    blend.take([2])
    assert blend.cached() == 0


def test_cache_holds_about_one_row_of_tiles_whatever_the_height():
    """The bound pipeline.run.plan.estimate_memory counts on: nx * (ceil(block / stride) + 2)
    tiles, plus one batch that straddles it, for a short and a 4x taller scene."""
    for height in (2048, 8192):
        grid = TileGrid(width=2048, height=height, tile=256, overlap=64)
        block_tiles = [grid.tiles_in(w) for w in blocks(grid.width, grid.height, 512)]
        _, peak = _drive(BlendOrder(block_tiles, batches(grid.count, 4)), block_tiles)
        assert peak <= grid.nx * (-(-512 // grid.stride) + 2) + 4, (height, peak)


def test_tiles_without_output_are_counted_and_skipped():
    blend = BlendOrder([[0, 1, 2]], [(0, 1, 2)])
    assert blend.add(0, ["a", None, "c"]) == 2
    assert blend.take([0, 1, 2]) == [(0, "a"), (2, "c")]


def test_empty_scene_computes_nothing_and_every_block_is_ready():
    block_tiles = [[0, 1], [1, 2]]
    blend = BlendOrder(block_tiles, [(0, 1), (2,)], empty=True)
    assert blend.order == []
    assert blend.ready([0, 1, 2])
    assert blend.take([0, 1]) == [] and blend.take([1, 2]) == []


def test_blocks_are_rasterio_subdivisions():
    ws = blocks(100, 50, 32)
    assert ws[0] == Window(0, 0, 32, 32) and ws[-1] == Window(96, 32, 4, 18)
