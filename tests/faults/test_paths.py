"""Item 9: awkward paths. The output directory equal to or inside the input directory,
the output the input itself (also through a symlink or a hard link), symlinked inputs,
and names with spaces, brackets (glob characters) and non-ASCII letters.

Runs are in-process (`CliRunner`): paths, not processes, are the point here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests.faults.faultlib import RUN_FLAGS, raster_values, same_bytes, temps, visible


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", *map(str, args), *RUN_FLAGS, "-q"])
    return result.exit_code, result.output


def statuses(out: Path) -> dict[str, str]:
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    return {s["scene"]: s["status"] for s in report["scenes"]}


@pytest.fixture
def scenes(two_scenes: Path, tmp_path: Path) -> Path:
    """A writable copy of the two scenes (some tests write into the input directory)."""
    return Path(shutil.copytree(two_scenes, tmp_path / "scenes"))


def test_output_directory_equal_to_the_input_directory_is_refused(
        scenes: Path, tiny_checkpoint: Path) -> None:
    before = {p.name: p.read_bytes() for p in scenes.iterdir()}
    for extra in ((), ("--dry-run",)):
        code, output = run(scenes, scenes, "--model", tiny_checkpoint, *extra)
        assert code == 1, output
        assert output.strip() == (
            f"Error: {scenes}: the output directory is the input directory. Hint: give "
            "another output directory (one inside the input directory is fine: it is "
            "never searched for scenes)")
    assert {p.name: p.read_bytes() for p in scenes.iterdir()} == before  # untouched


def test_outputs_inside_the_input_directory_are_never_taken_as_inputs(
        scenes: Path, tiny_checkpoint: Path) -> None:
    out = scenes / "sar"
    for _ in range(2):  # '**' would find sar/a.tif and sar/b.tif if they were not excluded
        code, output = run(scenes, out, "--model", tiny_checkpoint, "--pattern", "**/*.tif")
        assert code == 0, output
    assert statuses(out) == {"a.tif": "skipped", "b.tif": "skipped"}
    assert visible(out) == ["a.stac.json", "a.tif", "a.tif.manifest.json", "b.stac.json",
                            "b.tif", "b.tif.manifest.json", "collection.json",
                            "eo2sar_run_report.json"]


def test_output_that_is_the_input_is_refused_even_through_a_symlink(
        scenes: Path, tiny_checkpoint: Path) -> None:
    scene = scenes / "a.tif"
    before = scene.read_bytes()
    link = scenes / "link.tif"
    link.symlink_to(scene)
    for out in (scene, link):
        code, output = run(scene, out, "--model", tiny_checkpoint, "--overwrite")
        assert code == 1, output
        assert output.strip() == f"Error: {out}: output is the input. Hint: write to " \
                                 "another file name"
    assert scene.read_bytes() == before and link.is_symlink()


def test_output_hard_linked_to_the_input_replaces_the_link_never_the_input(
        scenes: Path, tiny_checkpoint: Path) -> None:
    """A hard link is another name of the same file; the output is renamed over the
    name, so the input's bytes stay as they were."""
    scene, hard = scenes / "a.tif", scenes / "hard.tif"
    before = scene.read_bytes()
    os.link(scene, hard)
    code, output = run(scene, hard, "--model", tiny_checkpoint, "--overwrite")
    assert code == 0, output
    assert scene.read_bytes() == before
    assert not os.path.samefile(scene, hard)
    assert raster_values(hard).shape == (1, 320, 320)


def test_symlinks_spaces_brackets_and_non_ascii_names(
        two_scenes: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A directory named with a space and accents, holding a copy named with glob
    brackets and a symlink, written to a directory named likewise: the same pixels as
    plain names, manifests that work (the rerun skips both), nothing left behind."""
    plain = tmp_path / "plain"
    assert run(two_scenes, plain, "--model", tiny_checkpoint)[0] == 0
    odd_in = tmp_path / "scènes d'été"
    odd_in.mkdir()
    shutil.copy(two_scenes / "a.tif", odd_in / "scène [1] à.tif")
    (odd_in / "lien ø.tif").symlink_to(two_scenes / "b.tif")
    odd_out = tmp_path / "sortie (SAR) ñ"
    for _ in range(2):
        code, output = run(odd_in, odd_out, "--model", tiny_checkpoint)
        assert code == 0, output
    assert statuses(odd_out) == {"lien ø.tif": "skipped", "scène [1] à.tif": "skipped"}
    assert (raster_values(odd_out / "scène [1] à.tif") == raster_values(plain / "a.tif")).all()
    assert (raster_values(odd_out / "lien ø.tif") == raster_values(plain / "b.tif")).all()
    assert temps(odd_out) == [] and temps(odd_in) == []
    assert (odd_in / "lien ø.tif").is_symlink()  # the input link is left as it was
    # a single-scene run to a name with the same characters
    single = tmp_path / "un fichier [x] é.tif"
    assert run(odd_in / "lien ø.tif", single, "--model", tiny_checkpoint)[0] == 0
    assert (raster_values(single) == raster_values(plain / "b.tif")).all()
    assert same_bytes(two_scenes / "b.tif", odd_in / "lien ø.tif")
