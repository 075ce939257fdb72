"""Drive headless Chromium over the DevTools protocol, for tests of the HTML viewer.

Imported by test modules, never collected (no `test_` prefix). Needs the system's
Chromium (Debian: `apt-get install chromium`; `make chromium` does it) and the dev
dependency `websocket-client`; `find_chromium()` returns None without the browser, and
the tests skip (`chromium_or_skip`), or fail where EO2SAR_REQUIRE_CHROMIUM=1 (.ci/run
sets it and installs the browser: CI must run them). Nothing is downloaded: no browser
build of our own, the system one.

What a test gets: real input events (mouse clicks on the page's slider and checkbox,
drags, wheel), JavaScript evaluation, screenshots as numpy arrays, and every console
error, uncaught exception and browser log error of the page (`errors()`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary ($CHROMIUM first), or None."""
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env) or (env if Path(env).exists() else None)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


#: Set (to 1) by .ci/run: a missing Chromium then FAILS the browser tests instead of
#: skipping them, so CI cannot pass without having run them.
REQUIRE_ENV = "EO2SAR_REQUIRE_CHROMIUM"
_MISSING = ("Chromium not installed (Debian: apt-get install chromium; or make chromium; "
            "or CHROMIUM=/path/to/chrome)")


def chromium_or_skip() -> str:
    """The browser for a test: its path; else the test is skipped, or fails where
    EO2SAR_REQUIRE_CHROMIUM=1 (CI)."""
    import pytest

    binary = find_chromium()
    if binary is not None:
        return binary
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{_MISSING}, and {REQUIRE_ENV} is set: the browser test must run here")
    pytest.skip(_MISSING)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Chromium:
    """One headless browser with one page, at a fixed viewport (CSS px, scale 1)."""

    def __init__(self, binary: str, width: int = 1000, height: int = 700,
                 timeout: float = 30.0) -> None:
        import websocket  # dev dependency (pyproject's dev extra)

        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="eo2sar-chromium-")
        port = _free_port()
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
             "--mute-audio", f"--user-data-dir={self.profile.name}",
             f"--remote-debugging-port={port}", "--remote-allow-origins=*",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._id = 0
        self.events: list[dict[str, Any]] = []
        try:
            url = self._page_socket(port)
            self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _page_socket(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                            timeout=2) as r:
                    targets = json.load(r)
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            time.sleep(0.1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and return its result; events seen meanwhile are kept."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def wait_event(self, method: str) -> dict[str, Any]:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == method:
                return msg
            self.events.append(msg)
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises awaited)."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str) -> None:
        """Poll until the expression is truthy (e.g. the page's ready flag)."""
        deadline = time.monotonic() + self.timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.05)

    def screenshot(self) -> np.ndarray:
        """[H, W, 3] uint8 of the viewport."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def mouse(self, kind: str, x: float, y: float, **extra: Any) -> None:
        """Input.dispatchMouseEvent: kind mousePressed/mouseReleased/mouseMoved/mouseWheel."""
        self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def click(self, x: float, y: float) -> None:
        self.mouse("mousePressed", x, y, button="left", clickCount=1)
        self.mouse("mouseReleased", x, y, button="left", clickCount=1)

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 5
             ) -> None:
        self.mouse("mousePressed", *start, button="left", clickCount=1)
        for k in range(1, steps + 1):
            f = k / steps
            self.mouse("mouseMoved", start[0] + f * (end[0] - start[0]),
                       start[1] + f * (end[1] - start[1]), button="left", buttons=1)
        self.mouse("mouseReleased", *end, button="left", clickCount=1)

    def rect(self, selector: str) -> dict[str, float]:
        """The bounding client rect of the first element matching `selector`."""
        return dict(self.evaluate(
            f"JSON.parse(JSON.stringify(document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect()))"))

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        self.send("Runtime.evaluate", expression="0")  # flush pending events
        found = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                found.append(str(details.get("exception", {}).get("description")
                                 or details.get("text")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append(json.dumps(p.get("args", []))[:500])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                found.append(str(p["entry"].get("text"))[:500])
        return found

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Chromium's helper processes can still write the profile ("Default/") for a moment
        # after the browser exits, most often on a loaded machine: retry, then give up quietly
        for _ in range(50):
            try:
                self.profile.cleanup()
                return
            except OSError:
                time.sleep(0.1)
        shutil.rmtree(self.profile.name, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
