"""End-to-end scene runs (library level): grid, COG, nodata, encodings, determinism.

Every test reopens the written raster and checks it against the input. Narrow
random-weight models (ngf 4, n_res 1) keep the suite fast; the code path is the one the
published checkpoint takes.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from pipeline import PipelineWarning, load_config, run_scene
from pipeline.config import resolve_for_model
from pipeline.run.model_io import model_io
from pipeline.run.scene import model_sha256
from tests.helpers import (
    L8,
    REPO,
    SN6,
    assert_cog,
    assert_same_grid,
    crop,
    overview_matches_average,
)


def run(inp: Path, out: Path, ckpt: Path, heatmap: Path | None = None, **cfg):
    return run_scene(
        inp, out, model_path=ckpt, config=load_config(None, cfg), heatmap_path=heatmap,
        progress=False,
    )


@pytest.fixture(scope="module")
def l8_crop(tmp_path_factory) -> Path:
    """600 x 520 px of the Landsat 8 scene with part of its zero collar (top-left)."""
    return crop(L8, tmp_path_factory.mktemp("l8") / "l8_crop.tif", Window(0, 0, 600, 520))


def test_sn6_chip(tiny_checkpoint, tmp_path):
    out = tmp_path / "sn6_sar.tif"
    res = run(SN6, out, tiny_checkpoint)
    assert_same_grid(SN6, out)
    assert_cog(out)
    # 200 px is even: the first overview is exactly the 2x2 mean (AVERAGE resampling);
    # tolerance: float32 rounding of values in [0, 1]
    assert overview_matches_average(out) < 1e-6
    with rasterio.open(out) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "float32" and math.isnan(ds.nodata)
        y = ds.read(1)
        tags = ds.tags()
    assert np.isfinite(y).all()  # the chip has no nodata
    assert 0.0 <= y.min() and y.max() <= 1.0 and y.std() > 0
    assert tags["EO2SAR_MODEL_SHA256"] == model_sha256(tiny_checkpoint) == res.model_sha256
    # the recorded settings are the resolved ones: a seed-like checkpoint without a
    # radiometric contract gets the built-in percentiles and dB range, and the automatic
    # norm sample of its width
    defaults = resolve_for_model(load_config(None, {}), None,
                                 ngf=model_io(tiny_checkpoint).ngf)
    assert defaults.norm_sample == 128
    assert json.loads(tags["EO2SAR_CONFIG"]) == defaults.output_dict()
    assert defaults.percentiles == (2.0, 98.0) and defaults.db_range == (-25.0, 0.0)
    assert json.loads(tags["EO2SAR_RADIOMETRY"]) == {
        "percentiles": {"value": [2.0, 98.0], "from": "default"},
        "db_range": {"value": [-25.0, 0.0], "from": "default"},
        "model": None,
    }
    assert json.loads(tags["EO2SAR_SCALING"])["method"] == "uint8"
    assert res.tiles_total == res.tiles_run == 1
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_l8_full_scene_zero_collar(tiny_checkpoint, tmp_path):
    """The real Landsat 8 scene: B,G,R order, a zero collar without a nodata tag: fill by
    the radiometry rule, no --nodata 0 needed (it used to be)."""
    out, heat = tmp_path / "l8_sar.tif", tmp_path / "l8_heat.tif"
    res = run(L8, out, tiny_checkpoint, heatmap=heat, bands=(3, 2, 1))
    for path in (out, heat):
        assert_same_grid(L8, path)
        assert_cog(path)
    with rasterio.open(L8) as ds:
        invalid = (ds.read() == 0).all(axis=0)
    with rasterio.open(out) as ds:
        y = ds.read(1)
        scaling = json.loads(ds.tags()["EO2SAR_SCALING"])
    assert invalid.sum() > 100_000  # the collar is there
    np.testing.assert_array_equal(np.isnan(y), invalid)
    assert 0.0 <= np.nanmin(y) and np.nanmax(y) <= 1.0
    with rasterio.open(heat) as ds:
        h = ds.read(1)
    np.testing.assert_array_equal(np.isnan(h), invalid)
    assert np.nanmin(h) >= 0.0  # sum of post-ReLU features
    # global 2-98 % stretch of the red band (file band 3) from a decimated read; the
    # collar must not enter the statistics (it would pull "low" to 0)
    assert scaling["method"] == "percentile" and scaling["low"][0] > 0
    assert res.tiles_run < res.tiles_total  # all-collar tiles were skipped


@pytest.mark.parametrize("changes", [{"block_size": 256}, {"block_size": 96},
                                     {"batch_size": 1}, {"batch_size": 3, "threads": 1}])
def test_same_bytes_any_block_or_batch(tiny_checkpoint, tmp_path, l8_crop, changes):
    base = dict(bands=(3, 2, 1), nodata=0, block_size=1024, batch_size=4)
    a = tmp_path / "a.tif"
    b = tmp_path / "b.tif"
    run(l8_crop, a, tiny_checkpoint, heatmap=tmp_path / "ha.tif", **base)
    run(l8_crop, b, tiny_checkpoint, heatmap=tmp_path / "hb.tif", **{**base, **changes})
    for x, y in ((a, b), (tmp_path / "ha.tif", tmp_path / "hb.tif")):
        with rasterio.open(x) as da, rasterio.open(y) as db:
            assert da.read().tobytes() == db.read().tobytes()
            assert repr(da.profile) == repr(db.profile)  # repr: nodata NaN != NaN


def test_zero_collar_is_fill_with_or_without_nodata_zero(tiny_checkpoint, tmp_path, l8_crop):
    """--nodata 0 on a uint16 scene changes nothing any more: same bytes, same scaling."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    run(l8_crop, a, tiny_checkpoint, bands=(3, 2, 1), nodata=0)
    run(l8_crop, b, tiny_checkpoint, bands=(3, 2, 1))
    with rasterio.open(a) as da, rasterio.open(b) as db, rasterio.open(l8_crop) as src:
        ya = da.read()
        assert ya.tobytes() == db.read().tobytes()
        assert da.tags()["EO2SAR_SCALING"] == db.tags()["EO2SAR_SCALING"]
        collar = (src.read() == 0).all(axis=0)
    assert collar.any() and not collar.all()  # the crop has both
    np.testing.assert_array_equal(np.isnan(ya[0]), collar)


def test_same_bytes_on_local_cluster(tiny_checkpoint, tmp_path, l8_crop):
    """2 worker processes x 1 thread (--workers 2), and an existing scheduler given by
    address (--scheduler), give the bytes of the in-process run."""
    distributed = pytest.importorskip("distributed")
    small = crop(l8_crop, tmp_path / "small.tif", Window(100, 100, 400, 400))
    cfg = dict(bands=(3, 2, 1), nodata=0, batch_size=1)
    a, b, c = tmp_path / "local.tif", tmp_path / "workers.tif", tmp_path / "address.tif"
    run(small, a, tiny_checkpoint, **cfg)
    run(small, b, tiny_checkpoint, workers=2, **cfg)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        run(small, c, tiny_checkpoint, scheduler=cluster.scheduler_address, **cfg)
    with rasterio.open(a) as da:
        ref = da.read().tobytes()
    for other in (b, c):
        with rasterio.open(other) as do:
            assert do.read().tobytes() == ref, other


def test_nan_masked_float_input(tiny_checkpoint, tmp_path):
    """float32 copy of the chip with NaN holes and no nodata tag: NaN = invalid."""
    src = crop(SN6, tmp_path / "f32.tif", Window(0, 0, 200, 200), dtype="float32")
    with rasterio.open(src, "r+") as ds:
        data = ds.read()
        data[:, 20:60, 30:120] = np.nan  # a hole in every band
        data[1, 150, 150] = np.nan  # one band only: the pixel cannot be translated
        ds.write(data)
    invalid = np.isnan(data).any(axis=0)
    out = tmp_path / "out.tif"
    run(src, out, tiny_checkpoint)
    assert_same_grid(src, out)
    with rasterio.open(out) as ds:
        y = ds.read(1)
        scaling = json.loads(ds.tags()["EO2SAR_SCALING"])
    np.testing.assert_array_equal(np.isnan(y), invalid)
    assert scaling["method"] == "percentile"  # float input: global stretch


def test_nodata_tag_and_internal_mask(tiny_checkpoint, tmp_path):
    """A nodata tag (any-band-valid rule) and an internal mask are both honoured."""
    src = crop(SN6, tmp_path / "nd.tif", Window(0, 0, 200, 200), nodata=0)
    with rasterio.open(src, "r+") as ds:
        data = ds.read()
        data[:, 0:30, :] = 0  # nodata in all bands: invalid
        data[0, 100:110, 100:110] = 0  # red only: still valid (GDAL's dataset-mask rule)
        data[1:, 100:110, 100:110] = 7
        ds.write(data)
    out = tmp_path / "out.tif"
    run(src, out, tiny_checkpoint)
    with rasterio.open(out) as ds:
        y = ds.read(1)
    expect = (data == 0).all(axis=0)
    np.testing.assert_array_equal(np.isnan(y), expect)

    masked = crop(SN6, tmp_path / "mask.tif", Window(0, 0, 200, 200))
    mask = np.full((200, 200), 255, dtype=np.uint8)
    mask[:, 170:] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(masked, "r+") as ds:
        ds.write_mask(mask)
    out2 = tmp_path / "out2.tif"
    run(masked, out2, tiny_checkpoint, output_scale="uint8")
    with rasterio.open(out2) as ds:
        q = ds.read(1)
        assert ds.nodata == 0
    np.testing.assert_array_equal(q == 0, mask == 0)


def test_output_scales_and_bands(tiny_checkpoint, tmp_path):
    unit, u8, db, rgb = (tmp_path / f"{n}.tif" for n in ("unit", "u8", "db", "rgb"))
    run(SN6, unit, tiny_checkpoint)
    run(SN6, u8, tiny_checkpoint, output_scale="uint8")
    run(SN6, db, tiny_checkpoint, output_scale="db", db_range=(-30, 5))
    run(SN6, rgb, tiny_checkpoint, output_bands=3)
    with rasterio.open(unit) as ds:
        u = ds.read(1).astype(np.float64)
    with rasterio.open(u8) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
        q = ds.read(1)
    with rasterio.open(db) as ds:
        d = ds.read(1).astype(np.float64)
    with rasterio.open(rgb) as ds:
        assert ds.count == 3
        c = ds.read().astype(np.float64)
    assert q.min() >= 1  # 0 is reserved for nodata
    # same blended value, three encodings; tolerances: float32 rounding (1e-5 on a 35 dB
    # range), and uint8 rounding of the float32 value (at most one level)
    assert np.abs(q - np.clip(np.rint(u * 255), 1, 255)).max() <= 1
    np.testing.assert_allclose(d, -30 + 35 * u, atol=1e-4)
    # 1 band = mean of the 3 channels (blending is linear), float32 rounding apart
    np.testing.assert_allclose(c.mean(axis=0), u, atol=1e-6)


@pytest.mark.parametrize(("w", "h"), [(7, 5), (3, 1), (1, 1)])
def test_tiny_scene_smaller_than_a_tile(tiny_checkpoint, tmp_path, w, h):
    """A few pixels (reflect padding repeats to fill 256 px): works, same grid, COG."""
    src = crop(SN6, tmp_path / "tiny.tif", Window(40, 60, w, h))
    out = tmp_path / "tiny_sar.tif"
    res = run(src, out, tiny_checkpoint)
    assert_same_grid(src, out)
    if w * h > 1:  # a single pixel cannot have overviews
        assert_cog(out)
    with rasterio.open(out) as ds:
        y = ds.read(1)
    assert y.shape == (h, w) and np.isfinite(y).all()
    assert res.tiles_run == 1


def test_all_nodata_scene_writes_nodata_and_warns(tiny_checkpoint, tmp_path):
    src = crop(SN6, tmp_path / "empty.tif", Window(0, 0, 64, 64), nodata=0)
    with rasterio.open(src, "r+") as ds:
        ds.write(np.zeros((3, 64, 64), dtype=np.uint8))
    out = tmp_path / "empty_sar.tif"
    with pytest.warns(PipelineWarning, match="no valid pixel"):
        res = run(src, out, tiny_checkpoint)
    assert res.tiles_run == 0 and res.warnings
    assert_same_grid(src, out)
    with rasterio.open(out) as ds:
        assert np.isnan(ds.read(1)).all()


def test_full_variant_checkpoint_at_its_size(make_checkpoint, tmp_path):
    ckpt = make_checkpoint(ngf=4, n_res=1, light=False, img_size=64)
    out = tmp_path / "full.tif"
    res = run(SN6, out, ckpt, tile_size=64, overlap=16)
    assert_same_grid(SN6, out)
    assert res.tiles_total == 16  # 1 + ceil((200 - 64) / 48) = 4 per axis
    with rasterio.open(out) as ds:
        assert np.isfinite(ds.read(1)).all()


@pytest.mark.parametrize(
    ("name", "bands"),
    [
        ("sn6_rotterdam_wv2_ms_float64.tif", (3, 2, 1)),  # float64, 4 bands
        ("sn6_rotterdam_wv2_pan_uint16.tif", (1, 1, 1)),  # uint16, 1 band
        ("l7_olinda_6band_uint8.tif", (3, 2, 1)),  # uint8, 6 bands
    ],
)
def test_real_samples_of_other_dtypes(tiny_checkpoint, tmp_path, data_dir, name, bands):
    src = data_dir / name
    out = tmp_path / "o.tif"
    res = run(src, out, tiny_checkpoint, bands=bands)
    assert_same_grid(src, out)
    with rasterio.open(src) as ds:
        expected_method = "uint8" if ds.dtypes[0] == "uint8" else "percentile"
    with rasterio.open(out) as ds:
        y = ds.read(1)
        assert json.loads(ds.tags()["EO2SAR_SCALING"])["method"] == expected_method
    assert np.isfinite(y).all() and y.std() > 0  # no nodata in these files
    assert res.tiles_run == res.tiles_total


def test_int16_input(tiny_checkpoint, tmp_path):
    src = crop(SN6, tmp_path / "i16.tif", Window(0, 0, 200, 200), dtype="int16", nodata=-1)
    with rasterio.open(src, "r+") as ds:
        d = ds.read().astype(np.int16) * 10 - 300
        d[:, :, :20] = -1
        ds.write(d)
    out = tmp_path / "o.tif"
    run(src, out, tiny_checkpoint)
    with rasterio.open(out) as ds:
        y = ds.read(1)
    np.testing.assert_array_equal(np.isnan(y), (d == -1).all(axis=0))


def test_vrt_of_separate_band_files_equals_the_stacked_file(tiny_checkpoint, tmp_path):
    """What `gdalbuildvrt -separate rgb.vrt r.tif g.tif b.tif` makes: same output bytes."""
    with rasterio.open(SN6) as ds:
        data, profile = ds.read(), ds.profile
    sources = []
    for i in range(3):
        p = tmp_path / f"band{i + 1}.tif"
        with rasterio.open(p, "w", **{**profile, "count": 1}) as out:
            out.write(data[i : i + 1])
        sources.append(p)
    t = profile["transform"]
    bands_xml = "".join(
        f'<VRTRasterBand dataType="Byte" band="{i + 1}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{p.name}</SourceFilename>'
        f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        for i, p in enumerate(sources)
    )
    vrt = tmp_path / "rgb.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="200" rasterYSize="200">'
        f"<SRS>{profile['crs'].to_wkt()}</SRS>"
        f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>"
        f"{bands_xml}</VRTDataset>"
    )
    a, b = tmp_path / "from_vrt.tif", tmp_path / "from_tif.tif"
    run(vrt, a, tiny_checkpoint)
    run(SN6, b, tiny_checkpoint)
    assert_same_grid(vrt, a)
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert da.read().tobytes() == db.read().tobytes()


def test_full_l8_same_bytes_block_and_batch(tiny_checkpoint, tmp_path):
    """The whole real scene (110 tiles): block 512 + batch 1 vs block 1024 + batch 4."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    run(L8, a, tiny_checkpoint, bands=(3, 2, 1), nodata=0)
    run(L8, b, tiny_checkpoint, bands=(3, 2, 1), nodata=0, block_size=512, batch_size=1)
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert da.read().tobytes() == db.read().tobytes()


def test_torch_threads_restored(tiny_checkpoint, tmp_path):
    import torch

    before = torch.get_num_threads()
    run(SN6, tmp_path / "o.tif", tiny_checkpoint)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("changes", [{"block_size": 96}, {"batch_size": 1},
                                     {"batch_size": 3, "block_size": 16}])
def test_sn6_same_bytes_any_block_or_batch(tiny_checkpoint, tmp_path, changes):
    """The SN6 chip on 128 px tiles (4 tiles, 2 x 2) so blocks and batches cut it."""
    base = dict(tile_size=128, overlap=32, block_size=1024, batch_size=4)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    res = run(SN6, a, tiny_checkpoint, **base)
    run(SN6, b, tiny_checkpoint, **{**base, **changes})
    assert res.tiles_total == 4
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert da.read().tobytes() == db.read().tobytes()


def test_model_travels_as_a_path_and_loads_once(tiny_checkpoint, tmp_path):
    """DESIGN invariant 5: a task carries the checkpoint path and hash, never weights,
    and a process loads the model once however many tasks and scenes it runs."""
    from pipeline.run.inference import _cached_generator, _cached_runner
    from pipeline.run.plan import SceneRequest, plan_scene

    _, job = plan_scene(SceneRequest(SN6, tmp_path / "o.tif", tiny_checkpoint,
                                     load_config(None, {})))
    blob = pickle.dumps(job)
    assert len(blob) < 4096 and b"torch" not in blob, len(blob)
    assert job.model_path == str(tiny_checkpoint.resolve())
    _cached_generator.cache_clear()
    _cached_runner.cache_clear()
    run(SN6, tmp_path / "a.tif", tiny_checkpoint, tile_size=64, overlap=16)  # 16 tiles
    run(SN6, tmp_path / "b.tif", tiny_checkpoint)
    # both scenes have no more tiles than the sample (16 and 4): the statistics pass
    # prepares each shape's runner and makes every tile; no batch task forwards
    assert _cached_runner.cache_info().hits == 0
    run(SN6, tmp_path / "c.tif", tiny_checkpoint, tile_size=64, overlap=16, norm_sample=4)
    info = _cached_generator.cache_info()
    # one load; planning (model checks) and each forward shape's runner then hit the
    # cache; the pass and every batch task with a tile left to forward hit the runner
    assert info.misses == 1 and info.hits >= 2, info
    runner = _cached_runner.cache_info()
    assert runner.misses == 2 and runner.hits == 5, runner  # 1 pass + 4 batches


def test_progress_bar_shows_done_total_rate_and_eta(tiny_checkpoint, tmp_path, capsys,
                                                    monkeypatch):
    import pipeline.run.inference

    real = pipeline.run.inference.run_batch

    def slow(job, tiles):  # tqdm redraws at most every 0.1 s: make the run last ~1 s
        time.sleep(0.25)
        return real(job, tiles)

    monkeypatch.setattr(pipeline.run.inference, "run_batch", slow)
    run_scene(SN6, tmp_path / "o.tif", model_path=tiny_checkpoint,
              config=load_config(None, {"tile_size": 64, "overlap": 16, "threads": 1}),
              progress=True)
    err = capsys.readouterr().err
    # tqdm: "name:  50%|####| 8/16 [00:00<00:00, 9.51tile/s]": done/total, elapsed<ETA, rate
    bar = re.compile(r"([1-9]\d*)/16 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(tile/s|s/tile)\]")
    assert bar.search(err), err


def test_killed_run_leaves_no_output_and_the_rerun_cleans_up(tiny_checkpoint, tmp_path):
    """SIGKILL mid-write (no Python cleanup runs): nothing under the final name, only
    hidden temporaries, which the next run writing that output removes."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "l8.tif"
    cmd = [sys.executable, "-m", "pipeline", "run", str(L8), str(out), "--model",
           str(tiny_checkpoint), "--bands", "3,2,1", "--nodata", "0", "-q",
           "--block-size", "256"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out_dir.glob(".l8.tif.eo2sar-tmp-*")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert not out.exists()
    leftovers = [p.name for p in out_dir.iterdir()]
    # temporaries, and the (unlocked: the kernel released it) lock file of pipeline/run/locks.py
    assert leftovers and all(n.startswith((".l8.tif.eo2sar-tmp-", ".l8.tif.eo2sar-lock"))
                             for n in leftovers)
    run(L8, out, tiny_checkpoint, bands=(3, 2, 1), nodata=0)
    # the output and its STAC Item (run_scene writes it, as the CLI does), nothing hidden
    assert sorted(p.name for p in out_dir.iterdir()) == ["l8.stac.json", "l8.tif"]
    assert_cog(out)


def test_block_masks_come_from_the_tiles_with_the_same_bytes(tiny_checkpoint, tmp_path,
                                                             l8_crop, monkeypatch):
    """Issue 16 item 10: each block's validity is the union of its tiles' masks (read by
    the tasks) instead of a second read of every band of the block; on a scene with a
    nodata collar and edge tiles the output and heatmap bytes are those of the read."""
    from pipeline.run import inference, scene

    cfg = {"tile_size": 64, "overlap": 16, "block_size": 128, "bands": (3, 2, 1)}
    reads: list[object] = []
    real_read = scene.read_masked

    def counting_read(*args, **kwargs):
        reads.append(args[2])
        return real_read(*args, **kwargs)

    monkeypatch.setattr(scene, "read_masked", counting_read)
    run(l8_crop, tmp_path / "a.tif", tiny_checkpoint, heatmap=tmp_path / "ha.tif", **cfg)
    assert reads == []  # no block read its mask again
    real_batch = inference.run_batch

    def without_masks(job, tiles):
        outs = real_batch(job, tiles)
        for o in outs:
            if o is not None:
                o.valid = None
        return outs

    monkeypatch.setattr(inference, "run_batch", without_masks)
    run(l8_crop, tmp_path / "b.tif", tiny_checkpoint, heatmap=tmp_path / "hb.tif", **cfg)
    assert reads  # the fall back read the masks
    for x, y in (("a.tif", "b.tif"), ("ha.tif", "hb.tif")):
        with rasterio.open(tmp_path / x) as a, rasterio.open(tmp_path / y) as b:
            pa, pb = a.read(), b.read()
        assert pa.tobytes() == pb.tobytes()
        assert np.isnan(pa).any() and not np.isnan(pa).all()  # the collar is nodata
