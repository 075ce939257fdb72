"""Landsat Collection 2 and Sentinel-2 SAFE products read directly as INPUT.

The tests build small, structurally faithful products in tmp_path: real file names, the
MTL (ODL text and XML) layout, the SAFE tree (MTD_MSIL2A.xml, GRANULE/*/MTD_TL.xml,
IMG_DATA/R10m and R20m JP2s), with the pixels of a 128 x 96 crop of the bundled Landsat 8
scene (uint16, 80 % zero collar). A product run without --bands must then give exactly
the output of the crop run with `--bands 3,2,1` (the crop is stored B, G, R): the same
bands, the fill (0) as nodata, and no scaling applied (module doc of pipeline.inputs.sources).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.inputs.sources import landsat_bands, resolve_input, sentinel2_bands
from tests.helpers import L8, assert_same_grid, crop
from tests.products import (
    L1_ID,
    L2_ID,
    S2_SAFE,
    S2_STAMP,
    S2_TILE,
    landsat_l2,
    mtl_text,
    sentinel2_l2a,
    write_band,
)


def invoke(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


@pytest.fixture(scope="module")
def bgr(tmp_path_factory) -> Path:
    """The crop, B, G, R in bands 1-3, uint16, zero collar."""
    return crop(L8, tmp_path_factory.mktemp("l8") / "bgr.tif", Window(0, 0, 128, 96))


@pytest.fixture(scope="module")
def reference(bgr, make_checkpoint, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("ref") / "ref.tif"
    result = invoke(bgr, out, "--model", make_checkpoint(ngf=4, n_res=1), "--bands", "3,2,1",
                    "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        return ds.read()


# ---------------------------------------------------------------- Landsat

def test_landsat_l2_folder_runs_without_bands(bgr, reference, make_checkpoint, tmp_path):
    folder = landsat_l2(tmp_path, bgr)
    out = tmp_path / "out.tif"
    result = invoke(folder, out, "--model", make_checkpoint(ngf=4, n_res=1))
    assert result.exit_code == 0, result.output
    assert (f"input: Landsat 8 L2SP product {L2_ID}: red=SR_B4, green=SR_B3, blue=SR_B2 "
            "(surface reflectance = 2.75e-05 x DN -0.2, fill 0 -> nodata)") in result.stderr
    assert_same_grid(bgr, out)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), reference)
        assert np.isnan(ds.read(1)[0, 0])  # collar -> nodata
        assert ds.tags()["EO2SAR_INPUT"] == folder.name  # the product, not its VRT
    # the MTL file itself is an INPUT too, and the STAC Item has the acquisition time
    out2 = tmp_path / "out2.tif"
    assert invoke(folder / f"{L2_ID}_MTL.txt", out2, "--model",
                  make_checkpoint(ngf=4, n_res=1), "-q").exit_code == 0
    item = (tmp_path / "out2.stac.json").read_text()
    assert '"datetime": "2020-01-01T13:21:15.442182Z"' in item
    # the quicklook of a product run reads the product the same way
    png = tmp_path / "look.png"
    result = CliRunner().invoke(main, ["quicklook", str(folder), str(out), str(png)])
    assert result.exit_code == 0, result.output
    with Image.open(png) as im:
        left = np.asarray(im.convert("RGB"))[:, : im.width // 2]
    assert left.max() > 0  # the optical panel shows the product's pixels, not black


def test_landsat_vrt_carries_nodata_and_the_sr_scaling(bgr, tmp_path):
    folder = landsat_l2(tmp_path, bgr)
    with resolve_input(str(folder)) as resolved, rasterio.open(resolved.path) as ds:
        assert ds.count == 3 and ds.dtypes == ("uint16",) * 3
        assert ds.nodatavals == (0.0, 0.0, 0.0)
        assert ds.scales == (2.75e-05,) * 3 and ds.offsets == (-0.2,) * 3  # not L1's 2e-05
        assert ds.descriptions == ("red (SR_B4)", "green (SR_B3)", "blue (SR_B2)")
        with rasterio.open(bgr) as src:
            np.testing.assert_array_equal(ds.read(), src.read((3, 2, 1)))
    assert not resolved.path.exists()  # the temporary VRT is gone after the run


def test_landsat7_l1_xml_mtl_and_assets_override(bgr, tmp_path):
    folder = tmp_path / L1_ID
    folder.mkdir()
    files = {n: f"{L1_ID}_B{n}.TIF" for n in (1, 2, 3, 4)}
    for n, name in files.items():
        write_band(bgr, min(n, 3), folder / name)
    odl = mtl_text(L1_ID, "L1TP", "LANDSAT_7", files)
    xml = ["<LANDSAT_METADATA_FILE>"]  # the same groups, as the XML MTL writes them
    for line in odl.splitlines():
        key, _, value = (s.strip() for s in line.partition("="))
        if key == "GROUP" and value != "LANDSAT_METADATA_FILE":
            xml.append(f"  <{value}>")
        elif key == "END_GROUP" and value != "LANDSAT_METADATA_FILE":
            xml.append(f"  </{value}>")
        elif value and key not in ("GROUP", "END_GROUP"):
            xml.append(f"    <{key}>{value.strip(chr(34))}</{key}>")
    (folder / f"{L1_ID}_MTL.xml").write_text("\n".join([*xml, "</LANDSAT_METADATA_FILE>"]))
    bands, desc, when = landsat_bands(folder / f"{L1_ID}_MTL.xml")
    assert [b.name for b in bands] == ["B3", "B2", "B1"]  # Landsat 7 ETM+: red is B3
    assert {(b.scale, b.offset, b.nodata) for b in bands} == {(2e-05, -0.1, 0.0)}
    assert desc.startswith(f"Landsat 7 L1TP product {L1_ID}: red=B3, green=B2, blue=B1")
    assert when is not None and when.isoformat() == "2020-01-01T13:21:15.442182+00:00"
    bands, _, _ = landsat_bands(folder / f"{L1_ID}_MTL.xml", ("B4", "b3", "2"))
    assert [Path(b.path).name for b in bands] == [files[4], files[3], files[2]]


# ---------------------------------------------------------------- Sentinel-2

def test_sentinel2_safe_folder_and_zip_run_without_bands(bgr, reference, make_checkpoint,
                                                         tmp_path):
    safe = sentinel2_l2a(tmp_path / "s2", bgr)
    model = make_checkpoint(ngf=4, n_res=1)
    archive = shutil.make_archive(str(tmp_path / S2_SAFE.removesuffix(".SAFE")), "zip",
                                  safe.parent, safe.name)
    for source in (safe, Path(archive)):
        out = tmp_path / f"out_{source.suffix[1:]}.tif"
        result = invoke(source, out, "--model", model)
        assert result.exit_code == 0, result.output
        assert (f"input: Sentinel-2 L2A product {S2_SAFE} (baseline 05.00): red=B04, "
                "green=B03, blue=B02 (BOA reflectance = (DN -1000) / 10000, 0 -> nodata)"
                ) in result.stderr
        assert_same_grid(bgr, out)  # the 10 m files, not R20m
        with rasterio.open(out) as ds:
            np.testing.assert_array_equal(ds.read(), reference)
    assert zipfile.is_zipfile(archive)


def test_sentinel2_vrt_scaling_and_band_choice(bgr, tmp_path):
    safe = sentinel2_l2a(tmp_path, bgr)
    bands, _, when = sentinel2_bands(safe)
    assert [Path(b.path).name for b in bands] == [
        f"{S2_TILE}_{S2_STAMP}_{b}_10m.jp2" for b in ("B04", "B03", "B02")]
    assert when is not None and when.isoformat() == "2020-01-01T13:32:31.024000+00:00"
    with resolve_input(str(safe)) as resolved, rasterio.open(resolved.path) as ds:
        assert ds.nodatavals == (0.0,) * 3
        assert ds.scales == (1e-4,) * 3 and ds.offsets == (-0.1,) * 3  # (DN - 1000) / 1e4
    # a band that only exists at 20 m cannot be stacked with 10 m ones: a clear error
    for p in (safe / "GRANULE").rglob("*_B02_10m.jp2"):
        p.unlink()
    result = invoke(safe, tmp_path / "o.tif", "--model", "unused.pt")
    assert result.exit_code == 1
    assert "not on the same pixel grid" in result.stderr and "--assets" in result.stderr


def test_sentinel2_l1c_before_baseline_04_has_no_offset(bgr, tmp_path):
    """L1C: IMG_DATA holds one JP2 per band (no R10m/), QUANTIFICATION_VALUE, and before
    processing baseline 04.00 no RADIO_ADD_OFFSET: reflectance = DN / 10000."""
    name = f"S2B_MSIL1C_{S2_STAMP}_N0208_R081_{S2_TILE}_20200101T150000.SAFE"
    granule = f"L1C_{S2_TILE}_A014866_{S2_STAMP}"
    img = tmp_path / name / "GRANULE" / granule / "IMG_DATA"
    img.mkdir(parents=True)
    for band, src in (("B02", 1), ("B03", 2), ("B04", 3), ("B08", 3)):
        write_band(bgr, src, img / f"{S2_TILE}_{S2_STAMP}_{band}.jp2", driver="JP2OpenJPEG",
                   QUALITY="100", REVERSIBLE="YES")
    (img / f"{S2_TILE}_{S2_STAMP}_TCI.jp2").write_bytes(b"")  # the true-colour preview
    (tmp_path / name / "MTD_MSIL1C.xml").write_text(f"""<?xml version="1.0"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
<n1:General_Info><Product_Info>
<PRODUCT_START_TIME>2020-01-01T13:32:31.024Z</PRODUCT_START_TIME>
<PRODUCT_URI>{name}</PRODUCT_URI><PROCESSING_BASELINE>02.08</PROCESSING_BASELINE>
</Product_Info>
<Product_Image_Characteristics>
<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
</Product_Image_Characteristics></n1:General_Info></n1:Level-1C_User_Product>
""")
    bands, desc, _ = sentinel2_bands(tmp_path / name)
    assert [Path(b.path).name for b in bands] == [
        f"{S2_TILE}_{S2_STAMP}_{b}.jp2" for b in ("B04", "B03", "B02")]
    assert {(b.scale, b.offset, b.nodata) for b in bands} == {(1e-4, 0.0, 0.0)}
    assert desc.startswith(f"Sentinel-2 L1C product {name} (baseline 02.08): red=B04")
    assert "TOA reflectance = (DN +0) / 10000" in desc
    bands, _, _ = sentinel2_bands(tmp_path / name, ("8", "b04", "B03"))
    assert [b.name for b in bands] == ["B08", "B04", "B03"]
    with resolve_input(str(tmp_path / name), assets=("B08", "B04", "B03")) as resolved, \
            rasterio.open(resolved.path) as ds, rasterio.open(bgr) as src:
        np.testing.assert_array_equal(ds.read(), src.read((3, 3, 2)))  # lossless JP2


# ---------------------------------------------------------------- Sentinel-2 band folders

def _band_folder(root: Path, bgr: Path, style: str) -> Path:
    """A BigEarthNet-style (`<patch>_B02.tif`) or SSL4EO-style (`B2.tif`) folder of
    single-band files cut from the crop (bgr: B, G, R in bands 1-3), plus a NIR file."""
    root.mkdir(parents=True)
    for band, number in ((1, 2), (2, 3), (3, 4), (3, 8)):  # B08: any band, to be ignored
        name = f"{root.name}_B0{number}.tif" if style == "bigearthnet" else f"B{number}.tif"
        write_band(bgr, band, root / name)
    return root


def test_a_folder_of_sentinel2_band_files_is_one_input(bgr, reference, make_checkpoint,
                                                       tmp_path):
    """`pipeline run PATCH/ out.tif` on a BigEarthNet or SSL4EO patch folder: one scene, R,G,B
    = B04,B03,B02 with 0 as nodata, the same pixels as the stacked raster with --bands
    3,2,1; a directory of such folders gives one output per folder, and reruns skip them.
    (Before: the folder was a directory run over its band files, each failing.)"""
    model = make_checkpoint(ngf=4, n_res=1)
    folders = [_band_folder(tmp_path / "in" / "S2A_MSIL2A_20170617_36_85", bgr, "bigearthnet"),
               _band_folder(tmp_path / "in" / "T43RCP_20200604", bgr, "ssl4eo")]
    for folder in folders:
        out = tmp_path / f"{folder.name}.tif"
        result = invoke(folder, out, "--model", model)
        assert result.exit_code == 0, result.output
        assert "input: Sentinel-2 band files: red=B04, green=B03, blue=B02" in result.stderr
        assert_same_grid(bgr, out)
        with rasterio.open(out) as ds:
            np.testing.assert_array_equal(ds.read(), reference)
    outdir = tmp_path / "out"
    outdir.mkdir()
    for expected in ("2 done", "2 skipped"):  # the second run redoes nothing
        result = invoke(tmp_path / "in", outdir, "--model", model)
        assert result.exit_code == 0, result.output
        assert expected in result.output + result.stderr
    assert sorted(p.name for p in outdir.glob("*.tif")) == [f"{f.name}.tif" for f in
                                                            sorted(folders)]
