"""`pipeline tiles`: the training-tile builder, on small crops of the bundled real rasters
(written in tmp_path with their georeferencing) and the bundled SAR patches.

What is asserted, and why the tolerances:
  * an EO tile is what `pipeline run` feeds the model for the same pixels, to within half
    an 8-bit step (the PNG rounds unit * 255): one of the "four entry points, one input"
    checks;
  * SAR tiles hold exactly round(255 * unit) of the dB value (same float64 formula);
  * footprints: bounds equal rasterio.warp.transform_bounds within 1e-6 deg (our polygon
    samples each edge at 5 points, GDAL at 21, and rounds to 1e-9 deg: measured <= 5e-10);
  * the split never puts overlapping tiles on both sides (stride < tile size);
  * a rerun writes nothing and leaves the metadata byte-identical.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import rasterio.windows
from click.testing import CliRunner
from PIL import Image
from rasterio.windows import Window

from pipeline import load_config
from pipeline.cli import main
from pipeline.dataset.geometry import choose_test_blocks, window_split
from pipeline.dataset.tiles import MIN_TILE_STD, TilesConfig, build_tiles
from pipeline.errors import ConfigError, InputError, PipelineWarning
from pipeline.inputs.radiometry import sar_to_uint8, to_model_input
from pipeline.run.plan import SceneRequest, plan_scene
from pipeline.run.tiling import read_tile
from tests.helpers import DATA, crop

L8 = DATA / "l8_224078_parana_bgr_uint16.tif"
HAITI = DATA / "haiti_rgbn_uint8.tif"
PAN = DATA / "sn6_rotterdam_wv2_pan_uint16.tif"
SN6_EO = DATA / "sn6_rotterdam_eo_rgb.tif"
SN6_SAR = DATA / "sn6_rotterdam_sar_quadpol_db.tif"
S1 = DATA / "s1_labrador_dualpol_intensity.tif"
AIRSAR = DATA / "airsar_sanfrancisco_fullpol_intensity.tif"


@pytest.fixture(scope="module")
def l8_crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320 x 256 px of the Landsat 8 scene's top-left corner: its zero collar (fill,
    no nodata tag) and real land, bands stored B,G,R."""
    return crop(L8, tmp_path_factory.mktemp("l8") / "l8_corner.tif", Window(0, 0, 320, 256))


def build(out: Path, **kw) -> object:
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PipelineWarning)
        return build_tiles(TilesConfig(out=out, **kw))


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def features(out: Path) -> list[dict]:
    doc = json.loads((out / "index.geojson").read_text())
    assert doc["type"] == "FeatureCollection"
    return doc["features"]


# ---------------------------------------------------------------------------------------
# EO


def test_eo_tiles_are_what_pipeline_run_feeds_the_model(
    l8_crop: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "ds"
    report = build(out, eo=(l8_crop,), eo_bands=(3, 2, 1), tile_size=64, test_fraction=0.5)
    written = sorted(out.glob("*A/*.png"))
    assert report.written == len(written) > 5
    # The scaling exactly as a `pipeline run` of this scene computes it (plan_scene), and
    # its tile reader + model-input function.
    cfg = load_config(None, {"bands": (3, 2, 1), "tile_size": 64, "overlap": 16})
    _, job = plan_scene(SceneRequest(l8_crop, tmp_path / "run.tif", tiny_checkpoint, cfg))
    by_file = {f["properties"]["file"]: f["properties"] for f in features(out)}
    with rasterio.open(l8_crop) as ds:
        for path in written:
            w = by_file[f"{path.parent.name}/{path.name}"]["window"]
            data, valid, _ = read_tile(ds, job.bands, w["row_off"], w["col_off"], 64)
            expected = to_model_input(data, valid, job.scaling).transpose(1, 2, 0)
            got = png(path).astype(np.float64) / 255 * 2 - 1
            # half an 8-bit step is 1/255 in model units; float32 rounding on top
            assert np.abs(got - expected).max() <= 1 / 255 + 1e-6
            assert (png(path)[~valid] == 0).all()


def test_collar_tiles_dropped_and_valid_fraction_recorded(l8_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    report = build(out, eo=(l8_crop,), eo_bands=(3, 2, 1), tile_size=64, min_valid=0.9)
    (stats,) = report.scenes
    assert stats.validity > 0  # the corner tiles are mostly zero collar
    for f in features(out):
        assert f["properties"]["valid_fraction"] >= 0.9


def test_eo_band_defaults_and_errors(tmp_path: Path) -> None:
    pan = crop(PAN, tmp_path / "pan.tif", Window(0, 0, 128, 128))
    report = build(tmp_path / "ds", eo=(pan,), tile_size=64, test_fraction=0.0)
    assert report.written == 4
    tile = png(next((tmp_path / "ds" / "trainA").glob("*.png")))
    assert (tile[..., 0] == tile[..., 1]).all() and (tile[..., 1] == tile[..., 2]).all()
    with pytest.raises(InputError, match="has 4 bands") as err:
        build(tmp_path / "ds2", eo=(HAITI,), tile_size=64)
    assert err.value.path == str(HAITI) and "--eo-bands" in err.value.format()
    assert not (tmp_path / "ds2").exists()  # refused before anything was written


def test_declared_size_is_checked_before_reading(tmp_path: Path, l8_crop: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A header declaring more samples than a run accepts (a damaged file, fuzzed in
    tests/faults) is refused by the tile builder before any pixel is read, as by `run`."""
    from pipeline.run import checks

    monkeypatch.setattr(checks, "MAX_SCENE_SAMPLES", 320 * 256 * 3 - 1)
    with pytest.raises(InputError, match="declares 320 x 256 px x 3 bands"):
        build(tmp_path / "ds", eo=(l8_crop,), tile_size=64, eo_bands=(3, 2, 1))
    assert not (tmp_path / "ds").exists()


def test_near_constant_tiles_are_skipped(tmp_path: Path) -> None:
    """A flat tile (std < MIN_TILE_STD levels) is skipped even though it is valid."""
    path = tmp_path / "flat.tif"
    data = np.full((3, 64, 128), 100, np.uint8)
    rng = np.random.default_rng(0)
    data[:, :, 64:] = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    data[:, :, :64] += rng.integers(0, 2, (3, 64, 64), dtype=np.uint8)  # std 0.5 < 2
    with rasterio.open(path, "w", driver="GTiff", width=128, height=64, count=3, dtype="uint8",
                       crs="EPSG:32631", transform=rasterio.Affine(1, 0, 5e5, 0, -1, 5e6)) as ds:
        ds.write(data)
    report = build(tmp_path / "ds", eo=(path,), tile_size=64, test_fraction=0.0)
    assert (report.scenes[0].constant, report.written) == (1, 1)
    # the trainer's own near-constant threshold ([-1, 1] units) in 8-bit levels: no tile is
    # written that `ugatit train` would then skip
    from ugatit.train import TrainConfig

    assert MIN_TILE_STD == pytest.approx(TrainConfig().min_std * 255 / 2)


# ---------------------------------------------------------------------------------------
# SAR


def test_sar_tiles_values_and_no_georeferencing(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    report = build(out, sar=(AIRSAR,), sar_units="linear", tile_size=128, test_fraction=0.0)
    assert any("not georeferenced" in w for w in report.warnings)
    assert report.written == 4
    with rasterio.open(AIRSAR) as ds:
        raw = ds.read(1)
    expected, _ = sar_to_uint8(raw, "linear", (-25.0, 0.0))
    for f in features(out):
        assert f["geometry"] is None and f["properties"]["crs"] is None
        w = f["properties"]["window"]
        tile = png(out / f["properties"]["file"])
        win = expected[w["row_off"]:w["row_off"] + 128, w["col_off"]:w["col_off"] + 128]
        for c in range(3):
            assert np.array_equal(tile[..., c], win)
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["radiometry"]["sar"] == {"units": "linear", "band": 1, "db_range": [-25.0, 0.0],
                                        "db_scale": "absolute"}


def test_sar_auto_range_recorded_per_scene(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    build(out, sar=(S1, AIRSAR), sar_db_range=None, tile_size=128, test_fraction=0.0)
    sar = json.loads((out / "dataset.json").read_text())["radiometry"]["sar"]
    per = sar["db_range_per_scene"]
    assert set(per) == {S1.stem, AIRSAR.stem}
    assert 10 < per[S1.stem][0] < per[S1.stem][1] < 50  # uncalibrated DN^2
    lows, highs = zip(*per.values(), strict=True)
    # per-scene ranges: relative backscatter, no one dB scale to map outputs back to
    assert sar["db_range"] is None and sar["db_scale"] == "relative"
    assert sar["db_range_nominal"] == pytest.approx([np.median(lows), np.median(highs)])


# ---------------------------------------------------------------------------------------
# index, split, rerun


def test_index_footprints_match_transform_bounds(l8_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    build(out, eo=(l8_crop,), eo_bands=(3, 2, 1), tile_size=64, stride=32, test_fraction=0.3)
    feats = features(out)
    assert feats
    with rasterio.open(l8_crop) as ds:
        crs, transform = ds.crs, ds.transform
    for f in feats:
        p = f["properties"]
        assert (out / p["file"]).is_file() and p["domain"] == "A" and p["crs"] == "EPSG:32621"
        assert p["split"] == p["file"].split("/")[0][:-1].rstrip("AB")
        w = p["window"]
        win = Window(w["col_off"], w["row_off"], w["width"], w["height"])
        expected = rasterio.warp.transform_bounds(
            crs, "EPSG:4326", *rasterio.windows.bounds(win, transform))
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1]  # closed
        xs, ys = zip(*ring, strict=True)
        assert np.allclose((min(xs), min(ys), max(xs), max(ys)), expected, rtol=0, atol=1e-6)


def test_split_blocks_never_leak_overlapping_tiles(l8_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    report = build(out, eo=(l8_crop,), eo_bands=(3, 2, 1), tile_size=64, stride=16,
                   split_block=64, test_fraction=0.4, min_valid=0.5, seed=3)
    assert report.scenes[0].split > 0  # tiles straddling both sides were dropped
    boxes = {"train": [], "test": []}
    for f in features(out):
        w = f["properties"]["window"]
        boxes[f["properties"]["split"]].append((w["col_off"], w["row_off"]))
    assert boxes["train"] and boxes["test"]
    for cx, cy in boxes["train"]:
        for tx, ty in boxes["test"]:
            assert abs(cx - tx) >= 64 or abs(cy - ty) >= 64  # no shared pixel


def test_block_choice_is_deterministic_and_local() -> None:
    a = choose_test_blocks("scene", 1000, 800, 128, 0.25, seed=1)
    assert a == choose_test_blocks("scene", 1000, 800, 128, 0.25, seed=1)
    assert a != choose_test_blocks("scene", 1000, 800, 128, 0.25, seed=2)
    assert len(a) in (14, 15)  # floor(0.25 * 56 + u)
    assert choose_test_blocks("scene", 1000, 800, 128, 0.0, seed=1) == frozenset()
    assert window_split(Window(0, 0, 128, 128), 128, frozenset({(0, 0)})) == "test"
    assert window_split(Window(64, 0, 128, 128), 128, frozenset({(0, 0)})) is None
    assert window_split(Window(128, 0, 128, 128), 128, frozenset({(0, 0)})) == "train"


def test_rerun_writes_nothing(l8_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    kw = dict(eo=(l8_crop,), eo_bands=(3, 2, 1), sar=(S1,), sar_db_range=None, tile_size=64,
              stride=32, test_fraction=0.3)
    first = build(out, **kw)
    files = sorted(out.rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    meta = {n: (out / n).read_bytes() for n in ("dataset.json", "index.geojson")}
    second = build(out, **kw)
    assert second.written == 0 and first.written > 0
    assert sum(s.existing for s in second.scenes) == first.written
    assert sorted(out.rglob("*")) == files
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert {n: (out / n).read_bytes() for n in meta} == meta
    assert second.counts == first.counts


def test_dataset_json_contract(l8_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    report = build(out, eo=(l8_crop,), eo_bands=(3, 2, 1), sar=(S1,), tile_size=64,
                   test_fraction=0.3)
    doc = json.loads((out / "dataset.json").read_text())
    eo = doc["radiometry"]["eo"]
    assert eo["method"] == "auto" and eo["percentiles"] == [2.0, 98.0]
    assert eo["bands"] == [3, 2, 1] and isinstance(eo["rule"], str)
    assert doc["tile_size"] == 64 and doc["counts"] == report.counts
    assert sum(doc["counts"].values()) == len(features(out))
    for d, n in doc["counts"].items():
        assert len(list((out / d).glob("*.png"))) == n
    assert set(doc["scenes"]) == {f"A:{l8_crop.stem}", f"B:{S1.stem}"}


# ---------------------------------------------------------------------------------------
# CLI and bad input


def test_cli_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, ["tiles", "--sar", str(AIRSAR), "--out", str(out),
                                    "--tile-size", "128", "--sar-db-range=-32.5,0", "-q",
                                    "--test-fraction", "0"])
    assert res.exit_code == 0, res.output
    assert "airsar_sanfrancisco_fullpol_intensity (B): 4 written" in res.output
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["radiometry"]["sar"]["db_range"] == [-32.5, 0.0]


@pytest.mark.parametrize("args, code, text", [
    (["--sar-db-range", "0,-25"], 2, "--sar-db-range"),
    (["--sar-band", "4"], 1, "--sar-band"),
    (["--min-valid", "1.5"], 2, "--min-valid"),
    (["--eo-bands", "3,2"], 2, "--eo-bands"),
])
def test_cli_errors_are_one_line_and_write_nothing(tmp_path: Path, args: list[str], code: int,
                                                   text: str) -> None:
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, ["tiles", "--sar", str(AIRSAR), "--out", str(out), *args])
    assert res.exit_code == code, res.output
    assert res.output.startswith("Error: ") and text in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_input_is_refused_before_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        build(tmp_path / "ds", sar=(AIRSAR, tmp_path / "nope.tif"))
    with pytest.raises(ConfigError, match="--eo/--sar"):
        build(tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


# ---------------------------------------------------------------------------------------
# paired, AOI, merging, dry run


def test_paired_same_windows_same_names(tmp_path: Path) -> None:
    """The SpaceNet 6 pair (same grid to 0.012 px) as an all-test set (--test-fraction 1):
    identical names in testA/testB, windows valid in BOTH (the SAR's top 39 % is NaN),
    footprints from the same window."""
    out = tmp_path / "paired"
    report = build(out, eo=(SN6_EO,), sar=(SN6_SAR,), sar_units="db", tile_size=128,
                   stride=64, paired=True, test_fraction=1.0)
    names_a = sorted(p.name for p in (out / "testA").glob("*.png"))
    names_b = sorted(p.name for p in (out / "testB").glob("*.png"))
    assert names_a == names_b and len(names_a) == report.written
    assert not (out / "trainA").exists() and not (out / "trainB").exists()
    with rasterio.open(SN6_SAR) as ds:
        raw = ds.read(1)
    # expected windows, independently: origins 0, 64 and 72 (flush with the edge); the EO
    # chip is valid everywhere, so the joint validity is the SAR's (not NaN)
    keep = {f"sn6_rotterdam_eo_rgb_r{r:05d}_c{c:05d}.png" for r in (0, 64, 72)
            for c in (0, 64, 72) if np.isfinite(raw[r:r + 128, c:c + 128]).mean() >= 0.9}
    assert set(names_a) == keep and len(keep) >= 3
    assert report.scenes[0].validity == 9 - len(keep)
    for f in features(out):
        p = f["properties"]
        assert p["split"] == "test" and p["paired"] is True
        w = p["window"]
        if p["domain"] == "B":
            r, c = w["row_off"], w["col_off"]
            expected, _ = sar_to_uint8(raw[r:r + 128, c:c + 128], "db", (-25.0, 0.0))
            assert np.array_equal(png(out / p["file"])[..., 0], expected)


def test_paired_refuses_other_grids(tmp_path: Path) -> None:
    shifted = crop(SN6_SAR, tmp_path / "sar_crop.tif", Window(8, 0, 192, 200))
    with pytest.raises(InputError, match="not on the grid") as err:
        build(tmp_path / "p", eo=(SN6_EO,), sar=(shifted,), sar_units="db", tile_size=64,
              paired=True)
    assert err.value.path == str(shifted) and "--resample-sar" in err.value.format()
    assert "corners up to 8.00 px apart" not in str(err.value)  # sizes differ: no corners
    with pytest.raises(ConfigError, match="--eo and --sar"):
        build(tmp_path / "p", sar=(SN6_SAR, AIRSAR), paired=True)
    with pytest.raises(ConfigError, match="--resample-sar applies to --paired"):
        build(tmp_path / "p", eo=(SN6_EO,), resample_sar=True)
    assert not (tmp_path / "p").exists()


def test_aoi_keeps_intersecting_tiles_and_skips_ungeoreferenced(
    l8_crop: Path, tmp_path: Path
) -> None:
    # the lon/lat box of the crop's right half (cols 160..320), shrunk by 1 px inwards
    with rasterio.open(l8_crop) as ds:
        right_half = rasterio.windows.bounds(Window(161, 1, 158, 254), ds.transform)
        lo_x, lo_y, hi_x, hi_y = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326",
                                                                *right_half)
    aoi = tmp_path / "aoi.geojson"
    ring = [[lo_x, lo_y], [hi_x, lo_y], [hi_x, hi_y], [lo_x, hi_y], [lo_x, lo_y]]
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                           "coordinates": [ring]}}]}))
    out = tmp_path / "ds"
    report = build(out, eo=(l8_crop,), eo_bands=(3, 2, 1), sar=(AIRSAR,), tile_size=64,
                   test_fraction=0.0, min_valid=0.5, aoi=aoi)
    eo, sar = report.scenes
    assert eo.aoi > 0 and sar.skipped and "not georeferenced" in sar.skipped
    assert any("--aoi" in w for w in report.warnings)
    cols = {f["properties"]["window"]["col_off"] for f in features(out)}
    # tiles from col 128 reach into the AOI (the lon/lat box is a little larger than the
    # UTM half it encloses, never smaller); tiles ending before col 128 do not
    assert cols and min(cols) >= 64 and 256 in cols
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "Point", "coordinates": [0, 0]}')
    with pytest.raises(ConfigError, match="Polygon"):
        build(tmp_path / "ds3", eo=(l8_crop,), eo_bands=(3, 2, 1), aoi=bad)


def test_invocations_accumulate_and_conflicts_are_refused(l8_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    pan = crop(PAN, tmp_path / "pan.tif", Window(0, 0, 128, 128))
    a = build(out, eo=(l8_crop,), eo_bands=(3, 2, 1), tile_size=64, test_fraction=0.3)
    b = build(out, eo=(pan,), sar=(S1,), sar_db_range=None, tile_size=64, test_fraction=0.3)
    doc = json.loads((out / "dataset.json").read_text())
    assert set(doc["scenes"]) == {f"A:{l8_crop.stem}", "A:pan", f"B:{S1.stem}"}
    assert doc["radiometry"]["eo"]["bands"] is None  # two band layouts: mixed
    assert doc["radiometry"]["sar"]["units"] == "linear"
    assert len(doc["options"]) == 2
    total = a.written + b.written
    assert sum(doc["counts"].values()) == len(features(out)) == total
    with pytest.raises(ConfigError, match="128 px tiles|64 px tiles"):
        build(out, eo=(pan,), tile_size=128)
    with pytest.raises(ConfigError, match="other settings"):
        build(out, eo=(l8_crop,), eo_bands=(1, 2, 3), tile_size=64, test_fraction=0.3)
    with pytest.raises(ConfigError, match="other settings"):
        build(out, eo=(l8_crop,), eo_bands=(3, 2, 1), tile_size=64, test_fraction=0.5)
    assert json.loads((out / "dataset.json").read_text()) == doc  # refused: untouched


def test_dry_run_counts_and_writes_nothing(l8_crop: Path, tmp_path: Path) -> None:
    kw = dict(eo=(l8_crop,), eo_bands=(3, 2, 1), sar=(AIRSAR,), tile_size=64, stride=32,
              test_fraction=0.3)
    dry = build(tmp_path / "dry", dry_run=True, **kw)
    assert not (tmp_path / "dry").exists()
    real = build(tmp_path / "real", **kw)
    assert dry.counts == real.counts and sum(real.counts.values()) > 0
    assert [s.line(True).replace("to write", "written") for s in dry.scenes] == [
        s.line() for s in real.scenes]
    res = CliRunner().invoke(main, ["tiles", "--sar", str(AIRSAR), "--out",
                                    str(tmp_path / "d2"), "--dry-run", "-q"])
    assert res.exit_code == 0 and "dry run: nothing written" in res.output
    assert not (tmp_path / "d2").exists()


def test_killed_run_is_completed_by_a_rerun(l8_crop: Path, tmp_path: Path) -> None:
    """PNGs on disk but no metadata (a run killed before its JSON files): the rerun indexes
    them without rewriting them, and the result equals an uninterrupted run's."""
    out = tmp_path / "ds"
    kw = dict(eo=(l8_crop,), eo_bands=(3, 2, 1), tile_size=64, stride=32, test_fraction=0.3)
    first = build(out, **kw)
    meta = {n: (out / n).read_bytes() for n in ("dataset.json", "index.geojson")}
    pngs = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    victim = sorted(pngs)[0]
    victim.unlink()  # one tile lost too
    for n in meta:
        (out / n).unlink()
    again = build(out, **kw)
    assert again.written == 1 and sum(s.existing for s in again.scenes) == first.written - 1
    assert {n: (out / n).read_bytes() for n in meta} == meta
    assert all(p.stat().st_mtime_ns == t for p, t in pngs.items() if p != victim)
    assert not [p for p in out.rglob(".*")]  # no temporary file left behind


# ---------------------------------------------------------------------------------------
# Sentinel-1/2 as they come: small patches, repeated stems, few SAR scenes


def s1_patch(path: Path, size: int = 120, seed: int = 0, crs: str = "EPSG:32633",
             origin: tuple[float, float] = (500000.0, 5900000.0), pixel: float = 10.0) -> Path:
    """A BigEarthNet-like Sentinel-1 patch: float32 sigma0 dB (about -25..+5), UTM, 10 m,
    no nodata tag (as the BigEarthNet files)."""
    rng = np.random.default_rng(seed)
    db = (-12.0 + 4.0 * rng.standard_normal((size, size))).astype("float32")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="float32", crs=crs,
                       transform=rasterio.Affine(pixel, 0, origin[0], 0, -pixel, origin[1])
                       ) as ds:
        ds.write(db, 1)
    return path


def test_small_scene_gives_tiles_at_the_largest_size_that_fits(tmp_path: Path) -> None:
    """A 120 px BigEarthNet patch at the default 256 px (and at 128 px): one 120 px tile,
    recorded in the index and dataset.json; below 96 px: skipped with a warning."""
    patch = s1_patch(tmp_path / "S1A_IW_GRDH_1SDV_patch_87_48_VV.tif")
    for tile in (256, 128):
        out = tmp_path / f"ds{tile}"
        with pytest.warns(PipelineWarning, match="cut into 120 px tiles"):
            report = build_tiles(TilesConfig(out=out, sar=(patch,), sar_units="db",
                                             tile_size=tile, progress=False))
        assert report.written == 1
        (feat,) = features(out)
        assert feat["properties"]["tile_size"] == 120
        assert feat["properties"]["window"] == {"col_off": 0, "row_off": 0, "width": 120,
                                                "height": 120}
        assert png(out / feat["properties"]["file"]).shape == (120, 120, 3)
        doc = json.loads((out / "dataset.json").read_text())
        assert doc["tile_size"] == tile and doc["tile_sizes"] == {"120": 1}
        assert doc["scenes"][f"B:{patch.stem}"]["tile_size"] == 120
    # not a multiple of 4: 118 x 118 at 128 px -> 116 px tiles; 95 px wide: none
    odd = crop(patch, tmp_path / "odd.tif", Window(0, 0, 118, 118))
    small = crop(patch, tmp_path / "small.tif", Window(0, 0, 95, 120))
    report = build(tmp_path / "mixed", sar=(odd, small), sar_units="db", tile_size=128)
    odd_stats, small_stats = report.scenes
    assert {f["properties"]["tile_size"] for f in features(tmp_path / "mixed")} == {116}
    assert small_stats.skipped == "smaller than 96 px" and small_stats.written == 0
    assert any("95x120 px is smaller than the smallest tile (96 px)" in w
               for w in report.warnings)


def test_scene_tile_size_rule() -> None:
    from pipeline.dataset.tiles import scene_tile_size

    assert scene_tile_size(2000, 1000, 256) == 256
    assert scene_tile_size(120, 120, 256) == 120
    assert scene_tile_size(268, 217, 256) == 216  # the pyroSAR patch
    assert scene_tile_size(99, 300, 256) == 96
    assert scene_tile_size(95, 300, 256) is None
    assert scene_tile_size(70, 64, 64) == 64  # tiles below 96 px only when asked for
    assert scene_tile_size(60, 60, 64) is None


def test_repeated_stems_get_unique_names(tmp_path: Path) -> None:
    """SSL4EO layout: every product folder holds VV.tif. Names come from the shortest
    distinguishing parent path; a rerun with one of them keeps its name (writes nothing);
    a later product with the same stem gets a path name too."""
    root = tmp_path / "ssl4eo" / "s1" / "0000200"
    a = s1_patch(root / "S1A_20200607" / "VV.tif", size=100, seed=1)
    b = s1_patch(root / "S1A_20200903" / "VV.tif", size=100, seed=2)
    out = tmp_path / "ds"
    report = build(out, sar=(a, b), sar_units="db", test_fraction=0.0)
    assert [s.name for s in report.scenes] == ["S1A_20200607_VV", "S1A_20200903_VV"]
    files = sorted(f["properties"]["file"] for f in features(out))
    assert files == ["trainB/S1A_20200607_VV_r00000_c00000.png",
                     "trainB/S1A_20200903_VV_r00000_c00000.png"]
    again = build(out, sar=(b,), sar_units="db", test_fraction=0.0)
    assert again.written == 0 and again.scenes[0].name == "S1A_20200903_VV"
    c = s1_patch(tmp_path / "other" / "S1B_20201001" / "VV.tif", size=100, seed=3)
    later = build(out, sar=(c,), sar_units="db", test_fraction=0.0)
    assert later.scenes[0].name == "S1B_20201001_VV"
    # folders with the same name deeper down: more of the path
    d = s1_patch(tmp_path / "x" / "S1A_20200607" / "VV.tif", size=100, seed=4)
    fresh = build(tmp_path / "ds2", sar=(a, d), sar_units="db", test_fraction=0.0)
    assert [s.name for s in fresh.scenes] == ["0000200_S1A_20200607_VV", "x_S1A_20200607_VV"]


def test_a_single_small_sar_scene_still_has_train_tiles(tmp_path: Path) -> None:
    """One 120 px SAR scene whose only block draws "test": moved whole to train, the empty
    test side warned about and listed in dataset.json; a rerun writes nothing."""
    patch = s1_patch(tmp_path / "only_VV.tif")
    seed = next(s for s in range(100)
                if choose_test_blocks("only_VV", 120, 120, 256, 0.5, s))
    out = tmp_path / "ds"
    with pytest.warns(PipelineWarning) as caught:
        report = build_tiles(TilesConfig(out=out, sar=(patch,), sar_units="db", seed=seed,
                                         test_fraction=0.5, progress=False))
    messages = [str(w.message) for w in caught]
    assert any("trainB would be empty" in m for m in messages)
    assert any("testB is empty" in m for m in messages)
    assert report.counts == {"trainA": 0, "trainB": 1, "testA": 0, "testB": 0}
    assert not list(out.glob("testB/*.png")) and len(list(out.glob("trainB/*.png"))) == 1
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["empty_test"] == ["testB"]
    assert doc["scenes"]["B:only_VV"]["split_override"] == "train"
    assert doc["scenes"]["B:only_VV"]["tiles"] == {"train": 1, "test": 0}
    assert [f["properties"]["split"] for f in features(out)] == ["train"]
    meta = (out / "dataset.json").read_bytes()
    again = build(out, sar=(patch,), sar_units="db", seed=seed, test_fraction=0.5)
    assert again.written == 0 and (out / "dataset.json").read_bytes() == meta
    # --test-fraction 1 asks for an all-test set: left as it is
    all_test = build(tmp_path / "t", sar=(patch,), sar_units="db", test_fraction=1.0)
    assert all_test.counts["testB"] == 1 and all_test.counts["trainB"] == 0


def s2_band_folder(folder: Path, size: int, transform: rasterio.Affine,
                   crs: str = "EPSG:32633", style: str = "bigearthnet", seed: int = 0) -> Path:
    """A Sentinel-2 L2A patch as BigEarthNet (`<patch>_B02.tif`) or SSL4EO (`B2.tif`) ship
    it: one uint16 reflectance x 10000 file per band, B08 too. B04 (red) grows left to
    right, B02 (blue) top to bottom, B03 is noise: the stack order is visible in a tile."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype("float64")
    bands = {2: 300 + 10 * yy, 3: 500 + 200 * rng.random((size, size)), 4: 400 + 12 * xx,
             8: 2000 + 100 * rng.random((size, size))}
    folder.mkdir(parents=True, exist_ok=True)
    for n, data in bands.items():
        name = f"{folder.name}_B{n:02d}.tif" if style == "bigearthnet" else f"B{n}.tif"
        with rasterio.open(folder / name, "w", driver="GTiff", width=size, height=size,
                           count=1, dtype="uint16", crs=crs, transform=transform) as ds:
            ds.write(data.astype("uint16"), 1)
    return folder


def test_band_folders_and_patterns_as_eo_scenes(tmp_path: Path) -> None:
    """A folder of B02/B03/B04 files is ONE scene stacked R,G,B = B04,B03,B02; a directory of
    such folders, or a quoted glob, gives one scene per folder."""
    t = rasterio.Affine(10, 0, 500000, 0, -10, 5900000)
    root = tmp_path / "bigearthnet"
    s2_band_folder(root / "S2A_MSIL2A_20170613_87_48", 100, t)
    s2_band_folder(root / "S2A_MSIL2A_20170617_4_55", 100, t, seed=1)
    s1_patch(root / "S1A_IW_GRDH_87_48" / "S1A_IW_GRDH_87_48_VV.tif", size=100)
    out = tmp_path / "ds"
    report = build(out, eo=(root,), test_fraction=0.0)
    assert [s.name for s in report.scenes] == ["S2A_MSIL2A_20170613_87_48",
                                               "S2A_MSIL2A_20170617_4_55"]
    tile = png(out / "trainA" / "S2A_MSIL2A_20170613_87_48_r00000_c00000.png").astype(float)
    cols, rows = np.mgrid[0:100, 0:100][::-1]
    assert np.corrcoef(tile[..., 0].ravel(), cols.ravel())[0, 1] > 0.99  # R = B04
    assert np.corrcoef(tile[..., 2].ravel(), rows.ravel())[0, 1] > 0.99  # B = B02
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["scenes"]["A:S2A_MSIL2A_20170613_87_48"]["source"] == str(
        root / "S2A_MSIL2A_20170613_87_48")
    glob_report = build(tmp_path / "g", eo=(root / "S2A*",), sar=(root / "S1*" / "*_VV.tif",),
                        sar_units="db", test_fraction=0.0)
    assert [s.domain for s in glob_report.scenes] == ["A", "A", "B"]
    with pytest.raises(InputError, match="matches nothing"):
        build(tmp_path / "n", sar=(root / "nothing*" / "VV.tif",))


def test_paired_pairs_by_footprint_into_train_and_test(tmp_path: Path) -> None:
    """BigEarthNet-like: S2 band folders and S1 files named differently, same grids; one S1
    patch without a partner. Pairs by footprint; identical names in trainA/trainB and
    testA/testB; both sides of a pair in the same split."""
    root = tmp_path / "ben"
    pairs = []
    for k, x0 in enumerate((500000, 520000)):
        t = rasterio.Affine(10, 0, x0, 0, -10, 5900000)
        s2_band_folder(root / f"S2A_MSIL2A_{k}", 256, t, seed=k)
        s1_patch(root / f"S1A_IW_{k}" / f"S1A_IW_{k}_VV.tif", size=256, seed=k,
                 origin=(x0, 5900000))
        pairs.append(k)
    s1_patch(root / "S1A_IW_lonely" / "S1A_IW_lonely_VV.tif", size=256, origin=(700000, 5900000))
    out = tmp_path / "ds"
    report = build(out, paired=True, eo=(root / "S2A*",), sar=(root / "S1A*" / "*_VV.tif",),
                   sar_units="db", tile_size=64, test_fraction=0.3, seed=1)
    assert [s.name for s in report.scenes] == ["S2A_MSIL2A_0 + S1A_IW_0_VV",
                                               "S2A_MSIL2A_1 + S1A_IW_1_VV"]
    assert any("S1A_IW_lonely_VV.tif: no EO scene overlaps it" in w for w in report.warnings)
    for split in ("train", "test"):
        a = sorted(p.name for p in (out / f"{split}A").glob("*.png"))
        b = sorted(p.name for p in (out / f"{split}B").glob("*.png"))
        assert a == b and a, split
    by_file = {f["properties"]["file"]: f["properties"] for f in features(out)}
    for file, props in by_file.items():
        other = file.replace("A/", "B/") if props["domain"] == "A" else file.replace("B/", "A/")
        assert by_file[other]["split"] == props["split"]
        assert by_file[other]["window"] == props["window"] and props["paired"] is True


def test_paired_resample_sar_onto_the_eo_grid(tmp_path: Path) -> None:
    """SSL4EO-like: EPSG:4326, the S1 grid 3 px off and 1 % coarser than the S2 grid.
    Refused with a hint without --resample-sar; with it, the SAR tile is the bilinear
    reprojection of the SAR onto the EO grid (rasterio.warp.reproject, computed here)."""
    eo_t = rasterio.Affine(1e-4, 0, 73.2925, 0, -1e-4, 30.4755)
    sar_t = rasterio.Affine(1.01e-4, 0, 73.2925 - 3e-4, 0, -1.01e-4, 30.4755 + 3e-4)
    eo = s2_band_folder(tmp_path / "s2a" / "20200604T054639", 160, eo_t, crs="EPSG:4326",
                        style="ssl4eo")
    yy, xx = np.mgrid[0:166, 0:166]
    db = (-14 + 5 * np.sin(xx / 9.0) + 4 * np.cos(yy / 7.0)).astype("float32")
    sar = tmp_path / "s1" / "S1A_20200607" / "VV.tif"
    sar.parent.mkdir(parents=True)
    with rasterio.open(sar, "w", driver="GTiff", width=166, height=166, count=1,
                       dtype="float32", crs="EPSG:4326", transform=sar_t) as ds:
        ds.write(db, 1)
    kw = dict(paired=True, eo=(eo,), sar=(sar,), sar_units="db", tile_size=128,
              test_fraction=0.0)
    with pytest.raises(InputError, match="not on the grid") as err:
        build(tmp_path / "refused", **kw)
    assert "--resample-sar" in err.value.format() and "px apart" not in str(err.value)
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "ds"
    report = build(out, resample_sar=True, **kw)
    assert report.written == 4
    expected = np.full((160, 160), np.nan, dtype="float32")
    rasterio.warp.reproject(db, expected, src_transform=sar_t, src_crs="EPSG:4326",
                            dst_transform=eo_t, dst_crs="EPSG:4326", src_nodata=np.nan,
                            dst_nodata=np.nan, resampling=rasterio.warp.Resampling.bilinear)
    for f in features(out):
        p = f["properties"]
        if p["domain"] != "B":
            continue
        w = p["window"]
        want, _ = sar_to_uint8(expected[w["row_off"]:w["row_off"] + 128,
                                        w["col_off"]:w["col_off"] + 128], "db", (-25.0, 0.0))
        got = png(out / p["file"])[..., 0]
        assert np.abs(got.astype(int) - want).max() <= 1  # GDAL warper vs reproject
    doc = json.loads((out / "dataset.json").read_text())
    # a lone VV.tif is named after its folder too (a polarisation says nothing of a scene)
    assert doc["scenes"]["B:S1A_20200607_VV"]["settings"]["resampled_to"] == "A:20200604T054639"


@pytest.mark.slow  # ~15 s of CPU: two training steps at 96 px
def test_train_on_small_sentinel_tiles_of_mixed_sizes(tmp_path: Path) -> None:
    """The dataset the lead's run needs: one 120 px SAR patch that drew "test" (moved to
    train), EO tiles of 120 px and 256 px; `ugatit train` runs at img_size 96 (the global
    discriminator's minimum) with a tiny network."""
    from ugatit.cli import main as ugatit_cli

    sar = s1_patch(tmp_path / "only_VV.tif")
    seed = next(s for s in range(100) if choose_test_blocks("only_VV", 120, 120, 256, 0.5, s))
    pan = crop(PAN, tmp_path / "pan.tif", Window(0, 0, 256, 256))
    eo_small = s2_band_folder(tmp_path / "S2A_patch", 120,
                              rasterio.Affine(10, 0, 500000, 0, -10, 5900000))
    ds = tmp_path / "ds"
    report = build(ds, eo=(pan, eo_small), sar=(sar,), sar_units="db", seed=seed,
                   test_fraction=0.5)
    assert report.counts["trainB"] == 1
    assert {png(p).shape[0] for p in ds.glob("trainA/*.png")} == {256, 120}
    res = CliRunner().invoke(ugatit_cli, [
        "train", "--dataset", str(ds), "--out", str(tmp_path / "run"), "--iterations", "2",
        "--ngf", "4", "--n-res", "1", "--img-size", "96", "--save-every", "2",
        "--sample-every", "2", "--workers", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "checkpoints" / "params_0000002.pt").exists()


def test_cli_sentinel_folders(tmp_path: Path) -> None:
    """The CLI on an SSL4EO-like product folder: VV + VH in one directory is refused with
    the glob to use; a quoted glob and a paired resample run are one command each."""
    eo_t = rasterio.Affine(1e-4, 0, 73.2925, 0, -1e-4, 30.4755)
    s2_band_folder(tmp_path / "s2a" / "0000200" / "20200604", 100, eo_t,
                   crs="EPSG:4326", style="ssl4eo")
    product = tmp_path / "s1" / "0000200" / "S1A_20200607"
    for pol in ("VV", "VH"):
        s1_patch(product / f"{pol}.tif", size=100, crs="EPSG:4326",
                 origin=(73.2925 - 2e-4, 30.4755 + 1e-4), pixel=1.01e-4)
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, ["tiles", "--sar", str(product), "--out", str(out)])
    assert res.exit_code == 1 and "mixes polarisations (VH, VV)" in res.output
    assert f"--sar '{product}/*VV.tif'" in res.output and not out.exists()
    args = ["tiles", "-q", "--paired", "--eo", str(tmp_path / "s2a" / "0000200"), "--sar",
            str(tmp_path / "s1" / "*" / "*" / "VV.tif"), "--sar-units", "db", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "--resample-sar" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(main, [*args, "--resample-sar"])
    assert res.exit_code == 0, res.output
    assert "20200604 + S1A_20200607_VV (AB): 1 written" in res.output
    assert "Warning: testA is empty" in res.output


# ---------------------------------------------------------------------------------------
# Multiband tiles: bands by name, reflectance, VV and VH (float32 GeoTIFF)

BEN = DATA / "sentinel1" / "bigearthnet"
BEN_S2 = BEN / "S2A_MSIL2A_20170617T113321_36_85"
BEN_S1 = BEN / "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85"


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(), {"crs": ds.crs, "transform": ds.transform, "dtype": ds.dtypes[0],
                           "count": ds.count, "descriptions": ds.descriptions}


def test_multiband_tiles_keep_reflectance_and_db_on_the_source_grid(tmp_path: Path) -> None:
    """A band folder (B02, B03, B04, B08) and a polarisation folder (*_VV.tif, *_VH.tif)
    of one BigEarthNet pair -> a 4-band and a 2-band float32 GeoTIFF tile on the patch's
    own grid, holding reflectance / 0.5 and (dB - low) / (high - low) per polarisation.

    Tolerance 1e-6: the tile is float32 of a float64 computation (relative 6e-8 of values
    <= 1); anything rounded to 8 bits would be off by up to 2e-3.
    """
    out = tmp_path / "ds"
    build(out, eo=(BEN_S2,), sar=(BEN_S1,), eo_names=("red", "green", "blue", "nir"),
          eo_scale="reflectance", sar_pols=("VV", "VH"), sar_units="db", paired=True,
          tile_size=120, test_fraction=0.0)
    name = "S2A_MSIL2A_20170617T113321_36_85_r00000_c00000.tif"
    eo, eo_meta = _read(out / "trainA" / name)
    sar, sar_meta = _read(out / "trainB" / name)
    assert eo_meta["count"] == 4 and eo_meta["dtype"] == "float32"
    assert eo_meta["descriptions"] == ("red", "green", "blue", "nir")
    assert sar_meta["count"] == 2 and sar_meta["descriptions"] == ("VV", "VH")
    for suffix, band in (("B04", 0), ("B03", 1), ("B02", 2), ("B08", 3)):
        with rasterio.open(next(BEN_S2.glob(f"*_{suffix}.tif"))) as src:
            dn = src.read(1).astype(np.float64)
            assert eo_meta["crs"] == src.crs and eo_meta["transform"] == src.transform
        expect = np.clip(dn * 1e-4 / 0.5, 0, 1)
        expect[dn == 0] = 0.0  # fill
        np.testing.assert_allclose(eo[band], expect, atol=1e-6)
    for pol, band, (lo, hi) in (("VV", 0, (-25.0, 0.0)), ("VH", 1, (-32.5, 0.0))):
        with rasterio.open(next(BEN_S1.glob(f"*_{pol}.tif"))) as src:
            db = src.read(1).astype(np.float64)
            assert sar_meta["transform"] == src.transform
        np.testing.assert_allclose(sar[band], np.clip((db - lo) / (hi - lo), 0, 1), atol=1e-6)
    contract = json.loads((out / "dataset.json").read_text())["radiometry"]
    assert contract["eo"]["method"] == "reflectance"
    assert contract["eo"]["common_names"] == ["red", "green", "blue", "nir"]
    assert contract["eo"]["reflectance_range"] == [0.0, 0.5]
    assert contract["sar"]["polarisations"] == ["VV", "VH"]
    assert contract["sar"]["db_ranges"] == [[-25.0, 0.0], [-32.5, 0.0]]
    assert contract["sar"]["db_scale"] == "absolute"


def test_a_geotiff_of_unknown_reflectance_scale_is_refused_then_declared(tmp_path: Path
                                                                          ) -> None:
    """A 4-band uint16 GeoTIFF without band Scale/Offset: "reflectance" cannot know what
    its numbers mean (one line naming --reflectance-scale); declared, it tiles."""
    src = tmp_path / "s2.tif"
    data = np.stack([rasterio.open(next(BEN_S2.glob(f"*_{b}.tif"))).read(1)
                     for b in ("B04", "B03", "B02", "B08")])
    with rasterio.open(next(BEN_S2.glob("*_B04.tif"))) as ref:
        profile = {**ref.profile, "count": 4}
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(("B4", "B3", "B2", "B8"), 1):
            dst.set_band_description(i, name)
    kw = dict(eo=(src,), eo_names=("red", "green", "blue", "nir"), eo_scale="reflectance",
              tile_size=120, test_fraction=0.0)
    with pytest.raises(InputError, match="reflectance scale unknown") as err:
        build(tmp_path / "a", **kw)
    assert "--reflectance-scale 0.0001" in str(err.value.hint)
    assert not (tmp_path / "a" / "trainA").exists()
    build(tmp_path / "b", reflectance_scale=(1e-4, 0.0), **kw)
    tile, meta = _read(tmp_path / "b" / "trainA" / "s2_r00000_c00000.tif")
    assert meta["descriptions"] == ("red", "green", "blue", "nir")
    np.testing.assert_allclose(tile[3], np.clip(data[3] * 1e-4 / 0.5, 0, 1), atol=1e-6)


def test_a_band_the_folder_lacks_is_one_error_naming_both_lists(tmp_path: Path) -> None:
    folder = tmp_path / "patch"
    folder.mkdir()
    for b in ("B02", "B03", "B04"):
        (folder / f"x_{b}.tif").write_bytes(next(BEN_S2.glob(f"*_{b}.tif")).read_bytes())
    with pytest.raises(ConfigError, match=r"no nir.*blue, green, red"):
        build(tmp_path / "ds", eo=(folder,), eo_names=("red", "green", "blue", "nir"),
              eo_scale="reflectance", tile_size=120)


def test_tiles_cli_takes_band_names_and_polarisations(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, [
        "tiles", "--eo", str(BEN_S2), "--sar", str(BEN_S1), "--paired", "--out", str(out),
        "--eo-bands", "B04,B03,B02,nir", "--eo-scale", "reflectance", "--sar-pols", "VV,VH",
        "--sar-units", "db", "--sar-db-range=-25,0/-30,0", "--tile-size", "120",
        "--test-fraction", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    contract = json.loads((out / "dataset.json").read_text())["radiometry"]
    assert contract["sar"]["db_ranges"] == [[-25.0, 0.0], [-30.0, 0.0]]
    assert contract["eo"]["common_names"] == ["red", "green", "blue", "nir"]
    assert sorted(p.suffix for p in (out / "trainB").iterdir()) == [".tif"]
    bad = CliRunner().invoke(main, ["tiles", "--eo", str(BEN_S2), "--out", str(out),
                                    "--eo-bands", "red,foo"])
    assert bad.exit_code != 0 and "'foo' is no band name" in bad.output


def test_a_polarisation_folder_without_sar_pols_is_refused_with_the_hint(tmp_path: Path
                                                                         ) -> None:
    with pytest.raises(InputError, match="mixes polarisations") as err:
        build(tmp_path / "ds", sar=(BEN_S1,), sar_units="db")
    assert "--sar-pols VH,VV" in str(err.value.hint)
