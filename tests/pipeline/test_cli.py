"""`python -m pipeline run` through click's CliRunner: messages, exit status, and that a
refused run writes NOTHING (not even a hidden temporary file) in the output directory.

Exit status: 2 for usage errors (bad flag/config value, bad or absent device), 1 for
unusable input/output/model (see pipeline/errors.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from rasterio.control import GroundControlPoint
from rasterio.windows import Window

from pipeline import load_config
from pipeline.cli import main
from tests.helpers import SN6, assert_same_grid, crop


def invoke(*args: str | Path):
    return CliRunner().invoke(main, ["run", *map(str, args)])


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())  # hidden files included


@pytest.fixture
def outdir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def assert_refused(result, status: int, *needles: str) -> None:
    assert result.exit_code == status, result.output
    line = result.stderr.split("\r")[-1].strip()  # after a cleared progress bar, if any
    assert line.startswith("Error: ") and "\n" not in line, line  # ONE line
    for n in needles:
        assert n in line, line


def test_help_lists_options_with_defaults():
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for opt in ("--model", "--device", "--config", "--bands", "--scale", "--tile-size",
                "--overlap", "--batch-size", "--block-size", "--output-bands",
                "--output-scale", "--heatmap", "--overwrite", "--pattern", "--scheduler",
                "--workers", "--dry-run", "--nodata", "-q", "-v"):
        assert opt in text, opt
    # every option says its default (or that it is required), in its own help text
    command = main.commands["run"]
    ctx = click.Context(command)
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        record = param.get_help_record(ctx)
        assert record is not None, param.name
        assert "[default:" in record[1] or "Required" in record[1], record


def test_run_writes_cog_and_reports(tiny_checkpoint, outdir):
    out = outdir / "sar.tif"
    result = invoke(SN6, out, "--model", tiny_checkpoint, "--output-scale", "uint8")
    assert result.exit_code == 0, result.output
    assert "1/1 tiles" in result.stderr
    assert_same_grid(SN6, out)
    assert listing(outdir) == ["sar.stac.json", "sar.tif"]  # the COG and its STAC Item


def test_config_file_overridden_by_flags(tiny_checkpoint, tmp_path, outdir):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("tile_size: 128\noverlap: 32\noutput_scale: db\n")
    out = outdir / "sar.tif"
    result = invoke(SN6, out, "--model", tiny_checkpoint, "--config", cfg, "--overlap", "16")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        recorded = json.loads(ds.tags()["EO2SAR_CONFIG"])
        assert ds.read(1).max() <= 0.0  # dB range [-25, 0]
    assert (recorded["tile_size"], recorded["overlap"], recorded["output_scale"]) == (
        128, 16, "db")
    with rasterio.open(out) as ds:  # the rest of the resolved config: scheduling settings
        runtime = json.loads(ds.tags()["EO2SAR_RUNTIME"])
    assert runtime["batch_size"] == 4 and runtime["device"] == "cpu"
    assert set(recorded) | set(runtime) == set(load_config(None, {}).to_dict())


def test_bad_config_key_is_usage_error(tiny_checkpoint, tmp_path, outdir):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("tile_sise: 128\n")
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--config", cfg)
    assert_refused(result, 2, "unknown key(s) tile_sise", "Hint:")
    assert listing(outdir) == []


def test_dry_run_prints_plan_writes_nothing(tiny_checkpoint, outdir):
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--dry-run",
                    "--heatmap", outdir / "h.tif")
    assert result.exit_code == 0, result.output
    for word in ("tiles    1 (1 x 1)", "batches", "memory", "COG 1 x float32", "heatmap",
                 "nodata NaN", "input's grid (200 x 200 px", "DEFLATE", "AVERAGE overview",
                 "nothing written"):
        assert word in result.output, result.output
    assert listing(outdir) == []


def test_not_a_raster(tiny_checkpoint, tmp_path, outdir):
    bad = tmp_path / "notes.tif"
    bad.write_text("hello, I am not a GeoTIFF\n")
    result = invoke(bad, outdir / "o.tif", "--model", tiny_checkpoint)
    assert_refused(result, 1, str(bad), "not a raster GDAL can read")
    assert listing(outdir) == []


def test_missing_input(tiny_checkpoint, tmp_path, outdir):
    result = invoke(tmp_path / "nope.tif", outdir / "o.tif", "--model", tiny_checkpoint)
    assert_refused(result, 1, "nope.tif", "does not exist")
    assert listing(outdir) == []


def test_truncated_file(tiny_checkpoint, tmp_path, outdir):
    cut = tmp_path / "cut.tif"
    blob = SN6.read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])
    result = invoke(cut, outdir / "o.tif", "--model", tiny_checkpoint)
    assert_refused(result, 1, str(cut), "truncated")
    assert listing(outdir) == []


def test_no_georeferencing(tiny_checkpoint, tmp_path, outdir):
    plain = tmp_path / "plain.tif"
    with rasterio.open(SN6) as ds:
        data = ds.read()
    with rasterio.open(plain, "w", driver="GTiff", width=200, height=200, count=3,
                       dtype="uint8") as ds:
        ds.write(data)
    result = invoke(plain, outdir / "o.tif", "--model", tiny_checkpoint)
    assert_refused(result, 1, str(plain), "no georeferencing", "gdal_edit")
    assert listing(outdir) == []


def test_gcp_only_is_refused_with_gdalwarp_hint(tiny_checkpoint, tmp_path, outdir):
    gcp_file = tmp_path / "gcps.tif"
    with rasterio.open(SN6) as ds:
        data, crs = ds.read(), ds.crs
    gcps = [GroundControlPoint(row=r, col=c, x=592317.0 + 4.5 * c, y=5750102.0 - 4.5 * r)
            for r, c in ((0, 0), (0, 199), (199, 0), (199, 199))]
    with rasterio.open(gcp_file, "w", driver="GTiff", width=200, height=200, count=3,
                       dtype="uint8", gcps=gcps, crs=crs) as ds:
        ds.write(data)
    result = invoke(gcp_file, outdir / "o.tif", "--model", tiny_checkpoint)
    assert_refused(result, 1, "only by GCPs", "gdalwarp")
    assert listing(outdir) == []


def test_fewer_bands_than_asked(tiny_checkpoint, outdir):
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--bands", "3,2,4")
    assert_refused(result, 1, "has 3 band(s), band(s) 4 asked for")
    assert listing(outdir) == []


def test_four_band_input_needs_bands(tiny_checkpoint, data_dir, outdir):
    result = invoke(data_dir / "haiti_rgbn_uint8.tif", outdir / "o.tif", "--model",
                    tiny_checkpoint)
    assert_refused(result, 1, "has 4 band(s)", "--bands")
    assert listing(outdir) == []
    ok = invoke(data_dir / "haiti_rgbn_uint8.tif", outdir / "o.tif", "--model",
                tiny_checkpoint, "--bands", "1,2,3", "-q")
    assert ok.exit_code == 0, ok.output
    assert_same_grid(data_dir / "haiti_rgbn_uint8.tif", outdir / "o.tif")


def test_scene_smaller_than_one_tile_works(tiny_checkpoint, tmp_path, outdir):
    small = crop(SN6, tmp_path / "small.tif", Window(10, 10, 33, 21))
    result = invoke(small, outdir / "o.tif", "--model", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert_same_grid(small, outdir / "o.tif")
    assert listing(outdir) == ["o.stac.json", "o.tif"]


def test_all_nodata_scene_warns_and_writes_nodata(tiny_checkpoint, tmp_path, outdir):
    empty = crop(SN6, tmp_path / "empty.tif", Window(0, 0, 50, 40), nodata=0)
    with rasterio.open(empty, "r+") as ds:
        ds.write(np.zeros((3, 40, 50), dtype=np.uint8))
    result = invoke(empty, outdir / "o.tif", "--model", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.stderr and "no valid pixel" in result.stderr
    with rasterio.open(outdir / "o.tif") as ds:
        assert np.isnan(ds.read(1)).all()


def test_output_exists_without_overwrite(tiny_checkpoint, outdir):
    out = outdir / "o.tif"
    out.write_bytes(b"precious")
    result = invoke(SN6, out, "--model", tiny_checkpoint)
    assert_refused(result, 1, str(out), "already exists", "--overwrite")
    assert out.read_bytes() == b"precious" and listing(outdir) == ["o.tif"]
    again = invoke(SN6, out, "--model", tiny_checkpoint, "--overwrite", "-q")
    assert again.exit_code == 0, again.output
    assert_same_grid(SN6, out)


def test_output_directory_missing(tiny_checkpoint, tmp_path):
    missing = tmp_path / "no" / "such"
    result = invoke(SN6, missing / "o.tif", "--model", tiny_checkpoint)
    assert_refused(result, 1, "output directory does not exist", "mkdir -p")
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories; "
                    "the check is os.access(W_OK), which root always passes")
def test_output_directory_read_only(tiny_checkpoint, outdir):
    outdir.chmod(0o555)
    try:
        result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint)
    finally:
        outdir.chmod(0o755)
    assert_refused(result, 1, "not writable")
    assert listing(outdir) == []


def test_output_directory_not_writable_any_user(tiny_checkpoint, outdir, monkeypatch):
    """The same refusal where the test above cannot run (root passes os.access)."""
    import pipeline.run.mosaic

    real_access = os.access
    monkeypatch.setattr(pipeline.run.mosaic.os, "access",
                        lambda p, mode: False if Path(p) == outdir else real_access(p, mode))
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint)
    assert_refused(result, 1, str(outdir), "not writable", "Hint:")
    assert listing(outdir) == []


def test_output_given_as_a_directory(tiny_checkpoint, tmp_path, outdir):
    """OUTPUT an existing directory: the output is DIR/<input stem>.tif, as in directory
    runs (a .tiff or .vrt input still gives a GeoTIFF named .tif)."""
    src = crop(SN6, tmp_path / "scene.tiff", Window(0, 0, 64, 48))
    result = invoke(src, outdir, "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 0, result.output
    assert listing(outdir) == ["scene.stac.json", "scene.tif"]
    assert_same_grid(src, outdir / "scene.tif")


def test_bad_device_string(tiny_checkpoint, outdir):
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--device", "gpu0")
    assert_refused(result, 2, "unknown device 'gpu0'", "cuda:N")
    assert listing(outdir) == []


def test_cuda_without_cuda(tiny_checkpoint, outdir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on GPU boxes
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--device", "cuda:0")
    assert_refused(result, 2, "CUDA is not available", "--device cpu")
    assert listing(outdir) == []
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--device", "cuda",
                    "--workers", "2")  # a local cluster runs on this machine: same check
    assert_refused(result, 2, "CUDA is not available")
    assert listing(outdir) == []


def test_full_checkpoint_with_other_tile_size(make_checkpoint, outdir):
    ckpt = make_checkpoint(ngf=4, n_res=1, light=False, img_size=64)
    result = invoke(SN6, outdir / "o.tif", "--model", ckpt)
    assert_refused(result, 1, str(ckpt), "full (non-light)", "--tile-size 64")
    assert listing(outdir) == []


def test_not_a_checkpoint(tmp_path, outdir):
    fake = tmp_path / "model.pt"
    shutil.copy(SN6, fake)
    result = invoke(SN6, outdir / "o.tif", "--model", fake)
    assert_refused(result, 1, "model.pt", "Hint:")
    assert listing(outdir) == []


def test_missing_checkpoint(tmp_path, outdir):
    result = invoke(SN6, outdir / "o.tif", "--model", tmp_path / "none.pt")
    assert_refused(result, 1, "none.pt", "checkpoint not found")
    assert listing(outdir) == []


def test_bad_overlap_is_usage_error(tiny_checkpoint, outdir):
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--overlap", "200")
    assert_refused(result, 2, "more than half the tile size")
    assert listing(outdir) == []


def test_rpc_only_is_refused_with_gdalwarp_hint(tiny_checkpoint, tmp_path, outdir):
    from rasterio.rpc import RPC

    rpc = RPC(height_off=0, height_scale=100, lat_off=51.9, lat_scale=0.01,
              line_den_coeff=[1] + [0] * 19, line_num_coeff=[0, 0, -1] + [0] * 17,
              line_off=100, line_scale=100, long_off=4.0, long_scale=0.01,
              samp_den_coeff=[1] + [0] * 19, samp_num_coeff=[0, 1] + [0] * 18,
              samp_off=100, samp_scale=100)
    rpc_file = tmp_path / "rpc.tif"
    with rasterio.open(rpc_file, "w", driver="GTiff", width=200, height=200, count=3,
                       dtype="uint8", rpcs=rpc) as ds:
        ds.write(np.full((3, 200, 200), 9, dtype=np.uint8))
    result = invoke(rpc_file, outdir / "o.tif", "--model", tiny_checkpoint)
    assert_refused(result, 1, "only by RPCs", "gdalwarp -rpc")
    assert listing(outdir) == []


def test_failure_during_run_leaves_nothing(tiny_checkpoint, outdir, monkeypatch):
    """An error after the temporary files exist (here: in an inference task) removes them."""
    import pipeline.run.inference

    def broken(job, tiles):
        raise pipeline.run.inference.PipelineError("simulated task failure", path="task",
                                               hint="none")

    monkeypatch.setattr(pipeline.run.inference, "run_batch", broken)
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--heatmap",
                    outdir / "h.tif")
    assert_refused(result, 1, "simulated task failure")
    assert listing(outdir) == []


def test_interrupt_during_run_leaves_nothing(tiny_checkpoint, outdir, monkeypatch):
    import pipeline.run.mosaic
    from pipeline import load_config, run_scene

    def interrupted(self, array, window):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.run.mosaic.RasterTarget, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_scene(SN6, outdir / "o.tif", model_path=tiny_checkpoint,
                  config=load_config(None, {}), progress=False)
    assert listing(outdir) == []


def test_directory_input_runs_every_scene(tiny_checkpoint, tmp_path):
    """The CLI hands directories to pipeline.run.batch.run_directory; exit 1 if a scene fails."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SN6, src / "a.tif")
    result = invoke(src, out, "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 0, result.output
    assert_same_grid(SN6, out / "a.tif")
    (src / "b.tif").write_text("not a raster")
    result = invoke(src, out, "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 1, result.output
    assert "b.tif" in result.output


def test_directory_run_refuses_bad_device_and_model_up_front(tiny_checkpoint, tmp_path):
    """What would fail every scene fails once, as a usage error, creating nothing."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SN6, src / "a.tif")
    result = invoke(src, out, "--model", tiny_checkpoint, "--device", "gpu0")
    assert_refused(result, 2, "unknown device")
    fake = tmp_path / "model.pt"
    shutil.copy(SN6, fake)
    result = invoke(src, out, "--model", fake)
    assert_refused(result, 1, "model.pt", "Hint:")
    assert not out.exists()


def test_directory_dry_run_prints_each_plan_writes_nothing(tiny_checkpoint, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SN6, src / "a.tif")
    (src / "b.tif").write_text("not a raster")
    result = invoke(src, out, "--model", tiny_checkpoint, "--dry-run")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "2 scene(s)" in text and "a.tif: run (no output)" in text
    for word in ("tiles    1 (1 x 1)", "batches", "memory", "COG 1 x float32"):
        assert word in text, text
    assert "b.tif: run (no output)" in text and "would fail" in text
    assert "nothing written" in text and not out.exists()
    assert invoke(src, out, "--model", tiny_checkpoint, "-q").exit_code == 1  # b.tif
    result = invoke(src, out, "--model", tiny_checkpoint, "--dry-run")
    assert "a.tif: skip (up to date)" in result.output, result.output


def test_quicklook_command(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`pipeline quicklook` puts the input and the output of a run side by side."""
    from PIL import Image

    cli_main, src = main, SN6
    out = tmp_path / "out.tif"
    res = CliRunner().invoke(cli_main, ["run", str(src), str(out), "--model",
                                        str(tiny_checkpoint), "-q"])
    assert res.exit_code == 0, res.output
    png = tmp_path / "ql.png"
    res = CliRunner().invoke(cli_main, ["quicklook", str(src), str(out), str(png),
                                        "--bands", "1,2,3", "--max-size", "100"])
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        w, h = im.size
        assert h == 100 and 200 <= w <= 220  # two 100 px panels and a small gap
    res = CliRunner().invoke(cli_main, ["quicklook", str(src), str(out), str(png),
                                        "--bands", "0,1,2"])
    assert res.exit_code == 2 and "bands" in res.output


def test_fp16_on_cpu_is_refused_before_any_forward(tiny_checkpoint, outdir, monkeypatch):
    """Issue 16 item 7: fp16 autocast on a CPU ran a 4-tile scene for over 8 minutes.
    The run is refused at the configuration (exit 2, one line naming bf16), before the
    model is loaded or any tile is forwarded, and leaves nothing behind."""
    from pipeline.run import inference

    def never(*args, **kwargs):
        raise AssertionError("the model was used although fp16 on CPU is refused")

    monkeypatch.setattr(inference, "get_generator", never)
    monkeypatch.setattr(inference, "run_batch", never)
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--precision", "fp16")
    assert_refused(result, 2, "fp16", "--precision bf16")
    assert listing(outdir) == []
    cfg = outdir.parent / "c.yaml"
    cfg.write_text("precision: fp16\n")  # a config file is refused the same way
    result = invoke(SN6, outdir / "o.tif", "--model", tiny_checkpoint, "--config", cfg)
    assert_refused(result, 2, "fp16", "bf16")
