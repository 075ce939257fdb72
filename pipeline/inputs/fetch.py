"""One bounded HTTP GET for STAC documents: a size cap, one deadline for the whole read, and
credentials that never follow a redirect.

Why not urllib's `urlopen(url, timeout=T)` alone: its timeout bounds each wait for bytes,
not the read. A server that sends one byte a second (headers or body, with a
Content-Length or chunked) resets it at every byte and keeps the run reading for as long
as it likes (issue 23: still reading after 25 s with GDAL_HTTP_TIMEOUT=3). Here a timer
shuts the connection's socket down when the deadline passes, wherever the read stands
(connecting, the status line, the headers, the body), and the read ends with
TimeoutError.

Why headers are "unredirected": urllib's redirect handler copies a request's headers to
the redirected request, whatever host or port it points to. A signed S3 request
(`Authorization: AWS4-HMAC-SHA256 Credential=<key id>...`, `X-Amz-Security-Token`) or a
Basic-auth header answered with `302 Location: http://elsewhere/` would hand the
credentials to `elsewhere`. Credentials are added with `add_unredirected_header`, which
urllib keeps to the first request: a redirect is followed without them (a signature is
bound to its host anyway, so no redirect could use it legitimately).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import logging
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from pipeline.errors import InputError, brief

__all__ = ["CREDENTIAL_HEADERS", "GDAL_CREDENTIAL_SETTINGS", "check_link_target", "http_get",
           "is_local_address"]

log = logging.getLogger(__name__)

#: GDAL settings whose credentials /vsicurl/ sends with every request, to every host
GDAL_CREDENTIAL_SETTINGS = ("GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_BEARER",
                            "GDAL_HTTP_USERPWD")
#: hosts already warned about (one warning a host a process)
_WARNED: set[str] = set()

#: request headers that carry a credential (lower-case); also any `x-amz-*` but the
#: date and payload hash, which are harmless
CREDENTIAL_HEADERS = frozenset({"authorization", "x-amz-security-token", "cookie",
                                "proxy-authorization"})


def _is_credential(name: str) -> bool:
    name = name.lower()
    return name in CREDENTIAL_HEADERS or (
        name.startswith("x-amz-") and name not in ("x-amz-date", "x-amz-content-sha256"))


class _Sockets:
    """The sockets a request opened (a redirect opens another), shut down together when
    the deadline passes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.expired = False

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            self.open.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            sockets = list(self.open)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed: nothing left to stop
        pass


def _connection_classes(sockets: _Sockets) -> tuple[type, type]:
    """HTTP and HTTPS connection classes that report their sockets to `sockets`."""

    class Http(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            sockets.add(self.sock)

    class Https(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            sockets.add(self.sock)

    return Http, Https


def _opener(sockets: _Sockets) -> urllib.request.OpenerDirector:
    http_class, https_class = _connection_classes(sockets)

    class HttpHandler(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(http_class, req)

    class HttpsHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(https_class, req, context=self._context)

    return urllib.request.build_opener(HttpHandler, HttpsHandler)


def http_get(url: str, limit: int, timeout: float,
             headers: Mapping[str, str] | None = None) -> bytes:
    """The body of `url` (http/https), at most `limit` bytes (else InputError), read
    within `timeout` seconds overall (else TimeoutError), with `headers`; credentials
    (the URL's userinfo as Basic auth, `Authorization`, `X-Amz-*` tokens) go to `url`'s
    host only, never to where it redirects (module doc)."""
    parts = urlsplit(url)
    credentials: dict[str, str] = {}
    if parts.username is not None:  # urllib takes no userinfo: send it as Basic auth
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        credentials["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    plain = {"Accept": "application/geo+json, application/json"}
    for name, value in (headers or {}).items():
        (credentials if _is_credential(name) else plain)[name] = value
    request = urllib.request.Request(url, headers=plain)
    for name, value in credentials.items():
        request.add_unredirected_header(name.capitalize(), value)
    sockets = _Sockets()
    timer = threading.Timer(timeout, sockets.expire)
    timer.daemon = True
    start = time.monotonic()
    timer.start()
    try:
        data = _read(_opener(sockets), request, limit, timeout)
        if sockets.expired:  # a socket shut down mid-body reads as its end: not a body
            raise TimeoutError(f"the read took longer than {timeout:g} s")
        return data
    except (OSError, http.client.HTTPException) as exc:
        if sockets.expired or time.monotonic() - start >= timeout:
            raise TimeoutError(f"the read took longer than {timeout:g} s") from None
        raise exc
    finally:
        timer.cancel()
        sockets.expire()  # nothing of this request stays open


def _read(opener: urllib.request.OpenerDirector, request: urllib.request.Request,
          limit: int, timeout: float) -> bytes:
    chunks, size = [], 0
    with opener.open(request, timeout=timeout) as response:
        while chunk := response.read1(65536):
            size += len(chunk)
            if size > limit:
                raise InputError(f"the STAC Item is larger than {limit // 2**20} MiB",
                                 path=request.full_url, hint="is this URL a STAC Item?")
            chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- where documents may point


def is_local_address(host: str) -> bool:
    """`host` (a URL's host, as written) names this machine or a private network: localhost,
    a loopback, private, link-local (169.254.169.254: cloud metadata), unspecified or
    reserved address, also in the decimal, hex or short forms curl and urllib accept
    (`2130706433`, `0x7f000001`, `127.1`). A DNS name is not resolved (module doc of
    catalogs.py: what is not covered)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            host.split("%")[0])
    except ValueError:
        if not re.fullmatch(r"[0-9a-fx.]+", host):
            return False
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified
            or ip.is_reserved)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def check_link_target(document: str, target: str, what: str) -> None:
    """What a document read from the network (`document`, an http(s) or s3 URL) may point
    the run at (`target`, a URL it names, resolved): not a local address (this machine's
    loopback services, a private network's hosts, the cloud metadata service) unless the
    document came from one itself; InputError otherwise. And a warning when the run's
    GDAL credential settings (GDAL_HTTP_HEADERS...: GDAL sends them to every host) will
    go to a host other than the document's."""
    scheme = target.partition("://")[0].lower()
    if scheme not in ("http", "https"):
        return  # s3:// and friends: the bucket is checked, the endpoint is the user's
    host, origin = _host(target), _host(document)
    if is_local_address(host) and not is_local_address(origin):
        raise InputError(
            f"refused: the {what} {brief(host)}, a local or private address, while the "
            f"document came from {brief(origin or document)} (a document from the network "
            "may not point the run at this machine's or its network's services)",
            path=document, hint="download the document, check what it names, and give "
            "the local file")
    settings = [s for s in GDAL_CREDENTIAL_SETTINGS if os.environ.get(s)]
    if settings and host and host != origin and host not in _WARNED:
        _WARNED.add(host)
        log.warning("%s names %s (read from %s): GDAL sends %s to every host it reads "
                    "from, this one included; scope credentials to your server instead "
                    "(docs/data_sources.md, credentials)", document, host, origin,
                    "/".join(settings))
