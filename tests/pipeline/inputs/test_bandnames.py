"""Band names: one vocabulary (STAC eo:common_name) for products, descriptions, arrays."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.inputs.bandnames import (
    SENTINEL2,
    SENTINEL2_ORDER,
    common_name,
    landsat_common_name,
    match_bands,
    model_band_names,
)


@pytest.mark.parametrize("label, name", [
    ("B4", "red"), ("B04", "red"), ("b8", "nir"), ("B8A", "nir08"), ("B11", "swir16"),
    ("SR_B4", "red"), ("SR_B5", "nir08"), ("nir", "nir"), ("Red", "red"),
    ("red (B04)", "red"), ("VV", None), ("B13", None), ("band 1", None), ("", None),
])
def test_labels_become_common_names(label: str, name: str | None) -> None:
    assert common_name(label) == name


def test_landsat_band_numbers_depend_on_the_sensor() -> None:
    """B4 is red on Landsat 8/9 OLI and near-infrared on Landsat 4-7 (TM, ETM+)."""
    assert landsat_common_name(4, "8") == "red" and landsat_common_name(4, "7") == "nir08"
    assert landsat_common_name(5, "9") == "nir08" and landsat_common_name(3, "5") == "red"


def test_the_13_band_order_covers_every_sentinel2_band() -> None:
    assert sorted(SENTINEL2_ORDER) == sorted(SENTINEL2) and len(SENTINEL2_ORDER) == 13


def test_match_by_name_with_the_nir_substitute() -> None:
    picked, notes = match_bands(("red", "green", "blue", "nir"),
                                ("blue", "green", "red", "nir08", "swir16"), "x.tif")
    assert picked == [2, 1, 0, 3] and notes == ["nir <- nir08"]
    with pytest.raises(ConfigError, match=r"takes bands red, swir22; the input has no "
                                          r"swir22 \(its bands: red, \?\)"):
        match_bands(("red", "swir22"), ("red", None), "x.tif")


def test_model_band_names_from_the_contract_or_rgb() -> None:
    contract = {"eo": {"common_names": ["red", "green", "blue", "nir"]}}
    assert model_band_names(contract, 4) == ("red", "green", "blue", "nir")
    assert model_band_names(None, 3) == ("red", "green", "blue")
    assert model_band_names({"eo": {"method": "auto"}}, 4) == ()
