"""What the fault tests share: running a command as a user does, killed at a named point.

Faults are cross-cutting (a killed run touches the scene writer, the manifest and the
directory runner at once), so their tests live together in tests/faults/ rather than
mirroring one module each. Each test injects one fault into a real process: a
subprocess started like a user's command, killed with SIGKILL by the test hook
`ugatit.io.fault_point` (``EO2SAR_FAULT_POINT=NAME@N``), or by the test itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from tests.helpers import REPO
from ugatit.io import FAULT_ENV, TMP_MARK

#: a subprocess that should finish in seconds; a hang fails the test instead of CI
RUN_TIMEOUT_S = 120
#: small and fast: 128 px tiles on a 320 px scene are 9 tiles (ngf 4 model); one 512 px
#: block per scene, so a fault point counted per block (mid-scene@2) is the 2nd scene's,
#: whatever the default block size
RUN_FLAGS = ("--bands", "3,2,1", "--tile-size", "128", "--overlap", "32", "--block-size", "512")
KILLED = -signal.SIGKILL  # subprocess's returncode of a SIGKILLed child


def env(fault: str | None = None, **extra: str) -> dict[str, str]:
    """This checkout importable, one thread, and the fault point (None: no fault)."""
    e = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    e.pop(FAULT_ENV, None)
    if fault is not None:
        e[FAULT_ENV] = fault
    return e


def run_module(module: str, *args: str | Path, fault: str | None = None,
               timeout: float = RUN_TIMEOUT_S, **extra_env: str
               ) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` in a subprocess, as a user runs it."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env(fault, **extra_env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def pipeline_run(*args: str | Path, fault: str | None = None, quiet: bool = True,
                 **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline run ARGS` with the small tiling of RUN_FLAGS (and -q: no
    progress bar, and a directory run's table lists only failures)."""
    quiet_flag = ("-q",) if quiet else ()
    return run_module("pipeline", "run", *args, *RUN_FLAGS, *quiet_flag, fault=fault,
                      **extra_env)


def temps(folder: Path) -> list[str]:
    """Names of eo2sar temporary files anywhere under `folder`."""
    return sorted(p.name for p in folder.rglob(f"*{TMP_MARK}*"))


def visible(folder: Path) -> list[str]:
    """Relative paths of the non-hidden files under `folder` (what a user sees)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def raster_values(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


# ---------------------------------------------------------------- attacks on credentials

#: fake AWS credentials of the credential tests (never valid anywhere), and a fake URL
#: signature: no output, Item, manifest, report, log or stderr may hold any of them
FAKE_KEY_ID = "AKIAEO2SARFAKEKEY0ID"
FAKE_SECRET = "eo2sarFAKEsecretACCESSkey0000000000000000"
FAKE_TOKEN = "eo2sarFAKEsessionTOKEN"
FAKE_SIGNATURE = "eo2sarFAKEsignature"
FAKE_SECRETS = (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN, FAKE_SIGNATURE)
#: the environment of a user with those credentials and a MinIO-style endpoint
FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                "AWS_SESSION_TOKEN": FAKE_TOKEN, "AWS_REGION": "us-east-1",
                "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "TRUE",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/eo2sar-test",
                "AWS_CONFIG_FILE": "/nonexistent/eo2sar-test", "AWS_PROFILE": "",
                "AWS_NO_SIGN_REQUEST": "NO"}


def leaked(*sources: str | bytes | Path) -> list[str]:
    """`where: secret` for each fake secret found in texts, files or every file under
    folders (`sources`); empty when nothing leaked."""
    found = []
    for source in sources:
        if isinstance(source, Path):
            paths = [source] if source.is_file() else sorted(
                p for p in source.rglob("*") if p.is_file())
            items = [(str(p), p.read_bytes()) for p in paths]
        else:
            data = source.encode() if isinstance(source, str) else source
            items = [(data[:60].decode(errors="replace"), data)]
        found += [f"{where}: {s}" for where, data in items for s in FAKE_SECRETS
                  if s.encode() in data]
    return found


class Listener:
    """A TCP server on 127.0.0.1 (a thread, stopped by `close`) that records the bytes of
    every request it receives (`requests`) and answers with `respond(conn, request,
    stop)`: the host an attacker picks, a redirecting endpoint, a trickling server. For
    attacked code running in a subprocess or through urllib (GDAL in this process could
    hold the GIL the thread needs: tests/range_server.py)."""

    def __init__(self, respond: Any) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self.hung_up = threading.Event()  # a client closed while it was being answered
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the accept timeout, or the socket closed
                continue
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.requests.append(data)
            self.respond(conn, data, self.stop)
        except OSError:
            self.hung_up.set()
        finally:
            conn.close()

    def received(self) -> bytes:
        return b"".join(self.requests)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for thread in self.threads:
            thread.join(timeout=10)


def answer(status: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Any:
    """A `respond` for Listener: one fixed HTTP answer."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {
        "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}.items())

    def respond(conn: socket.socket, _request: bytes, _stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body)

    return respond


def trickle(chunked: bool, seconds: float = 60.0) -> Any:
    """A `respond` for Listener: 200 and then a JSON body one byte a second, for up to
    `seconds` (a Content-Length of a megabyte, or chunked of one byte each)."""
    def respond(conn: socket.socket, _request: bytes, stop: threading.Event) -> None:
        kind = "Transfer-Encoding: chunked" if chunked else "Content-Length: 1000000"
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{kind}\r\n"
                     "\r\n".encode())
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            conn.sendall(b"1\r\n \r\n" if chunked else b" ")
            stop.wait(1.0)

    return respond
