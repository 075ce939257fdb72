"""Credentials and signed URLs against hostile catalogs, Items and servers (issue 23, items
1-3), each attack performed on loopback with fake credentials (tests/faults/faultlib.py
FAKE_*), and every output, report, Item, manifest, log line and stderr of the runs
grepped for them (`leaked`).

* a "bucket" that names a host (`s3://localhost:PORT#/x.json`, a decimal IPv4 address)
  in a catalog link, an Item asset, a VRT's source, or on the command line: refused
  before anything is signed or handed to GDAL; the host it names receives nothing;
* an S3 endpoint answering 302 to another port: the redirect carries no signature;
* a signed URL's query in GDAL's own messages (a truncated remote COG, a GeoTIFF whose
  reading warns), at default verbosity, at -v, and in a directory run's report.

The runs that GDAL could send to a listener of this process run in a subprocess
(`invoke_many`: several CliRunner invocations in one process, so the GIL is never shared
with the listener); urllib-only runs run here.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.inputs.s3 import check_bucket, check_s3_path
from tests.faults.faultlib import (
    FAKE_AWS_ENV,
    FAKE_KEY_ID,
    FAKE_SIGNATURE,
    FAKE_TOKEN,
    RUN_TIMEOUT_S,
    Listener,
    answer,
    env,
    leaked,
    run_module,
)
from tests.helpers import REPO, SN6, cog, crop, range_server
from tests.products import COLOURS, item_dict

NET_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "http_proxy": "", "HTTP_PROXY": "", "https_proxy": "", "HTTPS_PROXY": ""}
#: a signed URL's query, as S3 pre-signs one (with an Azure-style `sig` for good measure)
SIGNED_QUERY = (f"sig={FAKE_SIGNATURE}&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
                f"{FAKE_KEY_ID}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Security-"
                f"Token={FAKE_TOKEN}&X-Amz-Signature={FAKE_SIGNATURE}")

_DRIVER = """
import json, sys
from click.testing import CliRunner
import pipeline.cli

results = {}
for name, args in json.loads(sys.argv[1]).items():
    r = CliRunner().invoke(pipeline.cli.main, args)
    exc = None if r.exception is None or isinstance(r.exception, SystemExit) else repr(
        r.exception)[:500]
    results[name] = [r.exit_code, r.stderr, exc]
print(json.dumps(results))
"""


def invoke_many(cases: dict[str, list[str | Path]], **extra_env: str):
    """Each case's `python -m pipeline ARGS` through CliRunner, all in one subprocess (one
    start-up): ({name: (exit code, stderr, unexpected exception)}, the process)."""
    args = json.dumps({k: [str(a) for a in v] for k, v in cases.items()})
    proc = subprocess.run([sys.executable, "-c", _DRIVER, args], cwd=REPO,
                          env=env(**{**NET_ENV, **extra_env}), capture_output=True,
                          text=True, timeout=3 * RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1]), proc


@pytest.fixture
def www(tmp_path):
    """(base URL, served folder) of tests/range_server.py on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    with range_server(root) as url:
        yield url, root


@pytest.fixture
def chip(tmp_path) -> Path:
    return crop(SN6, tmp_path / "chip.tif", Window(10, 10, 80, 64))


# ---------------------------------------------------------------- 1. bucket names


def test_bucket_names_follow_s3s_rules():
    for good in ("bucket", "my.bucket-1", "123", "a" * 63, "sentinel-cogs"):
        check_bucket(good, "x")
    for bad in ("localhost:8080#", "2130706433:80?", "127.0.0.1", "b", "a" * 64,
                "Bucket", "user@host", "a..b", "-ab", "ab-", "host#", "a/b", "[::1]:80"):
        with pytest.raises(InputError, match="not a valid S3 bucket name"):
            check_bucket(bad, "x")
    with pytest.raises(InputError, match="not a valid S3 bucket name"):
        check_s3_path("/vsizip//vsis3/localhost:1#/a.zip/x.tif")
    check_s3_path("/vsis3/bucket/key.tif")
    check_s3_path("https://h/x.tif")


def test_a_bucket_that_names_a_host_gets_no_credentials(www, chip, tiny_checkpoint,
                                                        tmp_path):
    """`s3://localhost:PORT#/...` (and `s3://2130706433:PORT?/...`, the decimal form of
    127.0.0.1) as a remote catalog's links, a remote and a local Item's assets, and on the
    command line (s3:// and /vsis3/, a raster and an Item), as a local VRT's source,
    with the user's AWS
    credentials set and AWS_HTTPS=NO: exit 1 with one line each, and the listener on
    PORT receives nothing (before the fix: `Authorization: AWS4-HMAC-SHA256
    Credential=<key id>...` and `X-Amz-Security-Token`)."""
    base, root = www
    thief = Listener(answer("200 OK", {"Content-Type": "application/json"},
                            json.dumps(item_dict("x", {})).encode()))
    try:
        port = thief.port
        hosts = {"name": f"localhost:{port}#", "decimal": f"2130706433:{port}?"}
        for kind, bucket in hosts.items():
            (root / f"cat-{kind}.json").write_text(json.dumps({
                "type": "Catalog", "id": "c", "stac_version": "1.0.0", "description": "",
                "links": [{"rel": "item", "href": f"s3://{bucket}/x.json"}]}))
        assets = {c: (f"s3://localhost:{port}#/{c}.tif", c) for c in COLOURS}
        (root / "item.json").write_text(json.dumps(item_dict("remote", assets)))
        local = tmp_path / "local"
        local.mkdir()
        (local / "item.json").write_text(json.dumps(item_dict("local", assets)))
        (local / "scene.vrt").write_text(
            '<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:32631</SRS>'
            "<GeoTransform>500000, 10, 0, 5000000, 0, -10</GeoTransform>" + "".join(
                f'<VRTRasterBand dataType="Byte" band="{i}"><SimpleSource><SourceFilename>'
                f"/vsis3/localhost:{port}#/x.tif</SourceFilename><SourceBand>{i}"
                "</SourceBand></SimpleSource></VRTRasterBand>" for i in (1, 2, 3))
            + "</VRTDataset>")
        out = tmp_path / "out"
        out.mkdir()
        model = ["--model", tiny_checkpoint, "--tile-size", "128"]
        cases = {
            "catalog link": ["run", f"{base}/cat-name.json", out / "c1", *model],
            "catalog link, decimal IPv4": ["run", f"{base}/cat-decimal.json", out / "c2",
                                           *model, "--dry-run"],
            "remote Item asset": ["run", f"{base}/item.json", out / "i1.tif", *model],
            "local Item asset": ["run", local / "item.json", out / "i2.tif", *model],
            "s3 raster": ["run", f"s3://localhost:{port}#/x.tif", out / "r1.tif", *model],
            "vsis3 raster": ["run", f"/vsis3/localhost:{port}#/x.tif", out / "r2.tif",
                             *model],
            "s3 Item": ["run", f"s3://2130706433:{port}?/x.json", out / "r3.tif", *model],
            "local VRT's source": ["run", local / "scene.vrt", out / "v.tif", *model],
        }
        results, proc = invoke_many(cases, **FAKE_AWS_ENV,
                                    AWS_S3_ENDPOINT="s3.eo2sar.invalid")
    finally:
        thief.close()
    for name, (code, stderr, exc) in results.items():
        assert (code, exc) == (1, None), (name, stderr, exc)
        assert stderr.count("\n") == 1 and stderr.startswith("Error: "), (name, stderr)
        assert "not a valid S3 bucket name" in stderr, (name, stderr)
    assert thief.requests == []  # the host the "bucket" named was never contacted
    assert not leaked(proc.stdout, proc.stderr, out)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written


# ---------------------------------------------------------------- 2. redirects


def test_a_redirect_from_the_endpoint_carries_no_signature(tiny_checkpoint, tmp_path,
                                                           monkeypatch):
    """The S3 endpoint answers the signed GET of an Item (and of a catalog) with `302` to
    another port: the redirect is followed without `Authorization` and
    `X-Amz-Security-Token` (before the fix urllib re-sent both). Exit 1, one line."""
    thief = Listener(answer("404 Not Found"))
    endpoint = Listener(answer("302 Found", {"Location": f"{thief.url}/stolen.json"}))
    try:
        for key, value in {**NET_ENV, **FAKE_AWS_ENV, "AWS_VIRTUAL_HOSTING": "FALSE",
                           "AWS_S3_ENDPOINT": f"127.0.0.1:{endpoint.port}"}.items():
            monkeypatch.setenv(key, value)
        outputs = []
        for name in ("item.json", "catalog.json"):
            out = tmp_path / f"{name}.out"
            outputs.append(out)
            result = CliRunner().invoke(main, ["run", f"s3://bucket/{name}", str(out),
                                               "--model", str(tiny_checkpoint)])
            assert result.exit_code == 1, result.output
            assert result.stderr.count("\n") == 1, result.stderr
            assert not leaked(result.stderr, result.stdout)
    finally:
        thief.close()
        endpoint.close()
    # the attack is real: the endpoint got signed requests, and the redirect was followed
    assert endpoint.requests and all(FAKE_KEY_ID.encode() in r and FAKE_TOKEN.encode() in r
                                     for r in endpoint.requests)
    assert len(thief.requests) == len(endpoint.requests)
    stolen = thief.received()
    assert b"authorization" not in stolen.lower() and b"x-amz-security-token" not in \
        stolen.lower()
    assert not leaked(stolen)
    assert not any(p.exists() for p in outputs)


# ---------------------------------------------------------------- 3. secrets in messages


def unsorted_tags(src: Path, dst: Path) -> Path:
    """`src` (a little-endian GeoTIFF) with its first two IFD entries swapped: libtiff
    warns "tags are not sorted", naming the file (GDAL: `CPLE_AppDefined in NAME: ...`)."""
    data = bytearray(src.read_bytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    first, second = data[ifd + 2:ifd + 14], data[ifd + 14:ifd + 26]
    data[ifd + 2:ifd + 14], data[ifd + 14:ifd + 26] = second, first
    dst.write_bytes(bytes(data))
    return dst


def test_signed_url_secrets_stay_out_of_gdal_messages(www, chip, tiny_checkpoint, tmp_path):
    """Signed URLs (`?sig=...&X-Amz-Credential=...&X-Amz-Signature=...`) of a truncated
    COG and of a GeoTIFF whose reading warns: GDAL names them `trunc.tif?sig=...`, without
    a scheme. The one-line error, the default-verbosity `WARNING: CPLE_AppDefined in
    unsorted.tif...`, the -v log lines and a directory run's report, manifests and Items
    (local VRTs whose sources are those URLs) hold no part of the query."""
    base, root = www
    full = cog(chip, tmp_path / "full.tif").read_bytes()
    (root / "trunc.tif").write_bytes(full[: len(full) * 6 // 10])  # header whole, tiles cut
    unsorted_tags(tmp_path / "full.tif", root / "unsorted.tif")

    def signed(name: str) -> str:
        return f"{base}/{name}?{SIGNED_QUERY}"

    trunc = run_module("pipeline", "run", signed("trunc.tif"), tmp_path / "t.tif", "-q",
                       "--model", tiny_checkpoint, "--tile-size", "128", **NET_ENV)
    assert trunc.returncode == 1, trunc.stderr[-3000:]
    assert trunc.stderr.count("\n") == 1 and trunc.stderr.startswith("Error: ")
    assert "(trunc.tif, band 1" in trunc.stderr, trunc.stderr  # named, without its query
    warned = run_module("pipeline", "run", signed("unsorted.tif"), tmp_path / "u.tif",
                        "--model", tiny_checkpoint, "--tile-size", "128", **NET_ENV)
    assert warned.returncode == 0, warned.stderr[-3000:]
    assert "WARNING: CPLE_AppDefined in unsorted.tif" in warned.stderr  # GDAL's warning

    scenes, out = tmp_path / "scenes", tmp_path / "out"
    scenes.mkdir()
    for name in ("trunc", "unsorted"):
        with rasterio.open(f"/vsicurl/{signed(name + '.tif')}") as ds:
            rasterio.shutil.copy(ds, scenes / f"{name}.vrt", driver="VRT")
        assert FAKE_SIGNATURE in (scenes / f"{name}.vrt").read_text()  # the attack is real
    directory = run_module("pipeline", "run", scenes, out, "--model", tiny_checkpoint,
                           "--tile-size", "128", "--pattern", "*.vrt", "-v", **NET_ENV)
    assert directory.returncode == 1, directory.stderr[-3000:]  # trunc.vrt failed
    report = json.loads((out / "eo2sar_run_report.json").read_text())
    status = {s["scene"]: s["status"] for s in report["scenes"]}
    assert status == {"trunc.vrt": "failed", "unsorted.vrt": "done"}, report
    assert (out / "unsorted.tif.manifest.json").exists()
    for proc in (trunc, warned, directory):
        assert not leaked(proc.stdout, proc.stderr), proc.stderr[-3000:]
    assert not leaked(out, tmp_path / "u.tif")
    assert not (tmp_path / "t.tif").exists()
