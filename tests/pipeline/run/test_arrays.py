"""translate (pipeline/run/arrays.py): xarray in, lazy xarray out, pipeline run's bytes.

Every equality here is exact (np.array_equal, NaN = NaN): `translate(...).compute()`
against `run_scene`'s COG read back with rasterio, on the bundled scenes, with and
without nodata, for two chunkings, on the threaded scheduler and a dask.distributed
cluster. Narrow random-weight models (ngf 4) keep it fast; the code path is the one a
trained checkpoint takes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from pipeline import ConfigError, PipelineError, load_config, run_scene, translate
from pipeline.run import arrays
from pipeline.run.arrays import ArrayReader, gdal_nearest_index
from tests.helpers import DATA, L8, SN6, crop

xr = pytest.importorskip("xarray", reason="the xarray extra: pip install 'eo2sar[xarray]'")
rioxarray = pytest.importorskip("rioxarray", reason="pip install 'eo2sar[xarray]'")
da = pytest.importorskip("dask.array")

SSL4EO = DATA / "sentinel1" / "ssl4eo" / "s2a" / "0000200"
BEN = DATA / "sentinel1" / "bigearthnet" / "S2A_MSIL2A_20170617T113321_36_85"


def cli(src: Path, out: Path, ckpt: Path, heatmap: Path | None = None, **cfg) -> np.ndarray:
    run_scene(src, out, model_path=ckpt, config=load_config(None, cfg), heatmap_path=heatmap,
              progress=False, write_stac=False, overwrite=True)
    with rasterio.open(out) as ds:
        return ds.read()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a, b, equal_nan=a.dtype.kind == "f")


@pytest.fixture(scope="module")
def l8_crop(tmp_path_factory) -> Path:
    """600 x 520 px of the Landsat 8 scene with part of its zero collar (fill rule)."""
    return crop(L8, tmp_path_factory.mktemp("l8") / "l8_crop.tif", Window(0, 0, 600, 520))


@pytest.fixture(scope="module")
def sn6_nodata(tmp_path_factory) -> Path:
    """The 200 px uint8 chip with a nodata tag (uint8 has no fill rule: the tag decides)
    and a block of that value."""
    dst = tmp_path_factory.mktemp("sn6") / "sn6_nodata.tif"
    with rasterio.open(SN6) as src:
        profile, data = src.profile, src.read()
    data[:, :40, :70] = 7
    profile.update(nodata=7)
    with rasterio.open(dst, "w", **profile) as ds:
        ds.write(data)
    return dst


def test_gdal_nearest_index_is_what_rasterio_reads(tmp_path):
    """The decimated statistics read picks the pixels GDAL's nearest decimation picks."""
    h, w = 517, 1030
    values = (np.arange(h)[:, None] * 10000 + np.arange(w)[None, :]).astype(np.float64)
    path = tmp_path / "index.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1,
                       dtype="float64", tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(values, 1)
    for rows, cols in [(58, 116), (256, 512), (15, 16), (517, 515), (1, 3)]:
        with rasterio.open(path) as ds:
            got = ds.read(1, out_shape=(rows, cols), resampling=Resampling.nearest)
        want = values[gdal_nearest_index(h, rows)][:, gdal_nearest_index(w, cols)]
        assert np.array_equal(got, want), (rows, cols)


@pytest.mark.parametrize("chunks", [200, {"y": 384, "x": 512}])
def test_same_bytes_as_pipeline_run_l8(l8_crop, tiny_checkpoint, tmp_path, chunks):
    """Zero collar (fill rule), decimated statistics (stats_size 128), --norm scene; an
    input chunk smaller than a tile, and a larger one: the same bytes as the CLI."""
    ref = cli(l8_crop, tmp_path / "cli.tif", tiny_checkpoint, bands=(3, 2, 1),
              stats_size=128)
    assert np.isnan(ref).any() and np.isfinite(ref).any()  # the collar is nodata
    data = rioxarray.open_rasterio(l8_crop, chunks=chunks)
    out = translate(data, tiny_checkpoint, bands=(3, 2, 1), stats_size=128)
    assert isinstance(out.data, da.Array)  # lazy
    assert out.dims == ("polarisation", "y", "x")
    assert np.array_equal(out.x, data.x) and np.array_equal(out.y, data.y)
    assert out.rio.crs == data.rio.crs
    assert out.rio.transform() == data.rio.transform()
    assert same(out.compute().values, ref)
    # written with rioxarray and read back: pipeline run's pixels, grid and CRS
    path = tmp_path / "xr.tif"
    out.rio.to_raster(path)
    with rasterio.open(path) as ds, rasterio.open(tmp_path / "cli.tif") as ref_ds:
        assert same(ds.read(), ref)
        assert ds.crs == ref_ds.crs and ds.transform == ref_ds.transform


def test_same_bytes_with_a_nodata_tag_uint8_heatmap(sn6_nodata, tiny_checkpoint, tmp_path):
    """The array's nodata (rioxarray's _FillValue) masks as the file's tag does; uint8
    output (nodata 0) and the heatmap; per-tile normalisation; two chunkings."""
    ref = cli(sn6_nodata, tmp_path / "cli.tif", tiny_checkpoint,
              heatmap=tmp_path / "heat.tif", output_scale="uint8", norm="tile",
              tile_size=64, overlap=16)
    with rasterio.open(tmp_path / "heat.tif") as ds:
        ref_heat = ds.read()
    assert (ref == 0).any() and (ref > 0).any()
    for chunks in (50, 128):
        data = rioxarray.open_rasterio(sn6_nodata, chunks=chunks)
        assert data.attrs["_FillValue"] == 7
        out = translate(data, tiny_checkpoint, heatmap=True, output_scale="uint8",
                        norm="tile", tile_size=64, overlap=16)
        got = out.compute()
        assert same(got["sar"].values, ref)
        assert same(got["heatmap"].values, ref_heat)


def test_declared_nodata_and_db(l8_crop, tiny_checkpoint, tmp_path):
    """A declared nodata value (replaces the array's), dB output, numpy-backed input."""
    ref = cli(l8_crop, tmp_path / "cli.tif", tiny_checkpoint, bands=(3, 2, 1),
              nodata=0, output_scale="db", tile_size=128, overlap=32)
    data = rioxarray.open_rasterio(l8_crop).load()  # numpy, not Dask
    out = translate(data, tiny_checkpoint, bands=[3, 2, 1], nodata=0, output_scale="db",
                    tile_size=128, overlap=32, chunks=(256, 300))
    assert out.attrs["units"] == "dB"
    assert out.data.chunks[-2:] == ((256, 256, 8), (300, 300))
    assert same(out.values, ref)


def _stack_date(folder: Path, dst: Path) -> Path:
    """The date's red, green, blue band files as one 3-band GeoTIFF (for pipeline run)."""
    bands = [rasterio.open(folder / f"B{b}.tif") for b in (4, 3, 2)]
    profile = bands[0].profile
    profile.update(count=3)
    with rasterio.open(dst, "w", **profile) as out:
        for i, ds in enumerate(bands, start=1):
            out.write(ds.read(1), i)
            ds.close()
    return dst


def test_time_stack_by_band_name(tiny_checkpoint, tmp_path):
    """Two dates of one Sentinel-2 site as (time, band, y, x), bands named as stackstac
    names asset keys (B02, B03, B04, B08: blue, green, red, nir): the model's red, green,
    blue are picked by name, and every time step gets its own statistics, as pipeline
    run gives each date's file."""
    dates = sorted(p for p in SSL4EO.iterdir() if p.is_dir())
    names = ["B02", "B03", "B04", "B08"]
    steps = []
    for d in dates:
        per_band = [rioxarray.open_rasterio(d / f"B{n[-1]}.tif", chunks=128) for n in names]
        steps.append(xr.concat(per_band, dim="band").assign_coords(band=names))
    stack = xr.concat(steps, dim="time").assign_coords(time=[d.name[:8] for d in dates])
    out = translate(stack, tiny_checkpoint, tile_size=128, overlap=32)
    assert out.dims == ("time", "polarisation", "y", "x")
    assert out.attrs["eo2sar_input_bands"] == "B04,B03,B02"
    got = out.compute()
    for k, d in enumerate(dates):
        ref = cli(_stack_date(d, tmp_path / f"{k}.tif"), tmp_path / f"cli{k}.tif",
                  tiny_checkpoint, tile_size=128, overlap=32)
        assert same(got.values[k], ref)
    assert not np.array_equal(got.values[0], got.values[1])
    # a time step alone gives the same bytes: its statistics are its own
    alone = translate(stack.isel(time=1), tiny_checkpoint, tile_size=128, overlap=32)
    assert same(alone.compute().values, got.values[1])


def test_band_names_mismatch_is_one_line_naming_both(tiny_checkpoint):
    data = xr.DataArray(np.ones((3, 32, 32), np.uint16), dims=("band", "y", "x"),
                        coords={"band": ["B02", "B08", "B11"]})
    with pytest.raises(ConfigError) as err:
        translate(data, tiny_checkpoint)
    text = err.value.format()
    assert "\n" not in text
    assert "red, green, blue" in text and "blue, nir, swir16" in text
    # unnamed bands of another count: say which and how
    data = xr.DataArray(np.ones((4, 32, 32), np.uint16), dims=("band", "y", "x"),
                        coords={"band": [1, 2, 3, 4]})
    with pytest.raises(ConfigError, match="not named") as err:
        translate(data, tiny_checkpoint)
    assert "bands=" in err.value.format()
    with pytest.raises(ConfigError, match="no band 9"):
        translate(data, tiny_checkpoint, bands=[3, 2, 9])
    with pytest.raises(ConfigError, match="has no option"):
        translate(data, tiny_checkpoint, bands=[3, 2, 1], workers=4)


def test_band_names_from_common_name_coordinate_and_other_dim_names(tiny_checkpoint):
    """odc-stac style: dims named otherwise (stated), a common_name coordinate."""
    rng = np.random.default_rng(0)
    values = rng.integers(1, 3000, size=(48, 40, 4), dtype=np.uint16)
    data = xr.DataArray(values, dims=("lat", "lon", "bands"),
                        coords={"bands": ["a1", "a2", "a3", "a4"],
                                "common_name": ("bands", ["nir", "red", "green", "blue"])})
    out = translate(data, tiny_checkpoint, band_dim="bands", y_dim="lat", x_dim="lon",
                    tile_size=32, overlap=8)
    assert out.dims == ("polarisation", "lat", "lon")
    assert out.attrs["eo2sar_input_bands"] == "a2,a3,a4"
    by_label = translate(data, tiny_checkpoint, band_dim="bands", y_dim="lat", x_dim="lon",
                         tile_size=32, overlap=8, bands=["a2", "a3", "a4"])
    assert same(out.values, by_label.values)


def test_nothing_is_computed_until_asked(tiny_checkpoint):
    """Building the result reads no chunk: an input whose every chunk raises builds."""

    def boom(block):
        raise AssertionError("a chunk was computed")

    lazy = da.zeros((3, 600, 700), dtype=np.uint16, chunks=256).map_blocks(boom, dtype=np.uint16)
    data = xr.DataArray(lazy, dims=("band", "y", "x"))
    out = translate(data, tiny_checkpoint)
    assert out.shape == (1, 600, 700)
    with pytest.raises(AssertionError, match="a chunk was computed"):
        out.compute()


def test_a_huge_lazy_array_has_chunk_bounded_tasks(tiny_checkpoint):
    """16k x 16k of zeros plus noise: the graph is built without computing, and an
    output chunk depends on the tile tasks around it only (each task's inputs are
    bounded; the peak of a whole run is measured by bench_xarray, not here); one corner
    chunk computes."""
    size, chunk = 16384, 1024
    noise = da.random.default_rng(0).integers(1, 4000, size=(3, size, size),
                                              chunks=(3, chunk, chunk)).astype(np.uint16)
    data = xr.DataArray(noise, dims=("band", "y", "x"))
    out = translate(data, tiny_checkpoint, norm="tile", stats_size=64)
    assert out.data.chunks[-2:] == ((chunk,) * 16, (chunk,) * 16)
    one = out.data[:, 5 * chunk:6 * chunk, 7 * chunk:8 * chunk]
    graph = dict(one.__dask_graph__().cull(set(one.__dask_keys__()[0][0])))
    keys = {k[0] if isinstance(k, tuple) else k for k in graph}
    tiles = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("eo2sar-tiles")]
    pieces = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("eo2sar-piece")]
    # the tile tasks of the chunks whose tiles reach it: itself, left, above, up-left;
    # each reads its own region of the input (no input chunk is a task of its own)
    assert sorted(k[2:] for k in tiles) == [(4, 6, 0), (4, 7, 0), (5, 6, 0), (5, 7, 0)]
    assert sorted(k[2:] for k in pieces) == [(*k[2:], 5, 7) for k in sorted(tiles)]
    assert not [k for k in graph if isinstance(k, tuple) and "stats" not in str(k[0])
                and str(k[0]).startswith("eo2sar") and k not in tiles
                and k not in pieces and not str(k[0]).startswith("eo2sar-sar")]
    assert len(keys) < 40
    corner = out[:, :300, :300].compute()
    assert corner.dtype == np.float32 and np.isfinite(corner.values).all()


def test_distributed_client_same_bytes_model_once_per_worker(l8_crop, tiny_checkpoint,
                                                             tmp_path):
    distributed = pytest.importorskip("distributed")
    from pipeline.run import inference

    ref = cli(l8_crop, tmp_path / "cli.tif", tiny_checkpoint, bands=(3, 2, 1))
    data = rioxarray.open_rasterio(l8_crop, chunks=256)
    out = translate(data, tiny_checkpoint, bands=(3, 2, 1))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        got = out.compute()
        loads = client.run(lambda: inference._cached_generator.cache_info().misses)
    assert same(got.values, ref)
    assert list(loads.values()) == [1]  # statistics and every tile group: one load


def test_loaded_checkpoint_and_generator_module(sn6_nodata, tiny_checkpoint):
    from ugatit import load_checkpoint

    data = rioxarray.open_rasterio(SN6, chunks=100)
    by_path = translate(data, tiny_checkpoint, tile_size=64, overlap=16).values
    ckpt = load_checkpoint(tiny_checkpoint, networks=("genA2B",))
    assert same(translate(data, ckpt, tile_size=64, overlap=16).values, by_path)
    assert same(translate(data, ckpt.genA2B, tile_size=64, overlap=16).values, by_path)


def test_array_reader_reads_like_a_file(l8_crop):
    """read_masked over ArrayReader = read_masked over the file (full and decimated)."""
    from pipeline.inputs.radiometry import read_masked

    with rasterio.open(l8_crop) as ds:
        values = ds.read()
        reader = ArrayReader(da.from_array(values, chunks=100), nodata=None,
                             height=ds.height, width=ds.width)
        for kwargs in ({}, {"out_shape": (52, 60)}, {"window": Window(10, 20, 300, 200)}):
            a = read_masked(ds, (3, 2, 1), **kwargs)
            b = read_masked(reader, (3, 2, 1), **kwargs)
            assert same(a[0], b[0]) and same(a[1], b[1])


def test_missing_extra_is_one_line_with_the_install_command(monkeypatch, tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(PipelineError) as err:
        translate(object(), tiny_checkpoint)
    assert "pip install 'eo2sar[xarray]'" in err.value.format()
    assert "\n" not in err.value.format()
    assert arrays.INSTALL_HINT in err.value.format()


def test_bigearthnet_band_files_by_name(tiny_checkpoint):
    """The notebook's input: a Sentinel-2 band folder opened file by file."""
    files = sorted(BEN.glob("*_B0[2348].tif"))
    stack = xr.concat([rioxarray.open_rasterio(f) for f in files], dim="band")
    stack = stack.assign_coords(band=[f.stem.rsplit("_", 1)[1] for f in files])
    out = translate(stack, tiny_checkpoint, tile_size=64, overlap=16)
    assert out.attrs["eo2sar_input_bands"] == "B04,B03,B02"
    assert out.shape == (1, 120, 120)


MS_MODEL = DATA.parents[1] / "checkpoints" / "eo2sar_demo_ms_ngf16.pt"


def _band_files(chunks: int | None = None) -> xr.DataArray:
    """The BigEarthNet Sentinel-2 folder's 10 m bands, file by file, named by band id
    (rioxarray reads no Scale/Offset from them: they store reflectance x 10000)."""
    files = sorted(BEN.glob("*_B0[2348].tif"))
    stack = xr.concat([rioxarray.open_rasterio(f, chunks=chunks) for f in files], dim="band")
    return stack.assign_coords(band=[f.stem.rsplit("_", 1)[1] for f in files])


@pytest.mark.skipif(not MS_MODEL.exists(), reason="the multispectral demo checkpoint")
def test_reflectance_model_same_bytes_as_pipeline_run_on_the_band_folder(tmp_path):
    """The 4-band reflectance demo model (red, green, blue, nir -> VV, VH): `pipeline run`
    on the band folder (which knows its reflectance scale, 1/10000) against translate on
    the band files picked by name, the scale declared (reflectance_scale, as
    --reflectance-scale) or given by the array's attrs (scale_factor, as rioxarray reads
    a band Scale/Offset), two chunkings; a chosen polarisation as --polarisations."""
    ref = cli(BEN, tmp_path / "cli.tif", MS_MODEL)
    assert ref.shape[0] == 2  # VV, VH: the model's polarisations, one band each
    declared = translate(_band_files(), MS_MODEL, reflectance_scale=0.0001)
    assert declared.attrs["eo2sar_input_bands"] == "B04,B03,B02,B08"
    assert list(declared.coords["polarisation"].values) == ["VV", "VH"]
    assert same(declared.values, ref)
    by_attrs = _band_files(chunks=64)
    by_attrs.attrs.update(scale_factor=0.0001, add_offset=0.0)
    assert same(translate(by_attrs, MS_MODEL).values, ref)
    vh = translate(_band_files(chunks=48), MS_MODEL, reflectance_scale="0.0001",
                   polarisations="VH")
    assert same(vh.values, cli(BEN, tmp_path / "vh.tif", MS_MODEL, polarisations="VH"))
    assert list(vh.coords["polarisation"].values) == ["VH"]


@pytest.mark.skipif(not MS_MODEL.exists(), reason="the multispectral demo checkpoint")
def test_reflectance_unknown_is_one_line_when_built():
    """Raw DN with no scale in attrs, nothing declared: refused when the result is built
    (not in a task at compute time), one line naming the option; a bad value as the flag's."""
    with pytest.raises(arrays.InputError) as err:
        translate(_band_files(), MS_MODEL)
    text = err.value.format()
    assert "\n" not in text and "reflectance scale unknown" in text
    assert "reflectance_scale=0.0001" in text
    with pytest.raises(ConfigError, match="bad value for reflectance_scale") as err:
        translate(_band_files(), MS_MODEL, reflectance_scale=-1)
    assert "positive SCALE" in err.value.format()


def test_a_one_chunk_scene_has_a_tile_task_per_thread(tiny_checkpoint, monkeypatch):
    """Fewer chunks than threads: each chunk's tiles are split into several tasks (so a
    one-chunk scene uses every thread), with the same bytes as more chunks."""
    monkeypatch.setattr(arrays.os, "cpu_count", lambda: 4)
    values = np.random.default_rng(0).integers(1, 4000, size=(3, 600, 700)).astype(np.uint16)
    data = xr.DataArray(da.from_array(values, chunks=(3, 600, 700)), dims=("band", "y", "x"))
    one = translate(data, tiny_checkpoint)
    tiles = [k for k in one.data.__dask_graph__() if isinstance(k, tuple)
             and str(k[0]).startswith("eo2sar-tiles")]
    assert len(tiles) == 4
    many = translate(data, tiny_checkpoint, chunks=(300, 350))
    assert same(one.values, many.values)


def test_the_sampled_tiles_are_forwarded_once(l8_crop, tiny_checkpoint, monkeypatch):
    """--norm scene: the statistics pass's outputs of the sampled tiles are the tile
    tasks' outputs (as in `pipeline run`), so each tile of the grid is forwarded once:
    by the pass (the sample) or by a tile task (the rest), never both; and a sample
    smaller than the scene leaves the rest to the tile tasks, with the same bytes as the
    whole scene in the pass (tested against pipeline run above)."""
    from pipeline.run import inference

    forwarded: list[int] = []
    real_batch, real_pass = inference.run_batch, inference.scene_norm_pass

    def batch(job, tiles, *a, **k):
        forwarded.extend(t for t in tiles if t not in job.done)
        return real_batch(job, tiles, *a, **k)

    def pooled(job, tiles, *a, **k):
        forwarded.extend(tiles)
        return real_pass(job, tiles, *a, **k)

    monkeypatch.setattr(inference, "run_batch", batch)
    monkeypatch.setattr(inference, "scene_norm_pass", pooled)
    data = rioxarray.open_rasterio(l8_crop, chunks=200)
    for sample in (None, 5):
        forwarded.clear()
        options = {} if sample is None else {"norm_sample": sample}
        translate(data, tiny_checkpoint, bands=(3, 2, 1), stats_size=128, **options).compute()
        assert len(forwarded) == len(set(forwarded))  # no tile twice
        if sample is not None:
            assert len(forwarded) > sample  # the tile tasks forwarded the others
