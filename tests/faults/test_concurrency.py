"""Item 8: two runs on the same outputs at once.

Decision (pipeline/run/locks.py, docs/faults.md): temporaries + atomic rename keep every
file whole whatever runs at once; a per-output lock file (flock, released by the kernel
when its holder dies) adds that a scene is done by one run only. The lock is held by the
test process itself where the outcome must not depend on timing: a directory run skips a
locked scene, a single-scene run refuses a locked output, `pipeline tiles` waits for a
locked dataset. One test also starts two directory runs at the same moment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.run.locks import LOCK_MARK, lock_path, output_lock
from tests.faults.faultlib import (
    RUN_FLAGS,
    RUN_TIMEOUT_S,
    env,
    pipeline_run,
    same_bytes,
    temps,
    visible,
)
from tests.helpers import L8, REPO, crop


def summary(stderr: str) -> dict[str, int]:
    """The directory run's closing line: {"done": n, "skipped": n, "failed": n}."""
    m = re.search(r"(\d+) done, (\d+) skipped, (\d+) failed", stderr)
    assert m, stderr
    return dict(zip(("done", "skipped", "failed"), map(int, m.groups()), strict=True))


def test_directory_run_skips_a_scene_another_run_is_writing(
        two_scenes: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out / "a.tif"):  # "another run" (this test process) writes a.tif
        run = pipeline_run(two_scenes, out, "--model", tiny_checkpoint)
        assert run.returncode == 0, run.stderr
        report = json.loads((out / "eo2sar_run_report.json").read_text())
        status = {s["scene"]: (s["status"], s["message"]) for s in report["scenes"]}
        assert status["a.tif"][0] == "skipped"
        assert "another eo2sar run is writing it" in status["a.tif"][1]
        assert f"pid {os.getpid()}" in status["a.tif"][1]  # names the holder
        assert status["b.tif"] == ("done", "new")
        assert visible(out) == ["b.stac.json", "b.tif", "b.tif.manifest.json",
                                "collection.json", "eo2sar_run_report.json"]
    assert not lock_path(out / "a.tif").exists() and not lock_path(out / "b.tif").exists()
    rerun = CliRunner().invoke(main, ["run", str(two_scenes), str(out), "--model",
                                      str(tiny_checkpoint), *RUN_FLAGS])  # lock released
    assert rerun.exit_code == 0, rerun.output
    assert summary(rerun.stderr) == {"done": 1, "skipped": 1, "failed": 0}  # a, then b


def test_single_scene_run_refuses_an_output_being_written(
        two_scenes: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.tif"
    with output_lock(out):
        run = pipeline_run(two_scenes / "a.tif", out, "--model", tiny_checkpoint)
    assert run.returncode == 1, run.stderr
    [line] = [x for x in run.stderr.splitlines() if x.startswith("Error:")]
    assert line.startswith(f"Error: {out}: another eo2sar run is writing it (host "), line
    assert list(tmp_path.iterdir()) == []  # nothing written, our lock file removed


def test_single_scene_run_refuses_an_output_that_appeared_while_it_planned(
        two_scenes: Path, tiny_checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs without --overwrite started together both see no output at the checks;
    the one that takes the lock second finds the other's finished file and refuses
    instead of replacing it (simulated: the file appears right after planning)."""
    import pipeline.run.scene as scene

    out = tmp_path / "a.tif"
    real_plan = scene.plan_scene

    def plan_then_other_run_finishes(*args, **kwargs):
        planned = real_plan(*args, **kwargs)
        out.write_bytes(b"the other run's output")
        return planned

    monkeypatch.setattr(scene, "plan_scene", plan_then_other_run_finishes)
    result = CliRunner().invoke(main, ["run", str(two_scenes / "a.tif"), str(out), "--model",
                                       str(tiny_checkpoint), *RUN_FLAGS])
    assert result.exit_code == 1
    assert "appeared while this run was planning" in result.output
    assert out.read_bytes() == b"the other run's output"  # kept, not replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]  # no temp, no lock


@pytest.mark.slow  # two runs in parallel on 2 shared cores: ~10 s
def test_two_directory_runs_at_once_do_each_scene_once(
        two_scenes: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for name in ("a", "b"):
        (scenes / f"{name}.tif").symlink_to(two_scenes / f"{name}.tif")
    for name, (col, row) in {"c": (300, 300), "d": (1000, 900)}.items():
        crop(L8, scenes / f"{name}.tif", Window(col, row, 320, 320))
    clean = tmp_path / "clean"
    result = CliRunner().invoke(main, ["run", str(scenes), str(clean), "--model",
                                       str(tiny_checkpoint), *RUN_FLAGS])
    assert result.exit_code == 0, result.output

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline", "run", str(scenes), str(out), "--model",
           str(tiny_checkpoint), *RUN_FLAGS]  # not -q: the summary line is printed
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env(), stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=RUN_TIMEOUT_S)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    # every scene done by exactly one of the two runs (the other skipped it)
    assert sum(summary(e)["done"] for e in errs) == 4, errs
    assert visible(out) == visible(clean)
    assert temps(out) == [] and not list(out.glob(f"*{LOCK_MARK}"))
    for name in ("a", "b", "c", "d"):
        assert same_bytes(out / f"{name}.tif", clean / f"{name}.tif"), name


def test_tiles_waits_for_another_run_on_the_same_dataset(tmp_path: Path) -> None:
    """The second `pipeline tiles` waits (and says so) until the first releases the
    dataset, then merges: index.geojson holds the tiles of both runs."""
    eo = [tmp_path / "x.tif", tmp_path / "y.tif"]
    crop(L8, eo[0], Window(700, 600, 256, 256))
    crop(L8, eo[1], Window(1000, 900, 256, 256))
    ds = tmp_path / "ds"
    flags = ["--eo-bands", "3,2,1", "--tile-size", "64", "-q", "--out", str(ds)]
    first = CliRunner().invoke(main, ["tiles", "--eo", str(eo[0]), *flags])
    assert first.exit_code == 0, first.output
    n_first = len(json.loads((ds / "index.geojson").read_text())["features"])
    log = tmp_path / "second.log"
    with output_lock(ds), log.open("w") as fh:  # a first run still merging
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "tiles", "--eo",
                                 str(eo[1]), *flags], cwd=REPO, env=env(), stderr=fh)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while "waiting for it" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()  # it must wait, not finish
            time.sleep(0.1)
        assert "another run is writing this dataset" in log.read_text()
        assert proc.poll() is None
    assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, log.read_text()
    files = {f["properties"]["file"] for f in
             json.loads((ds / "index.geojson").read_text())["features"]}
    assert len(files) > n_first
    assert {f.split("/")[1].split("_r")[0] for f in files} == {"x", "y"}
    assert files == {p.relative_to(ds).as_posix() for p in ds.rglob("*.png")}
    assert not lock_path(ds).exists()
