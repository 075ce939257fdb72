"""One radiometry for every entry point, and the model's radiometric contract.

The same real pixels go through app.py, `python -m pipeline run` and `python -m pipeline
quicklook`, and the tensors handed to the generator are captured in-process (app.py's
`translate`, the pipeline's `inference._forward`): they must be the same.
Tolerances: app.py and the pipeline compute the same float32 numbers with the same
functions (the 16-bit path: exactly equal); the 8-bit path is the seed's
`(x / 255 - 0.5) / 0.5` against the pipeline's `x / 255 * 2 - 1`, one float32 rounding
apart (<= 1e-6). The quicklook panel is 8-bit, `round(255 * unit)`: half an 8-bit step.
Tiles (`pipeline tiles`) are checked against `to_model_input` in
tests/pipeline/dataset/test_tiles.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from PIL import Image
from rasterio.windows import Window

import pipeline.run.inference
from pipeline.cli import main as pipeline_cli
from pipeline.inputs.radiometry import compute_scaling, read_masked, to_model_input
from pipeline.viewing.quicklook import quicklook
from tests.helpers import DATA, crop
from ugatit import load_checkpoint, read_meta, save_checkpoint
from ugatit.networks import GENERATORS

L8 = DATA / "l8_224078_parana_bgr_uint16.tif"  # uint16, B,G,R, zero collar, no nodata tag
HAITI = DATA / "haiti_rgbn_uint8.tif"  # uint8 R,G,B,NIR
SIZE = 256  # one pipeline tile = app.py's network input: no resize anywhere
FLOAT32_ROUNDING = 1e-6
HALF_8BIT_STEP = 0.5 / 255 + 1e-6  # in [0, 1] units
CONTRACT = {
    "eo": {"method": "auto", "percentiles": [10.0, 90.0], "bands": [3, 2, 1], "rule": "test"},
    "sar": {"units": "db", "band": 1, "db_range": [-30.0, 5.0]},
}

spec = importlib.util.spec_from_file_location("eo2sar_app_ep", Path(__file__).parents[1] / "app.py")
assert spec is not None and spec.loader is not None
app = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = app  # dataclasses look their module up while executing it
spec.loader.exec_module(app)


@pytest.fixture(scope="module")
def l8_256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 x 256 px of the real Landsat 8 scene, about 30 % of it zero collar."""
    return crop(L8, tmp_path_factory.mktemp("ep") / "l8_256.tif", Window(150, 50, SIZE, SIZE))


@pytest.fixture(scope="module")
def rgb8_256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 x 256 px of the Haiti scene, bands R,G,B: a plain 8-bit RGB GeoTIFF (app.py
    reads it with PIL, the seed's path)."""
    path = tmp_path_factory.mktemp("ep") / "rgb8_256.tif"
    window = Window(100, 50, SIZE, SIZE)
    with rasterio.open(HAITI) as ds:
        data = ds.read((1, 2, 3), window=window)
        profile = dict(ds.profile, count=3, width=SIZE, height=SIZE,
                       transform=ds.window_transform(window))
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(path, "w", **{**profile, "tiled": False, "photometric": "RGB"}) as out:
        out.write(data)
    return path


@pytest.fixture(scope="module")
def contract_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint's weights, saved in the seed format WITH a radiometric contract
    (what the trainer writes)."""
    ckpt = load_checkpoint(tiny_checkpoint, networks=GENERATORS)
    path = tmp_path_factory.mktemp("ep") / "trained.pt"
    save_checkpoint(path, ckpt.networks, ckpt.config, fmt="seed",
                    extra={"radiometry": CONTRACT})
    assert read_meta(path)["radiometry"] == CONTRACT
    return path


class Capture:
    """Records the tensors a function passes on (patched in place of the function)."""

    def __init__(self, fn: Callable[..., Any], arg: int) -> None:
        self.fn, self.arg, self.seen = fn, arg, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(args[self.arg].detach().clone().float())
        return self.fn(*args, **kwargs)


def app_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, img: Path, ckpt: Path,
              *extra: str) -> torch.Tensor:
    """The tensor app.py gives genA2B in `python app.py --img img ...`."""
    cap = Capture(app.translate, 1)
    monkeypatch.setattr(app, "translate", cap)
    monkeypatch.chdir(tmp_path)
    assert app.main(["--model_path", str(ckpt), "--img", str(img), *extra]) == 0
    assert len(cap.seen) == 1
    return cap.seen[0]


def pipeline_input(monkeypatch: pytest.MonkeyPatch, img: Path, out: Path, ckpt: Path,
                   *extra: str) -> torch.Tensor:
    """The tensor `python -m pipeline run` gives the generator (one tile here; --norm
    tile: with scene statistics the tile would go through the statistics pass, whose
    input is the same)."""
    cap = Capture(pipeline.run.inference.forward_fixed_shape, 1)
    monkeypatch.setattr(pipeline.run.inference, "forward_fixed_shape", cap)
    res = CliRunner().invoke(pipeline_cli, ["run", str(img), str(out), "--model", str(ckpt),
                                            "-q", "--overwrite", "--norm", "tile", *extra])
    assert res.exit_code == 0, res.output
    assert len(cap.seen) == 1 and cap.seen[0].shape == (1, 3, SIZE, SIZE)
    return cap.seen[0]


def quicklook_panel(img: Path, out: Path, tmp_path: Path) -> np.ndarray:
    """The optical panel of the quicklook of a run, as [3, H, W] in [0, 1]."""
    png = quicklook(img, out, tmp_path / "ql.png")
    with Image.open(png) as im:
        arr = np.asarray(im)[:, :SIZE]
    return np.moveaxis(arr, -1, 0).astype(np.float64) / 255.0


@pytest.mark.parametrize("kind", ["uint16", "uint8"])
def test_app_pipeline_and_quicklook_feed_the_same_input(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_checkpoint: Path, l8_256: Path,
        rgb8_256: Path, kind: str) -> None:
    img, bands = (l8_256, ["--bands", "3,2,1"]) if kind == "uint16" else (rgb8_256, [])
    x_app = app_input(monkeypatch, tmp_path, img, tiny_checkpoint, *bands)
    out = tmp_path / "run.tif"
    x_run = pipeline_input(monkeypatch, img, out, tiny_checkpoint, *bands)
    assert x_app.shape == x_run.shape == (1, 3, SIZE, SIZE)
    assert (x_run.max() - x_run.min()) > 1.0  # real contrast, not a flat image
    assert torch.abs(x_app - x_run).max().item() <= FLOAT32_ROUNDING

    # the function the pipeline (and the tile builder) scales with gives these numbers
    band_numbers = (3, 2, 1) if kind == "uint16" else (1, 2, 3)
    with rasterio.open(img) as ds:
        data, valid = read_masked(ds, band_numbers)
        ref = to_model_input(data, valid, compute_scaling(ds, band_numbers))
    np.testing.assert_array_equal(x_run[0].numpy(), ref)
    if kind == "uint16":
        collar = (data == 0).all(axis=0)
        assert 0.2 < collar.mean() < 0.4
        np.testing.assert_array_equal(valid, ~collar)  # fill without --nodata 0
        assert (ref[:, collar] == -1.0).all()  # invalid -> black, as in training tiles
        with rasterio.open(out) as ds:
            np.testing.assert_array_equal(np.isnan(ds.read(1)), collar)

    # quicklook shows the stretch the run used, at 8-bit display precision
    panel = quicklook_panel(img, out, tmp_path)
    unit = (x_run[0].numpy().astype(np.float64) + 1.0) / 2.0
    assert np.abs(panel - unit).max() <= HALF_8BIT_STEP


def test_app_uint16_is_resized_in_float(tmp_path: Path, l8_256: Path) -> None:
    """A non-8-bit input is resized in float: not 8-bit levels in the network input."""
    loaded = app.read_input(l8_256, (3, 2, 1))
    assert loaded.unit is not None and loaded.unit.dtype == np.float32
    x = app.preprocess(loaded, 128).numpy()
    assert x.shape == (1, 3, 128, 128)
    levels = (x + 1.0) / 2.0 * 255.0
    assert np.abs(levels - np.round(levels)).max() > 0.05  # between 8-bit levels
    ref = np.stack([np.asarray(Image.fromarray(c, "F").resize((128, 128), Image.BILINEAR))
                    for c in loaded.unit]) * 2.0 - 1.0
    np.testing.assert_allclose(x[0], ref, atol=FLOAT32_ROUNDING)


def _tags(path: Path) -> dict[str, Any]:
    with rasterio.open(path) as ds:
        tags = ds.tags()
    return {k: json.loads(tags[f"EO2SAR_{k}"]) for k in ("RADIOMETRY", "SCALING", "CONFIG")}


def test_model_contract_sets_percentiles_and_a_flag_overrides_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_checkpoint: Path,
        contract_checkpoint: Path, l8_256: Path) -> None:
    bands = ("--bands", "3,2,1")
    x_seed = pipeline_input(monkeypatch, l8_256, tmp_path / "seed.tif", tiny_checkpoint, *bands)
    x_model = pipeline_input(monkeypatch, l8_256, tmp_path / "m.tif", contract_checkpoint,
                             *bands)
    x_flag = pipeline_input(monkeypatch, l8_256, tmp_path / "f.tif", contract_checkpoint,
                            *bands, "--percentiles", "2,98")
    seed, model, flag = (_tags(tmp_path / n) for n in ("seed.tif", "m.tif", "f.tif"))
    assert seed["RADIOMETRY"]["percentiles"] == {"value": [2.0, 98.0], "from": "default"}
    assert seed["RADIOMETRY"]["model"] is None
    assert model["RADIOMETRY"]["percentiles"] == {"value": [10.0, 90.0], "from": "model"}
    assert model["RADIOMETRY"]["model"] == CONTRACT
    assert model["SCALING"]["percentiles"] == [10.0, 90.0]
    assert model["CONFIG"]["percentiles"] == [10.0, 90.0]  # the resolved value is hashed
    assert flag["RADIOMETRY"]["percentiles"] == {"value": [2.0, 98.0], "from": "flag"}
    # the model's percentiles change the input; 10-90 saturates more pixels than 2-98
    assert torch.abs(x_model - x_seed).max().item() > 0.1
    assert (x_model.abs() == 1).sum() > (x_seed.abs() == 1).sum()
    assert torch.equal(x_flag, x_seed)  # same weights, same percentiles: same input
    # quicklook shows the run's 10-90 stretch (from the output's tags), not its own 2-98
    panel = quicklook_panel(l8_256, tmp_path / "m.tif", tmp_path)
    assert np.abs(panel - (x_model[0].numpy() + 1.0) / 2.0).max() <= HALF_8BIT_STEP

    # a config file beats the model, a flag beats the config file
    cfg = tmp_path / "c.yaml"
    cfg.write_text("percentiles: [5, 95]\n")
    pipeline_input(monkeypatch, l8_256, tmp_path / "c.tif", contract_checkpoint, *bands,
                   "--config", str(cfg))
    assert _tags(tmp_path / "c.tif")["RADIOMETRY"]["percentiles"] == {
        "value": [5.0, 95.0], "from": "config"}

    # app.py takes the same value from the model, says so, and feeds the same input
    x_app = app_input(monkeypatch, tmp_path, l8_256, contract_checkpoint, "--bands", "3,2,1")
    assert torch.abs(x_app - x_model).max().item() <= FLOAT32_ROUNDING


def test_app_prints_the_percentiles_it_used(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        tiny_checkpoint: Path, contract_checkpoint: Path, l8_256: Path) -> None:
    cases = [
        (contract_checkpoint, [], "radiometry: percentiles 10,90 (model;"),
        (contract_checkpoint, ["--percentiles", "1,99"], "radiometry: percentiles 1,99 (flag;"),
        (tiny_checkpoint, [], "radiometry: percentiles 2,98 (default;"),
    ]
    for ckpt, extra, expect in cases:
        app_input(monkeypatch, tmp_path, l8_256, ckpt, "--bands", "3,2,1", *extra)
        out = capsys.readouterr().out
        assert expect in out, out
        pct = expect.split("percentiles ")[1].split(" ")[0].replace(",", "-")
        assert f"per-band {pct}% stretch" in out  # and used them


def test_output_scale_db_uses_the_models_range(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, contract_checkpoint: Path,
        l8_256: Path) -> None:
    unit, db, flag = tmp_path / "unit.tif", tmp_path / "db.tif", tmp_path / "flag.tif"
    for out, extra in ((unit, []), (db, ["--output-scale", "db"]),
                       (flag, ["--output-scale", "db", "--db-range=-20,0"])):
        pipeline_input(monkeypatch, l8_256, out, contract_checkpoint, "--bands", "3,2,1",
                       *extra)
    with rasterio.open(unit) as a, rasterio.open(db) as b, rasterio.open(flag) as c:
        u, d, f = a.read(1), b.read(1), c.read(1)
    lo, hi = CONTRACT["sar"]["db_range"]
    np.testing.assert_array_equal(np.isnan(d), np.isnan(u))
    # float32 rounding of values up to 30 dB in magnitude
    np.testing.assert_allclose(d, u * (hi - lo) + lo, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(f, u * 20.0 - 20.0, atol=1e-5, equal_nan=True)
    assert _tags(db)["RADIOMETRY"]["db_range"] == {"value": [-30.0, 5.0], "from": "model"}
    assert _tags(flag)["RADIOMETRY"]["db_range"] == {"value": [-20.0, 0.0], "from": "flag"}


def test_directory_run_hashes_the_resolved_config(
        tmp_path: Path, contract_checkpoint: Path, l8_256: Path) -> None:
    """A config file that spells out the model's own values is the same run: skipped."""
    scenes, out = tmp_path / "scenes", tmp_path / "out"
    scenes.mkdir()
    (scenes / "a.tif").write_bytes(l8_256.read_bytes())
    cfg = tmp_path / "same.yaml"
    cfg.write_text("bands: [3, 2, 1]\npercentiles: [10, 90]\ndb_range: [-30, 5]\n")
    args = ["run", str(scenes), str(out), "--model", str(contract_checkpoint), "-q"]
    first = CliRunner().invoke(pipeline_cli, [*args, "--bands", "3,2,1"])
    assert first.exit_code == 0, first.output
    before = (out / "a.tif").stat().st_mtime_ns
    second = CliRunner().invoke(pipeline_cli, [*args, "--config", str(cfg)])
    assert second.exit_code == 0, second.output
    assert (out / "a.tif").stat().st_mtime_ns == before  # up to date: not rewritten


def test_unusable_contract_is_a_model_error(tmp_path: Path, tiny_checkpoint: Path,
                                            l8_256: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint, networks=GENERATORS)
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, ckpt.networks, ckpt.config,
                    extra={"radiometry": {"eo": {"method": "auto", "percentiles": [98, 2]}}})
    res = CliRunner().invoke(pipeline_cli, ["run", str(l8_256), str(tmp_path / "o.tif"),
                                            "--model", str(bad), "--bands", "3,2,1"])
    assert res.exit_code == 1
    assert "eo.percentiles [98, 2] is not a valid range" in res.output
    assert not (tmp_path / "o.tif").exists()
    # a flag does not rescue it: a broken contract means a broken (or foreign) file
    res = CliRunner().invoke(pipeline_cli, ["run", str(l8_256), str(tmp_path / "o.tif"),
                                            "--model", str(bad), "--bands", "3,2,1",
                                            "--percentiles", "2,98", "-q"])
    assert res.exit_code == 1 and not (tmp_path / "o.tif").exists()


def test_relative_db_model_needs_a_db_range_for_db_output(
        tmp_path: Path, tiny_checkpoint: Path, l8_256: Path) -> None:
    """A model trained on per-scene ("auto") SAR ranges learned relative backscatter: no dB
    scale is invented for it; --db-range gives one, and unit output needs none."""
    ckpt = load_checkpoint(tiny_checkpoint, networks=GENERATORS)
    rel = tmp_path / "relative.pt"
    contract = {"eo": CONTRACT["eo"], "sar": {"units": "linear", "band": 1, "db_range": None,
                                              "db_scale": "relative"}}
    save_checkpoint(rel, ckpt.networks, ckpt.config, extra={"radiometry": contract})
    args = ["run", str(l8_256), str(tmp_path / "o.tif"), "--model", str(rel), "--bands",
            "3,2,1", "-q"]
    res = CliRunner().invoke(pipeline_cli, [*args, "--output-scale", "db"])
    assert res.exit_code == 1 and "no absolute dB scale" in res.output
    assert "--db-range" in res.output and not (tmp_path / "o.tif").exists()
    res = CliRunner().invoke(pipeline_cli, [*args, "--output-scale", "db", "--db-range=-20,0"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "o.tif") as ds:
        values = ds.read(1)
    assert np.nanmin(values) >= -20.0 and np.nanmax(values) <= 0.0
    (tmp_path / "o.tif").unlink()
    assert CliRunner().invoke(pipeline_cli, args).exit_code == 0  # unit output: fine
