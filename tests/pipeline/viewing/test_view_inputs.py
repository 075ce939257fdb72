"""`pipeline view` on a folder prepared by someone else (pipeline/viewing/view_inputs.py).

Each test builds the hostile folder an attacker would leave in a shared place, runs
`pipeline view` on it as the victim would, and checks that nothing of the victim's
private file reaches a page: exit 1 with one line naming the refusal, no page written.
The victim's "key" is 64 x 64 random bytes, the output grid 64 x 64 px, so the attack
(before the fix) made the optical layer a byte-exact copy of it: every RGB channel of
the layer equalled the key, byte for byte (`test_the_attack_works_without_the_checks`
shows it still would without pipeline/viewing/view_inputs.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline import load_config, run_scene
from pipeline.cli import main
from pipeline.inputs.fingerprint import fingerprint_input
from pipeline.run.manifest import manifest_path
from pipeline.viewing.view_inputs import UnsafeInput, check_vrt, manifest_input
from tests.helpers import SN6, crop

SIDE = 64


@pytest.fixture(scope="module")
def made(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """A real 64 x 64 px scene and its pipeline output (made once)."""
    d = tmp_path_factory.mktemp("made")
    scene = crop(SN6, d / "scene.tif", Window(0, 0, SIDE, SIDE))
    out = d / "out.tif"
    run_scene(scene, out, model_path=tiny_checkpoint, progress=False,
              config=load_config(None, {"tile_size": 64, "overlap": 16}))
    return {"scene": scene, "out": out}


@pytest.fixture
def victim(tmp_path) -> tuple[Path, bytes]:
    """The victim's private file (0600), outside the hostile folder."""
    key = tmp_path / "home" / ".ssh" / "id_rsa"
    key.parent.mkdir(parents=True)
    data = np.random.default_rng(7).integers(0, 256, SIDE * SIDE, dtype=np.uint8).tobytes()
    key.write_bytes(data)
    key.chmod(0o600)
    return key, data


def hostile_output(made: dict[str, Path], folder: Path) -> Path:
    """A copy of a real output whose scaling tags say "bands 1,1,1, fixed 0..255": the
    optical layer then shows the input's bytes as they are."""
    folder.mkdir(exist_ok=True)
    out = folder / "out.tif"
    shutil.copyfile(made["out"], out)
    with rasterio.open(out, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.update_tags(EO2SAR_BANDS="1,1,1", EO2SAR_SCALING=json.dumps(
            {"method": "fixed", "low": [0.0] * 3, "high": [255.0] * 3, "percentiles": None}))
    return out


def write_manifest(out: Path, input_path: Path, fingerprint_of: Path | None = None) -> None:
    """A manifest naming `input_path`, with the fingerprint an attacker could compute of
    `fingerprint_of` (default: the input itself: the attacker knows its bytes)."""
    fp = fingerprint_input(fingerprint_of or input_path).to_dict()
    manifest_path(out).write_text(json.dumps({"input": {"path": str(input_path), **fp}}))


def georef_xml(out: Path) -> str:
    with rasterio.open(out) as ds:
        gt = ", ".join(repr(v) for v in ds.transform.to_gdal())
        return f"<SRS>{ds.crs.to_wkt()}</SRS><GeoTransform>{gt}</GeoTransform>"


def raw_vrt(out: Path, target: Path, vrt: Path) -> Path:
    """A VRT on the output's grid whose raw band reads `target` as 8-bit pixels."""
    vrt.write_text(
        f'<VRTDataset rasterXSize="{SIDE}" rasterYSize="{SIDE}">{georef_xml(out)}'
        '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
        f'<SourceFilename relativeToVRT="0">{target}</SourceFilename>'
        f'<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset>'
        f'<LineOffset>{SIDE}</LineOffset></VRTRasterBand></VRTDataset>')
    return vrt


def simple_vrt(out: Path, source: str, vrt: Path, relative: bool = False) -> Path:
    """A VRT on the output's grid with one band from `source` (a file name as written)."""
    vrt.write_text(
        f'<VRTDataset rasterXSize="{SIDE}" rasterYSize="{SIDE}">{georef_xml(out)}'
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
        '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    return vrt


def envi_header(data_file: Path) -> Path:
    """An ENVI header beside `data_file`: GDAL then reads that file as 8-bit pixels."""
    hdr = data_file.with_suffix(".hdr")
    hdr.write_text(f"ENVI\nsamples = {SIDE}\nlines = {SIDE}\nbands = 1\nheader offset = 0\n"
                   "file type = ENVI Standard\ndata type = 1\ninterleave = bsq\n"
                   "byte order = 0\n")
    return hdr


def view(*args: str | Path):
    return CliRunner().invoke(main, ["view", *map(str, args), "--max-size", "64"])


def assert_refused(res, folder: Path, *needles: str) -> None:
    """Exit 1, one line `Error: ...`, and no page anywhere in the folder."""
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    for n in needles:
        assert n in lines[0], lines[0]
    assert not list(folder.rglob("*.html"))


def test_the_attack_works_without_the_checks(made, victim, tmp_path, monkeypatch):
    """The threat is real: with the manifest's input trusted as before (no checks, raw VRT
    bands enabled as GDAL's default), the page's optical layer IS the victim's key."""
    import base64
    import io
    import re

    from PIL import Image

    from pipeline.viewing import viewer

    key, data = victim
    out = hostile_output(made, tmp_path / "shared")
    write_manifest(out, raw_vrt(out, key, tmp_path / "shared" / "scene.vrt"))
    monkeypatch.setattr(viewer, "default_input",
                        lambda o: Path(json.loads(manifest_path(o).read_text())["input"]["path"]))
    monkeypatch.setattr(viewer, "open_input", lambda p, trusted: rasterio.open(p))
    monkeypatch.setattr(viewer, "view_env", rasterio.Env)
    page = viewer.write_viewer(out, tmp_path / "p.html", max_size=64)
    src = re.search(r'"id":"optical","label":"optical","src":"data:image/png;base64,([^"]+)',
                    page.read_text())[1]
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(src))).convert("RGBA"))
    assert rgba[..., 0].tobytes() == data  # a byte-exact copy of the private file


def test_a_manifest_input_vrt_with_a_raw_band_reading_a_private_file_is_refused(
        made, victim, tmp_path):
    key, data = victim
    folder = tmp_path / "shared"
    out = hostile_output(made, folder)
    write_manifest(out, raw_vrt(out, key, folder / "scene.vrt"))
    assert_refused(view(out), folder, "a VRT with a raw band", "--input")
    assert_refused(view(folder), folder, "a VRT with a raw band")  # the directory view


def test_a_symlink_plus_envi_header_named_by_the_manifest_is_refused(made, victim, tmp_path):
    """No VRT: `scene.bin -> ~/.ssh/id_rsa` and `scene.hdr` in the hostile folder (and a
    manifest fingerprint that matches, as if the attacker knew the key's bytes)."""
    key, _ = victim
    folder = tmp_path / "shared"
    out = hostile_output(made, folder)
    (folder / "scene.bin").symlink_to(key)
    envi_header(folder / "scene.bin")
    write_manifest(out, folder / "scene.bin")
    assert_refused(view(out), folder, "symlink out of its folder")
    # the same bytes copied into the folder (no symlink): the raw format is not allowed
    (folder / "scene.bin").unlink()
    shutil.copyfile(key, folder / "scene.bin")
    write_manifest(out, folder / "scene.bin")
    assert_refused(view(out), folder, "not a raster of an allowed format")


def test_an_output_that_is_a_symlink_plus_envi_header_is_refused(made, victim, tmp_path):
    key, _ = victim
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "out.tif").symlink_to(key)
    envi_header(folder / "out.tif")
    assert_refused(view(folder / "out.tif"), folder, "symlink out of its folder")
    assert_refused(view(folder), folder, "symlink out of its folder")
    (folder / "out.tif").unlink()
    shutil.copyfile(key, folder / "out.tif")  # its bytes, no symlink: not a GeoTIFF
    assert_refused(view(folder / "out.tif"), folder, "not a raster of an allowed format")


@pytest.mark.parametrize("case", ["absolute outside", "relative climbing out", "vsicurl",
                                  "driver prefix", "symlink out"])
def test_vrt_sources_outside_the_vrts_folder_are_refused(made, tmp_path, case):
    """A VRT named by a manifest may read only files under its own folder: a private
    GeoTIFF of the victim's elsewhere, `../..`, `/vsicurl/`, `ENVI:...` or a symlink out
    are refused."""
    private = crop(SN6, tmp_path / "home" / "private.tif", Window(0, 0, SIDE, SIDE))
    folder = tmp_path / "shared"
    out = hostile_output(made, folder)
    source = {"absolute outside": str(private),
              "relative climbing out": "../home/private.tif",
              "vsicurl": "/vsicurl/http://127.0.0.1:9/x.tif",
              "driver prefix": f"GTIFF_DIR:1:{private}",
              "symlink out": "link.tif"}[case]
    (folder / "link.tif").symlink_to(private)
    vrt = simple_vrt(out, source, folder / "scene.vrt", relative=case in (
        "relative climbing out", "symlink out"))
    write_manifest(out, vrt)
    assert_refused(view(out), folder, "VRT source")


def test_a_manifest_input_that_is_not_the_file_the_run_read_is_refused(made, tmp_path):
    """The fingerprint the manifest recorded must match the input's content: a folder's
    author cannot name a file whose bytes they do not know (here: another scene)."""
    folder = tmp_path / "shared"
    out = hostile_output(made, folder)
    other = crop(SN6, tmp_path / "other.tif", Window(10, 10, SIDE, SIDE))
    write_manifest(out, other, fingerprint_of=made["scene"])
    assert_refused(view(out), folder, "does not match the manifest's fingerprint")
    for raw in ("/vsicurl/http://127.0.0.1:9/x.tif", "relative/scene.tif"):
        manifest_path(out).write_text(json.dumps({"input": {"path": raw}}))
        assert_refused(view(out), folder, "not a local absolute path")


def test_the_hint_way_works_and_honest_manifests_still_do(made, tmp_path):
    """`--input` (the user's own choice) draws the page; a manifest naming the real input
    with its fingerprint, and a VRT of band files beside it, are accepted."""
    folder = tmp_path / "shared"
    out = hostile_output(made, folder)
    res = view(out, "--input", made["scene"])
    assert res.exit_code == 0, res.output
    assert '"id":"optical"' in out.with_suffix(".html").read_text()
    write_manifest(out, made["scene"])
    assert manifest_input(json.loads(manifest_path(out).read_text()), folder) == made["scene"]
    stack = tmp_path / "stack"
    stack.mkdir()
    band = crop(SN6, stack / "b1.tif", Window(0, 0, SIDE, SIDE))
    check_vrt(simple_vrt(out, band.name, stack / "rgb.vrt", relative=True))
    with pytest.raises(UnsafeInput, match="raw band"):
        check_vrt(raw_vrt(out, band, stack / "raw.vrt"))


def test_raw_vrt_bands_from_outside_stay_off_even_for_an_explicit_input(made, victim,
                                                                        tmp_path):
    """`--input` is the user's own choice, yet a VRT raw band reading a file outside the
    VRT's folder is refused (GDAL 3.12's default restriction, enforced here on the older
    GDAL in use); a raw band beside the VRT is the user's business and is read."""
    key, data = victim
    folder = tmp_path / "shared"
    out = hostile_output(made, folder)
    res = view(out, "--input", raw_vrt(out, key, folder / "scene.vrt"))
    assert_refused(res, folder, "a VRT with a raw band")
    (folder / "mine.bin").write_bytes(data)  # the user's own raw file, beside the VRT
    res = view(out, "--input", raw_vrt(out, folder / "mine.bin", folder / "mine.vrt"))
    assert res.exit_code == 0, res.output


def test_a_scene_symlinked_out_of_the_run_folder_is_not_embedded(tiny_checkpoint,
                                                                 tmp_path):
    """A handed-over folder holding `scene.tif -> ~/private.tif` (a raster of the
    victim's): `pipeline run shared/ out/` records the input as given (not resolved), and
    `pipeline view out/` refuses it as a symlink out of its folder; no page. **Was**: the
    manifest named the resolved private file, the rule never applied, and the page
    embedded it."""
    private = crop(SN6, tmp_path / "home" / "private.tif", Window(0, 0, SIDE, SIDE))
    shared, out = tmp_path / "shared", tmp_path / "out"
    shared.mkdir()
    (shared / "scene.tif").symlink_to(private)
    run = CliRunner().invoke(main, ["run", str(shared), str(out), "--model",
                                    str(tiny_checkpoint), "--tile-size", "64",
                                    "--overlap", "16", "-q"])
    assert run.exit_code == 0, run.output
    recorded = json.loads(manifest_path(out / "scene.tif").read_text())["input"]["path"]
    assert recorded == str(shared / "scene.tif")
    assert_refused(view(out), out, "symlink out of its folder", "--input")
    assert_refused(view(out / "scene.tif"), out, "symlink out of its folder")
    assert not list(tmp_path.rglob("*.html"))
