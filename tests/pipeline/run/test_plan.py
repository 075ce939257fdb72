"""pipeline.run.plan: the request, the plan of a real scene (writes nothing), memory bound."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.run.mosaic import GDAL_CACHE_BYTES
from pipeline.run.plan import SceneRequest, estimate_memory, plan_scene
from pipeline.run.tiling import TileGrid
from tests.helpers import SN6


def test_request_paths_are_paths():
    req = SceneRequest("a.tif", "b.tif", "m.pt", PipelineConfig(), heatmap="h.tif")
    assert (req.input, req.output, req.model, req.heatmap) == (
        Path("a.tif"), Path("b.tif"), Path("m.pt"), Path("h.tif"))


def test_plan_of_a_scene_writes_nothing(tiny_checkpoint, tmp_path):
    config = PipelineConfig(tile_size=64, overlap=16, batch_size=3)
    plan, job = plan_scene(SceneRequest(SN6, tmp_path / "o.tif", tiny_checkpoint, config,
                                        heatmap=tmp_path / "h.tif"))
    assert list(tmp_path.iterdir()) == []
    assert (plan.width, plan.height, plan.grid.count, plan.batches) == (200, 200, 16, 6)
    assert plan.scaling.method == "uint8" and plan.config.resolved
    assert job.heatmap and job.grid == plan.grid and job.model_sha256 == plan.model_sha256
    text = plan.describe()
    assert "tiles    16 (4 x 4) of 64 px" in text and "heatmap" in text


def test_memory_is_bounded_by_block_and_batch_not_scene_height():
    config = PipelineConfig()
    short = estimate_memory(config, TileGrid(4096, 4096, 256, 64), 3, 4, False)
    tall = estimate_memory(config, TileGrid(4096, 65536, 256, 64), 3, 4, False)
    assert tall == short
    bigger_blocks = estimate_memory(PipelineConfig(block_size=2048),
                                    TileGrid(4096, 4096, 256, 64), 3, 4, False)
    assert bigger_blocks > short


def test_memory_counts_the_statistics_pass_when_it_is_larger():
    """--norm scene pools its sample before the run, holding each tile's activations at
    one layer while `threads` forwards work: the estimate is the larger of the two
    (64 tiles of a ngf 64 model, 2 threads: +1.76 GiB resident measured, bench_norm)."""
    config, grid = PipelineConfig(), TileGrid(4096, 4096, 256, 64)
    run_only = estimate_memory(config, grid, 3, 2, False)
    assert estimate_memory(config, grid, 3, 2, False, norm_tiles=1, ngf=4) == run_only
    with_pass = estimate_memory(config, grid, 3, 2, False, norm_tiles=64, ngf=64)
    assert with_pass > run_only
    assert 1.75 * 2**30 < with_pass - (350 * 2**20 + GDAL_CACHE_BYTES) < 2.1 * 2**30
