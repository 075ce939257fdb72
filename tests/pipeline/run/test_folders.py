"""Whole folders and catalogs: `pipeline run DIR OUT/` over every product kind,
`pipeline run CATALOG.json OUT/` over every Item, multi-granule SAFE products, and the
Python API on products (pipeline/inputs/discovery.py, pipeline/inputs/catalogs.py,
pipeline/run/batch.py).

The products are the small faithful ones of tests/products.py over a 128 x 96 crop of the
bundled Landsat 8 scene (stored B, G, R): a product run without flags equals the crop's run
with `--bands 3,2,1` (the reference), so every kind is checked for its pixels too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.inputs.catalogs import catalog_products
from pipeline.inputs.discovery import find_products
from pipeline.viewing.view_inputs import manifest_input
from tests.helpers import L8, crop
from tests.products import (
    L2_ID,
    S2_SAFE,
    item_dict,
    landsat_l2,
    sentinel2_l2a,
    split_bands,
    stac_item,
    write_band,
)

S2_ZIPPED = S2_SAFE.replace("S2A_", "S2B_").replace("T21JXN_", "T21JXP_")


def invoke(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


@pytest.fixture(scope="module")
def bgr(tmp_path_factory) -> Path:
    return crop(L8, tmp_path_factory.mktemp("l8") / "bgr.tif", Window(0, 0, 128, 96))


@pytest.fixture(scope="module")
def model(make_checkpoint) -> Path:
    return make_checkpoint(ngf=4, n_res=1)


@pytest.fixture(scope="module")
def reference(bgr, model, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("ref") / "ref.tif"
    result = invoke(bgr, out, "--model", model, "--bands", "3,2,1", "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        return ds.read()


def rgb_item(folder: Path, bgr: Path, ident: str, name: str = "") -> Path:
    """A STAC Item JSON in `folder` whose red/green/blue assets are the crop's bands,
    in a subfolder `assets_<ident>` (relative hrefs)."""
    blue, green, red = split_bands(bgr, folder / f"assets_{ident}", names=("b", "g", "r"))
    return stac_item(folder / (name or f"{ident}.json"), {
        "B04": (f"assets_{ident}/r.tif", "red"), "B03": (f"assets_{ident}/g.tif", "green"),
        "B02": (f"assets_{ident}/b.tif", "blue")}, ident=ident)


def mixed_folder(root: Path, bgr: Path) -> Path:
    """A download folder: a SAFE folder, another product's SAFE zip, a Landsat folder, a
    STAC Item JSON, a GeoTIFF, and things that are no scene (a README, a Catalog)."""
    dl = root / "downloads"
    dl.mkdir()
    sentinel2_l2a(dl, bgr)
    zipped = sentinel2_l2a(root / "z", bgr, S2_ZIPPED)
    shutil.make_archive(str(dl / S2_ZIPPED.removesuffix(".SAFE")), "zip", zipped.parent,
                        zipped.name)
    landsat_l2(dl, bgr)
    rgb_item(dl, bgr, "chip-1", "search_result.json")
    shutil.copy(bgr, dl / "scene.tif")
    (dl / "README.txt").write_text("downloaded on Monday\n")
    (dl / "catalog.json").write_text(json.dumps({"type": "Catalog", "id": "c", "links": []}))
    return dl


EXPECTED = sorted([S2_SAFE.removesuffix(".SAFE"), S2_ZIPPED.removesuffix(".SAFE"), L2_ID,
                   "chip-1", "scene"])


def outputs(out: Path) -> list[str]:
    return sorted(p.stem for p in out.glob("*.tif") if not p.name.endswith(".heatmap.tif"))


def statuses(out: Path) -> dict[str, str]:
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    return {s["scene"]: s["status"] for s in report["scenes"]}


def test_discovery_counts_each_product_once(bgr, tmp_path):
    dl = mixed_folder(tmp_path, bgr)
    found = find_products(dl)
    assert sorted(p.stem for p in found) == EXPECTED
    kinds = {p.stem: p.kind for p in found}
    assert kinds[L2_ID] == "landsat" and kinds["chip-1"] == "stac"
    assert {kinds[s] for s in EXPECTED[:2] if s.startswith("S2")} == {"sentinel2"}
    # a pattern narrows; a band file inside a product stands for the product, once
    assert [p.stem for p in find_products(dl, "*.SAFE")] == [S2_SAFE.removesuffix(".SAFE")]
    by_band = find_products(dl, "**/*.jp2")
    assert [p.name for p in by_band] == [S2_SAFE]
    assert [p.name for p in find_products(dl, "**/*_SR_B*.TIF")] == [L2_ID]
    # --exclude leaves entries out by name or relative path
    left = find_products(dl, excludes=("*.zip", "scene.tif"))
    assert sorted(p.stem for p in left) == sorted(
        s for s in EXPECTED if s not in ("scene", S2_ZIPPED.removesuffix(".SAFE")))


def test_mixed_folder_runs_in_one_command_and_reruns_nothing(bgr, model, reference,
                                                              tmp_path):
    dl = mixed_folder(tmp_path, bgr)
    out = tmp_path / "out"
    result = invoke(dl, out, "--model", model, "-q")
    assert result.exit_code == 0, result.output
    assert outputs(out) == EXPECTED
    for stem in EXPECTED:
        assert (out / f"{stem}.stac.json").is_file()
        assert (out / f"{stem}.tif.manifest.json").is_file()
        if stem != "scene":  # the GeoTIFF is run as it is (B, G, R), the products as RGB
            with rasterio.open(out / f"{stem}.tif") as ds:
                np.testing.assert_array_equal(ds.read(), reference, err_msg=stem)
    assert set(statuses(out).values()) == {"done"}
    # the output Items say where they came from; the Collection links them all and the
    # source Item
    item = json.loads((out / "chip-1.stac.json").read_text())
    (src,) = [ln["href"] for ln in item["links"] if ln["rel"] == "derived_from"]
    assert src == str((dl / "search_result.json").resolve())
    assert item["properties"]["datetime"] == "2019-08-04T10:31:00Z"
    landsat = json.loads((out / f"{L2_ID}.stac.json").read_text())
    assert landsat["properties"]["datetime"] == "2020-01-01T13:21:15.442182Z"
    collection = json.loads((out / "collection.json").read_text())
    assert len([ln for ln in collection["links"] if ln["rel"] == "item"]) == 5
    assert str((dl / "search_result.json").resolve()) in [
        ln["href"] for ln in collection["links"] if ln["rel"] == "derived_from"]
    manifest = json.loads((out / f"{S2_SAFE.removesuffix('.SAFE')}.tif.manifest.json")
                          .read_text())
    assert manifest["input"]["kind"] == "sentinel2"
    assert manifest["input"]["method"] == "folder-listing"
    with rasterio.open(out / f"{L2_ID}.tif") as ds:
        assert ds.tags()["EO2SAR_INPUT"] == L2_ID  # the product, not its temporary VRT

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    # a GDAL side-car written beside a band file is not a change of the product
    (dl / L2_ID / f"{L2_ID}_SR_B4.TIF.aux.xml").write_text("<PAMDataset/>\n")
    again = invoke(dl, out, "--model", model, "-q")
    assert again.exit_code == 0, again.output
    assert set(statuses(out).values()) == {"skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")} == before
    dry = invoke(dl, out, "--model", model, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "5 scene(s) in" in dry.stdout and dry.stdout.count("skip (up to date)") == 5

    # a product that changes is redone, and only it (a band file of the Landsat folder)
    band = dl / L2_ID / f"{L2_ID}_SR_B4.TIF"
    band.write_bytes(band.read_bytes())
    third = invoke(dl, out, "--model", model, "-q")
    assert third.exit_code == 0, third.output
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    done = {s["scene"]: s["message"] for s in report["scenes"] if s["status"] == "done"}
    assert list(done) == [L2_ID] and done[L2_ID].startswith("redone: input changed")


def test_unreadable_products_are_named_and_the_rest_done(bgr, model, tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    landsat_l2(dl, bgr)
    (dl / L2_ID / f"{L2_ID}_SR_B3.TIF").unlink()  # a band file missing
    (dl / S2_ZIPPED.replace(".SAFE", ".zip")).write_bytes(b"PK\x03\x04 truncated")
    rgb_item(dl, bgr, "good")
    (dl / "broken.json").write_text('{"type": "Feature", "id": "broken", "assets": 3}')
    (dl / "cut.json").write_text('{"type": "Feature", "id": "cu')  # a truncated download
    (dl / "other.json").write_text('{"type": "Catalog", "id": "c", "links": []}')  # no scene
    out = tmp_path / "out"
    result = invoke(dl, out, "--model", model, "-q")
    assert result.exit_code == 1, result.output
    assert statuses(out) == {L2_ID: "failed", S2_ZIPPED.replace(".SAFE", ".zip"): "failed",
                             "broken.json": "failed", "cut.json": "failed",
                             "good.json": "done"}
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    messages = {s["scene"]: s["message"] for s in report["scenes"]}
    assert f"{L2_ID}_SR_B3.TIF named in the MTL is missing" in messages[L2_ID]
    assert "not a readable zip" in messages[S2_ZIPPED.replace(".SAFE", ".zip")]
    assert "broken.json" in messages["broken.json"]
    assert "cannot read the STAC Item" in messages["cut.json"] and "cut.json" in messages[
        "cut.json"]
    assert "failed" in result.stderr and L2_ID in result.stderr  # the table names them
    assert outputs(out) == ["good"]


def test_a_zip_beside_its_folder_is_an_error_naming_both(bgr, model, tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    safe = sentinel2_l2a(dl, bgr)
    shutil.make_archive(str(dl / S2_SAFE.removesuffix(".SAFE")), "zip", dl, safe.name)
    out = tmp_path / "out"
    result = invoke(dl, out, "--model", model, "-q")
    assert result.exit_code == 1
    assert S2_SAFE in result.stderr and S2_SAFE.replace(".SAFE", ".zip") in result.stderr
    assert "--exclude '*.zip'" in result.stderr
    assert not out.exists()
    result = invoke(dl, out, "--model", model, "-q", "--exclude", "*.zip")
    assert result.exit_code == 0, result.output
    assert outputs(out) == [S2_SAFE.removesuffix(".SAFE")]


def item_collection(folder: Path, bgr: Path, ids=("a", "b", "c")) -> Path:
    """An ItemCollection file (what a STAC API search returns) of Items whose assets
    are relative to it."""
    features = []
    for ident in ids:
        rgb_item(folder, bgr, ident)
        features.append(json.loads((folder / f"{ident}.json").read_text()))
        (folder / f"{ident}.json").unlink()
    path = folder / "search.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features,
                                "links": []}))
    return path


def test_item_collection_of_three_items_runs_and_resumes(bgr, model, reference, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    search = item_collection(src, bgr)
    out = tmp_path / "out"
    result = invoke(search, out, "--model", model, "-q")
    assert result.exit_code == 0, result.output
    assert outputs(out) == ["a", "b", "c"]
    for stem in "abc":
        with rasterio.open(out / f"{stem}.tif") as ds:
            np.testing.assert_array_equal(ds.read(), reference)
    collection = json.loads((out / "collection.json").read_text())
    assert str(search.resolve()) in [ln["href"] for ln in collection["links"]
                                     if ln["rel"] == "derived_from"]
    again = invoke(search, out, "--model", model, "-q")
    assert again.exit_code == 0 and set(statuses(out).values()) == {"skipped"}
    # one output removed: only it is redone
    (out / "b.tif").unlink()
    third = invoke(search, out, "--model", model, "-q")
    assert third.exit_code == 0
    assert statuses(out) == {"a": "skipped", "b": "done", "c": "skipped"}
    # an asset file of the Items changes: every Item naming it is redone
    band = src / "assets_c" / "r.tif"
    band.write_bytes(band.read_bytes())
    assert invoke(search, out, "--model", model, "-q").exit_code == 0
    assert statuses(out) == {"a": "skipped", "b": "skipped", "c": "done"}
    # the dry run says what a run would do, per Item, and writes nothing
    (out / "a.tif").unlink()
    dry = invoke(search, out, "--model", model, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "3 scene(s) in" in dry.stdout and "a: run (no output)" in dry.stdout
    assert "b: skip (up to date)" in dry.stdout and not (out / "a.tif").exists()


def test_repeated_item_ids_are_an_error_naming_both(bgr, tmp_path):
    search = item_collection(tmp_path, bgr, ids=("a", "a"))
    with pytest.raises(InputError, match="would both be written") as info:
        from pipeline.inputs.discovery import check_unique_outputs

        check_unique_outputs(catalog_products(str(search)), tmp_path / "out")
    assert info.value.message.count("a (") == 2


def catalog_tree(root: Path, bgr: Path) -> Path:
    """catalog.json -> child sub/catalog.json (which links back: a cycle) -> Items."""
    (root / "sub").mkdir(parents=True)
    rgb_item(root / "sub", bgr, "x")
    rgb_item(root / "sub", bgr, "y")
    (root / "sub" / "catalog.json").write_text(json.dumps({
        "type": "Catalog", "id": "sub", "stac_version": "1.0.0", "description": "d",
        "links": [{"rel": "item", "href": "./x.json"}, {"rel": "item", "href": "y.json"},
                  {"rel": "parent", "href": "../catalog.json"},
                  {"rel": "child", "href": "../catalog.json"}]}))
    (root / "catalog.json").write_text(json.dumps({
        "type": "Catalog", "id": "root", "stac_version": "1.0.0", "description": "d",
        "links": [{"rel": "child", "href": "./sub/catalog.json"},
                  {"rel": "self", "href": "./catalog.json"}]}))
    return root / "catalog.json"


def test_nested_catalog_with_a_cycle_gives_each_item_once(bgr, model, reference, tmp_path,
                                                          monkeypatch):
    root = catalog_tree(tmp_path / "cat", bgr)
    products = catalog_products(str(root))
    assert [p.name for p in products] == ["x", "y"]
    out = tmp_path / "out"
    result = invoke(root, out, "--model", model, "-q")
    assert result.exit_code == 0, result.output
    assert outputs(out) == ["x", "y"]
    item = json.loads((out / "x.stac.json").read_text())
    assert [ln["href"] for ln in item["links"] if ln["rel"] == "derived_from"] == [
        str((tmp_path / "cat" / "sub" / "x.json").resolve())]
    # the depth cap: Items deeper than MAX_DEPTH links are left out, and said so
    import pipeline.inputs.catalogs as catalogs

    monkeypatch.setattr(catalogs, "MAX_DEPTH", 1)
    with pytest.raises(InputError, match="leads to no STAC Item"):
        catalog_products(str(root))


def old_format_product(root: Path, bgr: Path) -> Path:
    """A pre-2016 multi-granule L1C product: S2A_OPER_MTD_SAFL1C_*.xml and two granules,
    each with its own B02/B03/B04 (the second a shifted crop)."""
    name = "S2A_OPER_PRD_MSIL1C_PDMC_20160101T120000_R081_V20160101T133231_20160101T133231"
    safe = root / f"{name}.SAFE"
    granules = ["S2A_OPER_MSI_L1C_TL_SGS__20160101T150000_A002749_T21JXN_N02.01",
                "S2A_OPER_MSI_L1C_TL_SGS__20160101T150000_A002749_T21JXP_N02.01"]
    for g, source in zip(granules, (bgr, crop(L8, root / "other.tif",
                                              Window(500, 500, 96, 64))), strict=True):
        img = safe / "GRANULE" / g / "IMG_DATA"
        img.mkdir(parents=True)
        for band, src_band in (("B02", 1), ("B03", 2), ("B04", 3)):
            write_band(source, src_band, img / f"{g.removesuffix('_N02.01')}_{band}.jp2",
                       driver="JP2OpenJPEG", QUALITY="100", REVERSIBLE="YES")
        (safe / "GRANULE" / g / f"{g.replace('MSI_L1C_TL', 'MTD_L1C_TL')}.xml").write_text(
            "<Level-1C_Tile_ID/>\n")
    (safe / "S2A_OPER_MTD_SAFL1C_PDMC_20160101T120000_R081_V20160101T133231_"
            "20160101T133231.xml").write_text(f"""<?xml version="1.0"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-12.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
<n1:General_Info><Product_Info>
<PRODUCT_START_TIME>2016-01-01T13:32:31.024Z</PRODUCT_START_TIME>
<PRODUCT_URI>{name}</PRODUCT_URI><PROCESSING_BASELINE>02.01</PROCESSING_BASELINE>
</Product_Info>
<Product_Image_Characteristics>
<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
</Product_Image_Characteristics></n1:General_Info></n1:Level-1C_User_Product>
""")
    (safe / "manifest.safe").write_text("<xfdu:XFDU/>\n")
    return safe


def test_multi_granule_product_gives_one_output_per_granule(bgr, model, reference,
                                                            tmp_path):
    safe = old_format_product(tmp_path, bgr)
    refused = invoke(safe, tmp_path / "o.tif", "--model", model, "-q")
    assert refused.exit_code == 1 and "give an output directory" in refused.stderr
    assert not (tmp_path / "o.tif").exists()
    out = tmp_path / "out"
    result = invoke(safe, out, "--model", model, "-q")
    assert result.exit_code == 0, result.output
    stem = safe.name.removesuffix(".SAFE")
    assert outputs(out) == [f"{stem}__S2A_OPER_MSI_L1C_TL_SGS__20160101T150000_A002749_"
                            f"{tile}_N02.01" for tile in ("T21JXN", "T21JXP")]
    first, second = (out / f"{n}.tif" for n in outputs(out))
    with rasterio.open(first) as ds:
        np.testing.assert_array_equal(ds.read(), reference)
    with rasterio.open(second) as ds:
        assert (ds.width, ds.height) == (96, 64)
    item = json.loads(first.with_name(first.stem + ".stac.json").read_text())
    assert item["properties"]["datetime"] == "2016-01-01T13:32:31.024000Z"
    # the same product beside others in a folder: one product per granule too
    found = find_products(tmp_path, "*.SAFE")
    assert [p.granule for p in found] == [g.split("__", 1)[1] for g in outputs(out)]


def test_python_api_takes_products_and_writes_the_item(bgr, model, reference, tmp_path):
    from pipeline import load_config, run_scene

    folder = landsat_l2(tmp_path, bgr)
    out = tmp_path / "l8.tif"
    result = run_scene(folder, out, model_path=model, config=load_config(None, {}),
                       progress=False)
    assert result.output == out
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), reference)
        assert ds.tags()["EO2SAR_INPUT"] == L2_ID
    item = json.loads((tmp_path / "l8.stac.json").read_text())
    assert item["properties"]["datetime"] == "2020-01-01T13:21:15.442182Z"
    item_file = rgb_item(tmp_path, bgr, "api")
    run_scene(str(item_file), tmp_path / "i.tif", model_path=model,
              config=load_config(None, {}), progress=False, write_stac=False)
    assert (tmp_path / "i.tif").is_file() and not (tmp_path / "i.stac.json").exists()


def test_view_does_not_read_a_product_named_by_a_manifest(tmp_path):
    """A manifest of a product run names a folder, a zip or an Item: the view never
    re-makes what the run read from it (its VRT is gone), whatever the manifest claims."""
    secret = tmp_path / "id_rsa"
    secret.write_text("KEY")
    for kind in ("sentinel2", "landsat", "stac", "remote"):
        doc = {"input": {"path": str(secret), "kind": kind, "size": 3, "sha256": "x",
                         "method": "full"}}
        assert manifest_input(doc, tmp_path) is None


def test_pattern_and_exclude_need_a_directory(bgr, model, tmp_path):
    result = invoke(bgr, tmp_path / "o.tif", "--model", model, "--pattern", "*.tif")
    assert result.exit_code == 2 and "select the scenes of a directory" in result.stderr


def test_an_item_named_by_an_itemcollection_feature_stays_in_json(tmp_path):
    """An inline Item keeps the document it came from as its base: relative hrefs
    resolve there, and a feature that is not an Item is refused with its index."""
    (tmp_path / "s.json").write_text(json.dumps({
        "type": "FeatureCollection", "features": [item_dict("ok", {}), {"type": "Point"}]}))
    with pytest.raises(InputError, match="feature 1 is not a STAC Item"):
        catalog_products(str(tmp_path / "s.json"))
