"""`--norm scene|tile` end to end (pipeline/run/scene.py, plan.py, inference.py): the tiled
run matches the model's whole-image forward with scene statistics, `tile` keeps the
per-tile output, the sample ignores a nodata collar, and the settings are recorded.

Small scenes (512 px, tiles of 128 px, overlap 32: 25 tiles) and a light ngf 8, n_res 1
random-weight model keep it fast; its receptive field (~30 px) is small against the
tile, as the published model's (~80 px) is against 256 px tiles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from pipeline import PipelineWarning, load_config, run_scene
from pipeline.cli import main as pipeline_cli
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.inputs.radiometry import read_masked, to_model_input
from pipeline.metrics import tile_consistency
from pipeline.run import inference
from pipeline.run.inference import run_batch, scene_norm_pass, scene_norm_stats
from pipeline.run.plan import SceneRequest, plan_scene
from pipeline.synthetic import write_synthetic_scene
from ugatit import load_checkpoint

TILE = dict(tile_size=128, overlap=32)
# Tolerances of the tiled output against the whole-image forward, unit scale, 1 band,
# box-filtered over 33 px (pipeline.metrics.tile_consistency). Measured on this scene
# and model: scene 0.0012, correlation 0.998 (the sample's statistics are not exactly the
# image's, and a tile's edge pixels see its reflect padding, not the neighbour); tile
# 0.0082, correlation 0.37 (every tile its own brightness). The bounds sit between them
# with a factor of 2.5 or more on each side.
BOX_TOL = 0.003
CORR_MIN = 0.95


def run(inp: Path, out: Path, ckpt: Path, **cfg) -> object:
    return run_scene(inp, out, model_path=ckpt, config=load_config(None, cfg), progress=False,
                     overwrite=True)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1).astype(np.float64)


def whole_image_output(path: Path, ckpt: Path, **cfg) -> np.ndarray:
    """The generator's forward of the whole image as ONE tensor (its statistics are the
    image's), with the run's scaling; 1 band, unit scale like the run's output."""
    config = PipelineConfig(**cfg)
    _, job = plan_scene(SceneRequest(path, path.with_name("unused.tif"), ckpt, config),
                        check_output=False)
    with rasterio.open(path) as ds:
        data, valid = read_masked(ds, job.bands, nodata=job.nodata)
    x = torch.from_numpy(to_model_input(data, valid, job.scaling))[None]
    gen = load_checkpoint(ckpt, networks=("genA2B",)).genA2B
    with torch.inference_mode():
        y = gen(x)[0][0].double().mean(0).numpy()
    return np.clip((y + 1) * 0.5, 0, 1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_synthetic_scene(tmp_path_factory.mktemp("norm") / "scene.tif", 512,
                                 dtype="uint16")


@pytest.fixture(scope="module")
def ckpt(make_checkpoint) -> Path:
    return make_checkpoint(ngf=8, n_res=1)


def test_scene_norm_matches_the_whole_image_forward_and_tile_norm_does_not(
        scene, ckpt, tmp_path):
    whole = whole_image_output(scene, ckpt)
    run(scene, tmp_path / "scene.tif", ckpt, norm="scene", norm_sample=32, **TILE)
    run(scene, tmp_path / "tile.tif", ckpt, norm="tile", **TILE)
    by_scene = tile_consistency(read(tmp_path / "scene.tif"), whole)
    by_tile = tile_consistency(read(tmp_path / "tile.tif"), whole)
    assert by_scene["box_mean_abs_diff"] < BOX_TOL, by_scene
    assert by_tile["box_mean_abs_diff"] > BOX_TOL, by_tile
    assert by_scene["box_corr"] > CORR_MIN > by_tile["box_corr"]
    assert by_scene["pixel_mean_abs_diff"] < by_tile["pixel_mean_abs_diff"]


def test_tile_norm_forwards_without_statistics(scene, ckpt, tmp_path, monkeypatch):
    """--norm tile is the run as it was: no statistics pass, and every forward is
    gen(x) (whose math tests/ugatit/test_networks_stats.py pins bit for bit)."""
    import pipeline.run.inference as inference

    calls: list[int] = []
    real = inference.scene_norm_pass
    monkeypatch.setattr(inference, "scene_norm_pass",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    seen: list[object] = []
    forward = inference.forward_fixed_shape

    def spy(*args, **kwargs):
        seen.append(kwargs.get("stats"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(inference, "forward_fixed_shape", spy)
    res = run(scene, tmp_path / "tile.tif", ckpt, norm="tile", **TILE)
    assert not calls and seen and all(s is None for s in seen)
    assert res.norm_seconds == 0.0
    run(scene, tmp_path / "scene.tif", ckpt, norm_sample=4, **TILE)  # scene, 21 forwarded
    assert len(calls) == 1 and seen[-1] is not None


@pytest.mark.parametrize("changes", [{"block_size": 96}, {"batch_size": 3, "threads": 1},
                                     {"norm_sample": 16, "threads": 1},
                                     {"batch_size": 1, "threads": 2, "block_size": 160},
                                     {"workers": 2}])
def test_same_bytes_with_scene_statistics_any_block_batch_or_threads(
        scene, ckpt, tmp_path, changes):
    """The sample and the statistics do not depend on how the scene is cut or run."""
    base = dict(norm="scene", norm_sample=16, block_size=1024, batch_size=4, **TILE)
    run(scene, tmp_path / "a.tif", ckpt, **base)
    run(scene, tmp_path / "b.tif", ckpt, **{**base, **changes})
    assert read(tmp_path / "a.tif").tobytes() == read(tmp_path / "b.tif").tobytes()


def _collared(valid_part: Path, dst: Path, left: int, top: int, size: int) -> Path:
    """`valid_part` placed at (top, left) in a `size` px scene of zero fill (uint16:
    pixels 0 in every band are fill, like a Landsat collar), same pixel size."""
    with rasterio.open(valid_part) as src:
        data, profile = src.read(), src.profile
        t = src.transform
    out = np.zeros((data.shape[0], size, size), dtype=data.dtype)
    out[:, top : top + data.shape[1], left : left + data.shape[2]] = data
    profile.update(width=size, height=size, tiled=False,
                   transform=t @ t.translation(-left, -top))
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(dst, "w", **profile) as ds:
        ds.write(out)
    return dst


def test_a_nodata_collar_does_not_change_the_statistics(ckpt, tmp_path):
    """The valid part V (320 px: exactly 3 x 3 tiles of 128 at stride 96) in a collar one
    grid step wide, and in a wider collar: the fully valid tiles are V's tiles in both
    (the collar's tiles stay out of the sample), inner tiles of both grids, so their
    cores are the same pixels of V and the statistics are the same: the collar, however
    wide, never enters them."""
    valid_part = write_synthetic_scene(tmp_path / "v.tif", 320, dtype="uint16", seed=3)
    narrow = _collared(valid_part, tmp_path / "c.tif", left=96, top=96, size=512)
    wide = _collared(valid_part, tmp_path / "w.tif", left=96, top=96, size=704)
    cfg = PipelineConfig(norm_sample=16, **TILE)
    stats = []
    for path in (narrow, wide):
        plan, job = plan_scene(SceneRequest(path, tmp_path / "o.tif", ckpt, cfg))
        assert plan.norm_sample is not None and plan.norm_sample.fully_valid
        assert len(plan.norm_sample.tiles) == 9
        stats.append(scene_norm_stats(job, plan.norm_sample.tiles))
    assert job.scaling == plan_scene(SceneRequest(narrow, tmp_path / "o.tif", ckpt,
                                                  cfg))[1].scaling
    a, b = stats
    assert a.layers.keys() == b.layers.keys()
    for key in a.layers:
        for x, y in zip(vars(a.layers[key]).values(), vars(b.layers[key]).values(),
                        strict=True):
            assert (x is None and y is None) or torch.allclose(x, y, rtol=1e-5, atol=1e-6)
    assert torch.allclose(a.z, b.z, rtol=1e-5, atol=1e-6)


def test_no_fully_valid_tile_falls_back_to_the_most_valid_ones_with_a_warning(
        scene, ckpt, tmp_path):
    """Nodata stripes every 100 px: no 128 px tile is fully valid; the run pools the
    most-valid tiles (invalid pixels filled as the model sees them), says so, and
    records it."""
    with rasterio.open(scene) as src:
        data, profile = src.read(), src.profile
    data[:, :, ::100] = 0
    striped = tmp_path / "striped.tif"
    with rasterio.open(striped, "w", **profile) as dst:
        dst.write(data)
    with pytest.warns(PipelineWarning, match="no tile is fully valid"):
        res = run(striped, tmp_path / "o.tif", ckpt, norm_sample=4, **TILE)
    assert any("most-valid" in w for w in res.warnings)
    with rasterio.open(tmp_path / "o.tif") as ds:
        norm = json.loads(ds.tags()["EO2SAR_NORM"])
    assert norm == {"mode": "scene", "sample": 4, "tiles": 4, "fully_valid": False}


def test_config_hash_and_tags_record_the_normalisation(scene, ckpt, tmp_path):
    tile = PipelineConfig(norm="tile")
    scene_cfg = PipelineConfig()
    # --norm tile hashes as every output made before the setting existed (the
    # directory runner keeps them up to date); scene and its sample size enter the hash
    before = {k: v for k, v in tile.to_dict().items() if k not in ("norm", "norm_sample")}
    assert tile.config_hash() == hashlib.sha256(json.dumps(
        {k: v for k, v in before.items() if k in tile.output_dict()}, sort_keys=True,
        separators=(",", ":")).encode()).hexdigest()
    assert "norm" not in tile.output_dict() and "norm_sample" not in tile.output_dict()
    assert tile.replace(norm_sample=5).config_hash() == tile.config_hash()
    assert scene_cfg.output_dict()["norm"] == "scene"
    assert scene_cfg.config_hash() != tile.config_hash()
    assert scene_cfg.replace(norm_sample=5).config_hash() != scene_cfg.config_hash()

    res = run(scene, tmp_path / "o.tif", ckpt, norm_sample=5, **TILE)
    with rasterio.open(tmp_path / "o.tif") as ds:
        tags = ds.tags()
    assert json.loads(tags["EO2SAR_NORM"]) == {"mode": "scene", "sample": 5, "tiles": 5,
                                               "fully_valid": True}
    config = json.loads(tags["EO2SAR_CONFIG"])
    assert (config["norm"], config["norm_sample"]) == ("scene", 5)
    assert tags["EO2SAR_CONFIG_HASH"] == res.config_hash


def test_cli_flags_and_dry_run(scene, ckpt, tmp_path):
    runner = CliRunner()
    base = ["run", str(scene), str(tmp_path / "o.tif"), "--model", str(ckpt), "--dry-run",
            "--tile-size", "128", "--overlap", "32"]
    res = runner.invoke(pipeline_cli, base)
    assert res.exit_code == 0, res.output
    assert "norm     scene: statistics pooled once over 25 fully valid tile(s)" in res.output
    res = runner.invoke(pipeline_cli, [*base, "--norm", "tile"])
    assert res.exit_code == 0 and "norm     tile: every tile normalised by its own" in res.output
    res = runner.invoke(pipeline_cli, [*base, "--norm-sample", "0"])
    assert res.exit_code != 0 and "norm_sample" in res.output
    help_text = runner.invoke(pipeline_cli, ["run", "--help"]).output
    assert "--norm [scene|tile]" in help_text and "--norm-sample auto|N" in help_text


def test_bf16_run_pools_float32_statistics_of_its_own_activations(scene, ckpt, tmp_path,
                                                                   monkeypatch):
    """--precision bf16: the statistics pass runs in bf16 like the tiles (so its outputs
    are theirs), its statistics pooled in float64 and kept float32; they are those of
    the bf16 activations, close to fp32's; the output stays near the float32 run's."""
    import pipeline.run.inference as inference

    seen = []
    real = inference.scene_norm_pass
    def spy(*a, **k):
        result = real(*a, **k)
        seen.append(result.stats)
        return result

    monkeypatch.setattr(inference, "scene_norm_pass", spy)
    run(scene, tmp_path / "bf16.tif", ckpt, precision="bf16", norm_sample=4, **TILE)
    run(scene, tmp_path / "fp32.tif", ckpt, norm_sample=4, **TILE)
    assert seen[0].z.dtype == torch.float32
    assert all(s.mean.dtype == torch.float32 for s in seen[0].layers.values())
    first = "DownBlock.2"  # before any bf16 rounding of normalised values: near fp32's
    assert torch.allclose(seen[0].layers[first].mean, seen[1].layers[first].mean,
                          rtol=0.02, atol=0.02)
    diff = np.abs(read(tmp_path / "bf16.tif") - read(tmp_path / "fp32.tif"))
    assert diff.mean() < 0.02


@pytest.mark.parametrize("options", [
    {},
    {"precision": "bf16", "output_bands": 3},
    {"channels_last": True, "micro_batch": 2},  # fixed-shape forwards of 2, one padded
], ids=["fp32", "bf16-3bands", "channels_last-micro2"])
def test_the_sample_outputs_are_a_second_forward_of_those_tiles(scene, ckpt, tmp_path,
                                                                 options):
    """The statistics pass's outputs of the sampled tiles (kept, not forwarded again) are
    the bytes `run_batch` gives those tiles with the finished statistics: output,
    heatmap and validity, in every precision and forward shape."""
    cfg = PipelineConfig(norm_sample=5, **TILE, **options)
    plan, job = plan_scene(SceneRequest(scene, tmp_path / "o.tif", ckpt, cfg,
                                        heatmap=tmp_path / "h.tif"))
    tiles = plan.norm_sample.tiles
    assert len(tiles) == 5 and job.heatmap
    result = scene_norm_pass(job, tiles)
    assert sorted(result.outputs) == list(tiles)
    again = run_batch(dataclasses.replace(job, norm_stats=result.stats), list(tiles))
    for t, second in zip(tiles, again, strict=True):
        first = result.outputs[t]
        assert first.out.shape == (cfg.output_bands, 128, 128)
        assert first.out.tobytes() == second.out.tobytes(), t
        assert first.heat.tobytes() == second.heat.tobytes(), t
        assert np.array_equal(first.valid, second.valid)


def test_a_scene_with_fewer_tiles_than_the_sample_is_all_from_the_pass(
        scene, ckpt, tmp_path, monkeypatch):
    """25 tiles, --norm-sample 32: the statistics come from every tile, the whole
    scene's output is what the pass gave (no tile is forwarded again), and it is the
    output of a run whose batches forward every tile with those statistics."""
    plan, _ = plan_scene(SceneRequest(scene, tmp_path / "o.tif", ckpt,
                                      PipelineConfig(norm_sample=32, **TILE)))
    assert plan.norm_sample.tiles == tuple(range(plan.grid.count)) == tuple(range(25))
    forwards = []
    real = inference.forward_fixed_shape
    monkeypatch.setattr(inference, "forward_fixed_shape",
                        lambda *a, **k: forwards.append(a[1].shape[0]) or real(*a, **k))
    res = run(scene, tmp_path / "pass.tif", ckpt, norm_sample=32, **TILE)
    assert forwards == [] and res.tiles_run == 25

    def no_reuse(job, tiles, workers=None, **kwargs):  # the statistics only: every
        got = real_pass(job, tiles, workers, **kwargs)  # tile forwarded
        return inference.NormPassResult(got.stats, {})

    real_pass = inference.scene_norm_pass
    monkeypatch.setattr(inference, "scene_norm_pass", no_reuse)
    run(scene, tmp_path / "forwarded.tif", ckpt, norm_sample=32, **TILE)
    assert sum(forwards) == 25
    assert read(tmp_path / "pass.tif").tobytes() == read(tmp_path / "forwarded.tif").tobytes()


def test_auto_sample_is_sized_by_the_models_activations(scene, ckpt, tmp_path):
    """--norm-sample auto (the default) resolves, per model, to the tiles whose parked
    activations fit the budget: 64 for a seed-size model at 256 px, 128 for the demo
    models' ngf 16, the ceiling for a narrow one; the resolved number is what the plan
    samples, the output records and the config hash sees (an explicit 1024 hashes the
    same as auto for this ngf 8 model)."""
    from pipeline.config import NORM_SAMPLE_LIMITS, auto_norm_sample

    assert auto_norm_sample(64, 256) == 64 and auto_norm_sample(16, 256) == 128
    assert auto_norm_sample(16, 512) == 64 and auto_norm_sample(4, 64) == NORM_SAMPLE_LIMITS[1]
    assert auto_norm_sample(512, 512) == NORM_SAMPLE_LIMITS[0]
    assert PipelineConfig().norm_sample == "auto"
    assert load_config(None, {"norm_sample": "AUTO"}).norm_sample == "auto"
    with pytest.raises(ConfigError, match="norm_sample") as bad:
        load_config(None, {"norm_sample": "many"})
    assert "auto or an integer" in str(bad.value.hint)
    plan, _ = plan_scene(SceneRequest(scene, tmp_path / "o.tif", ckpt, PipelineConfig(**TILE)))
    want = auto_norm_sample(8, 128)
    assert plan.config.norm_sample == want == NORM_SAMPLE_LIMITS[1]
    assert plan.config.origin("norm_sample") == "model"
    assert plan.norm_sample.requested == want and len(plan.norm_sample.tiles) == 25
    explicit, _ = plan_scene(SceneRequest(scene, tmp_path / "o.tif", ckpt,
                                          PipelineConfig(norm_sample=want, **TILE)))
    assert explicit.config.config_hash() == plan.config.config_hash()
    res = run(scene, tmp_path / "auto.tif", ckpt, **TILE)
    with rasterio.open(tmp_path / "auto.tif") as ds:
        tags = ds.tags()
    assert json.loads(tags["EO2SAR_CONFIG"])["norm_sample"] == want
    assert json.loads(tags["EO2SAR_NORM"])["sample"] == want
    assert res.tiles_run == 25


def test_every_thread_of_the_pass_pins_torch_threads(scene, ckpt, tmp_path, monkeypatch):
    """torch's CPU thread count is OpenMP's, per thread: a pass started from a Dask task
    (translate's statistics task) spawned pool threads that ran on every core, with other
    float bits than the one-thread forwards now and then. Each thread of the pass pins
    itself, whichever thread starts it."""
    import threading

    pinned: list[str] = []
    real = inference.pin_threads
    monkeypatch.setattr(inference, "pin_threads",
                        lambda *a, **k: pinned.append(threading.current_thread().name)
                        or real(*a, **k))
    plan, job = plan_scene(SceneRequest(scene, tmp_path / "o.tif", ckpt,
                                        PipelineConfig(norm_sample=4, **TILE)))
    runner = threading.Thread(target=scene_norm_pass, args=(job, plan.norm_sample.tiles, 2),
                              name="a-dask-task")
    runner.start()
    runner.join()
    assert "a-dask-task" in pinned
    assert {"eo2sar-pool-0", "eo2sar-pool-1"} <= set(pinned)
