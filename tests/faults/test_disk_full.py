"""Item 5: the output (and a training run's checkpoints) on a full filesystem (a tiny
tmpfs the test mounts).

Needs root (CI runs as root); skipped when the mount is not allowed. The sizes are chosen
from measured outputs of the ngf 4 model with 128 px tiles: a 320 x 320 px scene's COG
is ~400 KiB and needs ~800 KiB while written (temporary GeoTIFF + COG); a 160 x 160 px
scene needs ~250 KiB at most and leaves ~100 KiB.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner, Result
from rasterio.windows import Window

from pipeline.cli import main
from tests.faults.faultlib import RUN_FLAGS, same_bytes, temps, visible
from tests.helpers import L8, assert_cog, crop, make_dataset
from ugatit import load_checkpoint
from ugatit.cli import main as ugatit_main


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount(size) -> a fresh tmpfs of that size (e.g. "64k"), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(point)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def run_here(*args: str | Path) -> Result:
    """`pipeline run ARGS -q` in this process (the same code path as the command; no
    interpreter start). Not -q for a directory: its summary line is checked."""
    quiet = () if Path(args[0]).is_dir() else ("-q",)
    return CliRunner().invoke(main, ["run", *map(str, args), *RUN_FLAGS, *quiet])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def test_scene_on_a_full_disk_is_one_line_and_leaves_nothing(
        two_scenes: Path, tiny_checkpoint: Path, tiny_fs: Callable[[str], Path]) -> None:
    for size in ("64k", "600k"):  # full while tiles are written / during the COG copy
        fs = tiny_fs(size)
        out = fs / "a.tif"
        run = run_here(two_scenes / "a.tif", out, "--model", tiny_checkpoint)
        # an exit, not a crash (an uncaught exception would be recorded as itself)
        assert run.exit_code == 1 and isinstance(run.exception, SystemExit), run.output
        [line] = error_lines(run.stderr)  # ONE error line
        assert line.startswith(f"Error: {out}: no space left on device ({fs}, "), line
        assert list(fs.iterdir()) == []  # no partial output, no temporary file


def test_directory_run_on_a_full_disk_reports_every_scene(
        two_scenes: Path, tiny_checkpoint: Path, tiny_fs: Callable[[str], Path],
        tmp_path: Path) -> None:
    """a (small) fits, then b does not: a is done and kept, b is reported failed with
    the reason, the run report lists both, exit status 1."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    crop(L8, scenes / "a.tif", Window(700, 600, 160, 160))
    (scenes / "b.tif").symlink_to(two_scenes / "b.tif")
    clean = tmp_path / "clean.tif"  # the reference: a on a disk with room
    done = run_here(scenes / "a.tif", clean, "--model", tiny_checkpoint)
    assert done.exit_code == 0, done.output
    fs = tiny_fs("600k")
    run = run_here(scenes, fs / "out", "--model", tiny_checkpoint)
    assert run.exit_code == 1 and isinstance(run.exception, SystemExit), run.output
    report = json.loads((fs / "out" / "eo2sar_run_report.json").read_text())
    status = {s["scene"]: (s["status"], s["message"]) for s in report["scenes"]}
    assert status["a.tif"] == ("done", "new")
    assert status["b.tif"][0] == "failed"
    assert status["b.tif"][1].startswith(f"{fs / 'out' / 'b.tif'}: no space left on device")
    assert "b.tif  failed" in run.stderr and "1 done, 0 skipped, 1 failed" in run.stderr
    assert visible(fs / "out") == ["a.stac.json", "a.tif", "a.tif.manifest.json",
                                   "collection.json", "eo2sar_run_report.json"]
    assert temps(fs / "out") == []
    assert_cog(fs / "out" / "a.tif")
    assert same_bytes(fs / "out" / "a.tif", clean)


def test_training_on_a_full_disk_stops_naming_the_checkpoint_and_the_last_good_one(
        tiny_fs: Callable[[str], Path], tmp_path: Path) -> None:
    """A checkpoint is ~1.2 MB (ngf 4, Adam state): on a 2 MiB filesystem step 2's fits
    and step 4's does not. Was a bug: torch's `RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos ...` traceback."""
    dataset = make_dataset(tmp_path / "ds")
    out = tiny_fs("2m") / "run"
    options = dict(dataset=str(dataset), out=str(out), ngf=4, ndf=4, n_res=1, img_size=32,
                   n_dis_global=5, iterations=6, save_every=2, sample_every=100,
                   log_every=1, workers=0, device="cpu", n_samples=2, keep=0)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(options))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(ugatit_main, ["train", "--config", str(config)])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    [line] = error_lines(result.stderr)
    good, failed = out / "checkpoints" / "params_0000002.pt", "params_0000004.pt"
    assert line.startswith(f"Error: step 4: cannot write {good.parent / failed} (no space "
                           f"left on device ({good.parent}, "), line
    assert line.endswith(f"training stopped. Last good checkpoint: {good} (rerun with "
                         "--resume to continue from it)."), line
    assert sorted(p.name for p in good.parent.iterdir()) == [good.name]  # no temporary
    assert load_checkpoint(good).config.ngf == 4


def test_manifest_that_cannot_be_written_fails_the_scene_with_the_reason(
        two_scenes: Path, tiny_checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills between a scene's output and its manifest (simulated: a few KB
    cannot be aimed at with a tmpfs): the scene is failed with the reason, not an
    "unexpected OSError", and the rerun redoes it (an output without manifest)."""
    import pipeline.run.manifest

    real = pipeline.run.manifest.atomic_path

    @contextlib.contextmanager
    def full(path: Path) -> Iterator[Path]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        yield path  # never reached: a generator, like the real one

    monkeypatch.setattr(pipeline.run.manifest, "atomic_path", full)
    out = tmp_path / "out"
    run = run_here(two_scenes, out, "--model", tiny_checkpoint)
    assert run.exit_code == 1, run.output
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    messages = {s["scene"]: (s["status"], s["message"]) for s in report["scenes"]}
    for name in ("a.tif", "b.tif"):
        assert messages[name][0] == "failed"
        assert messages[name][1].startswith(
            f"{out / name}.manifest.json: no space left on device ({out}"), messages[name]
    monkeypatch.setattr(pipeline.run.manifest, "atomic_path", real)
    rerun = run_here(two_scenes, out, "--model", tiny_checkpoint)
    assert rerun.exit_code == 0 and "2 done" in rerun.stderr, rerun.output
