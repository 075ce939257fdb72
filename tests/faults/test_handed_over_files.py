"""Files handed over by someone else (issue 23, item 4): a product, zip or band folder whose
band files are not what their names say.

GDAL picks a format by content, not by name: a SAFE zip whose `*_B04_10m.jp2` members are
VRTs reading the victim's private raster made `pipeline run` write the private raster's
translation; a BigEarthNet-style band folder whose `*_B0?.tif` are VRTs with a raw band
reading `~/.ssh/id_rsa` made `pipeline tiles` write a training PNG that was a byte copy of
the key. Each attack is performed as the victim would meet it: exit 1 with one line, no
output, no tile; and each test shows that, with the checks switched off, the attack
would still work (so the refusal is what stops it).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

import pipeline.inputs.sources as sources
from pipeline.cli import main
from pipeline.inputs.sources import resolve_input
from tests.helpers import L8, crop
from tests.products import S2_SAFE, sentinel2_l2a

SIDE = 64


@pytest.fixture
def private(tmp_path) -> Path:
    """The victim's private raster (uint16 B,G,R), outside anything handed over."""
    return crop(L8, tmp_path / "home" / "private.tif", Window(700, 600, 96, 80))


def _checks_off(monkeypatch) -> None:
    """The product reader as it was before: any driver, no containment check."""
    monkeypatch.setattr(sources, "open_self_contained", lambda p, label=None: rasterio.open(p))
    monkeypatch.setattr(sources, "check_contained", lambda ds, label: None)


def _source_vrt(private: Path, band: int) -> str:
    """A VRT on `private`'s grid whose one band is `private`'s band `band`."""
    with rasterio.open(private) as ds:
        w, h, gt, srs = ds.width, ds.height, ds.transform.to_gdal(), ds.crs.to_wkt()
    return (f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{srs}</SRS>'
            f"<GeoTransform>{', '.join(map(repr, gt))}</GeoTransform>"
            '<VRTRasterBand dataType="UInt16" band="1"><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{private}</SourceFilename>'
            f"<SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>")


def test_a_safe_zip_whose_band_files_are_vrts_reads_no_local_file(
        private, tiny_checkpoint, tmp_path, monkeypatch):
    """A Sentinel-2 SAFE zip (real layout and metadata) whose 10 m B02/B03/B04 members are
    VRTs naming the victim's private raster: `pipeline run x.zip out.tif` exits 1 with
    `refused: ... a file inside a product must be a self-contained raster`, writes
    nothing; with the checks off, the stack it would run IS the private raster."""
    handed = tmp_path / "handed"
    safe = sentinel2_l2a(handed, crop(L8, tmp_path / "bgr.tif", Window(0, 0, 96, 80)))
    for jp2 in sorted(safe.rglob("*_10m.jp2")):
        band = {"B02": 1, "B03": 2, "B04": 3}[jp2.name.split("_")[-2]]
        jp2.write_text(_source_vrt(private, band))  # a VRT named *.jp2
    archive = handed / (S2_SAFE.removesuffix(".SAFE") + ".zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, f.relative_to(handed).as_posix())
    shutil.rmtree(safe)
    out = tmp_path / "out.tif"
    result = CliRunner().invoke(main, ["run", str(archive), str(out), "--model",
                                       str(tiny_checkpoint), "--tile-size", "64",
                                       "--overlap", "16"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "refused: " in result.stderr and "self-contained raster" in result.stderr
    assert "_B04_10m.jp2" in result.stderr  # the member is named
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "bgr.tif", "handed", "home"]
    _checks_off(monkeypatch)
    with resolve_input(str(archive)) as resolved, rasterio.open(resolved.path) as stack, \
            rasterio.open(private) as secret:
        assert np.array_equal(stack.read(), secret.read()[::-1])  # R,G,B = the private one


def _raw_vrt(target: Path) -> str:
    """A georeferenced VRT whose raw band reads `target` as SIDE x SIDE bytes."""
    return (f'<VRTDataset rasterXSize="{SIDE}" rasterYSize="{SIDE}"><SRS>EPSG:32633</SRS>'
            "<GeoTransform>500000, 10, 0, 5900000, 0, -10</GeoTransform>"
            '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
            f'<SourceFilename relativeToVRT="0">{target}</SourceFilename>'
            "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset>"
            f"<LineOffset>{SIDE}</LineOffset></VRTRasterBand></VRTDataset>")


def test_tiles_over_a_band_folder_of_vrts_writes_no_copy_of_a_private_file(
        tmp_path, monkeypatch):
    """`pipeline tiles --eo patch/` over a BigEarthNet-style folder whose `*_B02.tif`,
    `*_B03.tif`, `*_B04.tif` are VRTs with a raw band reading `~/.ssh/id_rsa`: exit 1 with
    one line, no tile written; with the checks off, the tile IS the key, byte for byte."""
    key = tmp_path / "home" / ".ssh" / "id_rsa"
    key.parent.mkdir(parents=True)
    data = np.random.default_rng(3).integers(1, 256, SIDE * SIDE, dtype=np.uint8).tobytes()
    key.write_bytes(data)
    key.chmod(0o600)
    patch = tmp_path / "handed" / "S2A_MSIL2A_20170613_87_48"
    patch.mkdir(parents=True)
    for n in (2, 3, 4):
        (patch / f"{patch.name}_B0{n}.tif").write_text(_raw_vrt(key))
    args = ["tiles", "--eo", str(patch), "--out", str(tmp_path / "ds"), "--tile-size",
            str(SIDE), "--test-fraction", "0", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "refused: " in result.stderr and "self-contained raster" in result.stderr
    assert not list(tmp_path.rglob("*.png"))
    _checks_off(monkeypatch)
    assert CliRunner().invoke(main, args).exit_code == 0
    (tile,) = tmp_path.rglob("*.png")
    from PIL import Image

    assert np.asarray(Image.open(tile))[..., 0].tobytes() == data  # a copy of the key
