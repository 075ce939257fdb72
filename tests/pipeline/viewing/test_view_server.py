"""`pipeline view --serve` (pipeline/viewing/view_server.py): exactly the page, only to its user.

Real HTTP requests to 127.0.0.1 only (http.client, so the Host header can be set as a
DNS-rebinding page's would be); each server runs in a thread and is shut down by the
fixture; every request has a 10 s timeout.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.viewing.view_server import PageServer, linked_pages, page_server
from tests.helpers import REPO

PAGE = b"<!DOCTYPE html><html><body>the viewer page</body></html>\n"
INDEX = (b'<!DOCTYPE html><ul><li><a href="a.html">a</a></li><li><a href="sub/b.html">b</a>'
         b'</li><li><a href="../outside.html">x</a></li>'
         b'<li><a href="https://example.com/x.html">y</a></li></ul>\n')


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A viewed folder: the page, index, linked pages, and what must never be served: a
    sibling, the output raster, a symlink to a private file outside, a page outside."""
    d = tmp_path / "out"
    (d / "sub").mkdir(parents=True)
    (d / "v.html").write_bytes(PAGE)
    (d / "index.html").write_bytes(INDEX)
    (d / "a.html").write_bytes(b"page a")
    (d / "sub" / "b.html").write_bytes(b"page b")
    (d / "notes.txt").write_bytes(b"sibling file")
    (d / "out.tif").write_bytes(b"raster bytes")
    private = tmp_path / "home" / ".ssh" / "id_rsa"
    private.parent.mkdir(parents=True)
    private.write_bytes(b"PRIVATE KEY")
    (d / "key").symlink_to(private)
    (tmp_path / "outside.html").write_bytes(b"outside")
    return d


@pytest.fixture
def serve() -> Iterator:
    """serve(page) -> running PageServer; all are shut down after the test."""
    running: list[tuple[PageServer, threading.Thread]] = []

    def start(page: Path) -> PageServer:
        server, _ = page_server(page)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(server: PageServer, path: str, host: str | None = None, method: str = "GET"
        ) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{server.port}")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_the_page_is_served_under_its_token_on_loopback_only(folder, serve):
    server = serve(folder / "v.html")
    assert server.server_address[0] == "127.0.0.1"
    assert re.fullmatch(rf"http://127\.0\.0\.1:{server.port}/[A-Za-z0-9_-]{{43}}/v\.html",
                        server.url)
    token = server.token
    assert get(server, f"/{token}/v.html") == (200, PAGE)
    assert get(server, f"/{token}/v.html", host=f"localhost:{server.port}") == (200, PAGE)
    assert get(server, f"/{token}/v.html", method="HEAD")[0] == 200
    assert serve(folder / "v.html").token != token  # a new secret each run


@pytest.mark.parametrize("path", ["/v.html", "/{bad}/v.html", "/", "/{token}x/v.html",
                                  "/{short}/v.html"])
def test_without_the_token_every_request_is_403(folder, serve, path):
    """Another local user (or any page in the browser) that does not know the URL."""
    server = serve(folder / "v.html")
    path = path.format(bad="A" * 43, token=server.token, short=server.token[:10])
    assert get(server, path)[0] == 403


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1", "127.0.0.1:1",
                                  "localhost.evil.example:{port}", ""])
def test_another_host_header_is_403_even_with_the_token(folder, serve, host):
    """DNS rebinding: a hostile site resolving its own name to 127.0.0.1 sends its name."""
    server = serve(folder / "v.html")
    assert get(server, f"/{server.token}/v.html", host=host.format(port=server.port))[0] == 403


@pytest.mark.parametrize("name", ["notes.txt", "out.tif", "key", "", "sub/", "sub",
                                  "../outside.html", "%2e%2e/outside.html",
                                  "..%2foutside.html", "a.html", "index.html"])
def test_nothing_but_the_page_is_served(folder, serve, name):
    """Siblings, the raster, a symlink to ~/.ssh/id_rsa, the folder listing, traversal:
    404 with the token (a single page links nothing, so not even index.html)."""
    server = serve(folder / "v.html")
    status, body = get(server, f"/{server.token}/{name}")
    assert status == 404 and b"PRIVATE" not in body and b"sibling" not in body


def test_an_index_serves_the_pages_it_links_and_nothing_else(folder, serve):
    assert linked_pages(folder / "index.html") == ["index.html", "a.html", "sub/b.html"]
    server = serve(folder / "index.html")
    t = server.token
    assert get(server, f"/{t}/a.html") == (200, b"page a")
    assert get(server, f"/{t}/sub/b.html") == (200, b"page b")
    for name in ("v.html", "notes.txt", "../outside.html", "key"):
        assert get(server, f"/{t}/{name}")[0] == 404


def test_symlinks_are_not_followed_even_if_planted_after_the_start(folder, serve, tmp_path):
    """A linked page swapped for a symlink to a private file (or its folder for a
    symlinked one) while the server runs: 404, never the private bytes."""
    server = serve(folder / "index.html")
    (folder / "a.html").unlink()
    (folder / "a.html").symlink_to(tmp_path / "home" / ".ssh" / "id_rsa")
    assert get(server, f"/{server.token}/a.html") == (404, b"not found\n")
    (folder / "sub" / "b.html").unlink()
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to(tmp_path / "home" / ".ssh")
    (tmp_path / "home" / ".ssh" / "b.html").write_bytes(b"PRIVATE b")
    assert get(server, f"/{server.token}/sub/b.html")[0] == 404
    fifo = folder / "index.html"
    fifo.unlink()
    import os

    os.mkfifo(fifo)  # not a regular file: refused, never blocks
    assert get(server, f"/{server.token}/index.html")[0] == 404


def test_cli_serve_prints_a_token_url_that_works_and_a_bare_one_that_does_not(
        folder, tiny_checkpoint):
    """`python -m pipeline view OUT --serve` as a user runs it (a subprocess, stopped by
    the test): the printed URL carries the token; nothing else of the folder is served."""
    import urllib.error
    import urllib.request

    from rasterio.windows import Window

    from pipeline import load_config, run_scene
    from tests.helpers import SN6, crop

    scene = crop(SN6, folder / "scene.tif", Window(0, 0, 64, 64))
    run_scene(scene, folder / "o.tif", model_path=tiny_checkpoint, progress=False,
              config=load_config(None, {"tile_size": 64, "overlap": 16}))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "view", str(folder / "o.tif"),
                             "--max-size", "32", "--serve"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        url = re.search(r"http://127\.0\.0\.1:\d+/\S+/o\.html", line)
        assert url, line
        with urllib.request.urlopen(url[0], timeout=10) as r:
            assert r.read() == (folder / "o.html").read_bytes()
            assert r.headers["Referrer-Policy"] == "no-referrer"
        base = url[0].rsplit("/", 2)[0]
        for bare in (f"{base}/o.html", f"{base}/", url[0].replace("o.html", "o.tif"),
                     url[0].replace("o.html", "key")):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(bare, timeout=10)
            assert err.value.code in (403, 404)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_silent_connection_does_not_block_the_page(folder, serve):
    """Another local user connects and says nothing: the user's request is still
    answered (a thread per connection; the silent one is dropped after 10 s)."""
    import socket

    server = serve(folder / "v.html")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10):
        assert get(server, f"/{server.token}/v.html") == (200, PAGE)


def test_trickling_clients_hold_a_bounded_number_of_threads(folder, serve, monkeypatch):
    """Twelve clients that send their request a byte at a time, never finishing it (the
    socket timeout never fires): the server holds MAX_CONNECTIONS threads at most (4 here)
    and cuts each connection after REQUEST_SECONDS in all (1 s here), so the user's page is
    still served. **Was**: a thread per connection for as long as it trickled (400
    clients, 400 threads)."""
    import socket

    from pipeline.viewing import view_server

    monkeypatch.setattr(view_server, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(view_server, "REQUEST_SECONDS", 1.0)
    server = serve(folder / "v.html")
    stop, lock = threading.Event(), threading.Lock()
    cut, active, peak = [], [0], [0]
    handle = server.process_request_thread

    def counted(request, address) -> None:  # this server's connection threads
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            handle(request, address)
        finally:
            with lock:
                active[0] -= 1

    server.process_request_thread = counted

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            try:
                while not stop.is_set():
                    sock.sendall(b"G")
                    stop.wait(0.1)
            except OSError:  # the server cut the connection
                cut.append(True)

    clients = [threading.Thread(target=trickle, daemon=True) for _ in range(12)]
    for client in clients:
        client.start()
    stop.wait(1.5)  # more than one round of cuts
    try:
        assert get(server, f"/{server.token}/v.html") == (200, PAGE)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=20)
    assert 1 <= peak[0] <= 4
    assert cut  # connections were cut by the server, not by the clients
