"""A directory run over products (SAFE folder and zip, Landsat folder, STAC Item, GeoTIFF)
SIGKILLed in the middle of its third product, then rerun: the finished products are
skipped, the killed one and the rest are done, and every output is byte-identical to an
uninterrupted run's. The same for an ItemCollection (inline Items, no file of their own).

The kill is the test hook of tests/faults (``EO2SAR_FAULT_POINT=mid-scene@3``: the third
block written; each product here is one block, so it is the third product's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from tests.faults.faultlib import KILLED, run_module, same_bytes, temps, visible
from tests.helpers import L8, crop
from tests.products import L2_ID, S2_SAFE, landsat_l2, sentinel2_l2a, split_bands, stac_item

S2_ZIPPED = S2_SAFE.replace("S2A_", "S2B_").replace("T21JXN_", "T21JXP_")


def downloads(root: Path) -> Path:
    """Five products of five kinds, on one 128 x 96 Landsat crop."""
    bgr = crop(L8, root / "bgr.tif", Window(0, 0, 128, 96))
    dl = root / "downloads"
    dl.mkdir()
    sentinel2_l2a(dl, bgr)
    zipped = sentinel2_l2a(root / "z", bgr, S2_ZIPPED)
    shutil.make_archive(str(dl / S2_ZIPPED.removesuffix(".SAFE")), "zip", zipped.parent,
                        zipped.name)
    landsat_l2(dl, bgr)
    split_bands(bgr, dl / "assets", names=("b", "g", "r"))
    stac_item(dl / "item.json", {"r": ("assets/r.tif", "red"), "g": ("assets/g.tif", "green"),
                                 "b": ("assets/b.tif", "blue")})
    shutil.copy(bgr, dl / "scene.tif")
    return dl


def run(inp: Path, out: Path, model: Path, fault: str | None = None):
    return run_module("pipeline", "run", inp, out, "--model", model, "-q", fault=fault)


@pytest.mark.parametrize("kind", [
    "directory", pytest.param("item-collection", marks=pytest.mark.slow)])
def test_killed_product_run_resumes_and_matches_a_clean_run(kind, tiny_checkpoint, tmp_path):
    if kind == "directory":
        source = downloads(tmp_path)
    else:
        bgr = crop(L8, tmp_path / "bgr.tif", Window(0, 0, 128, 96))
        split_bands(bgr, tmp_path / "assets", names=("b", "g", "r"))
        features = []
        for ident in ("p", "q", "r", "s"):
            stac_item(tmp_path / "i.json", {"r": ("assets/r.tif", "red"),
                                            "g": ("assets/g.tif", "green"),
                                            "b": ("assets/b.tif", "blue")}, ident=ident)
            features.append(json.loads((tmp_path / "i.json").read_text()))
        source = tmp_path / "search.json"
        source.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    clean = tmp_path / "clean"
    assert CliRunner().invoke(main, ["run", str(source), str(clean), "--model",
                                     str(tiny_checkpoint), "-q"]).exit_code == 0
    out = tmp_path / "out"
    killed = run(source, out, tiny_checkpoint, fault="mid-scene@3")
    assert killed.returncode == KILLED, killed.stderr
    finished = sorted(p.name for p in out.glob("*.tif") if not p.name.startswith("."))
    assert len(finished) == 2, finished  # two products done before the kill
    assert temps(out)  # the third's temporary GeoTIFF, hidden

    rerun = run(source, out, tiny_checkpoint)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    status = {Path(s["output"]).name: s["status"] for s in report["scenes"]}
    assert {n for n, s in status.items() if s == "skipped"} == set(finished)
    assert {n for n, s in status.items() if s == "done"} == set(status) - set(finished)
    assert temps(out) == []
    assert [n for n in visible(out) if n != "eo2sar_run_report.json"] == [
        n for n in visible(clean) if n != "eo2sar_run_report.json"]
    for tif in clean.glob("*.tif"):
        assert same_bytes(out / tif.name, tif), tif.name
    if kind == "directory":
        assert f"{L2_ID}.tif" in status and "chip-1.tif" in status
