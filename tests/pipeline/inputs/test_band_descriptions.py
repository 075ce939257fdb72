"""bandnames.bands_by_description: the one rule, shared by `pipeline tiles` and
`pipeline run`, that finds a model's bands in a raster's band descriptions."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.inputs.bandnames import SENTINEL2_ORDER, bands_by_description

MODEL = ("red", "green", "blue", "nir")


@pytest.mark.parametrize("descriptions", [
    ("B4", "B3", "B2", "B8"),
    ("B04", "B03", "B02", "B08"),
    ("red (B04)", "green (B03)", "blue (B02)", "nir (B08)"),
    ("red", "green", "blue", "nir"),
])
def test_every_spelling_names_the_same_bands(descriptions):
    assert bands_by_description(descriptions, 4, MODEL, "x.tif") == ((1, 2, 3, 4), [])


def test_order_follows_the_model_and_landsat_ids_substitute_nir08():
    bands, notes = bands_by_description(("SR_B2", "SR_B3", "SR_B4", "SR_B5"), 4, MODEL, "l8")
    assert bands == (3, 2, 1, 4) and notes == ["nir <- nir08"]


def test_thirteen_bands_without_descriptions_are_sentinel2_order():
    bands, notes = bands_by_description((None,) * 13, 13, MODEL, "s2.tif")
    assert bands == (4, 3, 2, 8) and "taken as Sentinel-2" in notes[0]
    assert len(SENTINEL2_ORDER) == 13


def test_a_missing_band_names_both_lists():
    with pytest.raises(ConfigError) as err:
        bands_by_description(("B04", "B03", "B02", None), 4, MODEL, "rgb.tif")
    text = err.value.format()
    assert "the model takes bands red, green, blue, nir" in text
    assert "its bands: red, green, blue, ?" in text and "--bands" in text
