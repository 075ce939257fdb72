"""Hostile and careless remote inputs, each attack performed against a server on 127.0.0.1.

* secrets in input URLs (`user:password@`, `?sig=`, `?token=`) never reach what a run
  records or prints: the COG's tags, the STAC Item, the `input:` line, errors, log lines,
  a directory run's manifests, run report and Collection;
* a server that accepts the connection and never answers ends the run with a one-line
  error (timeouts set short by the test), not a hang (bounded by the subprocess timeout);
* an Item fetched from a URL reaches no local file (absolute paths are paths on the
  server, /vsi chains and file: are refused), and a remote VRT (which may name local
  files, or raw local bytes) is refused whatever its URL ends with.

The range server is tests/range_server.py in its own process (as in
tests/pipeline/inputs/test_remote.py); runs that could hang, or whose log lines are checked,
are real `python -m pipeline run` processes, refusals run in this process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from tests.faults.faultlib import run_module
from tests.helpers import SN6, cog, crop, range_server
from tests.products import COLOURS, split_bands, stac_item

SECRET = "S3CRET"
#: the run's GDAL and Item reader: no proxy, short timeouts
NET_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "http_proxy": "", "HTTP_PROXY": "", "https_proxy": "", "HTTPS_PROXY": ""}


def run(*args: str | Path, **env: str):
    """`python -m pipeline run ARGS` in a subprocess: real stderr (log lines), and the
    subprocess timeout bounds a hang."""
    return run_module("pipeline", "run", *args, "--tile-size", "128", "--overlap", "32",
                      **{**NET_ENV, **env})


def signed(base: str, path: str) -> str:
    """`base/path` with credentials and a signature, as a pre-signed or private URL."""
    host = base.removeprefix("http://")
    return f"http://alice:{SECRET}pw@{host}/{path}?sig={SECRET}&token={SECRET}&se=2030"


def no_secret_in(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        assert SECRET.encode() not in data, data[:2000]
        assert b"alice" not in data


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[str, Path]]:
    """(base URL, served directory) of tests/range_server.py on 127.0.0.1, stopped at the
    end of the test (the runs get NET_ENV: no proxy)."""
    root = tmp_path / "www"
    root.mkdir()
    with range_server(root) as url:
        yield url, root


def invoke(*args: str | Path):
    """`pipeline run ARGS` in this process (CliRunner): for refusals, which cannot hang
    (the server answers); the `no_proxy` fixture keeps curl and urllib on loopback."""
    result = CliRunner().invoke(main, ["run", *map(str, args), "--tile-size", "128"])
    return result.exit_code, result.stderr


@pytest.fixture
def no_proxy(monkeypatch) -> None:
    for key, value in NET_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def chip(tmp_path) -> Path:
    return crop(SN6, tmp_path / "chip.tif", Window(10, 10, 80, 64))


# ---------------------------------------------------------------- secrets in URLs


def test_secrets_in_input_urls_reach_no_output_nor_message(server, chip, tiny_checkpoint,
                                                           tmp_path, no_proxy):
    """A signed COG URL and a signed Item URL: the run works (the URL is read as given),
    and no byte of the COG (tags included), the Item, the stderr lines (-vv: log lines,
    GDAL's own messages) or a failed run's error holds the userinfo or the query."""
    base, www = server
    cog(chip, www / "scene.tif")
    split_bands(chip, www / "assets")
    stac_item(www / "item.json", {c: (f"assets/{c}.tif", c) for c in COLOURS}, ident="signed")

    for name, url in (("cog", signed(base, "scene.tif")), ("item", signed(base, "item.json"))):
        out = tmp_path / name / "out.tif"
        out.parent.mkdir()
        if name == "cog":  # a real process at -vv: its log lines go to its stderr
            proc = run(url, out, "--model", tiny_checkpoint, "-vv")
            code, stderr = proc.returncode, proc.stdout + proc.stderr
            # rasterio's log lines name the URL it opens: the filter redacts them
            assert any(line.startswith("DEBUG") and f"{base}/" in line
                       for line in stderr.splitlines()), stderr[-3000:]
            assert f"input: remote raster {base}/scene.tif: read in place" in stderr
        else:
            code, stderr = invoke(url, out, "--model", tiny_checkpoint)
        assert code == 0, stderr[-3000:]
        assert "input: " in stderr
        no_secret_in(stderr, *files_under(out.parent).values())
        with rasterio.open(out) as ds:
            tags = ds.tags()
        item = json.loads(out.with_name("out.stac.json").read_text())
        (link,) = [ln for ln in item["links"] if ln["rel"] == "derived_from"]
        recorded = f"{base}/{'scene.tif' if name == 'cog' else 'item.json'}"
        assert link["href"] == recorded  # scheme, host and path kept
        assert tags["EO2SAR_INPUT"] == recorded
        assert Path(recorded).name in item["properties"]["processing:lineage"]

    # a URL that fails: the one-line error names the URL without its secrets
    for url in (signed(base, "missing.tif"), signed(base, "missing.json")):
        code, stderr = invoke(url, tmp_path / "fail.tif", "--model", tiny_checkpoint)
        assert code == 1 and stderr.count("\n") == 1, stderr
        assert f"{base}/missing." in stderr
        no_secret_in(stderr)
    assert not (tmp_path / "fail.tif").exists()


def test_directory_run_over_vrts_naming_signed_urls_records_no_secret(
        server, chip, tiny_checkpoint, tmp_path, no_proxy):
    """Local VRTs whose sources are signed URLs (one served, one missing): the manifest,
    the run report, the Items, the Collection, the COGs and the stderr table and log lines
    (-vv) hold no secret; the failed scene is reported."""
    base, www = server
    cog(chip, www / "scene.tif")
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    good = signed(base, "scene.tif")
    with rasterio.open(f"/vsicurl/{good}") as ds:
        rasterio.shutil.copy(ds, scenes / "good.vrt", driver="VRT")
    text = (scenes / "good.vrt").read_text()
    assert SECRET in text  # the attack is real: the VRT holds the signed URL
    (scenes / "bad.vrt").write_text(text.replace("/scene.tif?", "/gone.tif?"))
    out = tmp_path / "out"
    proc = run(scenes, out, "--model", tiny_checkpoint, "--pattern", "*.vrt", "-vv")
    assert proc.returncode == 1, proc.stderr[-3000:]  # one scene failed
    files = files_under(out)
    assert "good.tif" in files and "good.tif.manifest.json" in files
    assert "eo2sar_run_report.json" in files
    report = json.loads(files["eo2sar_run_report.json"])
    (failed,) = [s for s in report["scenes"] if s["status"] == "failed"]
    assert "bad.vrt" in failed["message"] and "404" in failed["message"]
    no_secret_in(proc.stdout, proc.stderr, *files.values())


# ---------------------------------------------------------------- timeouts


def test_a_server_that_never_answers_ends_in_a_one_line_error(stalled, tiny_checkpoint,
                                                                tmp_path):
    """COG and Item URLs on a stalled server, timeouts of 2 s set by the test: exit 1, one
    line naming the timeout and the settings to raise; the subprocess timeout bounds the
    test (before the fix: a hang)."""
    short = {"GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_CONNECTTIMEOUT": "2",
             "GDAL_HTTP_MAX_RETRY": "0"}
    for url in (f"{stalled}/scene.tif", f"{stalled}/item.json"):
        proc = run(url, tmp_path / "o.tif", "--model", tiny_checkpoint, **short)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: "), proc.stderr
        assert "timed out" in proc.stderr or "no answer within 2 s" in proc.stderr
        assert "GDAL_HTTP_TIMEOUT" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a whole directory run waiting on timeouts: ~8 s
def test_a_directory_run_over_a_vrt_naming_a_silent_server_reports_the_scene_failed(
        stalled, tiny_checkpoint, tmp_path):
    """A local VRT whose source is on the stalled server, in a directory run: the timeouts
    hold there too (set by every pipeline command, not only for remote INPUTs); the scene
    is reported failed, `timed out`."""
    short = {"GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_CONNECTTIMEOUT": "2",
             "GDAL_HTTP_MAX_RETRY": "0"}
    scenes, out = tmp_path / "scenes", tmp_path / "out"
    scenes.mkdir()
    band = ('<VRTRasterBand dataType="Byte" band="{i}"><SimpleSource><SourceFilename '
            f'relativeToVRT="0">/vsicurl/{stalled}/scene.tif</SourceFilename>'
            '<SourceBand>{i}</SourceBand><SourceProperties RasterXSize="64" '
            'RasterYSize="64" DataType="Byte" BlockXSize="64" BlockYSize="64"/>'
            "</SimpleSource></VRTRasterBand>")
    (scenes / "a.vrt").write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:32631</SRS>'
        "<GeoTransform>500000, 10, 0, 5000000, 0, -10</GeoTransform>"
        + "".join(band.format(i=i) for i in (1, 2, 3)) + "</VRTDataset>")
    proc = run(scenes, out, "--model", tiny_checkpoint, "--pattern", "*.vrt", **short)
    assert proc.returncode == 1, proc.stderr
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    assert [s["status"] for s in report["scenes"]] == ["failed"], report
    assert "timed out" in report["scenes"][0]["message"], report


# ---------------------------------------------------------------- remote Items, local files


def _item(assets: dict[str, str]) -> str:
    return json.dumps({
        "type": "Feature", "stac_version": "1.0.0", "id": "hostile", "geometry": None,
        "properties": {"datetime": "2020-02-02T00:00:00Z"}, "links": [],
        "assets": {k: {"href": h, "eo:bands": [{"name": k, "common_name": k}]}
                   for k, h in assets.items()}})


def test_a_remote_item_cannot_reach_local_files(server, chip, tiny_checkpoint, tmp_path,
                                                no_proxy):
    """Items served over HTTP naming this machine's files: an absolute path (a path on
    the server, RFC 3986: the server is asked, answers 404), a /vsi chain and file: URLs
    (refused before any open). Exit 1, nothing written; the local file is never read
    (it would give a valid output)."""
    base, www = server
    local = str(chip.resolve())
    cases = {
        "abs.json": {c: local for c in ("red", "green", "blue")},
        "vsi.json": {c: f"/vsizip/{local}.zip/x.tif" if c == "red" else local
                     for c in ("red", "green", "blue")},
        "vsiplain.json": {"red": f"/vsimem/../{local}", "green": local, "blue": local},
        "file.json": {c: f"file://{local}" for c in ("red", "green", "blue")},
    }
    for name, assets in cases.items():
        (www / name).write_text(_item(assets))
        out = tmp_path / f"{name}.tif"
        code, stderr = invoke(f"{base}/{name}", out, "--model", tiny_checkpoint)
        assert code == 1, (name, stderr)
        assert stderr.count("\n") == 1, stderr
        if name == "abs.json":  # resolved on the server: it was asked for that path
            assert "cannot open asset" in stderr and f"{base}{local}" in stderr
            log = (www.parent / "requests.log").read_text()  # GDAL lists the folder first
            assert str(Path(local).parent) in log
        else:
            assert "is not a URL" in stderr, stderr
        assert not out.exists()


def _vrt_naming(local: Path, raw: bool) -> str:
    with rasterio.open(local) as ds:
        w, h = ds.width, ds.height
    if raw:  # raw bytes of any local file, here the chip itself
        band = (f'<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
                f'<SourceFilename relativeToVRT="0">{local}</SourceFilename>'
                "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset>"
                f"<LineOffset>{w}</LineOffset></VRTRasterBand>")
        bands = band + band.replace('band="1"', 'band="2"') + band.replace('band="1"',
                                                                             'band="3"')
    else:
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{i}"><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{local}</SourceFilename>'
            f"<SourceBand>{i}</SourceBand></SimpleSource></VRTRasterBand>" for i in (1, 2, 3))
    with rasterio.open(local) as ds:
        srs, gt = ds.crs.to_wkt(), ds.transform.to_gdal()
    return (f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{srs}</SRS>'
            f"<GeoTransform>{', '.join(map(repr, gt))}</GeoTransform>{bands}</VRTDataset>")


def test_a_remote_vrt_naming_local_files_is_refused(server, chip, tiny_checkpoint, tmp_path,
                                                     no_proxy):
    """A VRT served over HTTP whose sources are this machine's files (a simple source, a
    raw band), given directly (as .vrt, and disguised as .tif), or as a remote Item's
    asset: exit 1, one line `refused: ... must be a self-contained raster`; nothing
    written."""
    base, www = server
    local = chip.resolve()
    (www / "simple.vrt").write_text(_vrt_naming(local, raw=False))
    (www / "raw.vrt").write_text(_vrt_naming(local, raw=True))
    (www / "disguised.tif").write_text(_vrt_naming(local, raw=False))
    (www / "item.json").write_text(_item({c: "simple.vrt" for c in ("red", "green", "blue")}))
    for name in ("simple.vrt", "raw.vrt", "disguised.tif", "item.json"):
        out = tmp_path / f"{name}.out.tif"
        code, stderr = invoke(f"{base}/{name}", out, "--model", tiny_checkpoint)
        assert code == 1, (name, stderr)
        assert stderr.count("\n") == 1, stderr
        # opened by the self-contained drivers only: the VRT (and its sources) never is
        assert "refused: " in stderr and "must be a self-contained raster" in stderr, stderr
        assert not out.exists()
