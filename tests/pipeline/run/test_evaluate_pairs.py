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
