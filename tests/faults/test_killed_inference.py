"""Item 1: `pipeline run` on a directory, SIGKILLed at four moments, then rerun.

The run is a real subprocess killed by the test hook (``EO2SAR_FAULT_POINT=POINT@2``:
the second arrival, i.e. while the second scene b.tif is being done; a.tif is finished):

- ``stats``: while b's scaling statistics are read (nothing of b written yet);
- ``mid-scene``: after b's first block went into its temporary GeoTIFF;
- ``cog``: after b's COG was written to its temporary name, before the rename;
- ``manifest``: b's output is in place, its manifest written to a temporary name.

Each time: no file a user sees is incomplete (every visible raster is byte-identical to
the clean run's), the leftovers are hidden temporaries that the rerun removes, and the
rerun skips a, (re)does b, and ends with outputs byte-identical to a clean run's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.run.locks import LOCK_MARK
from tests.faults.faultlib import KILLED, RUN_FLAGS, pipeline_run, same_bytes, temps, visible


@pytest.fixture(scope="module")
def clean_run(two_scenes: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Path:
    """The reference: the same directory run, never interrupted (in this process)."""
    out = tmp_path_factory.mktemp("clean") / "out"
    result = CliRunner().invoke(main, ["run", str(two_scenes), str(out), "--model",
                                       str(tiny_checkpoint), *RUN_FLAGS])
    assert result.exit_code == 0, result.output
    return out


# point -> what b.tif left after the kill: (b.tif in place?, hidden temporaries left?)
POINTS = {
    "stats": (False, False),
    "mid-scene": (False, True),
    "cog": (False, True),
    "manifest": (True, True),
}


@pytest.mark.parametrize("point", [
    pytest.param("mid-scene"),
    pytest.param("stats", marks=pytest.mark.slow),
    pytest.param("cog", marks=pytest.mark.slow),
    pytest.param("manifest", marks=pytest.mark.slow),
])
def test_killed_directory_run_leaves_no_torn_file_and_rerun_matches(
        point: str, two_scenes: Path, tiny_checkpoint: Path, clean_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    killed = pipeline_run(two_scenes, out, "--model", tiny_checkpoint, fault=f"{point}@2")
    assert killed.returncode == KILLED, killed.stderr
    b_in_place, leftovers = POINTS[point]
    # what a user sees is complete: a (with its manifest), and b only once it was renamed
    # (and a's STAC Item, written after its manifest)
    expected = sorted(["a.stac.json", "a.tif", "a.tif.manifest.json"]
                      + (["b.tif"] if b_in_place else []))
    assert visible(out) == expected
    for name in (n for n in expected if n.endswith(".tif")):  # STAC Items carry a time
        assert same_bytes(out / name, clean_run / name), name
    # the kill hit where it was meant to: b's hidden temporaries, and only those
    left = temps(out)
    assert bool(left) == leftovers, left
    assert all(name.startswith(".b.tif") for name in left), left

    rerun = CliRunner().invoke(main, ["run", str(two_scenes), str(out), "--model",
                                      str(tiny_checkpoint), *RUN_FLAGS])
    assert rerun.exit_code == 0, rerun.output
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    status = {s["scene"]: (s["status"], s["message"]) for s in report["scenes"]}
    assert status["a.tif"] == ("skipped", "up to date")
    assert status["b.tif"][0] == "done"  # new, or redone: its manifest was never written
    assert temps(out) == []  # the dead run's leftovers are gone
    assert not list(out.glob(f"*{LOCK_MARK}"))  # its lock file too (reused, then removed)
    assert visible(out) == visible(clean_run)
    for name in ("a.tif", "b.tif"):
        assert same_bytes(out / name, clean_run / name), name
