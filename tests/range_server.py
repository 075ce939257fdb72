"""A tiny HTTP/1.1 file server with byte ranges, on loopback, for the remote-input tests.

Python's http.server answers a Range request with the whole file; GDAL's /vsicurl/ needs
206 partial responses. It runs in its own process (`python -m tests.range_server ROOT`,
prints its port, logs each request's path and Range header to ROOT/../requests.log):
in a thread of the test process it can deadlock, as some GDAL calls that fetch over
HTTP hold the GIL the server thread would need to answer them.
"""

from __future__ import annotations

import functools
import http.server
import re
import sys
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """GET with `Range: bytes=a-b` -> 206 and that slice; records every request."""

    protocol_version = "HTTP/1.1"  # keep-alive, as curl expects from a real server
    log: Path | None = None

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(f"{self.path} {self.headers.get('Range')}\n")
        path = Path(self.translate_path(self.path))
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if match is None:
            self._send(200, data)
            return
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            self._send(416, b"", f"bytes */{len(data)}")
            return
        self._send(206, data[start:end + 1], f"bytes {start}-{end}/{len(data)}")

    def _send(self, status: int, body: bytes, content_range: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if content_range:
            self.send_header("Content-Range", content_range)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet test output
        pass


def main(root: str) -> None:
    RangeHandler.log = Path(root).parent / "requests.log"
    handler = functools.partial(RangeHandler, directory=root)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        print(httpd.server_address[1], flush=True)
        httpd.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
