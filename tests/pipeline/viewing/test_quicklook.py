"""Tests for pipeline.viewing.quicklook: a side-by-side PNG of input and output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from pipeline.errors import InputError
from pipeline.viewing.quicklook import quicklook, stretch
from tests.helpers import L8, SN6


def _fake_output(inp: Path, out: Path, nodata_rows: int = 0) -> None:
    """A 1-band float32 'SAR-like' raster on the input's grid (mean of the bands),
    with nodata NaN in the first rows."""
    with rasterio.open(inp) as src:
        data = src.read().astype("float32").mean(axis=0)
        profile = src.profile.copy()
    data[:nodata_rows] = np.nan
    profile.update(count=1, dtype="float32", nodata=float("nan"))
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)


def test_quicklook_sn6(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    _fake_output(SN6, out, nodata_rows=50)
    png = quicklook(SN6, out, tmp_path / "ql.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        w, h = im.size
        arr = np.asarray(im)
    # 200x200 chip, not decimated (max_size 1024): two 200 px panels and a 4 px gap
    assert (w, h) == (404, 200)
    left, gap, right = arr[:, :200], arr[:, 200:204], arr[:, 204:]
    assert (gap == 255).all()
    assert left.std() > 20  # a stretched real image, not a flat one
    assert (right[:50] == 0).all()  # nodata rows are black
    assert right[50:].std() > 20
    assert (right[..., 0] == right[..., 1]).all()  # greyscale


def test_quicklook_decimates_and_selects_bands(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    _fake_output(L8, out)
    png = quicklook(L8, out, tmp_path / "ql.png", bands=(3, 2, 1), max_size=256)
    with Image.open(png) as im:
        w, h = im.size
        arr = np.asarray(im)
    # 2041 x 1860 -> longer side 256: 256 x 233 panels; width ~ 2x plus the gap
    assert h == 233
    assert w == 2 * 256 + 4
    assert arr[:, :256].std() > 10 and arr[:, 260:].std() > 10


def test_quicklook_bad_band_and_missing_file(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    _fake_output(SN6, out)
    with pytest.raises(InputError, match="band"):
        quicklook(SN6, out, tmp_path / "ql.png", bands=(4, 2, 1))
    with pytest.raises(InputError, match="cannot read"):
        quicklook(tmp_path / "missing.tif", out, tmp_path / "ql.png")
    assert not (tmp_path / "ql.png").exists()


def test_stretch_percentiles_and_nodata() -> None:
    data = np.arange(100, dtype=np.float64).reshape(1, 10, 10)
    valid = np.ones((10, 10), bool)
    valid[0, 0] = False
    img = stretch(data, valid)
    assert img.shape == (10, 10, 1) and img.dtype == np.uint8
    assert img[0, 0, 0] == 0  # nodata black
    # values 1..99 valid: 2 % -> 2.96, 98 % -> 97.04; 50 maps to ~(50-2.96)/94.08*255
    assert img[5, 0, 0] == round((50 - 2.96) / 94.08 * 255)
    assert img[9, 9, 0] == 255 and img[0, 1, 0] == 0
    flat = stretch(np.full((1, 4, 4), 7.0), np.ones((4, 4), bool))
    assert (flat == 128).all()


def test_quicklook_reference_panel_on_the_output_grid(tmp_path: Path) -> None:
    """--reference adds the real SAR as a third panel; on the same grid it is the
    reference's own stretch, and a reference on a shifted grid is warped onto the
    output's grid (the SpaceNet 6 SAR, band 1, its NaN top black)."""
    from tests.helpers import DATA

    sar = DATA / "sn6_rotterdam_sar_quadpol_db.tif"
    out = tmp_path / "out.tif"
    _fake_output(SN6, out)
    png = quicklook(SN6, out, tmp_path / "ql.png", reference=sar)
    arr = np.asarray(Image.open(png))
    assert arr.shape == (200, 3 * 200 + 2 * 4, 3)
    third = arr[:, 408:, 0]
    with rasterio.open(sar) as ds:
        ref = ds.read(1)
    assert (third[~np.isfinite(ref)] == 0).all()  # nodata black
    expected = stretch(ref[None], np.isfinite(ref))[..., 0]
    # within one display level: the panel reads through read_masked (float64 limits)
    assert np.abs(third.astype(int) - expected.astype(int)).max() <= 1
    # a copy shifted by 10 px east: warped back onto the output grid, the same picture
    # moved by 10 px (columns 10.. of the panel = columns 0.. of the reference)
    with rasterio.open(sar) as ds:
        profile, data = ds.profile.copy(), ds.read()
    t = profile["transform"]
    profile["transform"] = rasterio.Affine(t.a, t.b, t.c + 10 * t.a, t.d, t.e, t.f)
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(shifted, "w", **profile) as dst:
        dst.write(data)
    arr2 = np.asarray(Image.open(quicklook(SN6, out, tmp_path / "ql2.png",
                                           reference=shifted)))[:, 408:, 0]
    assert (arr2[:, :10] == 0).all()  # no reference there: nodata
    rows = np.isfinite(ref).all(axis=1)  # the stretch differs a little (10 columns fewer):
    a, b = arr2[rows, 11:].ravel(), third[rows, 1:190].ravel()  # compare by correlation
    assert np.corrcoef(a, b)[0, 1] > 0.98


def test_quicklook_reference_bad_band(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    _fake_output(SN6, out)
    with pytest.raises(InputError, match="band 9 asked for"):
        quicklook(SN6, out, tmp_path / "ql.png", reference=SN6, reference_band=9)
