"""Multispectral models in `pipeline run` (issue 21): bands picked by name, reflectance at
run time, one output band per polarisation.

The model (conftest `ms_checkpoint`: 4 -> 2, ngf 4, random weights) carries the contract
the trainer writes from `pipeline tiles --eo-bands red,green,blue,nir --eo-scale
reflectance --sar-pols VV,VH` data: it takes red, green, blue, nir reflectance ([0, 0.5]
-> [0, 1]) and gives VV and VH on dB ranges [-25, 0] and [-32.5, 0]. Every input kind
must give it those bands by name, with each product's own reflectance scale; rasters
that do not say which band is which are refused with one line naming the model's bands.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.config import PipelineConfig
from tests.helpers import L8, REPO, crop
from tests.products import landsat_l2, sentinel2_l2a, stac_item

BIGEARTHNET = (REPO / "tests" / "data" / "sentinel1" / "bigearthnet"
               / "S2A_MSIL2A_20170617T113321_36_85")
TILE = ("--tile-size", "64", "--overlap", "16")
MODEL_BANDS = "red, green, blue, nir"
DB_RANGES = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)}


def invoke(*args: object) -> object:
    return CliRunner().invoke(main, ["run", *map(str, args)])


def run_ok(inp: Path, out: Path, model: Path, *extra: object) -> object:
    res = invoke(inp, out, "--model", model, *TILE, "-q", *extra)
    assert res.exit_code == 0, res.output
    return res


def one_line_error(res: object, code: int = 1) -> str:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.strip().splitlines() if not ln.startswith("input: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


def check_vv_vh(out: Path, grid_of: Path, scale: str = "db") -> dict[str, str]:
    """The output on `grid_of`'s grid, two float32 bands VV and VH, NaN nodata, values in
    each polarisation's dB range; returns its tags."""
    with rasterio.open(grid_of) as ref, rasterio.open(out) as ds:
        assert ds.crs == ref.crs and ds.transform == ref.transform
        assert (ds.width, ds.height) == (ref.width, ref.height)
        assert ds.count == 2 and ds.dtypes == ("float32", "float32")
        assert math.isnan(ds.nodata)
        assert ds.descriptions == ("VV", "VH")
        data = ds.read()
        tags = ds.tags()
        if scale == "db":
            assert ds.units == ("dB", "dB")
    valid = ~np.isnan(data)
    assert valid[0].any() and (valid[0] == valid[1]).all()
    for band, pol in zip(data, ("VV", "VH"), strict=True):
        lo, hi = DB_RANGES[pol] if scale == "db" else (0.0, 1.0)
        values = band[~np.isnan(band)]
        assert values.min() >= lo and values.max() <= hi, pol
        assert values.std() > 0  # a real translation, not a constant
    assert tags["EO2SAR_POLARISATIONS"] == "VV,VH"
    return tags


def scaling(tags: dict[str, str]) -> dict:
    return json.loads(tags["EO2SAR_SCALING"])


@pytest.fixture(scope="module")
def l8_crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 x 96 px of the Landsat 8 scene (uint16 B, G, R), mostly valid."""
    return crop(L8, tmp_path_factory.mktemp("l8") / "bgr.tif", Window(900, 800, 128, 96))


def stack_bands(folder: Path, dst: Path, add: int = 0) -> Path:
    """A band folder's B02, B03, B04, B08 (blue, green, red, nir) as one 4-band uint16
    GeoTIFF without descriptions or scale, `add` added to every valid DN (the +1000 of
    Sentinel-2 processing baseline 04.00 and later)."""
    files = [next(folder.glob(f"*_{b}.tif")) for b in ("B02", "B03", "B04", "B08")]
    with rasterio.open(files[0]) as ds:
        profile = {**ds.profile, "count": 4, "tiled": False}
    data = []
    for f in files:
        with rasterio.open(f) as ds:
            band = ds.read(1)
        data.append(np.where(band > 0, band + add, 0).astype(np.uint16))
    with rasterio.open(dst, "w", **profile) as out:
        out.write(np.stack(data))
    return dst


@pytest.fixture(scope="module")
def bgrn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BigEarthNet's patch as one 4-band GeoTIFF: blue, green, red, nir (DN, x 1e-4 is
    reflectance), 120 x 120 px."""
    return stack_bands(BIGEARTHNET, tmp_path_factory.mktemp("bgrn") / "bgrn.tif")


def write_bands(src: Path, dst: Path, order: tuple[int, ...], descriptions=None,
                scale: float | None = None, offset: float = 0.0) -> Path:
    """`src`'s bands `order` as one GeoTIFF, with band descriptions and Scale/Offset."""
    with rasterio.open(src) as ds:
        profile = {**ds.profile, "count": len(order)}
        data = ds.read(list(order))
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        for i, d in enumerate(descriptions or (), 1):
            out.set_band_description(i, d)
        if scale is not None:
            out.scales = [scale] * len(order)
            out.offsets = [offset] * len(order)
    return dst


# ---------------------------------------------------------------- (a) a band folder


def test_band_folder_by_name_reflectance_and_vv_vh(ms_checkpoint: Path, tmp_path: Path) -> None:
    """BigEarthNet's folder (B02, B03, B04, B08) without naming any band: the model's
    red, green, blue, nir are B04, B03, B02, B08, at the folder's reflectance scale
    (DN x 1e-4: reflectance 0..0.5 is DN 0..5000); VV and VH each on its own dB range,
    and the STAC Item lists the polarisations."""
    out = tmp_path / "o.tif"
    run_ok(BIGEARTHNET, out, ms_checkpoint, "--output-scale", "db")
    b02 = next(BIGEARTHNET.glob("*_B02.tif"))
    tags = check_vv_vh(out, b02)
    assert tags["EO2SAR_BAND_NAMES"] == "red,green,blue,nir"
    s = scaling(tags)
    assert s["method"] == "reflectance"
    assert s["low"] == [0.0] * 4 and s["high"] == pytest.approx([5000.0] * 4)
    db = json.loads(tags["EO2SAR_DB_SCALE"])
    assert db["db_ranges"] == [[-25.0, 0.0], [-32.5, 0.0]] and db["from"] == "model"
    config = json.loads(tags["EO2SAR_CONFIG"])
    assert config["scale"] == "reflectance" and config["polarisations"] == ["VV", "VH"]
    item = json.loads(out.with_suffix(".stac.json").read_text())  # (g)
    assert item["properties"]["sar:polarizations"] == ["VV", "VH"]
    assert [b["name"] for b in item["assets"]["data"]["bands"]] == ["VV", "VH"]
    assert all(b["unit"] == "dB" for b in item["assets"]["data"]["bands"])
    # quicklook: the run's red, green, blue | VV | VH; view: a page (VV layer)
    png = tmp_path / "look.png"
    res = CliRunner().invoke(main, ["quicklook", str(BIGEARTHNET), str(out), str(png)])
    assert res.exit_code == 0, res.output
    with Image.open(png) as img:
        assert img.size[1] == 120 and img.size[0] > 3 * 120  # three panels and gaps
    res = CliRunner().invoke(main, ["view", str(out), "--out", str(tmp_path / "v.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "v.html").stat().st_size > 0


def test_polarisations_choose_bands_and_output_bands_3_is_refused(
        ms_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "vh.tif"
    run_ok(BIGEARTHNET, out, ms_checkpoint, "--output-scale", "db", "--polarisations", "VH")
    with rasterio.open(out) as ds:
        assert ds.count == 1 and ds.descriptions == ("VH",)
        vh = ds.read(1)
    both = tmp_path / "both.tif"
    run_ok(BIGEARTHNET, both, ms_checkpoint, "--output-scale", "db")
    with rasterio.open(both) as ds:  # the same VH band, whichever bands are written
        np.testing.assert_array_equal(ds.read(2), vh)
    line = one_line_error(invoke(BIGEARTHNET, tmp_path / "x.tif", "--model", ms_checkpoint,
                                 "--output-bands", "3"), 2)
    assert "VV, VH" in line and "--polarisations" in line
    line = one_line_error(invoke(BIGEARTHNET, tmp_path / "x.tif", "--model", ms_checkpoint,
                                 "--polarisations", "HH"), 2)
    assert "HH" in line and "VV, VH" in line
    assert not (tmp_path / "x.tif").exists()


# ---------------------------------------------------------------- (b) products


def test_sentinel2_safe_by_name_with_its_offset(ms_checkpoint: Path, tmp_path: Path) -> None:
    """A SAFE (baseline 05.00: BOA_ADD_OFFSET -1000): nir is B08 (10 m, the same grid as
    B02-B04), reflectance (DN - 1000) / 10000 -> reflectance 0..0.5 is DN 1000..6000."""
    src = stack_bands(BIGEARTHNET, tmp_path / "dn.tif", add=1000)
    safe = sentinel2_l2a(tmp_path, src, nir=True)
    out = tmp_path / "s2.tif"
    res = invoke(safe, out, "--model", ms_checkpoint, *TILE, "--output-scale", "db")
    assert res.exit_code == 0, res.output
    assert "red=B04, green=B03, blue=B02, nir=B08" in res.output
    tags = check_vv_vh(out, src)
    s = scaling(tags)
    assert s["method"] == "reflectance"
    assert s["low"] == pytest.approx([1000.0] * 4) and s["high"] == pytest.approx([6000.0] * 4)


def test_sentinel2_safe_without_nir_names_both_lists(ms_checkpoint: Path, l8_crop: Path,
                                                     tmp_path: Path) -> None:
    """(e) an input missing NIR: one line naming the model's bands and the input's."""
    safe = sentinel2_l2a(tmp_path, l8_crop)
    line = one_line_error(invoke(safe, tmp_path / "o.tif", "--model", ms_checkpoint), 2)
    assert f"the model takes bands {MODEL_BANDS}" in line
    assert "no nir" in line and "its bands: blue, green, red" in line
    assert not (tmp_path / "o.tif").exists()


def test_landsat_c2_l2_by_name_nir08_stands_in(ms_checkpoint: Path, l8_crop: Path,
                                               tmp_path: Path) -> None:
    """Landsat 8 (OLI table from the MTL's SPACECRAFT_ID): red B4, green B3, blue B2 and
    B5 (nir08) for nir, at Collection 2 L2's 2.75e-5 x DN - 0.2."""
    folder = landsat_l2(tmp_path, l8_crop)
    out = tmp_path / "l8.tif"
    res = invoke(folder, out, "--model", ms_checkpoint, *TILE, "--output-scale", "db")
    assert res.exit_code == 0, res.output
    assert "nir08=SR_B5" in res.output and "red=SR_B4" in res.output
    tags = check_vv_vh(out, l8_crop)
    s = scaling(tags)
    assert s["low"] == pytest.approx([0.2 / 2.75e-5] * 4)
    assert s["high"] == pytest.approx([0.7 / 2.75e-5] * 4)


def test_stac_item_by_common_names_with_raster_scale(ms_checkpoint: Path, bgrn: Path,
                                                     tmp_path: Path) -> None:
    """An Item whose assets name their bands (eo:bands common names; a nir asset) and
    carry raster:bands scale/offset: the model's bands in its order, that scale."""
    four = write_bands(bgrn, tmp_path / "four.tif", (3, 2, 1, 4))  # R, G, B, nir
    with rasterio.open(four) as ds:
        profile = {**ds.profile, "count": 1}
        data = ds.read()
    assets = {}
    for i, (key, common) in enumerate((("B04", "red"), ("B03", "green"), ("B02", "blue"),
                                       ("B08", "nir"))):
        with rasterio.open(tmp_path / f"{key}.tif", "w", **profile) as out:
            out.write(data[i], 1)
        assets[key] = (f"{key}.tif", common)
    item = stac_item(tmp_path / "item.json", assets)
    doc = json.loads(item.read_text())
    for asset in doc["assets"].values():
        asset["raster:bands"] = [{"scale": 0.0001, "offset": -0.01}]
    item.write_text(json.dumps(doc))
    out = tmp_path / "stac.tif"
    res = invoke(item, out, "--model", ms_checkpoint, *TILE)
    assert res.exit_code == 0, res.output
    assert "red=B04, green=B03, blue=B02, nir=B08" in res.output
    tags = check_vv_vh(out, four, scale="unit")
    assert scaling(tags)["low"] == pytest.approx([100.0] * 4)


# ---------------------------------------------------------------- (c), (d) GeoTIFFs


def test_geotiff_band_descriptions_pick_the_bands(ms_checkpoint: Path, bgrn: Path,
                                                  tmp_path: Path) -> None:
    """Descriptions in another order than the model's (nir first, then B/G/R ids and a
    common name): EO2SAR_BANDS records the numbers picked; the raster's own Scale."""
    tif = write_bands(bgrn, tmp_path / "desc.tif", (4, 1, 2, 3),
                      descriptions=("B08", "B2", "green", "red (B04)"), scale=1e-4)
    out = tmp_path / "o.tif"
    run_ok(tif, out, ms_checkpoint, "--output-scale", "db")
    tags = check_vv_vh(out, tif)
    assert tags["EO2SAR_BANDS"] == "4,3,2,1"
    assert scaling(tags)["high"] == pytest.approx([5000.0] * 4)


def test_geotiff_without_descriptions_needs_bands_and_scale(
        ms_checkpoint: Path, bgrn: Path, tmp_path: Path) -> None:
    """(d) no descriptions: one line naming the model's bands; --bands alone: one line
    asking for the reflectance scale; both: the run, at the declared scale."""
    tif = write_bands(bgrn, tmp_path / "plain.tif", (3, 2, 1, 4))
    out = tmp_path / "o.tif"
    line = one_line_error(invoke(tif, out, "--model", ms_checkpoint))
    assert MODEL_BANDS in line and "--bands" in line
    line = one_line_error(invoke(tif, out, "--model", ms_checkpoint, "--bands", "1,2,3"), 2)
    assert "the model takes 4" in line and MODEL_BANDS in line
    line = one_line_error(invoke(tif, out, "--model", ms_checkpoint, "--bands", "1,2,3,4"))
    assert "reflectance" in line and "--reflectance-scale" in line
    assert not out.exists()
    run_ok(tif, out, ms_checkpoint, "--bands", "1,2,3,4", "--reflectance-scale", "0.0001",
           "--output-scale", "db")
    tags = check_vv_vh(out, tif)
    assert scaling(tags)["high"] == pytest.approx([5000.0] * 4)
    assert json.loads(tags["EO2SAR_CONFIG"])["reflectance_scale"] == [0.0001, 0.0]


def test_geotiff_missing_nir_names_both_lists(ms_checkpoint: Path, bgrn: Path,
                                              tmp_path: Path) -> None:
    """(e) descriptions that lack a model band: one line naming both lists."""
    tif = write_bands(bgrn, tmp_path / "rgb.tif", (3, 2, 1),
                      descriptions=("B04", "B03", "B02"), scale=1e-4)
    line = one_line_error(invoke(tif, tmp_path / "o.tif", "--model", ms_checkpoint), 2)
    assert f"the model takes bands {MODEL_BANDS}" in line
    assert "its bands: red, green, blue" in line


# ---------------------------------------------------------------- config, app.py


def test_rgb_configs_hash_as_before() -> None:
    """The new settings enter the hash only when set: RGB outputs keep their hash."""
    out = PipelineConfig().output_dict()
    assert "polarisations" not in out and "reflectance_scale" not in out
    assert PipelineConfig(polarisations="vv,vh").output_dict()["polarisations"] == ["VV", "VH"]
    assert (PipelineConfig(reflectance_scale="0.0000275,-0.2").config_hash()
            != PipelineConfig().config_hash())


def test_app_refuses_a_multispectral_model_on_an_rgb_png(ms_checkpoint: Path,
                                                         tmp_path: Path) -> None:
    """(f) app.py: a 4-band model and an RGB PNG -> one error line naming the bands."""
    png = tmp_path / "eo.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(png)
    res = subprocess.run([sys.executable, str(REPO / "app.py"), "--model_path",
                          str(ms_checkpoint), "--img", str(png), "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, check=False)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"takes 4 bands ({MODEL_BANDS})" in res.stderr and "--bands" in res.stderr
    assert not list(tmp_path.glob("gen_sar_*"))


def test_app_runs_bands_of_a_geotiff_with_the_model_radiometry(
        ms_checkpoint: Path, bgrn: Path, tmp_path: Path) -> None:
    tif = write_bands(bgrn, tmp_path / "four.tif", (3, 2, 1, 4), scale=1e-4)
    res = subprocess.run([sys.executable, str(REPO / "app.py"), "--model_path",
                          str(ms_checkpoint), "--img", str(tif), "--bands", "1,2,3,4",
                          "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reflectance scaling" in res.stdout and "VV as gray" in res.stdout
    with Image.open(tmp_path / "gen_sar_four.png") as img:
        assert img.mode == "RGB" and img.size == (256, 256)


def test_directory_run_picks_by_name_and_reruns_skip(ms_checkpoint: Path,
                                                     tmp_path: Path) -> None:
    """A directory of band folders: each product stacked by name as a single run does,
    and the config hash the rerun compares is the one the run recorded (up to date)."""
    import shutil

    src = tmp_path / "in"
    shutil.copytree(BIGEARTHNET, src / BIGEARTHNET.name)
    out = tmp_path / "out"
    for _ in range(2):
        res = invoke(src, out, "--model", ms_checkpoint, *TILE, "-q", "--output-scale", "db")
        assert res.exit_code == 0, res.output
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    assert [s["status"] for s in report["scenes"]] == ["skipped"]
    check_vv_vh(out / f"{BIGEARTHNET.name}.tif", next(BIGEARTHNET.glob("*_B02.tif")))
