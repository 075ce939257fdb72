"""STAC documents on s3:// (pipeline/inputs/s3.py): the AWS Signature V4 of the reader, checked
against AWS's published example, and an Item on a loopback S3 endpoint (tests/
range_server.py as the store: AWS_S3_ENDPOINT, path-style, plain HTTP), whose relative
assets GDAL's /vsis3/ reads with the same settings. What is not tested: a real AWS
endpoint, instance roles and SSO profiles (not supported: module doc of pipeline/inputs/s3.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.inputs.s3 import EMPTY_SHA256, s3_request, sign_v4
from pipeline.inputs.sources import join_url
from tests.helpers import REPO, SN6, crop
from tests.products import split_bands, stac_item

AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
           "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_S3_ENDPOINT", "AWS_HTTPS",
           "AWS_VIRTUAL_HOSTING", "AWS_NO_SIGN_REQUEST")


@pytest.fixture
def aws(monkeypatch, tmp_path) -> None:
    """No AWS setting of the machine leaks into the test (nor its ~/.aws files)."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def test_signature_matches_the_aws_documentation_example():
    """`GET /test.txt` with `Range: bytes=0-9` from the S3 SigV4 documentation
    ("Example: GET Object"), whose signature AWS publishes."""
    auth = sign_v4(method="GET", host="examplebucket.s3.amazonaws.com", path="/test.txt",
                   headers={"range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256,
                            "x-amz-date": "20130524T000000Z"},
                   payload_hash=EMPTY_SHA256, region="us-east-1",
                   key_id="AKIAIOSFODNN7EXAMPLE",
                   secret="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                   amz_date="20130524T000000Z")
    assert auth == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
        "aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_request_follows_the_users_settings(aws, monkeypatch, tmp_path):
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with pytest.raises(InputError, match="no AWS credentials") as info:
        s3_request("s3://bucket/a/item.json", when)
    assert "AWS_NO_SIGN_REQUEST=YES" in info.value.format()
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    assert s3_request("s3://bucket/a/item.json", when) == (
        "https://bucket.s3.amazonaws.com/a/item.json", {})
    monkeypatch.delenv("AWS_NO_SIGN_REQUEST")
    (tmp_path / "creds").write_text("[work]\naws_access_key_id = AKW\n"
                                    "aws_secret_access_key = SW\naws_session_token = T\n")
    (tmp_path / "config").write_text("[profile work]\nregion = eu-west-3\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "creds"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "work")
    monkeypatch.setenv("AWS_S3_ENDPOINT", "minio.local:9000")
    monkeypatch.setenv("AWS_HTTPS", "NO")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTING", "FALSE")
    url, headers = s3_request("s3://bucket/a b/item.json", when)
    assert url == "http://minio.local:9000/bucket/a%20b/item.json"
    assert headers["x-amz-security-token"] == "T"
    assert headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKW/20260102/eu-west-3/s3/aws4_request,SignedHeaders="
        "host;x-amz-content-sha256;x-amz-date;x-amz-security-token,Signature=")


def test_relative_hrefs_resolve_beside_the_document_and_stay_in_the_bucket():
    assert join_url("s3://b/x/y/item.json", "B04.tif") == "s3://b/x/y/B04.tif"
    assert join_url("s3://b/x/y/item.json", "../../../../etc/B04.tif") == "s3://b/etc/B04.tif"
    assert join_url("s3://b/x/item.json", "/top.tif") == "s3://b/top.tif"
    assert join_url("s3://b/x/item.json", "https://h/z.tif") == "https://h/z.tif"
    assert join_url("https://h/a/item.json", "z.tif") == "https://h/a/z.tif"


@pytest.fixture
def store(tmp_path, aws, monkeypatch) -> Iterator[tuple[str, Path]]:
    """(endpoint host:port, bucket folder) of tests/range_server.py acting as S3."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "www"
    (root / "bucket").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "tests.range_server", str(root)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"127.0.0.1:{port}", root / "bucket"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_item_on_s3_runs_with_the_aws_environment(store, tiny_checkpoint, tmp_path,
                                                     monkeypatch):
    endpoint, bucket = store
    chip = crop(SN6, tmp_path / "chip.tif", Window(20, 30, 90, 70))
    split_bands(chip, bucket / "assets")
    (bucket / "items").mkdir()
    stac_item(bucket / "items" / "item.json",
              {"r": ("../assets/red.tif", "red"), "g": ("../assets/green.tif", "green"),
               "b": ("../assets/blue.tif", "blue")})
    for key, value in {"AWS_S3_ENDPOINT": endpoint, "AWS_HTTPS": "NO",
                       "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_ACCESS_KEY_ID": "AKID",
                       "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    ref, out = tmp_path / "ref.tif", tmp_path / "out.tif"
    assert CliRunner().invoke(main, ["run", str(chip), str(ref), "--model",
                                     str(tiny_checkpoint), "-q"]).exit_code == 0
    result = CliRunner().invoke(main, ["run", "s3://bucket/items/item.json", str(out),
                                       "--model", str(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    assert "input: STAC Item chip-1: red=r, green=g, blue=b" in result.stderr
    with rasterio.open(out) as a, rasterio.open(ref) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    log = (bucket.parent.parent / "requests.log").read_text()
    assert "/bucket/items/item.json" in log and "/bucket/assets/red.tif" in log
