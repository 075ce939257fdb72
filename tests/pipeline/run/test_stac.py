"""STAC out: the Item beside every output and the Collection of a directory run.

Validation is offline: pipeline.run.stac.validate checks the core STAC 1.1.0 schema shipped by
pystac-core, and a test proves no schema is fetched (StacIO reads are made to fail). The
projection / processing extension schemas are not shipped by any package we could install,
so their fields are checked here directly against the output raster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.run.stac import (
    COG_MEDIA_TYPE,
    PROCESSING_EXTENSION,
    PROJECTION_EXTENSION,
    item_path,
    validate,
)
from tests.helpers import SN6, crop
from ugatit.io import sha256_file


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any URL pystac would read (a schema) fails the test: validation must be offline."""

    read_text = pystac.stac_io.DefaultStacIO.read_text

    def local_only(self, source, *args, **kwargs):
        assert "://" not in str(source), f"network read attempted: {source}"
        return read_text(self, source, *args, **kwargs)

    monkeypatch.setattr(pystac.stac_io.DefaultStacIO, "read_text", local_only)


def run(*args) -> object:
    result = CliRunner().invoke(main, [*map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def check_item_matches_raster(item: dict, output: Path) -> None:
    """The Item's grid facts are the COG's, its bbox the COG's lon/lat bounds."""
    assert validate(item) == [PROJECTION_EXTENSION, PROCESSING_EXTENSION]
    props = item["properties"]
    with rasterio.open(output) as ds:
        assert props["proj:code"] == f"EPSG:{ds.crs.to_epsg()}"
        assert props["proj:shape"] == [ds.height, ds.width]
        assert props["proj:transform"] == list(ds.transform)[:6]
        lonlat = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
        tags = ds.tags()
    # 1e-8 deg (~1 mm): the bbox is rounded to 9 decimals
    assert item["bbox"] == pytest.approx(list(lonlat), abs=1e-8)
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) >= 5
    assert props["processing:software"]["eo2sar"] == tags["EO2SAR_VERSION"]
    assert props["eo2sar:model_sha256"] == tags["EO2SAR_MODEL_SHA256"]
    assert props["eo2sar:config_hash"] == tags["EO2SAR_CONFIG_HASH"]
    data = item["assets"]["data"]
    assert data["type"] == COG_MEDIA_TYPE and data["roles"] == ["data"]
    assert (output.parent / data["href"]).resolve() == output.resolve()


def test_file_run_writes_a_valid_item(tiny_checkpoint, tmp_path):
    scene = crop(SN6, tmp_path / "scene.tif", Window(0, 0, 96, 80))
    out = tmp_path / "out" / "sar.tif"
    out.parent.mkdir()
    run("run", scene, out, "--model", tiny_checkpoint, "--heatmap", tmp_path / "out/h.tif",
        "-q")
    path = item_path(out)
    assert path == tmp_path / "out" / "sar.stac.json"
    item = json.loads(path.read_text())
    check_item_matches_raster(item, out)
    assert item["id"] == "sar"
    assert item["properties"]["eo2sar:model_sha256"] == sha256_file(tiny_checkpoint)
    heat = item["assets"]["heatmap"]
    assert heat["href"] == "./h.tif" and heat["type"] == COG_MEDIA_TYPE
    (link,) = [ln for ln in item["links"] if ln["rel"] == "derived_from"]
    assert link["href"] == str(scene.resolve())
    # pystac reads it back as an Item with the asset resolved beside it
    back = pystac.Item.from_file(str(path))
    assert Path(back.assets["data"].get_absolute_href()) == out.resolve()

    png = tmp_path / "out" / "look.png"
    run("quicklook", scene, out, png)
    item = json.loads(path.read_text())
    assert item["assets"]["quicklook"]["href"] == "./look.png"
    assert item["assets"]["quicklook"]["roles"] == ["overview"]
    validate(item)


def test_directory_run_writes_a_collection_of_items(tiny_checkpoint, tmp_path):
    scenes = tmp_path / "scenes"
    (scenes / "sub").mkdir(parents=True)
    crop(SN6, scenes / "a.tif", Window(0, 0, 64, 64))
    crop(SN6, scenes / "sub" / "b.tif", Window(100, 100, 70, 60))
    out = tmp_path / "out"
    run("run", scenes, out, "--model", tiny_checkpoint, "--pattern", "**/*.tif", "-q")
    collection = json.loads((out / "collection.json").read_text())
    assert validate(collection) == []
    hrefs = sorted(ln["href"] for ln in collection["links"] if ln["rel"] == "item")
    assert hrefs == ["./a.stac.json", "./sub/b.stac.json"]
    boxes = []
    for href in hrefs:
        item = json.loads((out / href).read_text())
        output = (out / href).parent / item["assets"]["data"]["href"]
        check_item_matches_raster(item, output)
        assert item["collection"] == collection["id"] == "out"
        (coll_link,) = [ln for ln in item["links"] if ln["rel"] == "collection"]
        assert ((out / href).parent / coll_link["href"]).resolve() == (
            out / "collection.json").resolve()
        boxes.append(item["bbox"])
    assert json.loads((out / "sub/b.stac.json").read_text())["id"] == "sub__b"
    (extent,) = collection["extent"]["spatial"]["bbox"]
    assert extent == [min(b[0] for b in boxes), min(b[1] for b in boxes),
                      max(b[2] for b in boxes), max(b[3] for b in boxes)]
    # pystac walks the catalogue: the Collection's items resolve to the Items on disk
    coll = pystac.Collection.from_file(str(out / "collection.json"))
    assert sorted(i.id for i in coll.get_items()) == ["a", "sub__b"]

    # a rerun skips both scenes; a deleted Item is written again, the Collection kept
    (out / "a.stac.json").unlink()
    run("run", scenes, out, "--model", tiny_checkpoint, "--pattern", "**/*.tif", "-q")
    check_item_matches_raster(json.loads((out / "a.stac.json").read_text()), out / "a.tif")
    assert json.loads((out / "collection.json").read_text())["links"] == collection["links"]


def test_validate_rejects_an_invalid_item(tiny_checkpoint, tmp_path):
    scene = crop(SN6, tmp_path / "scene.tif", Window(0, 0, 40, 40))
    run("run", scene, tmp_path / "o.tif", "--model", tiny_checkpoint, "-q")
    item = json.loads((tmp_path / "o.stac.json").read_text())
    del item["properties"]["datetime"]
    with pytest.raises(pystac.errors.STACValidationError):
        validate(item)
