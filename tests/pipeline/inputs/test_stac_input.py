"""STAC in: `pipeline run ITEM.json OUT.tif` stacks the Item's red, green, blue assets.

The assets are the three bands of the bundled WorldView-2 chip split into single-band
GeoTIFFs, so the run from the Item must give exactly the pixels of the run on the chip
itself (same uint8 values, same grid: the VRT references them, nothing is resampled).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.inputs.sources import stac_bands
from tests.helpers import SN6, assert_same_grid, crop
from tests.products import split_bands, stac_item


def invoke(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


@pytest.fixture
def chip(tmp_path) -> Path:
    return crop(SN6, tmp_path / "chip.tif", Window(20, 30, 90, 70))


@pytest.fixture
def reference(chip, tiny_checkpoint, tmp_path) -> np.ndarray:
    out = tmp_path / "ref.tif"
    assert invoke(chip, out, "--model", tiny_checkpoint, "-q").exit_code == 0
    with rasterio.open(out) as ds:
        return ds.read()


@pytest.mark.parametrize("style", ["eo", "bands"])
def test_item_run_equals_the_raster_run(style, chip, reference, tiny_checkpoint, tmp_path,
                                        monkeypatch):
    tmp = tmp_path / "tmp"  # where the VRT is made, and removed after the run
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    red, green, blue = split_bands(chip, tmp_path / "assets")
    # keys in another order than R, G, B, one href relative to the Item: chosen by name
    item = stac_item(tmp_path / "item.json", {
        "B02": ("assets/blue.tif", "blue"), "B04": (str(red), "red"),
        "B03": ("./assets/green.tif", "green"), "thumbnail": ("t.png", None)}, style)
    out = tmp_path / "out.tif"
    result = invoke(item, out, "--model", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "input: STAC Item chip-1: red=B04, green=B03, blue=B02 (by eo:bands common names)" \
        in result.stderr
    assert_same_grid(chip, out)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), reference)
    stac_out = json.loads((tmp_path / "out.stac.json").read_text())
    assert stac_out["properties"]["datetime"] == "2019-08-04T10:31:00Z"  # the Item's
    (link,) = [ln for ln in stac_out["links"] if ln["rel"] == "derived_from"]
    assert link["href"] == str(item.resolve())
    assert list(tmp.iterdir()) == []


def test_assets_flag_overrides_and_visual_fallback(chip, tmp_path):
    paths = split_bands(chip, tmp_path / "a")
    item = {"assets": {"x": {"href": str(paths[0])}, "y": {"href": str(paths[1])},
                       "visual": {"href": str(chip)}}}
    # no common names: the visual asset, its bands 1, 2, 3
    bands, how = stac_bands(item, str(tmp_path / "i.json"))
    assert how == "the visual asset"
    assert [(b.name, b.path, b.band) for b in bands] == [("visual", str(chip), i)
                                                         for i in (1, 2, 3)]
    bands, how = stac_bands(item, str(tmp_path / "i.json"), ("y", "x", "y"))
    assert how == "--assets" and [b.path for b in bands] == [str(paths[1]), str(paths[0]),
                                                             str(paths[1])]


def test_item_asset_errors_are_one_line_with_hints(chip, tiny_checkpoint, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    red, green, blue = split_bands(chip, tmp_path / "a")
    item = stac_item(tmp_path / "item.json", {"r": (str(red), "red"), "g": (str(green), None),
                                              "b": (str(blue), "blue")})
    result = invoke(item, out_dir / "o.tif", "--model", tiny_checkpoint)
    assert result.exit_code == 1
    assert "no red, green and blue assets found" in result.stderr
    assert "--assets R,G,B; the Item's assets: b, g, r" in result.stderr

    result = invoke(item, out_dir / "o.tif", "--model", tiny_checkpoint, "--assets", "r,g,nir")
    assert result.exit_code == 1 and "the Item has no asset nir" in result.stderr

    result = invoke(item, out_dir / "o.tif", "--model", tiny_checkpoint, "--bands", "1,2,3")
    assert result.exit_code == 2 and "name them with --assets" in result.stderr

    # a band at another resolution: refused, with the hint to pick or resample
    coarse = crop(SN6, tmp_path / "coarse.tif", Window(0, 0, 45, 35))
    with rasterio.open(coarse, "r+") as ds:
        t = ds.transform
        ds.transform = rasterio.Affine(t.a * 2, 0, t.c, 0, t.e * 2, t.f)
    item = stac_item(tmp_path / "item2.json", {"r": (str(red), "red"), "g": (str(green), "green"),
                                               "b": (str(coarse), "blue")})
    result = invoke(item, out_dir / "o.tif", "--model", tiny_checkpoint, "--assets", "r,g,b")
    assert result.exit_code == 1
    assert "are not on the same pixel grid (resolution 4.49997 vs 8.99994" in result.stderr
    assert "gdalwarp" in result.stderr

    other_crs = split_bands(chip, tmp_path / "utm32", names=("b",), crs="EPSG:32632")[0]
    item = stac_item(tmp_path / "item3.json", {"r": (str(red), "red"), "g": (str(green), "green"),
                                               "b": (str(other_crs), "blue")})
    result = invoke(item, out_dir / "o.tif", "--model", tiny_checkpoint)
    assert result.exit_code == 1 and "have different CRS" in result.stderr
    assert list(out_dir.iterdir()) == []  # refused runs write nothing


@pytest.mark.parametrize("text", ["[1, 2]", '{"type": "Collection", "id": "c"}', "{not json"])
def test_json_that_is_not_an_item_is_refused(text, tiny_checkpoint, tmp_path):
    path = tmp_path / "x.json"
    path.write_text(text)
    result = invoke(path, tmp_path / "o.tif", "--model", tiny_checkpoint)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: {path}: ")
    assert "STAC Item" in result.stderr
    assert not (tmp_path / "o.tif").exists()
