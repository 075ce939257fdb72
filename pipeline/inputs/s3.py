"""Small JSON documents on S3 (a STAC Item or catalog at `s3://bucket/key.json`), read with
the user's usual AWS settings.

Why this exists: rasters on `s3://` are read by GDAL's `/vsis3/`, but GDAL has no reader
for a JSON document that rasterio exposes, and boto3 is not a dependency (nor worth one
for a GET of a few KB). So a signed GET is built here: AWS Signature Version 4 (the
`hmac`/`hashlib` recipe of the AWS documentation, checked against its published example
in tests/pipeline/inputs/test_s3.py), sent with the Item reader's bounds and timeouts
(pipeline/inputs/sources.py `_http_get`).

Settings read, the same variables GDAL's `/vsis3/` reads, so one environment serves the
Item and its assets: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
else the profile `AWS_PROFILE` (default `default`) of `AWS_SHARED_CREDENTIALS_FILE`
(`~/.aws/credentials`); `AWS_REGION` / `AWS_DEFAULT_REGION`, else the profile's region in
`AWS_CONFIG_FILE` (`~/.aws/config`), else us-east-1; `AWS_NO_SIGN_REQUEST=YES` (public
buckets: no signature); `AWS_S3_ENDPOINT` (host[:port] of an S3-compatible store),
`AWS_HTTPS=NO`, `AWS_VIRTUAL_HOSTING=FALSE` (path-style URLs). Not supported (GDAL reads
them, this reader does not): EC2/ECS instance roles, SSO and `credential_process`
profiles; download the document first there (`aws s3 cp`).

Bucket names are checked before anything is signed or handed to GDAL (`check_bucket`):
the URL is built as `https://{bucket}.{endpoint}/key`, so a "bucket" holding `#`, `?`,
`:` or `@` would end the host part there (`s3://localhost:PORT#/x.json` is a request to
localhost:PORT), and the user's signature, key id and session token would go to a host
a hostile catalog or Item picked. Only S3's own bucket names pass (docs/faults.md,
Security).
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import InputError

__all__ = ["EMPTY_SHA256", "UNSIGNED_PAYLOAD", "check_bucket", "check_s3_path",
           "check_vrt_buckets", "s3_request", "sign_v4"]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


#: S3's bucket naming rules: 3-63 characters of lower-case letters, digits, dots and
#: hyphens, starting and ending with a letter or digit, no two adjacent dots
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: ... and not in the form of an IP address (192.168.5.4)
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
#: a bucket inside a GDAL path: /vsis3/BUCKET/..., /vsis3_streaming/BUCKET/...
_VSIS3_BUCKET = re.compile(r"/vsis3(?:_streaming)?/([^/]*)")


def check_bucket(bucket: str, label: str) -> None:
    """InputError unless `bucket` is a valid S3 bucket name (module doc: anything else
    could move the signed request to another host). `label` names the input."""
    if _BUCKET.fullmatch(bucket) and ".." not in bucket and not _IPV4.fullmatch(bucket):
        return
    from pipeline.errors import brief

    raise InputError(f"refused: {brief(bucket)} is not a valid S3 bucket name (3-63 "
                     "characters of a-z, 0-9, '.' and '-', not an IP address); a request "
                     "signed for it could go to another host", path=label,
                     hint="check the s3:// URL (a catalog or Item from someone else may "
                     "name a host instead of a bucket)")


def check_s3_path(text: str, label: str | None = None) -> None:
    """`check_bucket` for every bucket an `s3://` URL or a GDAL path (`/vsis3/...`, also
    inside a chain such as `/vsizip//vsis3/...`) names; other paths pass."""
    text = str(text)
    buckets = [m.group(1) for m in _VSIS3_BUCKET.finditer(text)]
    if text[:5].lower() == "s3://":
        buckets.append(text[5:].split("/", 1)[0])
    for bucket in buckets:
        check_bucket(bucket, label or text)


#: bytes of a local VRT scanned for the buckets it names (VRTs are a few KB; a mosaic of
#: thousands of sources a few MB)
MAX_VRT_SCAN_BYTES = 64 * 2**20


def check_vrt_buckets(path: str | Path) -> None:
    """`check_s3_path` for every `/vsis3/` source a local VRT names, before GDAL opens it
    (opening a VRT may open its sources, signing a request for each): a VRT handed over
    in a folder could name `/vsis3/localhost:PORT#/x.tif`. Anything that is not a VRT
    (or cannot be read) passes: GDAL's own open reports it."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_VRT_SCAN_BYTES)
    except OSError:
        return
    if b"<VRTDataset" not in head[:4096]:
        return
    check_s3_path(head.decode("utf-8", errors="replace"), str(path))


def _truthy(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().upper() in ("YES", "TRUE", "ON", "1")


def _profile() -> tuple[str | None, str | None, str | None, str | None]:
    """(key id, secret, session token, region) of the AWS profile, from the shared
    credentials and config files (None where absent)."""
    name = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    creds = configparser.ConfigParser(interpolation=None)
    config = configparser.ConfigParser(interpolation=None)
    home = Path.home() / ".aws"
    try:
        creds.read(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", home / "credentials"))
        config.read(os.environ.get("AWS_CONFIG_FILE", home / "config"))
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None, None, None, None
    section = creds[name] if creds.has_section(name) else {}
    conf_name = name if name == "default" else f"profile {name}"
    conf = config[conf_name] if config.has_section(conf_name) else {}
    return (section.get("aws_access_key_id"), section.get("aws_secret_access_key"),
            section.get("aws_session_token"), conf.get("region"))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign_v4(*, method: str, host: str, path: str, headers: Mapping[str, str],
            payload_hash: str, region: str, key_id: str, secret: str, amz_date: str,
            query: str = "", service: str = "s3") -> str:
    """The `Authorization` header of a request signed with AWS Signature Version 4.

    `path` is the URI-encoded path; `headers` the headers to sign besides `host`
    (lower-case names; `x-amz-date` and `x-amz-content-sha256` among them)."""
    signed = {"host": host, **{k.lower(): v.strip() for k, v in headers.items()}}
    names = sorted(signed)
    canonical = "\n".join([method, path, query,
                           "".join(f"{n}:{signed[n]}\n" for n in names),
                           ";".join(names), payload_hash])
    day = amz_date[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), day), region), service),
                "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"AWS4-HMAC-SHA256 Credential={key_id}/{scope},SignedHeaders="
            f"{';'.join(names)},Signature={signature}")


def s3_request(url: str, now: datetime | None = None) -> tuple[str, dict[str, str]]:
    """(the https/http URL, the headers) of a GET of `s3://bucket/key` with the user's
    AWS settings (module doc); InputError for a URL without a key or without credentials
    where a signature is needed."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    key = key.split("?", 1)[0]
    if not bucket or not key:
        raise InputError("an s3:// URL names a bucket and a key (s3://bucket/path/x.json)",
                         path=url, hint="give the full s3:// URL of the document")
    check_bucket(bucket, url)
    endpoint = os.environ.get("AWS_S3_ENDPOINT", "s3.amazonaws.com").strip().rstrip("/")
    scheme = "https" if _truthy("AWS_HTTPS", True) else "http"
    for prefix in ("https://", "http://"):  # GDAL takes a bare host; tolerate a URL
        if endpoint.startswith(prefix):
            scheme, endpoint = prefix[:-3], endpoint[len(prefix):]
    path = "/" + quote(key, safe="/-_.~")
    if _truthy("AWS_VIRTUAL_HOSTING", True) and "." not in bucket:
        host = f"{bucket}.{endpoint}"
    else:
        host, path = endpoint, f"/{quote(bucket, safe='-_.~')}{path}"
    target = f"{scheme}://{host}{path}"
    if _truthy("AWS_NO_SIGN_REQUEST", False):
        return target, {}
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    token = os.environ.get("AWS_SESSION_TOKEN")
    p_key, p_secret, p_token, p_region = _profile()
    if not (key_id and secret):
        key_id, secret, token = p_key, p_secret, p_token
    if not (key_id and secret):
        raise InputError("no AWS credentials to read it with", path=url,
                         hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                         "AWS_PROFILE), or AWS_NO_SIGN_REQUEST=YES for a public bucket; "
                         "or download it first (aws s3 cp)")
    region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
              or p_region or "us-east-1")
    amz_date = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    headers = {"x-amz-content-sha256": UNSIGNED_PAYLOAD, "x-amz-date": amz_date}
    if token:
        headers["x-amz-security-token"] = token
    auth = sign_v4(method="GET", host=host, path=path, headers=headers,
                   payload_hash=UNSIGNED_PAYLOAD, region=region, key_id=key_id,
                   secret=secret, amz_date=amz_date)
    return target, {**headers, "Authorization": auth}
