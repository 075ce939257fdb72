"""`pipeline view --serve`: serve exactly the viewer page (and the pages it links), only to
this user's browser.

The page needs no server; this is for browsers or remote sessions (`ssh -L`) that prefer
http:// to file://. A plain `http.server` of the page's folder served far more than that
(docs/faults.md, Security): every sibling file, the directory listing and symlinks out of
the folder (`~/.ssh/id_rsa` one link away), to any local user (loopback is shared by
everyone on the machine) and to any web page the user visits (DNS rebinding: a hostile
site resolving its own name to 127.0.0.1 reads the server's answers in the browser).
So this server:

* listens on 127.0.0.1 only;
* answers only under a per-run secret path prefix, `http://127.0.0.1:PORT/TOKEN/page.html`
  (TOKEN: 32 random bytes, printed once in the URL): without it, 403. Other local users
  and other web pages cannot guess it; a path prefix rather than a query string, so the
  index page's relative links to its pages keep it;
* answers only requests whose Host header is `127.0.0.1:PORT` or `localhost:PORT` (a
  rebinding site's requests carry its own name: 403);
* serves a fixed set of files chosen at start: the page and the `.html` files it links
  (the directory index's pages), inside the page's folder; everything else, the folder
  listing included, is 404;
* opens them with O_NOFOLLOW and refuses any whose real path is not the path served (no
  symlink anywhere on the way), and serves only regular files;
* GET and HEAD only; `Cache-Control: no-store`, `Referrer-Policy: no-referrer` (the token
  must not travel in a Referer), `X-Content-Type-Options: nosniff`;
* answers MAX_CONNECTIONS connections at a time, each for REQUEST_SECONDS at most in
  all (a timer shuts its socket down): 400 clients trickling a byte a second made 400
  threads; now further connections wait in the kernel's backlog until a slot frees, so
  another local user can delay the page by seconds, not exhaust the machine.
"""

from __future__ import annotations

import hmac
import html.parser
import http.server
import os
import secrets
import socket
import socketserver
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["MAX_CONNECTIONS", "REQUEST_SECONDS", "PageServer", "linked_pages",
           "page_server", "serve_page"]

LOOPBACK = "127.0.0.1"
#: connections answered at once (a page and its index need one or two)
MAX_CONNECTIONS = 16
#: seconds a connection may take in all, trickled or not
REQUEST_SECONDS = 10.0


class _Links(html.parser.HTMLParser):
    """The `href` values of a page's `<a>` elements."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def linked_pages(page: Path) -> list[str]:
    """The served names: `page` and the relative `.html` links in it that stay inside its
    folder (the index of a directory view links a page per output), as POSIX paths."""
    root = page.parent
    names = [page.name]
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    for href in parser.hrefs:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path.endswith(".html"):
            continue
        rel = PurePosixPath(unquote(parts.path))
        if rel.is_absolute() or ".." in rel.parts:
            continue
        if (root / rel).is_file() and rel.as_posix() not in names:
            names.append(rel.as_posix())
    return names


class PageServer(socketserver.ThreadingTCPServer):
    """The server of `serve_page`: `url` is the page's address with the token. A thread
    per connection, MAX_CONNECTIONS at once, each connection cut after REQUEST_SECONDS in
    all (and a 10 s socket timeout), so a client that connects and says nothing or
    trickles (another local user) neither blocks the page for long nor piles up threads."""

    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, page: Path, port: int = 0) -> None:
        page = Path(page).absolute()
        self.root = Path(os.path.realpath(page.parent))
        self.files = frozenset(linked_pages(page))
        self.token = secrets.token_urlsafe(32)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((LOOPBACK, port), _Handler)
        self.port = int(self.server_address[1])
        self.hosts = frozenset({f"{LOOPBACK}:{self.port}", f"localhost:{self.port}"})
        self.url = f"http://{LOOPBACK}:{self.port}/{self.token}/{page.name}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start the connection's thread once a slot is free (the accept loop waits for
        one, connections queue in the backlog); a connection still without a slot after
        REQUEST_SECONDS is closed unanswered."""
        if not self.slots.acquire(timeout=REQUEST_SECONDS):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """One connection, shut down when REQUEST_SECONDS have passed, whatever it is
        doing (sending its request a byte at a time, reading the answer slowly)."""
        timer = threading.Timer(REQUEST_SECONDS, _shutdown, args=(request,))
        timer.daemon = True
        timer.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            timer.cancel()
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection cut (by its client, or at REQUEST_SECONDS) is no error to print;
        anything else is, as socketserver prints it."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def read(self, name: str) -> bytes | None:
        """The bytes of served file `name`, or None: not served, a symlink on the way,
        not a regular file, or gone."""
        if name not in self.files:
            return None
        path = self.root / name
        if os.path.realpath(path) != str(path):
            return None  # a symlink somewhere on the way (planted after the start)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return f.read()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already: the connection is over
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PageServer
    server_version = "eo2sar-view"
    sys_version = ""
    timeout = 10  # seconds a connection may stay silent

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        status, data = self._resolve()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8" if status == 200
                         else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _resolve(self) -> tuple[int, bytes]:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.server.hosts:
            return 403, b"forbidden: unexpected Host\n"
        path = urlsplit(self.path).path
        token, _, name = path.lstrip("/").partition("/")
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            return 403, b"forbidden\n"
        data = self.server.read(unquote(name))
        if data is None:
            return 404, b"not found\n"
        return 200, data

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


def page_server(page: Path, port: int = 0) -> tuple[PageServer, str]:
    """(server, URL of `page` with its token): bound to 127.0.0.1, not yet serving."""
    server = PageServer(page, port)
    return server, server.url


def serve_page(page: Path, port: int = 0) -> None:
    """Serve `page` (and the pages it links) until Ctrl-C, printing the URL."""
    httpd, url = page_server(page, port)
    with httpd:
        print(f"serving {url}  (Ctrl-C to stop; the URL's token is the key: do not share "
              "it)", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
