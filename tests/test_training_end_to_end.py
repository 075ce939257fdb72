"""The training loop closed end to end through the user-facing commands.

`pipeline tiles` cuts real rasters into a dataset whose dataset.json records the radiometry,
`ugatit train` trains a tiny model on it, and the checkpoint it writes then translates an
image with `app.py` and a scene with `pipeline run`, both of which pick up the radiometric
contract the checkpoint carries (here a SAR dB range of [-30, 5], deliberately not the
[-25, 0] default, so that "came from the model" is visible in the numbers).

Real data: the WorldView-2 panchromatic chip (uint16, so the EO percentile stretch matters)
as EO and the AIRSAR intensity patch (linear) as SAR, both bundled in tests/data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main as pipeline_cli
from ugatit import load_checkpoint
from ugatit.cli import main as ugatit_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
EO = DATA / "sn6_rotterdam_wv2_pan_uint16.tif"
SAR = DATA / "airsar_sanfrancisco_fullpol_intensity.tif"
DB_RANGE = (-30.0, 5.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset dir, final checkpoint) of a 2-step tiny training run on real tiles."""
    root = tmp_path_factory.mktemp("e2e")
    ds = root / "ds"
    runner = CliRunner()
    for args in (["--eo", str(EO), "--eo-bands", "1,1,1"],
                 ["--sar", str(SAR), "--sar-units", "linear", "--sar-band", "1",
                  f"--sar-db-range={DB_RANGE[0]:g},{DB_RANGE[1]:g}"]):
        res = runner.invoke(pipeline_cli, ["tiles", *args, "--out", str(ds), "--tile-size",
                                           "64", "--split-block", "64", "-q"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(ugatit_cli, [
        "train", "--dataset", str(ds), "--out", str(root / "run"), "--iterations", "2",
        "--ngf", "4", "--n-res", "1", "--img-size", "32", "--n-dis-global", "5",
        "--save-every", "2", "--sample-every", "2", "--workers", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ckpts = sorted((root / "run" / "checkpoints").glob("params_*.pt"))
    assert [c.name for c in ckpts] == ["params_0000002.pt"]
    return ds, ckpts[-1]


def test_checkpoint_carries_the_datasets_radiometry(trained: tuple[Path, Path]) -> None:
    ds, ckpt = trained
    contract = json.loads((ds / "dataset.json").read_text())["radiometry"]
    loaded = load_checkpoint(ckpt)  # the seed six-network format, all networks
    assert loaded.format == "seed" and len(loaded.available) == 6
    assert loaded.radiometry == contract
    assert contract["sar"]["db_range"] == list(DB_RANGE)
    assert loaded.config.ngf == 4 and loaded.config.ndf == 4 and loaded.config.n_res == 1


def test_app_translates_an_image_with_the_trained_checkpoint(
        trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, ckpt = trained
    out = tmp_path / "gen.png"
    res = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--device", "cpu", "--model_path", str(ckpt),
         "--img", str(EO), "--bands", "1,1,1", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "radiometry: percentiles 2,98 (model;" in res.stdout  # from the checkpoint
    img = np.asarray(Image.open(out))
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    assert img.std() > 0  # a real translation, not a blank image


def test_pipeline_run_uses_the_models_db_range(
        trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, ckpt = trained
    unit, db = tmp_path / "unit.tif", tmp_path / "db.tif"
    for out, extra in ((unit, []), (db, ["--output-scale", "db"])):
        res = CliRunner().invoke(pipeline_cli, ["run", str(EO), str(out), "--model", str(ckpt),
                                                "--bands", "1,1,1", "-q", *extra])
        assert res.exit_code == 0, res.output
    with rasterio.open(EO) as src, rasterio.open(unit) as u, rasterio.open(db) as d:
        assert (d.crs, d.transform, d.shape) == (src.crs, src.transform, src.shape)
        assert d.dtypes[0] == "float32"
        a, b = u.read(1), d.read(1)
        tags = json.loads(d.tags()["EO2SAR_RADIOMETRY"])
    lo, hi = DB_RANGE
    assert tags["db_range"] == {"value": list(DB_RANGE), "from": "model"}
    assert tags["percentiles"]["from"] == "model"
    # float32 rounding of values up to 30 dB in magnitude
    np.testing.assert_allclose(b, a * (hi - lo) + lo, atol=1e-5, equal_nan=True)
    assert np.nanmin(b) >= lo and np.nanmax(b) <= hi
