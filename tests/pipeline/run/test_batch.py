"""Tests for pipeline.run.batch.run_directory (directory runs, resumable) and its CLI use.

Most tests inject a fake ``run_scene`` that copies the input raster (fast, and it fails the
way the real one does on a corrupt file), so they test the directory logic alone: which
scenes are found, skipped, redone, failed. The tests marked "real" run the real
``pipeline.run.scene.run_scene`` with a 4-channel random-weight model on 128 px crops of the
SpaceNet 6 chip, and the CLI test goes through ``python -m pipeline run DIR DIR``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.errors import RasterioError
from rasterio.windows import Window

from pipeline.cli import main as cli_main
from pipeline.config import PipelineConfig
from pipeline.errors import InputError, ModelError, PipelineError
from pipeline.inputs.fingerprint import fingerprint_input
from pipeline.run.batch import REPORT_NAME, BatchReport, find_scenes, run_directory
from pipeline.run.manifest import (
    MANIFEST_SCHEMA,
    check_manifest,
    manifest_path,
    read_manifest,
)
from tests.helpers import SN6, crop

CONFIG = PipelineConfig(tile_size=64, overlap=16)

# (name, col_off, row_off, width, height) of good crops of the 200x200 chip
CROPS = [("a.tif", 0, 0, 128, 128), ("b.tif", 72, 40, 128, 96), ("sub/c.tif", 30, 90, 96, 110)]


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    """Three good crops (one in a subdirectory), a truncated TIFF and a text file .tif."""
    d = tmp_path / "scenes"
    for name, col, row, w, h in CROPS:
        crop(SN6, d / name, Window(col, row, w, h), compress="deflate")
    blob = (d / "a.tif").read_bytes()
    (d / "truncated.tif").write_bytes(blob[: len(blob) // 3])
    (d / "notes.tif").write_text("this is not a raster\n")
    return d


@pytest.fixture
def good_scenes(tmp_path: Path) -> Path:
    d = tmp_path / "good"
    for name, col, row, w, h in CROPS[:2]:
        crop(SN6, d / name, Window(col, row, w, h), compress="deflate")
    return d


class FakeRunScene:
    """Copies band 1 of the input to the output (atomically), like run_scene's contract.

    Records the calls; raises InputError on unreadable rasters as the real one does.
    """

    def __init__(self, fail: Callable[[Path], Exception | None] | None = None) -> None:
        self.calls: list[Path] = []
        self.fail = fail

    def __call__(self, input_path: Path, output_path: Path, **kw: Any) -> SimpleNamespace:
        self.calls.append(Path(input_path))
        assert kw["overwrite"] is True  # batch decides what to redo, then replaces
        if self.fail is not None and (exc := self.fail(Path(input_path))) is not None:
            raise exc
        try:
            with rasterio.open(input_path) as src:
                data = src.read(1)
                profile = src.profile.copy()
        except RasterioError as e:
            raise InputError(f"cannot read scene ({e})", path=input_path,
                             hint="check the file") from None
        profile.update(count=1, dtype="float32", tiled=False)
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        tmp = Path(output_path).with_name("." + Path(output_path).name + ".part")
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data.astype("float32") / 255.0, 1)
        os.replace(tmp, output_path)
        if kw.get("heatmap_path") is not None:
            shutil.copy(output_path, kw["heatmap_path"])
        h, w = data.shape
        return SimpleNamespace(input=input_path, output=output_path, width=w, height=h,
                               tiles_total=4, tiles_run=4, seconds=0.01, model_sha256="x")


def _run(scenes_dir: Path, out: Path, ckpt: Path, fake: Any, **kw: Any) -> BatchReport:
    kw.setdefault("config", CONFIG)
    return run_directory(scenes_dir, out, model_path=ckpt, run_scene=fake, quiet=True,
                         stream=io.StringIO(), **kw)


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """Stand-in checkpoint for the fake runs: only its bytes (hash) matter there."""
    p = tmp_path / "model.pt"
    p.write_bytes(b"weights v1")
    return p


def _status(report: BatchReport) -> dict[str, str]:
    return {s.scene: s.status for s in report.scenes}


# --------------------------------------------------------------------------- fake run_scene


def test_find_scenes_sorted_hidden_and_output_excluded(scenes: Path) -> None:
    (scenes / ".hidden.tif").write_text("editor temp")
    (scenes / "out").mkdir()
    (scenes / "out" / "a.tif").write_text("previous output")
    assert [p.name for p in find_scenes(scenes)] == [
        "a.tif", "b.tif", "notes.tif", "truncated.tif"]
    rec = find_scenes(scenes, "**/*.tif", exclude=scenes / "out")
    assert [p.relative_to(scenes).as_posix() for p in rec] == [
        "a.tif", "b.tif", "notes.tif", "sub/c.tif", "truncated.tif"]


def test_failures_are_isolated_and_reported(scenes: Path, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    fake = FakeRunScene()
    stream = io.StringIO()
    report = run_directory(scenes, out, model_path=ckpt, config=CONFIG, pattern="**/*.tif",
                           run_scene=fake, stream=stream)
    assert _status(report) == {"a.tif": "done", "b.tif": "done", "sub/c.tif": "done",
                               "notes.tif": "failed", "truncated.tif": "failed"}
    assert report.exit_code == 1
    for name in ("a", "b", "sub/c"):
        assert (out / f"{name}.tif").is_file()
        assert read_manifest(out / f"{name}.tif") is not None
    assert not (out / "notes.tif").exists() and not manifest_path(out / "notes.tif").exists()
    doc = json.loads((out / REPORT_NAME).read_text())
    assert doc["counts"] == {"total": 5, "done": 3, "skipped": 0, "failed": 2}
    assert doc["exit_code"] == 1
    failed = {s["scene"]: s["message"] for s in doc["scenes"] if s["status"] == "failed"}
    assert set(failed) == {"notes.tif", "truncated.tif"}
    assert "notes.tif" in failed["notes.tif"]  # the message names the file
    table = stream.getvalue()
    assert "truncated.tif" in table and "failed" in table and "3 done" in table


def test_manifest_contents(good_scenes: Path, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    _run(good_scenes, out, ckpt, FakeRunScene())
    doc = read_manifest(out / "a.tif")
    assert doc is not None and doc["schema"] == MANIFEST_SCHEMA
    fp = fingerprint_input(good_scenes / "a.tif")
    assert doc["input"]["size"] == fp.size and doc["input"]["sha256"] == fp.sha256
    assert doc["input"]["method"] == "full"  # a 50 kB crop is hashed in full
    assert doc["config"]["hash"] == CONFIG.config_hash()
    assert doc["config"]["settings"]["overlap"] == 16
    assert doc["output"]["size"] == (out / "a.tif").stat().st_size
    assert len(doc["output"]["sha256"]) == 64
    assert doc["result"]["tiles_total"] == 4
    assert {"python", "torch", "rasterio", "numpy"} <= set(doc["versions"])


def test_rerun_skips_completed_and_keeps_outputs(good_scenes: Path, tmp_path: Path,
                                                 ckpt: Path) -> None:
    out = tmp_path / "out"
    _run(good_scenes, out, ckpt, FakeRunScene())
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    fake = FakeRunScene()
    report = _run(good_scenes, out, ckpt, fake)
    assert _status(report) == {"a.tif": "skipped", "b.tif": "skipped"}
    assert fake.calls == [] and report.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.tif")} == mtimes
    assert json.loads((out / REPORT_NAME).read_text())["counts"]["skipped"] == 2


def test_runtime_settings_do_not_force_a_redo(good_scenes: Path, tmp_path: Path,
                                              ckpt: Path) -> None:
    out = tmp_path / "out"
    _run(good_scenes, out, ckpt, FakeRunScene())
    report = _run(good_scenes, out, ckpt, FakeRunScene(),
                  config=CONFIG.replace(batch_size=8, threads=1))
    assert set(_status(report).values()) == {"skipped"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("config", "redone: config changed"),
        ("touch", "redone: input changed (mtime_ns)"),
        ("model", "redone: model changed"),
        ("delete_output", "new"),
        ("delete_manifest", "redone: no manifest"),
        ("corrupt_manifest", "redone: no manifest"),
        ("truncate_output", "redone: output size differs from manifest"),
    ],
)
def test_stale_scene_is_redone(good_scenes: Path, tmp_path: Path, ckpt: Path, change: str,
                               reason: str) -> None:
    out = tmp_path / "out"
    _run(good_scenes, out, ckpt, FakeRunScene())
    config = CONFIG
    a_in, a_out = good_scenes / "a.tif", out / "a.tif"
    if change == "config":
        config = CONFIG.replace(overlap=32)
    elif change == "touch":
        st = a_in.stat()
        os.utime(a_in, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    elif change == "model":
        ckpt.write_bytes(b"weights v2")
    elif change == "delete_output":
        a_out.unlink()
    elif change == "delete_manifest":
        manifest_path(a_out).unlink()
    elif change == "corrupt_manifest":
        manifest_path(a_out).write_text('{"schema": "eo2sar.scene-manif')
    elif change == "truncate_output":
        with open(a_out, "ab") as f:
            f.write(b"\0" * 10)
    fake = FakeRunScene()
    report = _run(good_scenes, out, ckpt, fake, config=config)
    everything = change in ("config", "model")
    assert _status(report) == {"a.tif": "done", "b.tif": "done" if everything else "skipped"}
    assert report.scenes[0].message == reason
    assert fake.calls[0] == a_in
    # after the redo, the manifest matches again
    ok, _ = check_manifest(a_out, input_fingerprint=fingerprint_input(a_in),
                           model_sha256=report.model_sha256, config_hash=config.config_hash())
    assert ok


def test_overwrite_redoes_all(good_scenes: Path, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    _run(good_scenes, out, ckpt, FakeRunScene())
    fake = FakeRunScene()
    report = _run(good_scenes, out, ckpt, fake, overwrite=True)
    assert _status(report) == {"a.tif": "done", "b.tif": "done"}
    assert len(fake.calls) == 2


def test_crash_between_output_and_manifest_is_redone(good_scenes: Path, tmp_path: Path,
                                                     ckpt: Path) -> None:
    """An output whose manifest was never written is not trusted on the next run."""
    out = tmp_path / "out"
    _run(good_scenes, out, ckpt, FakeRunScene())
    # a forced rerun that dies (unexpected error) after the output of a.tif was replaced
    def boom(path: Path) -> Exception | None:
        shutil.copy(good_scenes / "b.tif", out / "a.tif")  # output changed underneath
        return RuntimeError("worker died") if path.name == "a.tif" else None

    report = _run(good_scenes, out, ckpt, FakeRunScene(fail=boom), overwrite=True)
    assert _status(report)["a.tif"] == "failed"
    assert "unexpected RuntimeError: worker died" in report.scenes[0].message
    assert not manifest_path(out / "a.tif").exists()  # dropped before the redo started
    report = _run(good_scenes, out, ckpt, FakeRunScene())
    assert _status(report) == {"a.tif": "done", "b.tif": "skipped"}


def test_heatmap_sidecar_is_part_of_completeness(good_scenes: Path, tmp_path: Path,
                                                 ckpt: Path) -> None:
    out = tmp_path / "out"
    _run(good_scenes, out, ckpt, FakeRunScene(), heatmap=True)
    assert (out / "a.heatmap.tif").is_file()
    assert read_manifest(out / "a.tif")["heatmap"]["size"] == (out / "a.heatmap.tif").stat().st_size
    (out / "a.heatmap.tif").unlink()
    report = _run(good_scenes, out, ckpt, FakeRunScene(), heatmap=True)
    assert _status(report) == {"a.tif": "done", "b.tif": "skipped"}
    assert report.scenes[0].message == "redone: heatmap missing"


def test_empty_directory_is_an_input_error_with_pattern_hint(tmp_path: Path,
                                                             ckpt: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a scene")
    (empty / "scene.TIF").write_text("upper-case extension")
    # an explicit pattern is case-sensitive; without one, .TIF is a raster like .tif
    with pytest.raises(InputError) as info:
        _run(empty, tmp_path / "out", ckpt, FakeRunScene(), pattern="*.tif")
    assert "--pattern" in info.value.format()
    assert info.value.path == str(empty)
    assert not (tmp_path / "out").exists()  # nothing left behind
    (empty / "scene.TIF").unlink()
    with pytest.raises(InputError, match="no raster, product folder") as info:
        _run(empty, tmp_path / "out", ckpt, FakeRunScene())
    assert "--pattern" in info.value.format()


def test_absolute_pattern_is_an_input_error(good_scenes: Path, tmp_path: Path,
                                            ckpt: Path) -> None:
    with pytest.raises(InputError, match="pattern"):
        _run(good_scenes, tmp_path / "out", ckpt, FakeRunScene(),
             pattern=str(good_scenes / "*.tif"))


def test_missing_dir_and_model_fail_before_any_scene(good_scenes: Path, tmp_path: Path,
                                                     ckpt: Path) -> None:
    fake = FakeRunScene()
    with pytest.raises(InputError):
        _run(tmp_path / "nope", tmp_path / "out", ckpt, fake)
    with pytest.raises(ModelError, match="checkpoint not found"):
        _run(good_scenes, tmp_path / "out", tmp_path / "missing.pt", fake)
    assert fake.calls == []


def test_two_scenes_one_output_is_refused(good_scenes: Path, tmp_path: Path,
                                          ckpt: Path) -> None:
    shutil.copy(good_scenes / "a.tif", good_scenes / "a.tiff")
    with pytest.raises(InputError, match="both be written"):
        _run(good_scenes, tmp_path / "out", ckpt, FakeRunScene(), pattern="a.*")


def test_output_inside_input_is_not_reprocessed(good_scenes: Path, ckpt: Path) -> None:
    out = good_scenes / "out"
    _run(good_scenes, out, ckpt, FakeRunScene(), pattern="**/*.tif")
    report = _run(good_scenes, out, ckpt, FakeRunScene(), pattern="**/*.tif")
    assert _status(report) == {"a.tif": "skipped", "b.tif": "skipped"}


def test_interrupt_writes_a_report(good_scenes: Path, tmp_path: Path, ckpt: Path) -> None:
    def interrupt(path: Path) -> Exception | None:
        return KeyboardInterrupt() if path.name == "b.tif" else None

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run(good_scenes, out, ckpt, FakeRunScene(fail=interrupt))
    doc = json.loads((out / REPORT_NAME).read_text())
    assert doc["interrupted"] is True and doc["exit_code"] == 1
    assert [s["scene"] for s in doc["scenes"]] == ["a.tif"]


def test_pipeline_error_message_is_the_one_line_format(good_scenes: Path, tmp_path: Path,
                                                       ckpt: Path) -> None:
    err = PipelineError("no valid pixel", path="x.tif", hint="check nodata")
    report = _run(good_scenes, tmp_path / "out", ckpt, FakeRunScene(fail=lambda p: err))
    assert report.scenes[0].message == "x.tif: no valid pixel. Hint: check nodata"
    assert report.exit_code == 1


# ------------------------------------------------------------------------- real run_scene


def _assert_same_grid(inp: Path, out: Path) -> None:
    with rasterio.open(inp) as a, rasterio.open(out) as b:
        assert b.crs == a.crs
        assert b.transform == a.transform  # exact: copied, never recomputed
        assert (b.width, b.height) == (a.width, a.height)
        data = b.read(1, masked=True)
        assert np.ma.count(data) > 0 and float(data.std()) > 0.0


def test_real_directory_run_and_rerun(scenes: Path, tmp_path: Path,
                                      tiny_checkpoint: Path) -> None:
    out = tmp_path / "out"
    kw = dict(model_path=tiny_checkpoint, pattern="**/*.tif", quiet=True, stream=io.StringIO())
    report = run_directory(scenes, out, config=CONFIG, **kw)
    assert _status(report) == {"a.tif": "done", "b.tif": "done", "sub/c.tif": "done",
                               "notes.tif": "failed", "truncated.tif": "failed"}
    for name, *_ in CROPS:
        _assert_same_grid(scenes / name, out / name)
    assert report.done[0].tiles_total and report.done[0].tiles_total >= 4  # 128 px / 48 px
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}

    report = run_directory(scenes, out, config=CONFIG, **kw)
    assert [s.scene for s in report.skipped] == ["a.tif", "b.tif", "sub/c.tif"]
    assert len(report.failed) == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")} == mtimes

    report = run_directory(scenes, out, config=CONFIG.replace(overlap=32), **kw)
    assert len(report.done) == 3 and (out / "a.tif").stat().st_mtime_ns != mtimes[out / "a.tif"]


def test_scenes_in_flight_same_bytes_and_order(scenes: Path, tmp_path: Path,
                                               tiny_checkpoint: Path) -> None:
    """Three scenes at once (threads, each its own writer) give the sequential run's
    bytes, report order and failures; the in-flight scenes really overlapped."""
    kw = dict(model_path=tiny_checkpoint, pattern="**/*.tif", quiet=True)
    seq = run_directory(scenes, tmp_path / "seq", config=CONFIG, stream=io.StringIO(), **kw)
    running: list[int] = []
    peak: list[int] = [0]
    from pipeline.run.scene import run_scene as real

    def tracked(*args: Any, **kwargs: Any) -> Any:
        running.append(1)
        peak[0] = max(peak[0], len(running))
        try:
            time.sleep(0.2)  # let the other threads start theirs
            return real(*args, **kwargs)
        finally:
            running.pop()

    par = run_directory(scenes, tmp_path / "par", config=CONFIG.replace(scenes_in_flight=3),
                        stream=io.StringIO(), run_scene=tracked, **kw)
    assert [(s.scene, s.status) for s in par.scenes] == [(s.scene, s.status) for s in seq.scenes]
    assert peak[0] > 1
    for name, *_ in CROPS:
        seq_out, par_out = tmp_path / "seq" / name, tmp_path / "par" / name
        with rasterio.open(seq_out) as a, rasterio.open(par_out) as b:
            assert a.read().tobytes() == b.read().tobytes()
            assert a.transform == b.transform and a.crs == b.crs


def test_cli_directory_run(scenes: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "out"
    args = ["run", str(scenes), str(out), "--model", str(tiny_checkpoint), "-q",
            "--tile-size", "64", "--overlap", "16"]
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 1, result.output
    doc = json.loads((out / REPORT_NAME).read_text())
    assert {s["scene"]: s["status"] for s in doc["scenes"]} == {
        "a.tif": "done", "b.tif": "done", "notes.tif": "failed", "truncated.tif": "failed"}
    assert "notes.tif" in result.output and "truncated.tif" in result.output
    _assert_same_grid(scenes / "a.tif", out / "a.tif")

    (scenes / "notes.tif").unlink()
    (scenes / "truncated.tif").unlink()
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / REPORT_NAME).read_text())
    assert doc["counts"] == {"total": 2, "done": 0, "skipped": 2, "failed": 0}

    result = CliRunner().invoke(cli_main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / REPORT_NAME).read_text())["counts"]["done"] == 2
