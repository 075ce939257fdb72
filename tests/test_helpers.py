"""tests/helpers.py: the COG check sees the byte layout, not only the LAYOUT=COG tag."""

from __future__ import annotations

import rasterio
from rasterio.enums import Resampling

from tests.helpers import SN6, cog_problems


def test_cog_check_sees_the_layout_not_just_the_tag(tmp_path):
    """A tiled, compressed GeoTIFF with overviews added afterwards is NOT a COG (its
    overview data come after the full-resolution data): the check must say so."""
    plain = tmp_path / "plain.tif"
    with rasterio.open(SN6) as ds:
        profile, data = ds.profile, ds.read()
    profile.update(tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(plain, "w", **profile) as out:
        out.write(data)
    with rasterio.open(plain, "r+") as out:
        out.build_overviews([2], Resampling.average)
    problems = " | ".join(cog_problems(plain))
    assert "first block of the main resolution image" in problems, problems
