"""What GIS software shows of an output (pipeline/run/outputs.py, RasterTarget in mosaic.py):
band descriptions, units, DN -> dB scale/offset, colour interpretation, exact statistics.

Each test reopens the COG with rasterio (what QGIS reads through GDAL) and compares the
stored metadata with what the pixels say; `gdalinfo` checks run when the binary exists
(Debian: `apt-get install gdal-bin`; the pip rasterio wheel does not ship it).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from pipeline.config import load_config
from pipeline.errors import PipelineWarning
from pipeline.run.outputs import HEATMAP_DESCRIPTION, SAR_DESCRIPTION
from pipeline.run.scene import run_scene
from tests.helpers import L8, assert_cog, crop
from ugatit import load_checkpoint, save_checkpoint

STAT_KEYS = ("STATISTICS_MINIMUM", "STATISTICS_MAXIMUM", "STATISTICS_MEAN", "STATISTICS_STDDEV")


def run(inp: Path, out: Path, ckpt: Path, heatmap: Path | None = None, **cfg):
    return run_scene(inp, out, model_path=ckpt, config=load_config(None, cfg),
                     heatmap_path=heatmap, progress=False)


@pytest.fixture(scope="module")
def collar_crop(tmp_path_factory) -> Path:
    """300 x 260 px of the Landsat 8 scene's top-left: valid pixels and zero collar."""
    return crop(L8, tmp_path_factory.mktemp("l8") / "corner.tif", Window(0, 0, 300, 260))


def valid_values(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as ds:
        a = ds.read(band).astype(np.float64)
        nodata = ds.nodata
    ok = ~np.isnan(a) if math.isnan(nodata) else a != nodata
    return a[ok]


def assert_statistics(path: Path, band: int = 1) -> None:
    """Stored STATISTICS_* equal numpy's over the valid pixels: min/max exactly (they are
    pixel values), mean/std to 1e-12 relative (both float64 sums of the same values, in
    another order), population std as GDAL computes it."""
    v = valid_values(path, band)
    with rasterio.open(path) as ds:
        tags = ds.tags(band)
        pixels = ds.width * ds.height
    assert v.size > 0
    assert float(tags["STATISTICS_MINIMUM"]) == v.min()
    assert float(tags["STATISTICS_MAXIMUM"]) == v.max()
    assert float(tags["STATISTICS_MEAN"]) == pytest.approx(v.mean(), rel=1e-12)
    assert float(tags["STATISTICS_STDDEV"]) == pytest.approx(v.std(), rel=1e-9)
    assert float(tags["STATISTICS_VALID_PERCENT"]) == pytest.approx(100 * v.size / pixels)


def test_uint8_reads_as_db_with_scale_offset(tiny_checkpoint, tmp_path, collar_crop):
    """A model without a contract: [-25, 0] dB, as `--output-scale db` uses. DN * scale +
    offset gives the db output's values to half a DN step (25/255/2 dB) plus float32."""
    u8, db, heat = tmp_path / "u8.tif", tmp_path / "db.tif", tmp_path / "heat.tif"
    cfg = dict(bands=(3, 2, 1))
    run(collar_crop, u8, tiny_checkpoint, heatmap=heat, output_scale="uint8", **cfg)
    run(collar_crop, db, tiny_checkpoint, output_scale="db", **cfg)
    for p in (u8, db, heat):
        assert_cog(p)
        assert_statistics(p)
    with rasterio.open(u8) as a, rasterio.open(db) as b:
        assert a.descriptions == b.descriptions == (SAR_DESCRIPTION,)
        assert a.units == b.units == ("dB",)
        assert a.scales == pytest.approx((25.0 / 255.0,)) and a.offsets == (-25.0,)
        assert b.scales == (1.0,) and b.offsets == (0.0,)  # already dB
        assert a.colorinterp == b.colorinterp == (ColorInterp.gray,)
        dn, d = a.read(1), b.read(1)
        tag = json.loads(a.tags()["EO2SAR_DB_SCALE"])
    assert tag == {"db_scale": "absolute", "db_range": [-25.0, 0.0], "from": "default"}
    valid = dn != 0
    np.testing.assert_array_equal(valid, ~np.isnan(d))
    assert valid.any() and not valid.all()  # the collar is nodata
    as_db = dn[valid] * (25.0 / 255.0) - 25.0
    assert np.abs(as_db - d[valid]).max() <= 25.0 / 255.0 / 2 + 1e-5
    with rasterio.open(heat) as h:
        assert h.descriptions == (HEATMAP_DESCRIPTION,)
        assert h.units == (None,) and h.scales == (1.0,)
        assert h.colorinterp == (ColorInterp.gray,)


def test_relative_model_gets_no_scale_offset(tiny_checkpoint, tmp_path, collar_crop):
    """A model trained on per-scene SAR stretches has no dB scale to claim: no units,
    no scale/offset, and the tag says why; with --db-range the user's range is used."""
    ckpt = load_checkpoint(tiny_checkpoint, networks=("genA2B", "genB2A"))
    rel = tmp_path / "relative.pt"
    contract = {"eo": {"method": "auto", "percentiles": [2, 98]},
                "sar": {"units": "linear", "band": 1, "db_range": None,
                        "db_scale": "relative"}}
    save_checkpoint(rel, ckpt.networks, ckpt.config, extra={"radiometry": contract})
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    run(collar_crop, a, rel, bands=(3, 2, 1), output_scale="uint8")
    run(collar_crop, b, rel, bands=(3, 2, 1), output_scale="uint8", db_range=(-20.0, 5.0))
    with rasterio.open(a) as da, rasterio.open(b) as dbb:
        assert da.units == (None,) and da.scales == (1.0,) and da.offsets == (0.0,)
        assert json.loads(da.tags()["EO2SAR_DB_SCALE"])["db_scale"] == "relative"
        assert dbb.units == ("dB",)
        assert dbb.scales == pytest.approx((25.0 / 255.0,)) and dbb.offsets == (-20.0,)
        assert json.loads(dbb.tags()["EO2SAR_DB_SCALE"])["from"] == "flag"
    assert_statistics(a)


def test_unit_output_three_bands(tiny_checkpoint, tmp_path, collar_crop):
    """unit: no units or scale; 3 bands each described, gray (not RGB: TIFF stores gray for
    band 1, "undefined" for the others), each with its own statistics."""
    out = tmp_path / "o.tif"
    run(collar_crop, out, tiny_checkpoint, bands=(3, 2, 1), output_bands=3)
    assert_cog(out)
    with rasterio.open(out) as ds:
        assert ds.units == (None,) * 3 and ds.scales == (1.0,) * 3
        assert ds.colorinterp == (ColorInterp.gray, ColorInterp.undefined,
                                  ColorInterp.undefined)
        assert ds.descriptions == tuple(
            f"{SAR_DESCRIPTION}, generator channel {i}" for i in (1, 2, 3))
    for band in (1, 2, 3):
        assert_statistics(out, band)


def test_statistics_do_not_depend_on_block_size(tiny_checkpoint, tmp_path, collar_crop):
    """The statistics are part of the file: like the pixels, the same for any block size
    (they are computed over fixed windows after writing, not per written block)."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    run(collar_crop, a, tiny_checkpoint, bands=(3, 2, 1), block_size=1024)
    run(collar_crop, b, tiny_checkpoint, bands=(3, 2, 1), block_size=96)
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert da.read().tobytes() == db.read().tobytes()
        assert da.tags(1) == db.tags(1)
        assert set(STAT_KEYS) <= set(da.tags(1))


def test_statistics_match_gdal(tiny_checkpoint, tmp_path, collar_crop):
    """GDAL's own exact statistics of the same pixels (a copy without our tags) agree."""
    out, bare = tmp_path / "o.tif", tmp_path / "bare.tif"
    run(collar_crop, out, tiny_checkpoint, bands=(3, 2, 1), output_scale="db")
    with rasterio.open(out) as ds:
        ours = ds.tags(1)
        profile = {k: ds.profile[k] for k in ("width", "height", "count", "dtype", "nodata")}
        data = ds.read()
    with rasterio.open(bare, "w", driver="GTiff", **profile) as ds:
        ds.write(data)
    with rasterio.open(bare) as ds:
        gdal = ds.stats(approx=False)[0]
    assert float(ours["STATISTICS_MINIMUM"]) == gdal.min
    assert float(ours["STATISTICS_MAXIMUM"]) == gdal.max
    assert float(ours["STATISTICS_MEAN"]) == pytest.approx(gdal.mean, rel=1e-9)
    assert float(ours["STATISTICS_STDDEV"]) == pytest.approx(gdal.std, rel=1e-6)


def test_empty_scene_has_no_statistics_but_valid_percent(tiny_checkpoint, tmp_path):
    """All nodata: no min/max/mean to claim; VALID_PERCENT 0 tells GDAL not to look."""
    empty = crop(L8, tmp_path / "empty.tif", Window(0, 0, 300, 32))  # all collar
    out = tmp_path / "o.tif"
    with pytest.warns(PipelineWarning):
        run(empty, out, tiny_checkpoint, bands=(3, 2, 1))
    with rasterio.open(out) as ds:
        assert ds.tags(1) == {"STATISTICS_VALID_PERCENT": "0.0"}


@pytest.mark.skipif(shutil.which("gdalinfo") is None,
                    reason="gdalinfo not installed (Debian: apt-get install gdal-bin)")
def test_gdalinfo_reads_db_and_statistics(tiny_checkpoint, tmp_path, collar_crop):
    """What `gdalinfo -json -stats` (GDAL's command line, as QGIS's GDAL) reports."""
    out = tmp_path / "u8.tif"
    run(collar_crop, out, tiny_checkpoint, bands=(3, 2, 1), output_scale="uint8")
    info = json.loads(subprocess.run(["gdalinfo", "-json", "-stats", str(out)], check=True,
                                     capture_output=True, text=True).stdout)
    band = info["bands"][0]
    v = valid_values(out)
    assert band["description"] == SAR_DESCRIPTION
    assert band["unit"] == "dB"
    assert band["scale"] == pytest.approx(25.0 / 255.0) and band["offset"] == -25.0
    assert band["colorInterpretation"] == "Gray"
    assert band["minimum"] == v.min() and band["maximum"] == v.max()
    # gdalinfo prints mean and std with 3 decimals; the full values are in the metadata
    assert band["mean"] == pytest.approx(v.mean(), abs=5e-4)
    assert band["stdDev"] == pytest.approx(v.std(), abs=5e-4)
    assert float(band["metadata"][""]["STATISTICS_MEAN"]) == pytest.approx(v.mean(), rel=1e-12)
    assert not (tmp_path / "u8.tif.aux.xml").exists()  # read from the file, not recomputed


def test_three_band_uint8_is_not_rgb(tiny_checkpoint, tmp_path, collar_crop):
    """GDAL's default for a 3-band uint8 GeoTIFF is RGB; ours are 3 gray channels."""
    out = tmp_path / "o.tif"
    run(collar_crop, out, tiny_checkpoint, bands=(3, 2, 1), output_bands=3,
        output_scale="uint8")
    with rasterio.open(out) as ds:
        assert ds.colorinterp[0] == ColorInterp.gray
        assert not {ColorInterp.red, ColorInterp.green, ColorInterp.blue} & set(ds.colorinterp)
        assert ds.units == ("dB",) * 3 and ds.offsets == (-25.0,) * 3
