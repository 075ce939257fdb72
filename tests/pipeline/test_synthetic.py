"""pipeline.synthetic: the shared synthetic scene and crops of real rasters."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.windows import Window

from pipeline.synthetic import crop_raster, synthetic_block, write_synthetic_scene
from tests.helpers import SN6


def test_scene_does_not_depend_on_how_it_is_written(tmp_path):
    a = write_synthetic_scene(tmp_path / "a.tif", 300, block=128)
    b = write_synthetic_scene(tmp_path / "b.tif", 300, block=256)
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert da.crs.to_string() == "EPSG:32631" and da.transform == db.transform
        assert (da.read(window=Window(0, 0, 128, 128)) == synthetic_block(0, 0, 128, 128)).all()
        # the pixel noise is per block, the structure is a function of the coordinates
        diff = np.abs(da.read().astype(int) - db.read().astype(int))
        assert diff.mean() < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]  # no temps


def test_crop_keeps_georeferencing_and_values(tmp_path):
    win = Window(10, 20, 50, 40)
    out = crop_raster(SN6, tmp_path / "sub" / "c.tif", win, dtype="uint16")
    with rasterio.open(SN6) as src, rasterio.open(out) as dst:
        assert dst.transform == src.window_transform(win) and dst.crs == src.crs
        assert dst.dtypes[0] == "uint16"
        np.testing.assert_array_equal(dst.read(), src.read(window=win))
