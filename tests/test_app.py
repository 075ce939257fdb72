"""app.py, the seed-compatible single-image command.

The seed-parity runs and one failure go through a subprocess (``python app.py ...`` in a
temporary cwd), as a user runs it: the output name ``gen_sar_<stem>.png`` lands in the
current directory and the exit status is the process's. The other command-line cases call
``app.main(argv)`` in-process (same code, no 2 s interpreter start-up each). The
reference output is computed here, independently of app.py, following the seed's recipe
(PIL bilinear resize to 256, /255, normalise 0.5/0.5, genA2B, x*0.5+0.5, round). Input
conversions are checked in-process against independent numpy computations.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from ugatit import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
DATA = Path(__file__).parent / "data"
EO_RGB = DATA / "sn6_rotterdam_eo_rgb.tif"  # 200x200 uint8 RGB GeoTIFF (PIL reads it)
HAITI = DATA / "haiti_rgbn_uint8.tif"  # 4 x uint8, R G B NIR
L8 = DATA / "l8_224078_parana_bgr_uint16.tif"  # 3 x uint16, B G R, zero collar
PAN = DATA / "sn6_rotterdam_wv2_pan_uint16.tif"  # 1 x uint16


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eo2sar_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing it
    spec.loader.exec_module(module)
    return module


app = _load_app()


def run_app(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(APP), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def call_app(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             ) -> Callable[..., Result]:
    """app.main(argv) in this process with `cwd` as the current directory: the same code
    path as the command line minus the 2 s interpreter + torch start-up per call."""

    def call(cwd: Path, *args: str | Path) -> Result:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        rc = app.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Result(rc, out, err)

    return call


CallApp = Callable[..., Result]


def pngs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def seed_reference(img_path: Path, ckpt_path: Path, out_size: int) -> np.ndarray:
    """The seed's recipe (docs/UGATIT_FORMAT.md), written out independently of app.py, for
    an 8-bit RGB input: PIL bilinear to 256, /255, (x-0.5)/0.5, genA2B, x*0.5+0.5, resized
    to the output size (PIL bilinear on the float image), then *255, rounded, clipped."""
    img = Image.open(img_path).convert("RGB").resize((256, 256), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    x = (x - 0.5) / 0.5
    gen = load_checkpoint(ckpt_path, networks=("genA2B",)).genA2B
    with torch.no_grad():
        out = gen(torch.from_numpy(x)[None])[0][0].numpy()
    y = out * 0.5 + 0.5  # [3, 256, 256] float
    resized = [np.asarray(Image.fromarray(band, "F").resize((out_size, out_size),
                                                            Image.BILINEAR)) for band in y]
    return np.clip(np.round(np.stack(resized, axis=-1) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# End to end


@pytest.mark.parametrize("out_size", [256, 300])
def test_rgb_geotiff_matches_seed_recipe(tmp_path: Path, tiny_checkpoint: Path,
                                         out_size: int) -> None:
    res = run_app(tmp_path, "--device", "cpu", "--model_path", tiny_checkpoint,
                  "--img", EO_RGB, "--out_img_size", out_size)
    assert res.returncode == 0, res.stderr
    assert "RGB 8-bit: no conversion" in res.stdout
    assert pngs(tmp_path) == ["gen_sar_sn6_rotterdam_eo_rgb.png"]  # nothing else left behind

    with Image.open(tmp_path / "gen_sar_sn6_rotterdam_eo_rgb.png") as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (out_size, out_size)
        got = np.asarray(im)
    want = seed_reference(EO_RGB, tiny_checkpoint, out_size)
    assert got.dtype == np.uint8 and got.shape == (out_size, out_size, 3)
    assert want.std() > 1.0  # the comparison below is not between two flat images
    # +-1 level: float32 sums in another order (threads) may move a value across a .5.
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"max diff {diff.max()}, {np.count_nonzero(diff)} pixels differ"
    # ...and only rarely: truncating instead of rounding would move about half the values.
    assert np.count_nonzero(diff) <= 0.01 * diff.size


def test_ignored_seed_flags_print_a_note(
        tmp_path: Path, tiny_checkpoint: Path, call_app: CallApp) -> None:
    res = call_app(tmp_path, "--model_path", tiny_checkpoint, "--img", EO_RGB,
                   "--ch", "64", "--n_res", "4", "--n_dis", "6", "--img_size", "256",
                   "--img_ch", "3", "--out_img_size", "64")
    assert res.returncode == 0, res.stderr
    assert "--ch --n_res --n_dis --img_size --img_ch ignored" in res.stderr
    # The architecture came from the checkpoint (ngf 4), not from --ch 64.
    assert "ngf=4, n_res=1" in res.stdout
    with Image.open(tmp_path / "gen_sar_sn6_rotterdam_eo_rgb.png") as im:
        assert im.size == (64, 64)


@pytest.mark.parametrize(("image", "extra", "expect"), [
    (HAITI, [], "4 bands: using bands 1,2,3"),
    (HAITI, ["--bands", "4,3,2"], "bands 4,3,2"),
    (L8, ["--bands", "3,2,1"], "uint16, bands 3,2,1 (--bands): per-band 2-98% stretch"),
    (PAN, [], "1 band (grayscale): per-band 2-98% stretch"),
])
def test_multiband_and_16bit_rasters(
        tmp_path: Path, tiny_checkpoint: Path, call_app: CallApp, image: Path,
        extra: list[str], expect: str) -> None:
    res = call_app(tmp_path, "--model_path", tiny_checkpoint, "--img", image,
                   "--out_img_size", "128", *extra)
    assert res.returncode == 0, res.stderr
    assert expect in res.stdout
    with Image.open(tmp_path / f"gen_sar_{image.stem}.png") as im:
        assert im.mode == "RGB" and im.size == (128, 128)
        assert np.asarray(im).std() > 1.0


def test_rgba_and_grayscale_png(tmp_path: Path, tiny_checkpoint: Path, call_app: CallApp) -> None:
    rgb = np.asarray(Image.open(EO_RGB).convert("RGB"))
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).round().astype(np.uint8), (rgb.shape[0], 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "gray.png")
    out = tmp_path / "out"
    out.mkdir()
    for name, expect in [("rgba.png", "RGBA: alpha dropped by compositing over black"),
                         ("gray.png", "grayscale L 8-bit: replicated to 3 channels")]:
        res = call_app(out, "--model_path", tiny_checkpoint, "--img", tmp_path / name)
        assert res.returncode == 0, res.stderr
        assert expect in res.stdout
    assert pngs(out) == ["gen_sar_gray.png", "gen_sar_rgba.png"]


def test_out_path_and_heatmap(tmp_path: Path, tiny_checkpoint: Path, call_app: CallApp) -> None:
    cwd, dest = tmp_path / "cwd", tmp_path / "dest"
    cwd.mkdir()
    dest.mkdir()
    res = call_app(cwd, "--model_path", tiny_checkpoint, "--img", EO_RGB,
                   "--out", dest / "x.png", "--heatmap", "--out_img_size", "96")
    assert res.returncode == 0, res.stderr
    assert pngs(cwd) == []
    assert pngs(dest) == ["x.png", "x_heatmap.png"]
    for name in ("x.png", "x_heatmap.png"):
        with Image.open(dest / name) as im:
            assert im.mode == "RGB" and im.size == (96, 96)
    # --out naming a directory keeps the seed's file name inside it.
    res = call_app(cwd, "--model_path", tiny_checkpoint, "--img", EO_RGB, "--out", dest)
    assert res.returncode == 0, res.stderr
    assert "gen_sar_sn6_rotterdam_eo_rgb.png" in pngs(dest)


# ----------------------------------------------------------------------------------------
# Failures: non-zero exit, a message, and no image


def test_missing_checkpoint(tmp_path: Path) -> None:
    res = run_app(tmp_path, "--model_path", tmp_path / "nope.pt", "--img", EO_RGB)
    assert res.returncode != 0
    assert "nope.pt" in res.stderr and "not found" in res.stderr
    assert pngs(tmp_path) == []


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_broken_checkpoint(
        tmp_path: Path, tiny_checkpoint: Path, call_app: CallApp, kind: str) -> None:
    bad = tmp_path / "bad.pt"
    if kind == "garbage":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        data = tiny_checkpoint.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    res = call_app(tmp_path, "--model_path", bad, "--img", EO_RGB)
    assert res.returncode != 0
    assert "error: cannot load checkpoint" in res.stderr and "bad.pt" in res.stderr
    assert "Traceback" not in res.stderr
    assert pngs(tmp_path) == ["bad.pt"]


def test_cuda_device_that_does_not_exist(
        tmp_path: Path, tiny_checkpoint: Path, call_app: CallApp) -> None:
    """cuda:0 without CUDA; on a GPU machine, the first index past the last GPU."""
    if torch.cuda.is_available():
        device, expect = f"cuda:{torch.cuda.device_count()}", "CUDA device(s) exist"
    else:
        device, expect = "cuda:0", "CUDA is not available on this machine"
    res = call_app(tmp_path, "--device", device, "--model_path", tiny_checkpoint,
                   "--img", EO_RGB)
    assert res.returncode != 0
    assert res.stderr.startswith("error: ") and expect in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert pngs(tmp_path) == []


def test_band_out_of_range(tmp_path: Path, tiny_checkpoint: Path, call_app: CallApp) -> None:
    res = call_app(tmp_path, "--model_path", tiny_checkpoint, "--img", HAITI,
                   "--bands", "5,3,2")
    assert res.returncode != 0
    assert "has 4 band(s)" in res.stderr and "no band 5" in res.stderr
    assert pngs(tmp_path) == []


def test_missing_input(tmp_path: Path, tiny_checkpoint: Path, call_app: CallApp) -> None:
    res = call_app(tmp_path, "--model_path", tiny_checkpoint, "--img", tmp_path / "none.png")
    assert res.returncode != 0 and "input image not found" in res.stderr
    assert pngs(tmp_path) == []


# ----------------------------------------------------------------------------------------
# Input conversions, in-process


def test_8bit_is_never_stretched(tmp_path: Path) -> None:
    # A dull 8-bit image (values 100..120) must reach the network as it is.
    rng = np.random.default_rng(1)
    arr = rng.integers(100, 121, size=(40, 50, 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(tmp_path / "dull.png")
    loaded = app.read_input(tmp_path / "dull.png")
    np.testing.assert_array_equal(np.asarray(loaded.image), arr)


def test_translate_runs_under_inference_mode() -> None:
    """The seed ran the generator with autograd on; app.py must not build a graph."""

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            self.inference = torch.is_inference_mode_enabled()
            y = x * 1.0  # a computed tensor: it would carry a graph outside inference mode
            return y, y[:, :2, 0, 0], y[:, :1, ::4, ::4]

    probe = Probe()
    out, heat = app.translate(probe, torch.zeros(1, 3, 8, 8, requires_grad=True))
    assert probe.inference
    assert not out.requires_grad and heat.shape == (1, 1, 2, 2)


def test_8bit_grayscale_replicated_unchanged(tmp_path: Path) -> None:
    gray = np.random.default_rng(3).integers(0, 256, size=(20, 30), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    loaded = app.read_input(tmp_path / "g.png")
    np.testing.assert_array_equal(np.asarray(loaded.image), np.repeat(gray[..., None], 3, -1))
    assert "replicated to 3 channels (no stretch)" in loaded.note


def test_postprocess_resizes_before_rounding() -> None:
    """The seed's order: resize the float image, then round once. A 2-column image of
    levels 127.4 | 100.4 resized to 4 columns (PIL bilinear weights 1, .75/.25, .25/.75, 1)
    gives 127, 120.65 -> 121, 107.15 -> 107, 100; rounding first (127 | 100) would give
    120 in the second column."""
    y = torch.empty(1, 3, 2, 2)
    y[..., 0], y[..., 1] = (127.4 / 255.0 - 0.5) / 0.5, (100.4 / 255.0 - 0.5) / 0.5
    got = np.asarray(app.postprocess(y, 4))
    assert got.shape == (4, 4, 3) and got.dtype == np.uint8
    assert (got == np.array([127, 121, 107, 100])[None, :, None]).all()
    # No resize at the model's own size: just the 8-bit conversion.
    np.testing.assert_array_equal(np.asarray(app.postprocess(y, 2))[0, :, 0], [127, 100])


def test_rgba_composited_over_black(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, size=(30, 20, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    loaded = app.read_input(tmp_path / "a.png")
    want = np.round(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(loaded.image), want)


def test_16bit_png_stretched_and_replicated(tmp_path: Path) -> None:
    ramp = np.linspace(1000, 60000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")  # PIL: mode I;16 or I
    loaded = app.read_input(tmp_path / "g16.png")
    lo, hi = np.percentile(ramp.astype(float), [2, 98])
    want = np.round(np.clip((ramp - lo) / (hi - lo), 0, 1) * 255)
    got = np.asarray(loaded.image).astype(int)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 0] == got[..., 2]).all()
    assert np.abs(got[..., 0] - want).max() <= 1  # float rounding at .5 only
    assert "stretch" in loaded.note and "replicated" in loaded.note


def test_multiband_takes_first_three_or_chosen_bands() -> None:
    with rasterio.open(HAITI) as ds:
        bands = ds.read()  # [4, H, W] uint8
    first = np.asarray(app.read_input(HAITI).image)
    np.testing.assert_array_equal(first, np.moveaxis(bands[:3], 0, -1))
    chosen = np.asarray(app.read_input(HAITI, (4, 3, 2)).image)
    np.testing.assert_array_equal(chosen, np.moveaxis(bands[[3, 2, 1]], 0, -1))


def test_landsat_uint16_per_band_stretch_is_the_pipelines() -> None:
    """The pipeline's scaling (per band, from its decimated read, the zero collar left out
    as fill), applied in float: no 8-bit rounding before the network."""
    from pipeline.inputs.radiometry import compute_scaling

    with rasterio.open(L8) as ds:
        rgb = ds.read((3, 2, 1)).astype(np.float64)
        scaling = compute_scaling(ds, (3, 2, 1))
    fill = (rgb == 0).all(axis=0)
    assert 0.05 < fill.mean() < 0.5  # the sample does have its collar
    assert len(set(scaling.low)) == 3 and min(scaling.low) > 0  # per band; collar left out
    low = np.array(scaling.low)[:, None, None]
    high = np.array(scaling.high)[:, None, None]
    want = np.clip((rgb - low) / (high - low), 0, 1)
    want[:, fill] = 0.0
    loaded = app.read_input(L8, (3, 2, 1))
    assert loaded.unit is not None and loaded.unit.dtype == np.float32
    np.testing.assert_allclose(loaded.unit, want, atol=1e-6)  # float32 rounding
    assert f"low [{scaling.low[0]:g}, " in loaded.note


def test_heatmap_overlay_colours() -> None:
    img = Image.new("RGB", (8, 8), (100, 100, 100))
    hm = torch.zeros(1, 1, 2, 2)
    flat = np.asarray(app.heatmap_overlay(img, hm, 8)).astype(int)
    # Zero attention everywhere: jet(0) = dark blue (0, 0, 0.5) blended 50/50.
    assert (flat == np.array([50, 50, 114])).all()
    # Min-max normalised like the original's cam(): a uniform heatmap carries no
    # location, whatever its level, so it is all jet(0) too (max-normalising would be red).
    assert (np.asarray(app.heatmap_overlay(img, hm + 3.0, 8)).astype(int) == flat).all()
    hm[0, 0, 0, 0] = 5.0  # attention in the top-left corner only
    hot = np.asarray(app.heatmap_overlay(img, hm, 8)).astype(int)
    assert hot[0, 0, 0] > hot[0, 0, 2]  # red-ish where the model looked
    assert hot[7, 7, 2] > hot[7, 7, 0]  # blue-ish where it did not
