"""pipeline.run.evaluate_pairs and `python -m pipeline evaluate-pairs`: the metric math on
hand-made arrays (exact values), then small synthetic scene pairs built here: a 4-band
Sentinel-2-like optical raster (reflectance x 10000) with a dark, low-NIR lake, and a
Sentinel-1-like VV dB raster with dark water, on the same UTM grid."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.run import evaluate_pairs as ep

PX = 64
TRANSFORM = from_origin(500000.0, 5200000.0, 10.0, 10.0)
CRS = "EPSG:32633"
#: The lake: a disc of radius 14 px, 616 of 4096 pixels (15 %).
YY, XX = np.mgrid[:PX, :PX]
LAKE = np.hypot(XX - 24, YY - 30) < 14
REAL_WATER_DB, REAL_LAND_DB = -22.0, -8.0


def _write(path: Path, data: np.ndarray, dtype: str, transform: Any = TRANSFORM) -> Path:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=dtype, crs=CRS, transform=transform) as ds:
        ds.write(data.astype(dtype))
    return path


def _optical_bands() -> dict[str, np.ndarray]:
    """Reflectance x 10000: land vegetated (NIR 30 %, red 5 %) with a field of brighter
    soil, the lake dark in every band (NIR 2 %)."""
    field = (XX > 44).astype(float)
    red = np.where(LAKE, 300, 500 + 1500 * field)
    return {"B04": red, "B03": np.where(LAKE, 400, 700 + 1000 * field),
            "B02": np.where(LAKE, 500, 400 + 800 * field),
            "B08": np.where(LAKE, 200, 3000 - 500 * field)}


def _sar_db(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clean = np.where(LAKE, REAL_WATER_DB, REAL_LAND_DB - 3 * (XX > 44))
    return 10 * np.log10(10 ** (clean / 10) * rng.gamma(4.0, 0.25, clean.shape))  # 4-look


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    bands = _optical_bands()
    stack = np.stack([bands[k] for k in ("B04", "B03", "B02", "B08")])
    folder = root / "S2_tile"
    folder.mkdir()
    for k, v in bands.items():
        _write(folder / f"S2A_MSIL2A_x_{k}.tif", v, "uint16")
    sar_dir = root / "S1_tile"
    sar_dir.mkdir()
    return {"raster": _write(root / "s2_rgbn.tif", stack, "uint16"), "folder": folder,
            "sar": _write(sar_dir / "S1A_x_VV.tif", _sar_db(), "float32"),
            "sar_dir": sar_dir, "root": root}


# ----------------------------------------------------------------------------------------
# Metric math on hand-made arrays


def test_water_land_contrast_ratio_is_exact_on_known_values() -> None:
    nir = np.where(LAKE, 0.02, 0.3)
    valid = np.ones_like(LAKE)
    sar_db = np.where(LAKE, -20.0, -10.0)  # unit on [-25, 0]: water 0.2, land 0.6
    out = np.where(LAKE, 0.2, 0.6)  # exactly the real contrast
    r = ep.water_land_contrast(out, sar_db, nir, valid)
    assert r["water_fraction"] == LAKE.mean()
    assert r["real_contrast_unit"] == pytest.approx(0.4, abs=1e-12)
    assert r["real_contrast_db"] == pytest.approx(10.0, abs=1e-12)
    assert r["ratio"] == pytest.approx(1.0, abs=1e-12) and r["skipped"] is None
    r = ep.water_land_contrast(np.where(LAKE, 0.3, 0.5), sar_db, nir, valid)  # half of it
    assert r["ratio"] == pytest.approx(0.5, abs=1e-12)
    r = ep.water_land_contrast(np.where(LAKE, 0.7, 0.5), sar_db, nir, valid)  # bright water
    assert r["ratio"] == pytest.approx(-0.5, abs=1e-12)
    # Invalid pixels do not count: hide the lake's left half behind NaN in the output.
    out_nan = np.where(LAKE & (XX < 24), np.nan, np.where(LAKE, 0.2, 0.6))
    r = ep.water_land_contrast(out_nan, sar_db, nir, valid)
    assert r["ratio"] == pytest.approx(1.0, abs=1e-12)
    assert r["water_fraction"] < LAKE.mean()


def test_water_check_is_skipped_when_it_cannot_be_measured() -> None:
    valid = np.ones((PX, PX), bool)
    sar_db = np.where(LAKE, -20.0, -10.0)
    out = np.where(LAKE, 0.2, 0.6)
    puddle = np.zeros((PX, PX), bool)
    puddle[:4, :4] = True  # 16 / 4096 = 0.4 % < 1 %
    r = ep.water_land_contrast(out, sar_db, np.where(puddle, 0.02, 0.3), valid)
    assert r["ratio"] is None and "too few water pixels (0.39% water" in r["skipped"]
    r = ep.water_land_contrast(out, sar_db, np.full((PX, PX), 0.02), valid)
    assert r["ratio"] is None and "too few land" in r["skipped"]
    r = ep.water_land_contrast(out, np.where(LAKE, -5.0, -10.0), np.where(LAKE, 0.02, 0.3),
                               valid)
    assert r["ratio"] is None and "does not show water darker" in r["skipped"]


def test_masked_box_corr() -> None:
    rng = np.random.default_rng(1)
    b = rng.random((40, 40))
    valid = np.ones((40, 40), bool)
    assert ep.masked_box_corr(2 * b + 3, b, valid) == pytest.approx(1.0, abs=1e-12)
    assert ep.masked_box_corr(-b, b, valid) == pytest.approx(-1.0, abs=1e-12)
    # A wild fill value on an invalid pixel: every window holding it is left out.
    a = 2 * b + 3
    a[20, 20], valid[20, 20] = 1e6, False
    assert ep.masked_box_corr(a, b, valid) == pytest.approx(1.0, abs=1e-12)
    # Equal to the plain box-filtered Pearson when all is valid.
    from ugatit import metrics
    c = rng.random((40, 40))
    assert ep.masked_box_corr(c, b, np.ones((40, 40), bool)) == pytest.approx(
        metrics.box_pearson(c, b)[0], abs=1e-12)
    assert math.isnan(ep.masked_box_corr(c, b, np.zeros((40, 40), bool)))


def test_output_on_real_grid() -> None:
    u = np.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(ep.output_on_real_grid(u, (-25.0, 0.0)), u, atol=1e-15)
    np.testing.assert_allclose(ep.output_on_real_grid(u, None), u)  # relative dB: as is
    # [-30, 5] dB -> -30 (clipped to 0), -12.5 (0.5), 5 (clipped to 1) on [-25, 0].
    np.testing.assert_allclose(ep.output_on_real_grid(u, (-30.0, 5.0)), [0.0, 0.5, 1.0],
                               atol=1e-15)


# ----------------------------------------------------------------------------------------
# Whole pairs


def _known_output(values: Callable[[Path], np.ndarray]) -> Callable[..., None]:
    """A stand-in for run_scene that writes ``values(input)`` as the unit-scale output on
    the input's grid: the metric path with an output we know."""

    def run(inp: Path, out: Path, **kwargs: Any) -> None:
        assert kwargs["config"].output_scale == "unit"
        with rasterio.open(inp) as ds:
            profile = {"driver": "GTiff", "width": ds.width, "height": ds.height, "count": 1,
                       "dtype": "float32", "crs": ds.crs, "transform": ds.transform}
        with rasterio.open(out, "w", **profile) as ds:
            ds.write(values(inp).astype(np.float32)[None])

    return run


def test_known_output_gives_known_numbers(scene: dict[str, Path],
                                          tiny_checkpoint: Path) -> None:
    """Output = the real VV itself on the [-25, 0] grid: contrast ratio 1, corr9 1, and the
    red band's correlation beside it."""
    real = np.clip((_sar_db() + 25) / 25, 0, 1)
    rep = ep.evaluate_pairs([ep.Pair(scene["folder"], scene["sar_dir"])], tiny_checkpoint,
                            {}, ep.OpticalOptions(), run_scene=_known_output(lambda p: real))
    row = rep["pairs"][0]
    # The output is clipped to [-25, 0] dB, the real VV is not (a few 4-look speckle values
    # on the lake dip under -25 dB): just under 1.
    assert row["corr9_output"] == pytest.approx(1.0, abs=1e-3)
    # The ratio compares both on the clipped [-25, 0] grid: exact up to float32 storage.
    assert row["water"]["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert row["water"]["water_fraction"] == LAKE.mean()
    # The red band is dark on the lake and bright on the soil field where the SAR is
    # darker: a real but partial correlation with the VV.
    assert 0 < row["corr9_red"] < 0.9
    assert row["corr9_gain"] == pytest.approx(row["corr9_output"] - row["corr9_red"],
                                              abs=1e-12)
    assert row["ssim"] == pytest.approx(1.0, abs=1e-5) and row["psnr"] > 60
    assert rep["acceptance"]["water_passed"] and rep["acceptance"]["corr9_passed"]
    # A flat output: no contrast (ratio 0), no correlation defined.
    rep = ep.evaluate_pairs([ep.Pair(scene["folder"], scene["sar_dir"])], tiny_checkpoint,
                            {}, ep.OpticalOptions(),
                            run_scene=_known_output(lambda p: np.full((PX, PX), 0.4)))
    row = rep["pairs"][0]
    assert row["water"]["ratio"] == pytest.approx(0.0, abs=1e-7)
    assert row["corr9_output"] is None or math.isnan(row["corr9_output"])
    assert rep["acceptance"]["water_passed"] is False


def test_tiny_model_through_the_scene_pipeline(scene: dict[str, Path], tiny_checkpoint: Path,
                                               tmp_path: Path) -> None:
    """A folder of band files and the same bands stacked in one raster (--nir-band 4) give
    the same numbers: the same pixels go through the same pipeline."""
    opts = ep.OpticalOptions()
    a = ep.evaluate_pairs([ep.Pair(scene["folder"], scene["sar_dir"])], tiny_checkpoint,
                          {"device": "cpu"}, opts, keep=tmp_path / "keep")
    b = ep.evaluate_pairs([ep.Pair(scene["raster"], scene["sar"])], tiny_checkpoint,
                          {"device": "cpu"}, ep.OpticalOptions(nir_band=4))
    ra, rb = a["pairs"][0], b["pairs"][0]
    for key in ("corr9_output", "corr9_red", "ssim", "psnr"):
        assert math.isfinite(ra[key]) and ra[key] == pytest.approx(rb[key], abs=1e-9), key
    assert ra["water"]["ratio"] == pytest.approx(rb["water"]["ratio"], abs=1e-9)
    assert ra["water"]["water_fraction"] == LAKE.mean()
    with rasterio.open(ra["output"]) as ds:  # kept, on the optical grid
        assert (ds.width, ds.height, ds.transform) == (PX, PX, TRANSFORM)
    # Without NIR: the water check is skipped, the rest stays.
    c = ep.evaluate_pairs([ep.Pair(scene["raster"], scene["sar"])], tiny_checkpoint, {},
                          ep.OpticalOptions())
    assert c["pairs"][0]["water"]["ratio"] is None and "no NIR" in \
        c["pairs"][0]["water"]["skipped"]
    assert c["pairs"][0]["corr9_output"] == pytest.approx(ra["corr9_output"], abs=1e-9)


def test_sar_on_another_grid_needs_resample(scene: dict[str, Path], tiny_checkpoint: Path,
                                            tmp_path: Path) -> None:
    """A SAR on a grid shifted by half a pixel and 1 % coarser (as SSL4EO's): an error
    with the hint, or reprojected onto the optical grid with --resample-sar."""
    t = from_origin(500000.0 - 5.0, 5200000.0 + 5.0, 10.1, 10.1)
    other = _write(tmp_path / "vv_other.tif", _sar_db(), "float32", transform=t)
    pair = [ep.Pair(scene["folder"], other)]
    with pytest.raises(InputError, match="differs from the optical grid") as err:
        ep.evaluate_pairs(pair, tiny_checkpoint, {}, ep.OpticalOptions())
    assert "--resample-sar" in (err.value.hint or "")
    real = np.clip((_sar_db() + 25) / 25, 0, 1)
    rep = ep.evaluate_pairs(pair, tiny_checkpoint, {}, ep.OpticalOptions(), resample=True,
                            run_scene=_known_output(lambda p: real))
    row = rep["pairs"][0]
    # Reprojected, the lake still lines up within a pixel: strong but not perfect
    # correlation, water still far darker.
    assert 0.8 < row["corr9_output"] < 1.0
    assert row["water"]["ratio"] > 0.8


def test_cli_table_json_and_errors(scene: dict[str, Path], tiny_checkpoint: Path,
                                   tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["evaluate-pairs", "--model", str(tiny_checkpoint),
                                    "--pair", str(scene["folder"]), str(scene["sar_dir"]),
                                    "--pair", str(scene["raster"]), str(scene["sar"]),
                                    "--nir-band", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    for text in ("corr9 model", "corr9 red", "water ratio", "mean", "issue 14:"):
        assert text in res.output
    rep = json.loads(out.read_text())
    assert len(rep["pairs"]) == 2 and rep["definitions"]["box_px"] == 9
    assert rep["mean"]["corr9_gain"] == pytest.approx(
        np.mean([r["corr9_gain"] for r in rep["pairs"]]), abs=1e-12)
    (scene["root"] / "empty").mkdir(exist_ok=True)
    res = CliRunner().invoke(main, ["evaluate-pairs", "--model", str(tiny_checkpoint),
                                    "--pair", str(scene["root"] / "empty"),
                                    str(scene["sar"]), "--json", str(tmp_path / "x.json")])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and "no band file(s) for B04" in lines[0] and "Hint:" in lines[0]
    assert not (tmp_path / "x.json").exists()


def test_band_folder_without_nir_and_ssl4eo_names(tmp_path: Path,
                                                  tiny_checkpoint: Path) -> None:
    """SSL4EO spells bands B4.tif; --band-files of three names has no NIR: no water check."""
    bands = _optical_bands()
    for k in ("B04", "B03", "B02"):
        _write(tmp_path / f"B{int(k[1:])}.tif", bands[k], "uint16")
    sar = _write(tmp_path / "vv.tif", _sar_db(), "float32")
    real = np.clip((_sar_db() + 25) / 25, 0, 1)
    rep = ep.evaluate_pairs([ep.Pair(tmp_path, sar)], tiny_checkpoint, {},
                            ep.OpticalOptions(band_names=("B04", "B03", "B02")),
                            run_scene=_known_output(lambda p: real))
    row = rep["pairs"][0]
    assert row["water"]["ratio"] is None and "no NIR" in row["water"]["skipped"]
    assert row["corr9_output"] == pytest.approx(1.0, abs=1e-3)
    assert rep["acceptance"]["water_passed"] is None


# ----------------------------------------------------------------------------------------
# Baselines: single bands and indices, best single, linear regression; VH


def _smooth_scene(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Independent smooth reflectance fields stored as DN (x 10000, uint16), and SAR dB as
    exact functions of the stored reflectance: VV = -10 - 8 NDWI + 3 NIR (mostly -NDWI),
    VH = -22 + 8 NDVI."""
    rng = np.random.default_rng(seed)

    def field(lo: float, hi: float) -> np.ndarray:
        fx, fy, px, py = rng.uniform(0.05, 0.2, 2).tolist() + rng.uniform(0, 6, 2).tolist()
        v = lo + (hi - lo) * (0.5 + 0.25 * np.sin(fx * XX + px) + 0.25 * np.cos(fy * YY + py))
        return np.round(v * 10000)

    dn = {"B04": field(0.03, 0.2), "B03": field(0.05, 0.15), "B02": field(0.02, 0.12),
          "B08": field(0.04, 0.4)}
    r = {k: v / 10000 for k, v in dn.items()}
    ndwi = (r["B03"] - r["B08"]) / (r["B03"] + r["B08"])
    ndvi = (r["B08"] - r["B04"]) / (r["B08"] + r["B04"])
    return dn, -10.0 - 8.0 * ndwi + 3.0 * r["B08"], -22.0 + 8.0 * ndvi


def _write_smooth_pair(root: Path, seed: int) -> ep.Pair:
    dn, vv, vh = _smooth_scene(seed)
    s2, s1 = root / f"S2_{seed}", root / f"S1_{seed}"
    s2.mkdir(parents=True)
    s1.mkdir(parents=True)
    for k, v in dn.items():
        _write(s2 / f"x_{k}.tif", v, "uint16")
    _write(s1 / f"x_{seed}_VV.tif", vv, "float32")
    _write(s1 / f"x_{seed}_VH.tif", vh, "float32")
    return ep.Pair(s2, s1)


def test_baselines_reach_the_known_answers_on_scene_pairs(tmp_path: Path) -> None:
    fit = [_write_smooth_pair(tmp_path, 1), _write_smooth_pair(tmp_path, 2)]
    pair = _write_smooth_pair(tmp_path, 3)
    rep = ep.evaluate_pairs([pair], None, {}, ep.OpticalOptions(), fit_pairs=fit)
    row = rep["pairs"][0]
    vv, vh = row["polarisations"]["VV"]["baselines"], row["polarisations"]["VH"]["baselines"]
    assert row["polarisations"]["VH"]["sar"].endswith("x_3_VH.tif")  # found beside the VV
    # VH is affine in NDVI: corr9 1 (the float32 SAR raster rounds the dB at ~1e-6)
    assert vh["ndvi"] == pytest.approx(1.0, abs=1e-5)
    assert rep["fit"]["VH"]["best_single"] == "ndvi" and rep["fit"]["VH"]["sign"] == 1
    # VV is mostly -NDWI: NDWI's corr9 is negative, the best single is -ndwi, its value
    # minus NDWI's; chosen on the fitting pairs (their mean corr9 for ndwi is negative)
    assert vv["ndwi"] < -0.9
    assert rep["fit"]["VV"]["best_single"] == "ndwi" and rep["fit"]["VV"]["sign"] == -1
    assert rep["fit"]["VV"]["fit_corr9"]["ndwi"] < -0.9
    assert vv["best_single"] == pytest.approx(-vv["ndwi"], abs=1e-12)
    # The regression, fitted on two other scenes, holds both relations exactly.
    assert vv["linear"] == pytest.approx(1.0, abs=1e-5)
    assert vh["linear"] == pytest.approx(1.0, abs=1e-5)
    c = rep["fit"]["VV"]["coef_db"]
    assert (c["intercept"], c["ndwi"], c["nir"]) == pytest.approx((-10.0, -8.0, 3.0), abs=1e-3)
    assert rep["mean"]["polarisations"]["VV"]["baselines"]["linear"] == vv["linear"]
    # Baselines only: no model numbers, no verdict.
    assert row["corr9_output"] is None and rep["acceptance"]["corr9_passed"] is None
    text = ep.format_table(rep)
    assert "best single VV: -ndwi" in text and "issue 14" not in text
    assert "corr9 model" not in text  # the model table is left out
    # Without fitting pairs the fitted baselines are left out, with a note.
    rep = ep.evaluate_pairs([pair], None, {}, ep.OpticalOptions(), pols=("VV",))
    assert set(rep["pairs"][0]["polarisations"]) == {"VV"}  # --pols VV: no VH
    assert set(rep["pairs"][0]["polarisations"]["VV"]["baselines"]) == {
        "red", "nir", "ndvi", "ndwi"}
    assert any("no fitting pairs" in n for n in rep["notes"])


def test_fit_on_a_multiband_tile_dataset_applies_to_scenes(tmp_path: Path) -> None:
    """The regression is fitted in physical units (reflectance, dB), so one fitted on
    `pipeline tiles` training pairs (unit scale: reflectance / 0.5; dB by dataset.json's
    ranges) predicts a scene's dB."""
    import tifffile

    ds = tmp_path / "ds"
    for d in ("trainA", "trainB"):
        (ds / d).mkdir(parents=True)
    for seed in (4, 5):
        dn, vv, vh = _smooth_scene(seed)
        eo = np.stack([dn[k] / 10000 / 0.5 for k in ("B04", "B03", "B02", "B08")])
        sar = np.stack([(vv + 25) / 25, (vh + 32.5) / 32.5])
        tifffile.imwrite(ds / "trainA" / f"t{seed}.tif", eo.astype(np.float32),
                         photometric="minisblack")
        tifffile.imwrite(ds / "trainB" / f"t{seed}.tif", sar.astype(np.float32),
                         photometric="minisblack")
    (ds / "dataset.json").write_text(json.dumps({"radiometry": {
        "eo": {"method": "reflectance", "common_names": ["red", "green", "blue", "nir"],
               "reflectance_range": [0.0, 0.5]},
        "sar": {"polarisations": ["VV", "VH"], "db_ranges": [[-25, 0], [-32.5, 0]]}}}))
    fitted = ep.fit_on_tiles(ds, ("VV", "VH"))
    # float32 unit tiles: the dB to ~2e-6 of 25 dB; coefficients to 1e-3
    coef = dict(zip(["intercept", *ep.LINEAR_FEATURES], fitted["VH"].coef, strict=True))
    assert coef["intercept"] == pytest.approx(-22.0, abs=1e-3)
    assert coef["ndvi"] == pytest.approx(8.0, abs=1e-3)
    pair = _write_smooth_pair(tmp_path, 3)
    rep = ep.evaluate_pairs([pair], None, {}, ep.OpticalOptions(), fit_tiles=ds)
    for pol in ("VV", "VH"):
        assert rep["pairs"][0]["polarisations"][pol]["baselines"]["linear"] == \
            pytest.approx(1.0, abs=1e-5)
    assert "--fit-tiles" in rep["fit"]["source"]
    with pytest.raises(InputError, match="not a reflectance tile set"):
        (ds / "dataset.json").write_text(json.dumps({"radiometry": {"sar": {}}}))
        ep.fit_on_tiles(ds, ("VV",))


def test_water_contrast_per_polarisation_and_of_the_linear_baseline(
        scene: dict[str, Path], tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The lake scene with a VH beside the VV. A two-band stand-in output equal to the real
    VV and VH (each on its own grid): water ratio 1 in both. The linear baseline fitted on
    the same scene with another speckle draw predicts each class's mean dB: its water
    ratio is ~1 (class means of 600+ 4-look pixels: ~0.1 dB off, against 14 dB)."""
    vh_db = _sar_db(seed=3) - 7.0
    for d, seed in (("s1_report", 0), ("s1_fit", 1)):
        (tmp_path / d).mkdir()
        _write(tmp_path / d / "x_VV.tif", _sar_db(seed), "float32")
        _write(tmp_path / d / "x_VH.tif", vh_db if seed == 0 else _sar_db(4) - 7.0,
               "float32")

    def run(inp: Path, out: Path, **kwargs: Any) -> None:
        with rasterio.open(inp) as ds:
            profile = {"driver": "GTiff", "width": ds.width, "height": ds.height,
                       "count": 2, "dtype": "float32", "crs": ds.crs,
                       "transform": ds.transform}
        bands = np.stack([np.clip((_sar_db() + 25) / 25, 0, 1),
                          np.clip((vh_db + 32.5) / 32.5, 0, 1)])
        with rasterio.open(out, "w", **profile) as ds:
            ds.write(bands.astype(np.float32))

    rep = ep.evaluate_pairs([ep.Pair(scene["folder"], tmp_path / "s1_report")],
                            tiny_checkpoint, {}, ep.OpticalOptions(), run_scene=run,
                            fit_pairs=[ep.Pair(scene["folder"], tmp_path / "s1_fit")])
    pols = rep["pairs"][0]["polarisations"]
    assert pols["VV"]["water"]["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert pols["VH"]["water"]["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert pols["VH"]["real_db_range"] == [-32.5, 0.0]
    assert pols["VH"]["corr9_output"] == pytest.approx(1.0, abs=1e-3)
    for pol in ("VV", "VH"):
        assert pols[pol]["water_linear"]["ratio"] == pytest.approx(1.0, abs=0.05)
    assert rep["mean"]["polarisations"]["VH"]["water_ratio"] == pytest.approx(1.0, abs=1e-6)
    # the VV numbers at the top level are what they were (issue 14's acceptance)
    assert rep["pairs"][0]["water"] == pols["VV"]["water"]


def test_find_vh_beside_the_vv(tmp_path: Path) -> None:
    vv = _write(tmp_path / "S1A_x_VV.tif", _sar_db(), "float32")
    assert ep.find_vh(vv, vv) is None and ep.find_vh(tmp_path, vv) is None
    vh = _write(tmp_path / "S1A_x_VH.tif", _sar_db(), "float32")
    assert ep.find_vh(vv, vv) == vh and ep.find_vh(tmp_path, vv) == vh
    _write(tmp_path / "other_VH.tif", _sar_db(), "float32")
    with pytest.raises(InputError, match="2 \\*VH.tif"):
        ep.find_vh(tmp_path, vv)


def test_cli_baselines_only_with_fit_pairs(tmp_path: Path) -> None:
    fit = _write_smooth_pair(tmp_path, 1)
    pair = _write_smooth_pair(tmp_path, 3)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["evaluate-pairs", "--pair", str(pair.optical),
                                    str(pair.sar), "--fit-pair", str(fit.optical),
                                    str(fit.sar), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "best single VV: -ndwi" in res.output and "linear" in res.output
    rep = json.loads(out.read_text())
    assert rep["model"] is None and rep["fit"]["VV"]["sign"] == -1
    res = CliRunner().invoke(main, ["evaluate-pairs", "--pair", str(pair.optical),
                                    str(pair.sar), "--pols", "HH", "--json", str(out)])
    assert res.exit_code != 0 and "--pols" in res.output


def test_a_multispectral_model_runs_on_the_band_folder_as_given(
        ms_checkpoint: Path, tmp_path: Path) -> None:
    """A 4 -> 2 model (red, green, blue, nir in; VV, VH out) is run on the pair's band
    folder itself, so `pipeline run` picks its bands by name with the folder's
    reflectance scale: the kept output is what `pipeline run FOLDER` writes, and both
    polarisations are scored against the real VV and VH."""
    from pipeline import load_config, run_scene

    ben = Path(__file__).resolve().parents[2] / "data" / "sentinel1" / "bigearthnet"
    pair = ep.Pair(ben / "S2A_MSIL2A_20170617T113321_36_85",
                   ben / "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85")
    report = ep.evaluate_pairs([pair], ms_checkpoint, {}, ep.OpticalOptions(),
                               keep=tmp_path / "kept")
    row = report["pairs"][0]
    assert {"VV", "VH"} <= set(row["polarisations"])
    assert all(math.isfinite(row["polarisations"][p]["corr9_output"]) for p in ("VV", "VH"))
    direct = tmp_path / "direct.tif"
    run_scene(pair.optical, direct, model_path=ms_checkpoint,
              config=load_config(None, {"output_scale": "unit"}), progress=False)
    with rasterio.open(row["output"]) as a, rasterio.open(direct) as b:
        assert a.count == b.count == 2 and np.array_equal(a.read(), b.read())
